"""The on-device report on a tiny exported bundle: every field for every artifact, a tampered bundle refused; the
held-out fidelity it carries from a summary.json or a heldout_eval file (fast: hand-written files), and whose it is."""
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
from dcclip_mobile.checkpoint import CHECKPOINT_FILES
from lowering.report import (ENTRY_FIELDS, ReportError, build_report, heldout_fidelity, load_eval, main, read_heldout,
                             to_markdown)

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


@pytest.mark.slow
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
    heldout = tmp_path / "heldout.json"  # a heldout_eval file naming the checkpoint the bundle was exported from
    ckpt = bundle.parent.parent / "ckpt"
    heldout.write_text(json.dumps({"teacher": TEACHER, "students": {str(ckpt): student(0.12)}}))
    assert main(["--bundle", str(bundle), "--images", str(elevater_dir), "--limit", "20", "--runs", "2",
                 "--device-json", str(device), "--heldout", str(heldout), "--out", str(tmp_path / "r")]) == 0
    written = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [s["is_bundle_checkpoint"] for s in written["heldout_fidelity"]["students"]] == [True]
    assert "## Held-out fidelity" in (tmp_path / "r" / "report.md").read_text()
    assert written["artifacts"][-1]["source"] == "device"
    assert written["artifacts"][-1]["scoring"] is None  # it measured latency only
    assert (tmp_path / "r" / "report.md").read_text().count("\n|") >= len(written["artifacts"]) + 1
    assert (tmp_path / "r" / "accuracy_vs_latency.png").stat().st_size > 1000
    assert (tmp_path / "r" / "accuracy_vs_size.png").stat().st_size > 1000


@pytest.mark.slow
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


@pytest.mark.slow
def test_default_scoring_is_the_manifest_rule(bundle, elevater_dir):
    """Host rows score as the phone does: with the manifest's templates, i.e. against the very class
    embeddings the bundle ships (the eager row reproduces a classifier using class_embeddings.json)."""
    manifest = bm.load_manifest(bundle)
    report = build_report(bundle, images=str(elevater_dir), limit=None, runs=2, threads=2)
    assert report["eval"]["templates"] == manifest["class_embeddings"]["templates"] == ONE_TEMPLATE
    assert report["eval"]["scoring"] == MANIFEST_RULE
    assert all(e["scoring"] == MANIFEST_RULE for e in report["artifacts"] if e["accuracy"])
    assert report["heldout_fidelity"] is None
    assert "Held-out fidelity (teacher and student zero-shot" in to_markdown(report)
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_templates_override_must_be_positive(bundle, elevater_dir, capsys):
    assert main(["--bundle", str(bundle), "--images", str(elevater_dir), "--templates", "0"]) == 2
    assert "--templates must be >= 1" in capsys.readouterr().err


# ------------------------------------------------------------------------- held-out fidelity (fast, no bundle)
TEACHER = {"teacher_id": "offline-test", "sets": {"a": {}, "b": {}},
           "mean": {"en": {"zero_shot": 0.20}, "zh": {"zero_shot": 0.15}, "chance": 0.05}}


def student(en: float, zh: float = 0.10, interval: bool = False, stated: bool = True) -> dict:
    """A student's held-out result as heldout_eval / the demo write it (the fields the report reads, and others)."""
    r = {"sets": {"a": {}}, "mean": {"en": {"zero_shot": en, "seen": 0.5}, "zh": {"zero_shot": zh}, "chance": 0.05},
         "fidelity_mean": {"en": {"retention": 0.9, "agreement": 0.61}, "zh": {"retention": 0.9, "agreement": 0.52},
                           "image_cosine": 0.8},
         "wall_s": 1.0}
    if stated:
        r["retention_of_means"] = {"en": (en - 0.05) / 0.15, "zh": (zh - 0.05) / 0.10}
    if interval:
        r["retention_interval_90"] = {"en": [0.33, 0.66], "zh": None}
    return r


def fake_checkpoint(d, tag: str):
    d.mkdir(parents=True)
    for f in CHECKPOINT_FILES:
        (d / f).write_text(f"{tag} {f}")
    return d


def bare_report(heldout) -> dict:
    """to_markdown's input without measuring anything: no artifacts, the held-out section under test."""
    return {"target": "android", "eval": {"dataset": "x", "images": 0, "templates": ONE_TEMPLATE, "scoring": "r"},
            "host": {"threads": 1, "runs": 1, "warmup": 5}, "artifacts": [], "heldout_fidelity": heldout}


def test_heldout_summary_json_rows_per_stage_and_whose_checkpoint(tmp_path):
    """A demo summary.json: one row per stage with its figures; the stage whose files match the manifest's
    sha256 is this bundle's, the other is said not to be."""
    s1 = fake_checkpoint(tmp_path / "stage1" / "checkpoint", "one")
    s2 = fake_checkpoint(tmp_path / "stage2" / "checkpoint", "two")
    manifest = {"student": {"checkpoint": str(s2), "checkpoint_sha256": {f: bm.file_sha256(s2 / f)
                                                                        for f in CHECKPOINT_FILES}}}
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"protocol": {}, "teacher": TEACHER, "checkpoint": str(s2), "stages": {
        "assets": {"wall_s": 1.0},
        "distill": {"wall_s": 1.0, "checkpoint": str(s1), "heldout": student(0.14, 0.12, interval=True)},
        "align": {"wall_s": 1.0, "checkpoint": str(s2), "heldout": student(0.11, 0.08)}}}))
    h = heldout_fidelity(read_heldout(summary), tmp_path / "bundle", manifest, None)
    assert h["format"] == "train.demo summary.json" and h["sets"] == 2 and h["chance"] == 0.05
    assert h["teacher"]["zero_shot"] == {"en": 0.20, "zh": 0.15}
    one, two = h["students"]
    assert (one["name"], one["checkpoint"], two["name"]) == ("stage 1", str(s1), "stage 2")
    assert one["zero_shot"] == {"en": 0.14, "zh": 0.12}
    assert one["retention"]["en"] == pytest.approx(0.6) and one["retention"]["zh"] == pytest.approx(0.7)
    assert one["retention_interval_90"] == {"en": [0.33, 0.66], "zh": None}
    assert two["retention_interval_90"] == {"en": None, "zh": None}  # a summary from before the interval
    assert one["agreement"] == {"en": 0.61, "zh": 0.52}
    assert (one["is_bundle_checkpoint"], two["is_bundle_checkpoint"]) == (False, True)
    assert "is stage 2" in h["note"]
    json.dumps(h)  # report.json carries it as is

    md = to_markdown(bare_report(h))
    assert "## Held-out fidelity" in md and "mean over 2 sets" in md
    assert "| teacher | | | 20.0% | 15.0% | 5.0% |" in md
    assert (f"| stage 1 | `{s1}` | no: sha256 differs from the manifest's | 14.0% | 12.0% | 5.0% | 60% (33% to 66%) "
            "| 70% | 61.0% | 52.0% |") in md
    assert f"| stage 2 | `{s2}` | yes: sha256 matches the manifest | 11.0% | 8.0% | 5.0% | 40% | 30% |" in md


def test_heldout_eval_json_rows_per_checkpoint_and_mismatch_note(tmp_path):
    """A heldout_eval file: one row per checkpoint; none of them is the bundle's (one differs by sha256, one
    is not here to check but has the manifest's path, one is elsewhere), and the note says so."""
    ours = fake_checkpoint(tmp_path / "run" / "stage2" / "checkpoint", "ours")
    other = fake_checkpoint(tmp_path / "run" / "stage1" / "checkpoint", "other")
    manifest = {"student": {"checkpoint": str(tmp_path / "gone" / "checkpoint"),
                            "checkpoint_sha256": {f: bm.file_sha256(ours / f) for f in CHECKPOINT_FILES}}}
    f = tmp_path / "heldout.json"
    f.write_text(json.dumps({"teacher": TEACHER, "students": {
        str(other): student(0.08, interval=True), str(tmp_path / "gone" / "checkpoint"): student(0.125, stated=False),
        "elsewhere/checkpoint": student(0.05, 0.15)}}, ensure_ascii=False))
    h = heldout_fidelity(read_heldout(f), tmp_path / "bundle", manifest, None)
    assert h["format"] == "train.heldout_eval --json"
    rows = {s["checkpoint"]: s for s in h["students"]}
    assert [s["name"] for s in h["students"]] == ["stage1", "gone", "elsewhere"]
    assert rows[str(other)]["is_bundle_checkpoint"] is False
    gone = rows[str(tmp_path / "gone" / "checkpoint")]
    assert gone["is_bundle_checkpoint"] is None and "the path this bundle's checkpoint has, unverified" in gone[
        "checkpoint_check"]
    assert gone["retention"]["en"] == pytest.approx(0.5)  # no retention_of_means stated: computed from the means
    assert rows["elsewhere/checkpoint"]["retention"] == {"en": pytest.approx(0.0), "zh": pytest.approx(1.0)}
    assert h["note"].startswith("None of these rows is shown to be this bundle's checkpoint")
    assert "gone, elsewhere could not be checked" in h["note"]
    assert "python -m train.heldout_eval --checkpoint C --json F" in h["note"]

    md = to_markdown(bare_report(h))
    assert "| gone | " in md and "| unknown: the path this bundle's checkpoint has, unverified" in md
    assert "| 50% | 50% | 61.0% | 52.0% |" in md
    assert "None of these rows is shown to be this bundle's checkpoint" in md

    md = to_markdown(bare_report(None))  # not given: one line that says how to get it
    assert "## Held-out fidelity" not in md
    assert ("was not given: run `python -m train.heldout_eval --checkpoint C --json F` (C: the checkpoint this bundle "
            "was exported from), then `--heldout F`") in md


def test_heldout_file_errors_name_the_path_and_the_shapes(tmp_path, capsys):
    def bad(name: str, text: str | None, match: str):
        p = tmp_path / name
        if text is not None:
            p.write_text(text)
        with pytest.raises(ReportError, match=match) as e:
            read_heldout(p)
        assert str(p) in str(e.value)
        return p

    expected = "expected a train.demo summary.json"
    bad("missing.json", None, f"is not there; {expected}")
    bad("pickle.pkl", "\x80\x04not json", f"is not JSON .*; {expected}")
    bad("list.json", "[1, 2]", f"neither held-out shape: {expected}")
    bad("report.json", json.dumps({"artifacts": [], "eval": {}}), "neither held-out shape")
    bad("no_students.json", json.dumps({"teacher": TEACHER, "students": {}}), "holds no student's result")
    bad("no_stage.json", json.dumps({"teacher": TEACHER, "stages": {"assets": {"wall_s": 1}}}),
        "no stage's held-out result")
    no_chance = {**TEACHER, "mean": {"en": {"zero_shot": 0.2}, "zh": {"zero_shot": 0.1}}}
    bad("no_chance.json", json.dumps({"teacher": no_chance, "students": {"c": student(0.1)}}),
        "mean.chance of teacher is missing")
    for name, value in (("text", "0.1"), ("bool", True), ("range", 7.0)):
        r = student(0.1)
        r["mean"]["zh"]["zero_shot"] = value
        bad(f"{name}.json", json.dumps({"teacher": TEACHER, "students": {"c": r}}),
            "mean.zh.zero_shot of student 'c' is .*expected a fraction in \\[0, 1\\]")
    bad("nan.json", json.dumps({"teacher": TEACHER, "students": {"c": student(float("nan"))}}),
        "mean.en.zero_shot of student 'c' is nan")
    r = student(0.1)
    r["retention_interval_90"] = {"en": [0.5, "x"]}
    bad("interval.json", json.dumps({"teacher": TEACHER, "students": {"c": r}}),
        "retention_interval_90.en of student 'c' is \\[0.5, 'x'\\]; expected \\[lo, hi\\] or null")

    # the CLI says it in one line, exit 2, before it looks at the bundle or measures anything
    assert main(["--bundle", str(tmp_path / "no-bundle"), "--heldout", str(tmp_path / "list.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --heldout") and str(tmp_path / "list.json") in err and err.count("\n") == 1


def test_a_bundle_with_towers_in_different_precisions_scores_the_pair_the_app_runs():
    from lowering.report import partner_artifact

    def art(tower, precision, default=False, backend="xnnpack"):
        return {"tower": tower, "backend": backend, "precision": precision, "default": default}

    image_fp32, text_fp32 = art("image", "fp32", True), art("text", "fp32")
    text_dyn, coreml_text = art("text", "int8-dynamic", True), art("text", "fp16", True, "coreml")
    manifest = {"artifacts": [image_fp32, text_fp32, text_dyn, coreml_text]}
    assert partner_artifact(manifest, image_fp32, "text") is text_fp32  # same precision first
    assert partner_artifact(manifest, text_dyn, "image") is image_fp32  # else that backend's default
    manifest = {"artifacts": [image_fp32, text_dyn, coreml_text]}
    assert partner_artifact(manifest, image_fp32, "text") is text_dyn
    assert partner_artifact(manifest, coreml_text, "image") is None  # no Core ML image artifact at all
