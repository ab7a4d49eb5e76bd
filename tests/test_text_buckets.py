"""Text length buckets: the Android text .pte holds a method per length (12, 16, 32, the context), sharing one copy
of the weights; a text runs in the shortest bucket that holds it, and the gate and the report cover each one."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import SAMPLE_TEXTS, drawn_images
from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.checkpoint import save_student
from dcclip_mobile.config import load_preset
from dcclip_mobile.data.fashion_mnist import CLASSES_EN, CLASSES_ZH
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.tokenizer import train_tokenizer
from lowering.encoders import example_inputs, make_encoder, shortest_bucket, text_lengths, used_length
from lowering.executorch_backend import LengthBucketRunner, PteRunner, lower_to_pte
from lowering.export import export_bundles
from lowering.inputs import CALIBRATION_TEMPLATES, EvalSet, image_inputs
from lowering.report import build_report
from lowering.scoring import fill

pytestmark = pytest.mark.slow
CONTEXT = 40
BUCKETS = (12, 16, 32, CONTEXT)  # four methods on a tiny tower


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(SAMPLE_TEXTS * 8, vocab_size=load_preset("tiny").text.vocab_size, context_length=CONTEXT)


@pytest.fixture(scope="module")
def model(tokenizer) -> DCCLIPStudent:
    torch.manual_seed(0)
    cfg = load_preset("tiny")
    cfg.text.vocab_size, cfg.text.context_length = tokenizer.vocab_size, CONTEXT
    return DCCLIPStudent(cfg).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model, tokenizer):
    out = tmp_path_factory.mktemp("buckets")
    images = drawn_images(16, 1)
    model.train()
    with torch.no_grad():  # real BatchNorm statistics, as training would leave them
        model.image(torch.cat([x for (x,) in image_inputs(images, model.cfg)]))
    model.eval()
    labels = {"en": list(CLASSES_EN), "zh": list(CLASSES_ZH)}
    texts = [(lang, fill(CALIBRATION_TEMPLATES[lang][0], labels[lang][i])) for i in range(4) for lang in ("en", "zh")]
    ckpt = save_student(model, tokenizer, out / "ckpt")
    result = export_bundles(model, tokenizer, ["android"], out / "bundles", {"android": ["fp32", "int8"]},
                            EvalSet(images[:8], images[8:], labels, texts), allow_parity_failure=True,
                            checkpoint=ckpt, measure_latency=True, log=lambda *_: None)
    return result.bundles["android"], result.manifests["android"]


def _text_artifacts(manifest: dict) -> dict[str, dict]:
    return {a["precision"]: a for a in manifest["artifacts"] if a["tower"] == "text"}


def test_forward_prefix_is_forward_for_texts_that_fit(model, tokenizer):
    checked = set()
    for text in ("a bag.", "a photo of a bag.", "一张包的照片。"):
        t = tokenizer([text])
        full = model.text(t["input_ids"], t["attention_mask"])[1]
        for L in [L for L in BUCKETS[:-1] if L >= used_length(t["attention_mask"])]:
            cut = model.text.forward_prefix(t["input_ids"][:, :L], t["attention_mask"][:, :L])[1]
            torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-5)
            checked.add(L)
    assert checked == set(BUCKETS[:-1])
    with pytest.raises(ValueError, match=f"expected an integer tensor \\[batch, {CONTEXT}\\]"):
        model.text.forward_prefix(torch.zeros(1, CONTEXT + 1, dtype=torch.long), torch.ones(1, CONTEXT + 1, dtype=torch.long))


def test_the_shortest_bucket_that_holds_a_text_is_picked():
    assert [shortest_bucket((16, 32, 40), n) for n in (1, 16, 17, 32, 33, 40)] == [16, 16, 32, 32, 40, 40]
    assert used_length(torch.tensor([[1, 0, 1, 0, 0]])) == 3 and used_length(torch.zeros(1, 4)) == 1
    with pytest.raises(ValueError, match="longer than every length bucket"):
        shortest_bucket((16, 32), 33)


def test_each_text_pte_holds_a_method_per_bucket_in_one_partition(exported):
    bundle, manifest = exported
    assert text_lengths(load_preset("tiny")) == (12, 16)  # a 16-token context has one bucket below it
    for precision, a in _text_artifacts(manifest).items():
        assert [(b["length"], b["method"]) for b in a["length_buckets"]] == [
            (12, "forward_12"), (16, "forward_16"), (32, "forward_32"), (CONTEXT, "forward")]
        assert all(b["delegate_partitions"] == 1 and b["latency_ms_host"] > 0 for b in a["length_buckets"])
        program = PteRunner(bundle / a["file"]).program
        assert set(program.method_names) == {"forward_12", "forward_16", "forward_32", "forward"}
        for b in a["length_buckets"]:
            assert PteRunner(bundle / a["file"], b["method"]).input_meta == [
                {"shape": [1, b["length"]], "dtype": "int64"}] * 2
    assert not any("length_buckets" in a for a in manifest["artifacts"] if a["tower"] == "image")


def test_a_text_runs_in_its_bucket_and_matches_the_eager_student(exported, model, tokenizer):
    bundle, manifest = exported
    a = _text_artifacts(manifest)["fp32"]
    runner = LengthBucketRunner(bundle / a["file"], {b["length"]: b["method"] for b in a["length_buckets"]})
    encoder = make_encoder(model, "text")
    lengths = set()
    texts = ["a bag."] + ["a photo of a 包, " * k for k in range(1, 16)]  # every length up to the context, mixed
    for k, text in enumerate(texts):
        t = tokenizer([text])
        lengths.add(shortest_bucket(BUCKETS, used_length(t["attention_mask"])))
        with torch.no_grad():
            got, want = runner(t["input_ids"], t["attention_mask"]), encoder(t["input_ids"], t["attention_mask"])
        assert float((got * want).sum()) > 0.9999, k
    assert lengths == set(BUCKETS)  # every bucket was exercised


def test_the_buckets_share_one_copy_of_the_weights(exported, model):
    bundle, manifest = exported
    single = lower_to_pte(make_encoder(model, "text"), example_inputs(model.cfg, "text"), "xnnpack")
    four = _text_artifacts(manifest)["fp32"]["size_bytes"]
    assert four < 1.15 * len(single.buffer), (four, len(single.buffer))


def test_the_gate_reports_every_length_group_in_both_languages(exported):
    _, manifest = exported
    for a in _text_artifacts(manifest).values():  # the gate's groups: tokenizer.LENGTH_BUCKETS, cut at the context
        assert set(a["parity"]["buckets"]) == {f"{lang} {g}" for lang in ("en", "zh") for g in ("1-16", "17-32", "33-49")}
        assert all(b["n"] > 0 for b in a["parity"]["buckets"].values())


def test_a_manifest_whose_buckets_break_the_rule_is_refused(exported, tmp_path):
    bundle, _ = exported
    copy = tmp_path / "android"
    shutil.copytree(bundle, copy)
    m = json.loads((copy / bm.MANIFEST_FILE).read_text())
    text = next(a for a in m["artifacts"] if "length_buckets" in a)
    for bad in ([{"length": 16, "method": "../../forward"}, {"length": CONTEXT, "method": "forward"}],
                [{"length": 32, "method": "forward_32"}],
                [{"length": 64, "method": "forward_64"}, {"length": CONTEXT, "method": "forward"}], "16"):
        text["length_buckets"] = bad
        (copy / bm.MANIFEST_FILE).write_text(json.dumps(m))
        with pytest.raises(bm.BundleError, match="length_buckets must be a list of"):
            bm.load_manifest(copy)


def test_the_report_times_each_bucket(exported, tmp_path):
    bundle, _ = exported
    d = tmp_path / "elevater"
    (d / "label.txt").parent.mkdir(parents=True)
    (d / "label.txt").write_text("\n".join(CLASSES_EN) + "\n")
    (d / "label_cn.txt").write_text("\n".join(CLASSES_ZH) + "\n", encoding="utf-8")
    for c, img in enumerate(drawn_images(10, 2)):
        (d / "test" / f"{c:03d}").mkdir(parents=True)
        img.save(d / "test" / f"{c:03d}" / "0.png")
    report = build_report(bundle, images=str(d), limit=None, runs=3, threads=2)
    rows = {e["name"]: e for e in report["artifacts"]}
    for name in ("text_encoder_xnnpack_fp32", "text_encoder_xnnpack_int8"):
        assert sorted(rows[name]["latency_ms_by_length"]) == list(BUCKETS)
        assert all(ms > 0 for ms in rows[name]["latency_ms_by_length"].values())
        assert rows[name]["accuracy"]["en"]["top1"] is not None
    assert rows["image_encoder_xnnpack_fp32"]["latency_ms_by_length"] is None


def test_a_bucket_no_calibration_text_fits_calibrates_on_every_text_cut_to_it(model):
    from lowering.towers import Tower

    ids = torch.arange(CONTEXT).reshape(1, CONTEXT)
    short = (ids, (ids < 10).long())  # 10 tokens
    long = (ids, (ids < 20).long())  # 20 tokens
    tower = Tower("text", model, [], [short, long], torch.zeros(0, 1), lengths=BUCKETS)
    assert [int(m.sum()) for _, m in tower.calibration(12)] == [10]  # the texts that fit, cut to the bucket
    assert [m.shape for _, m in tower.calibration(16)] == [torch.Size([1, 16])]
    only_long = Tower("text", model, [], [long], torch.zeros(0, 1), lengths=BUCKETS)
    assert [(i.shape, int(m.sum())) for i, m in only_long.calibration(12)] == [(torch.Size([1, 12]), 12)]
    assert only_long.calibration(None) == [long]
