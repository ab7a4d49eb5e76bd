"""Bundle pieces besides the encoders: golden vectors, class embeddings, the manifest's fixed parts.

The schema is documented in dcclip_mobile/bundle_manifest.py (the apps and the report read it there).
"""
from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import torch

from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.tokenizer import NORMALIZATION, BilingualTokenizer

from .encoders import input_specs, output_spec, spec_dicts
from .inputs import EvalSet, image_preprocess_description, preprocess
from .scoring import LANGS, prototypes

N_GOLDEN_IMAGES = 3
# 2: templates became {lang: [template with "{c}", ..]} (was {lang: "one template with {}"})
CLASS_EMBEDDINGS_FORMAT_VERSION = 2


def _floats(t: torch.Tensor, digits: int = 7) -> list[float]:
    return [round(float(v), digits) for v in t.flatten()]


def tensor_checksum(x: torch.Tensor) -> dict:
    """What an app compares its own preprocessing against: exact (sha256 of float32 LE bytes) and
    tolerant (sum, mean, the first values), since resizers differ in the last bits across platforms."""
    x = x.detach().to(torch.float32).contiguous()
    data = x.numpy().astype("<f4").tobytes()
    return {"shape": list(x.shape), "sha256": hashlib.sha256(data).hexdigest(), "sum": float(x.sum()),
            "mean": float(x.mean()), "first": _floats(x.flatten()[:8])}


@torch.no_grad()
def write_golden(directory: Path, model: DCCLIPStudent, tokenizer: BilingualTokenizer, eval_set: EvalSet) -> None:
    """golden.json + golden/<i>.png: the apps' tests check tokenizer, preprocessing and encoders on these."""
    cfg = model.cfg
    groups = eval_set.decision_groups()  # a class prompt per language, or a caption where there are no labels
    texts = [(lang, groups[lang][0][0]) for lang in LANGS if lang in groups] + list(eval_set.extra_texts[:4])
    golden_texts = []
    for lang, text in texts:
        enc = tokenizer([text])
        emb = model.encode_text(enc["input_ids"], enc["attention_mask"])[0]
        golden_texts.append({"text": text, "language": lang, "input_ids": enc["input_ids"][0].tolist(),
                             "attention_mask": enc["attention_mask"][0].tolist(), "embedding": _floats(emb)})
    (directory / "golden").mkdir(exist_ok=True)
    golden_images = []
    for i, img in enumerate(eval_set.parity_images[:N_GOLDEN_IMAGES]):
        rel = f"golden/{i}.png"
        img.convert("RGB").save(directory / rel, format="PNG")
        x = preprocess(img, cfg)
        golden_images.append({"file": rel, "preprocessed": tensor_checksum(x),
                              "embedding": _floats(model.encode_image(x)[0])})
    golden = {"format_version": bm.GOLDEN_FORMAT_VERSION, "embed_dim": cfg.embed_dim,
              "note": "embeddings are the eager PyTorch student's, fp32, unit length; compare with cosine",
              "texts": golden_texts, "images": golden_images}
    (directory / bm.GOLDEN_FILE).write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n")


@torch.no_grad()
def class_embeddings(model: DCCLIPStudent, tokenizer: BilingualTokenizer, eval_set: EvalSet, lang: str) -> torch.Tensor:
    """[C, D]: the label set's prototypes by the bundle's one scoring rule (lowering.scoring) in its templates."""
    enc = tokenizer(eval_set.class_prompts(lang))
    return prototypes(model.encode_text(enc["input_ids"], enc["attention_mask"]), len(eval_set.templates[lang]))


@torch.no_grad()
def write_class_embeddings(directory: Path, model: DCCLIPStudent, tokenizer: BilingualTokenizer,
                           eval_set: EvalSet) -> dict | None:
    """Unit-length class prototypes of the label set, both languages, and the templates they were built with
    (which the report and the apps score with); the manifest's entry. None without a label set."""
    if not eval_set.labels:
        return None
    templates = {lang: list(eval_set.templates[lang]) for lang in LANGS}
    out = {"format_version": CLASS_EMBEDDINGS_FORMAT_VERSION, "templates": templates,
           "labels_en": eval_set.labels["en"], "labels_zh": eval_set.labels["zh"]}
    for lang in LANGS:
        out[f"embeddings_{lang}"] = [_floats(e) for e in class_embeddings(model, tokenizer, eval_set, lang)]
    (directory / bm.CLASS_EMBEDDINGS_FILE).write_text(json.dumps(out, ensure_ascii=False) + "\n")
    return {"file": bm.CLASS_EMBEDDINGS_FILE, "labels_en": eval_set.labels["en"], "labels_zh": eval_set.labels["zh"],
            "templates": templates}


def calibration_entry(eval_set: EvalSet) -> dict:
    """Where the int8 calibration and parity-gate inputs came from: the manifest's "calibration"."""
    return {**eval_set.provenance, "images": len(eval_set.calibration_images),
            "parity_images": len(eval_set.parity_images),
            "texts": len(eval_set.calibration_texts or eval_set.parity_texts())}


def base_manifest(target: str, model: DCCLIPStudent, tokenizer: BilingualTokenizer, checkpoint: str | None,
                  checkpoint_sha256: dict[str, str], checkpoint_from_bundle: str | None = None) -> dict:
    """checkpoint: the path as given; checkpoint_from_bundle: the same checkpoint relative to the bundle
    directory, which lowering.report resolves (and uses only when checkpoint_sha256 matches)."""
    cfg = model.cfg
    id_dtype = "int32" if target == "ios" else "int64"
    return {
        "format_version": bm.BUNDLE_FORMAT_VERSION,
        "target": target,
        "created_by": f"dcclip-mobile {_version()} (python -m lowering.export)",
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "student": {"name": cfg.name, "embed_dim": cfg.embed_dim, "checkpoint": checkpoint,
                    "checkpoint_from_bundle": checkpoint_from_bundle, "checkpoint_sha256": checkpoint_sha256},
        "embed_dim": cfg.embed_dim,
        "logit_scale": float(model.scale().detach()),
        "image": {"inputs": spec_dicts(input_specs(cfg, "image")), "output": output_spec(cfg).to_dict(),
                  "preprocess": image_preprocess_description(cfg)},
        "text": {"inputs": spec_dicts(input_specs(cfg, "text", id_dtype=id_dtype)),
                 "output": output_spec(cfg).to_dict(),
                 "context_length": tokenizer.context_length, "vocab_size": tokenizer.vocab_size,
                 "special_ids": {"pad": tokenizer.pad_id, "unk": tokenizer.unk_id, "bos": tokenizer.bos_id,
                                 "eos": tokenizer.eos_id},
                 "tokenizer": {"model": "tokenizer.model", "json": "tokenizer.json"},
                 "normalization": dict(NORMALIZATION)},
        "golden": bm.GOLDEN_FILE,
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("dcclip-mobile")
    except Exception:  # not installed (running from a checkout)
        return "unknown"
