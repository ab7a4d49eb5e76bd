"""One scoring rule host and phone: a bundle's class embeddings are built with the templates its manifest
records, so anyone holding the manifest and the eager student (or the phone's text encoder) rebuilds them."""
from __future__ import annotations

import json

import pytest
import torch

from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.config import load_preset
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.zeroshot import class_prototypes, student_text_encoder
from lowering import scoring
from lowering.export import export_bundles
from lowering.inputs import CALIBRATION_TEMPLATES, EvalSet
from lowering.scoring import fill

pytestmark = pytest.mark.slow
LABELS = {"en": ["cat", "dog", "bird"], "zh": ["猫", "狗", "鸟"]}
TWO_TEMPLATES = {"en": ["a photo of a {c}.", "a drawing of the {c}."], "zh": ["一张{c}的照片。", "{c}的画。"]}


def _images(n: int, seed: int):
    from PIL import Image
    g = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(40, 48, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


def test_recorded_templates_reproduce_the_shipped_class_embeddings(tmp_path, tiny_student, tiny_tokenizer):
    texts = [(lang, fill(CALIBRATION_TEMPLATES[lang][0], LABELS[lang][i])) for i in range(3) for lang in ("en", "zh")]
    eval_set = EvalSet(_images(2, 0), _images(4, 1), LABELS, texts, templates=TWO_TEMPLATES)
    result = export_bundles(tiny_student, tiny_tokenizer, ["torchscript"], tmp_path, eval_set=eval_set,
                            allow_parity_failure=True, measure_latency=False, log=lambda *_: None)
    bundle = result.bundles["torchscript"]
    manifest = bm.load_manifest(bundle)
    recorded = scoring.manifest_templates(manifest)
    assert recorded == TWO_TEMPLATES
    shipped = json.loads((bundle / bm.CLASS_EMBEDDINGS_FILE).read_text(encoding="utf-8"))
    assert shipped["templates"] == TWO_TEMPLATES
    # rebuilt by train.evaluate's zero-shot code from the manifest alone: the same rule, the same numbers
    encode = student_text_encoder(tiny_student, tiny_tokenizer)
    for lang in ("en", "zh"):
        rebuilt = class_prototypes(encode, manifest["class_embeddings"][f"labels_{lang}"], lang, templates=recorded[lang])
        got = torch.tensor(shipped[f"embeddings_{lang}"])
        assert torch.allclose(rebuilt, got, atol=1e-6), lang
        # and two templates are not one: the rule is the mean over the recorded templates, not the first
        first_only = class_prototypes(encode, LABELS[lang], lang, templates=recorded[lang][:1])
        assert not torch.allclose(first_only, got, atol=1e-4)


def test_templates_must_hold_the_one_placeholder():
    for bad in ({"en": ["a photo of a {}."], "zh": ["一张{c}的照片。"]}, {"en": "a photo of a {c}.", "zh": ["{c}"]},
                {"en": ["{c}"]}, {"en": [], "zh": ["{c}"]}):
        with pytest.raises(ValueError, match=r"\{c\}"):
            scoring.check_templates(bad)
    with pytest.raises(ValueError, match=r"\{c\}"):
        EvalSet([], [], LABELS, templates={"en": ["a photo of a {}."], "zh": ["{c}"]})


def test_prototypes_are_the_normalized_mean_of_normalized_prompts():
    emb = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    got = scoring.prototypes(emb, 2)
    want = torch.nn.functional.normalize(torch.tensor([[0.5, 0.5], [2 ** -0.5, 0.0]]), dim=-1)
    assert torch.allclose(got, want)
    assert scoring.prompts(["cat", "dog"], ["a {c}.", "the {c}"]) == ["a cat.", "the cat", "a dog.", "the dog"]
