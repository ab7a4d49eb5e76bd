"""The on-device report on a tiny exported bundle: every field for every artifact, a tampered bundle refused."""
import json

import pytest
import torch
from PIL import Image, ImageDraw

from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.assets import assets_present
from dcclip_mobile.checkpoint import load_student, save_student
from dcclip_mobile.data.fashion_mnist import CLASSES_EN, CLASSES_ZH
from dcclip_mobile.zeroshot import topk_accuracy
from lowering.export import export_bundles
from lowering.report import ENTRY_FIELDS, ReportError, build_report, load_eval, main

pytestmark = pytest.mark.slow
ONE_TEMPLATE = {"en": ["a photo of a {c}."], "zh": ["一张{c}的照片。"]}
MANIFEST_RULE = "manifest templates (1 per language)"


@pytest.fixture(scope="module")
def elevater_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("elevater")
    (d / "label.txt").write_text("\n".join(CLASSES_EN) + "\n")
    (d / "label_cn.txt").write_text("\n".join(CLASSES_ZH) + "\n", encoding="utf-8")
    for c in range(10):
        (d / "test" / f"{c:03d}").mkdir(parents=True)
        for k in range(2):
            img = Image.new("RGB", (36, 30), (20 * c, 255 - 20 * c, 40 * k))
            ImageDraw.Draw(img).ellipse((c, k * 3, 20 + c, 25), fill=(255, 255 - 25 * c, 0))
            img.save(d / "test" / f"{c:03d}" / f"{k}.png")
    return d


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_tokenizer, elevater_dir):
    from lowering.inputs import EvalSet, CALIBRATION_TEMPLATES
    from lowering.scoring import fill
    from dcclip_mobile.data.elevater import ElevaterFolder

    torch.manual_seed(0)
    from dcclip_mobile.config import load_preset
    from dcclip_mobile.models import DCCLIPStudent
    cfg = load_preset("tiny")
    cfg.text.vocab_size = tiny_tokenizer.vocab_size
    model = DCCLIPStudent(cfg)
    src = ElevaterFolder(elevater_dir)
    images = [src.image(i) for i in range(len(src))]
    from lowering.inputs import image_inputs
    model.train()
    with torch.no_grad():  # real BatchNorm statistics, as training would leave them
        model.image(torch.cat([x for (x,) in image_inputs(images, cfg)]))
    model.eval()
    out = tmp_path_factory.mktemp("report")
    ckpt = save_student(model, tiny_tokenizer, out / "ckpt")
    labels = {"en": list(CLASSES_EN), "zh": list(CLASSES_ZH)}
    texts = [(lang, fill(CALIBRATION_TEMPLATES[lang][0], labels[lang][i])) for i in range(4) for lang in ("en", "zh")]
    export_bundles(model, tiny_tokenizer, ["android"], out / "bundles", {"android": ["fp32", "int8"]},
                   EvalSet(images[:8], images[8:], labels, texts), allow_parity_failure=True, checkpoint=ckpt,
                   measure_latency=False, log=lambda *_: None)
    return out / "bundles" / "android"


def test_report_has_every_field_for_every_artifact(bundle, elevater_dir, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = build_report(bundle, images=str(elevater_dir), limit=None, runs=3, threads=2, templates=ONE_TEMPLATE)
        assert torch.get_num_threads() == 1  # the report timed on 2 threads and put the caller's setting back
    finally:
        torch.set_num_threads(before)
    assert report["eval"]["scoring"] == "given templates (1 per language)"
    names = [e["name"] for e in report["artifacts"]]
    assert "image_encoder_eager_fp32" in names and "text_encoder_eager_fp32" in names
    ptes = [e for e in report["artifacts"] if e["backend"] == "xnnpack"]
    assert {(e["tower"], e["precision"]) for e in ptes} == {(t, p) for t in ("image", "text") for p in ("fp32", "int8")}
    for e in report["artifacts"]:
        assert set(ENTRY_FIELDS) <= set(e), e["name"]
        assert e["latency_ms_median"] > 0 and e["latency_ms_p90"] >= e["latency_ms_median"]
        for lang in ("en", "zh"):
            assert 0 <= e["accuracy"][lang]["top1"] <= e["accuracy"][lang]["top5"] <= 1
    for e in report["artifacts"]:
        assert e["scoring"] == "given templates (1 per language)", e["name"]
    for e in ptes:
        assert e["size_bytes"] > 0 and e["peak_memory_bytes"] is not None and e["parity"]["mean_cosine"] > 0.9
    # fp32 .pte and the eager student give the same zero-shot answers
    eager = next(e for e in report["artifacts"] if e["name"] == "image_encoder_eager_fp32")
    fp32 = next(e for e in ptes if e["tower"] == "image" and e["precision"] == "fp32")
    assert fp32["accuracy"] == eager["accuracy"]

    device = tmp_path / "device.json"
    device.write_text(json.dumps({"artifacts": [{"name": "image_encoder_xnnpack_int8", "backend": "xnnpack",
                                                 "precision": "int8", "latency_ms_median": 4.2, "tower": "image"}]}))
    assert main(["--bundle", str(bundle), "--images", str(elevater_dir), "--limit", "20", "--runs", "2",
                 "--device-json", str(device), "--out", str(tmp_path / "r")]) == 0
    written = json.loads((tmp_path / "r" / "report.json").read_text())
    assert written["artifacts"][-1]["source"] == "device"
    assert written["artifacts"][-1]["scoring"] is None  # it measured latency only
    assert (tmp_path / "r" / "report.md").read_text().count("\n|") >= len(written["artifacts"]) + 1
    assert (tmp_path / "r" / "accuracy_vs_latency.png").stat().st_size > 1000
    assert (tmp_path / "r" / "accuracy_vs_size.png").stat().st_size > 1000


def test_tampered_bundle_is_refused(bundle, elevater_dir, tmp_path, capsys):
    import shutil
    copy = tmp_path / "android"
    shutil.copytree(bundle, copy)
    pte = next(copy.glob("image_encoder_*int8.pte"))
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pte.write_bytes(bytes(data))
    with pytest.raises(ReportError, match="sha256 differs"):
        build_report(copy, images=str(elevater_dir), runs=1)
    assert main(["--bundle", str(copy), "--images", str(elevater_dir)]) == 2
    assert "refusing" in capsys.readouterr().err


def test_default_scoring_is_the_manifest_rule(bundle, elevater_dir):
    """Host rows score as the phone does: with the manifest's templates, i.e. against the very class
    embeddings the bundle ships (the eager row reproduces a classifier using class_embeddings.json)."""
    manifest = bm.load_manifest(bundle)
    report = build_report(bundle, images=str(elevater_dir), limit=None, runs=2, threads=2)
    assert report["eval"]["templates"] == manifest["class_embeddings"]["templates"] == ONE_TEMPLATE
    assert report["eval"]["scoring"] == MANIFEST_RULE
    assert all(e["scoring"] == MANIFEST_RULE for e in report["artifacts"] if e["accuracy"])
    shipped = json.loads((bundle / bm.CLASS_EMBEDDINGS_FILE).read_text(encoding="utf-8"))
    model, _ = load_student(manifest["student"]["checkpoint"])
    pixels, labels, classes, _ = load_eval(str(elevater_dir), None, manifest["image"]["preprocess"])
    assert classes["en"] == shipped["labels_en"]
    with torch.no_grad():
        emb = model.encode_image(pixels)
    eager = next(e for e in report["artifacts"] if e["name"] == "image_encoder_eager_fp32")
    for lang in ("en", "zh"):
        phone = topk_accuracy(emb, torch.tensor(shipped[f"embeddings_{lang}"]), labels)
        assert eager["accuracy"][lang] == pytest.approx(phone), lang


@pytest.mark.needs(assets_present("bilingual-labels"), "--templates N needs the bilingual-labels asset")
def test_templates_override_is_stated_per_row(bundle, elevater_dir, tmp_path):
    device = tmp_path / "device.json"
    device.write_text(json.dumps([{"name": "image_encoder_xnnpack_fp32", "backend": "xnnpack", "precision": "fp32",
                                   "tower": "image", "latency_ms_median": 3.0,
                                   "accuracy": {"en": {"top1": 0.5, "top5": 1.0}, "zh": {"top1": 0.4, "top5": 1.0}}}]))
    assert main(["--bundle", str(bundle), "--images", str(elevater_dir), "--runs", "2", "--templates", "2",
                 "--device-json", str(device), "--out", str(tmp_path / "r")]) == 0
    written = json.loads((tmp_path / "r" / "report.json").read_text())
    host = [e for e in written["artifacts"] if e["source"] == "host" and e["accuracy"]]
    assert host and all(e["scoring"] == "first 2 CLIP templates" for e in host)
    assert [len(ts) for ts in written["eval"]["templates"].values()] == [2, 2]
    assert written["artifacts"][-1]["scoring"] == MANIFEST_RULE  # what the phone app measured with
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| first 2 CLIP templates |" in md and f"| {MANIFEST_RULE} |" in md
    assert "scored by different rules" in md


def test_templates_override_must_be_positive(bundle, elevater_dir, capsys):
    assert main(["--bundle", str(bundle), "--images", str(elevater_dir), "--templates", "0"]) == 2
    assert "--templates must be >= 1" in capsys.readouterr().err
