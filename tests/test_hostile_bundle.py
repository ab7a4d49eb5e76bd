"""Hostile bundles against the Python readers (bundle_manifest, lowering.report, lowering.verify_coreml): the one
path rule, the report's checkpoint (used only when its sha256 matches, found relative to the bundle), one-line
errors with exit code 2, verify_coreml never touching files outside or inside, permissions of what export
writes. One tiny export (android fp32 + ios fp16) per module; each case works on a copy made bad one way."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from conftest import drawn_images, require
from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.checkpoint import save_student
from dcclip_mobile.config import load_preset
from dcclip_mobile.data.fashion_mnist import CLASSES_EN, CLASSES_ZH
from dcclip_mobile.models import DCCLIPStudent

pytestmark = pytest.mark.slow
SECRET = "SECRET-OUTSIDE-THE-BUNDLE"


@pytest.fixture(scope="module")
def elevater_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("elevater")
    (d / "label.txt").write_text("\n".join(CLASSES_EN) + "\n")
    (d / "label_cn.txt").write_text("\n".join(CLASSES_ZH) + "\n", encoding="utf-8")
    for c, img in enumerate(drawn_images(10, 3)):
        (d / "test" / f"{c:03d}").mkdir(parents=True)
        img.save(d / "test" / f"{c:03d}" / "0.png")
    return d


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_tokenizer):
    """root/ckpt (the checkpoint) and root/bundles/{android,ios}, exported under umask 022."""
    from lowering.export import export_bundles
    from lowering.inputs import CALIBRATION_TEMPLATES, EvalSet, image_inputs
    from lowering.scoring import fill

    torch.manual_seed(0)
    cfg = load_preset("tiny")
    cfg.text.vocab_size = tiny_tokenizer.vocab_size
    model = DCCLIPStudent(cfg)
    images = drawn_images(12, 1)
    model.train()
    with torch.no_grad():
        model.image(torch.cat([x for (x,) in image_inputs(images, cfg)]))
    model.eval()
    root = tmp_path_factory.mktemp("hostile")
    old = os.umask(0o022)
    try:
        ckpt = save_student(model, tiny_tokenizer, root / "ckpt")
        labels = {"en": list(CLASSES_EN), "zh": list(CLASSES_ZH)}
        texts = [(lang, fill(CALIBRATION_TEMPLATES[lang][0], labels[lang][i])) for i in range(3) for lang in ("en", "zh")]
        export_bundles(model, tiny_tokenizer, ["android", "ios"], root / "bundles",
                       {"android": ["fp32"], "ios": ["fp16"]}, EvalSet(images[:4], images[4:], labels, texts),
                       allow_parity_failure=True, checkpoint=ckpt, measure_latency=False, log=lambda *_: None)
    finally:
        os.umask(old)
    return root


@pytest.fixture()
def copy(exported, tmp_path):
    """A copy of root (checkpoint and both bundles, same layout), with an outside file holding a secret."""
    dst = tmp_path / "root"
    shutil.copytree(exported, dst, symlinks=True)
    (tmp_path / "outside").write_text('{"' + SECRET + '": [1, 2, oops ' + SECRET + "]}")
    return dst


def android(root: Path) -> Path:
    return root / "bundles" / "android"


def ios(root: Path) -> Path:
    return root / "bundles" / "ios"


def edit(bundle: Path, change) -> None:
    path = bundle / bm.MANIFEST_FILE
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m, ensure_ascii=False, indent=1))


def relist(bundle: Path, rel: str) -> None:
    """Put a changed file's sha256 and size in the manifest, as an attacker who edits both would."""
    edit(bundle, lambda m: m["files"].__setitem__(rel, {"sha256": bm.file_sha256(bundle / rel),
                                                        "size_bytes": (bundle / rel).stat().st_size}))


def report_cli(bundle: Path, capsys, *extra: str) -> tuple[int, str]:
    from lowering.report import main

    code = main(["--bundle", str(bundle), "--images", "nowhere-not-reached", *extra])
    err = capsys.readouterr().err
    return code, err


def assert_one_line_refusal(code: int, err: str, *must: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert SECRET not in err
    for m in must:
        assert m in err, err


# ------------------------------------------------------------------------------------ 1. the path rule
@pytest.mark.parametrize("field, value, message", [
    ("tokenizer", "../../outside", "manifest text.tokenizer.json is '../../outside', which is not a relative path"),
    ("tokenizer", "/etc/passwd", "manifest text.tokenizer.json is '/etc/passwd', which is not a relative path"),
    ("class_embeddings", "/etc/passwd", "manifest class_embeddings.file is '/etc/passwd'"),
    ("class_embeddings", "../../../outside", "manifest class_embeddings.file is '../../../outside'"),
    ("golden", "../../../outside", "manifest golden is '../../../outside'"),
    ("golden", "golden/../golden.json", "which is not a relative path"),
    ("golden", "unlisted.json", "which the manifest's file table does not list with a sha256"),
    ("artifact", "../../../outside", "manifest artifacts[0].file is '../../../outside'"),
    ("artifact", "/etc/passwd", "manifest artifacts[0].file is '/etc/passwd'"),
    ("artifact", "unlisted.pte", "does not list with a sha256"),
])
def test_path_rule_manifest_path_outside_or_unlisted_is_refused_before_opening(copy, capsys, field, value, message):
    bundle = android(copy)
    (bundle / "unlisted.json").write_text('{"x": "' + SECRET + '"}')

    def change(m):
        if field == "tokenizer":
            m["text"]["tokenizer"]["json"] = value
        elif field == "class_embeddings":
            m["class_embeddings"]["file"] = value
        elif field == "golden":
            m["golden"] = value
        else:
            m["artifacts"][0]["file"] = value
    edit(bundle, change)
    with pytest.raises(bm.BundleError, match="refusing to open it") as e:
        bm.load_manifest(bundle)
    assert message in str(e.value) and SECRET not in str(e.value)
    assert_one_line_refusal(*report_cli(bundle, capsys), message)


def test_path_rule_file_table_key_outside_the_bundle_is_refused(copy):
    bundle = android(copy)
    edit(bundle, lambda m: m["files"].__setitem__("../../outside", m["files"]["golden.json"]))
    with pytest.raises(bm.BundleError, match=r"files key is '../../outside', which is not a relative path"):
        bm.load_manifest(bundle)


def test_path_rule_golden_json_image_outside_the_bundle_is_refused(copy):
    bundle = android(copy)
    g = json.loads((bundle / "golden.json").read_text())
    g["images"][0]["file"] = "../../outside"
    (bundle / "golden.json").write_text(json.dumps(g))
    relist(bundle, "golden.json")
    assert bm.verify_files(bundle) == []  # the manifest is consistent: only the rule can refuse
    with pytest.raises(bm.BundleError, match=r"golden.json images\[0\].file is '../../outside'"):
        bm.load_golden(bundle)


def test_path_rule_symlink_in_the_bundle_is_refused_and_never_read(copy, tmp_path):
    bundle = android(copy)
    real = tmp_path / "tokenizer-real.json"
    shutil.move(bundle / "tokenizer.json", real)
    (bundle / "tokenizer.json").symlink_to(real)  # same bytes: its sha256 would match
    problems = bm.verify_files(bundle)
    assert problems == ["tokenizer.json: a symbolic link; a bundle holds regular files only"]
    with pytest.raises(bm.BundleError, match="resolves outside the bundle"):
        bm.bundle_path(bundle, bm.load_manifest(bundle), "tokenizer.json", "manifest text.tokenizer.json")


def test_path_rule_the_untouched_bundles_pass(exported):
    for b in (android(exported), ios(exported)):
        m = bm.load_manifest(b)
        assert bm.verify_files(b, m) == []
        golden = bm.load_golden(b, m)
        assert all(bm.golden_image_path(b, m, g, k).is_file() for k, g in enumerate(golden["images"]))
        for a in m["artifacts"]:
            assert bm.bundle_path(b, m, a["file"], "artifact", directory_ok=True).exists()


# --------------------------------------------------------------- 10. one-line errors of the lowering runners
def test_report_artifact_without_file_is_a_one_line_error(copy, capsys):
    edit(android(copy), lambda m: m["artifacts"][0].pop("file"))
    assert_one_line_refusal(*report_cli(android(copy), capsys), "artifacts[0] lacks \"file\"")


@pytest.mark.parametrize("entry, shown", [("abc", "'abc'"), ({"sha256": "x"}, "'sha256': 'x'"),
                                          ({"sha256": "0" * 64, "size_bytes": "12"}, "'size_bytes': '12'"),
                                          (None, "None")])
def test_report_malformed_file_table_entry_is_a_one_line_error(copy, capsys, entry, shown):
    edit(android(copy), lambda m: m["files"].__setitem__("golden.json", entry))
    assert_one_line_refusal(*report_cli(android(copy), capsys), "files['golden.json'] must be", shown)


def test_report_pte_that_fails_to_load_is_a_one_line_error(copy, capsys, elevater_dir):
    bundle = android(copy)
    pte = next(bundle.glob("image_encoder_*.pte"))
    pte.write_bytes(b"not a program " * 100)
    relist(bundle, pte.name)  # consistent with the manifest: the runtime itself refuses it
    from lowering.report import main

    code = main(["--bundle", str(bundle), "--images", str(elevater_dir), "--runs", "1", "--out", str(copy / "r")])
    assert_one_line_refusal(code, capsys.readouterr().err, pte.name, "cannot be loaded by the ExecuTorch runtime")


def test_report_device_json_that_is_a_directory_is_refused_before_computing(copy, capsys, tmp_path):
    assert_one_line_refusal(*report_cli(android(copy), capsys, "--device-json", str(tmp_path)),
                            "--device-json", "is a directory")
    (tmp_path / "d.json").write_text("{not json")
    assert_one_line_refusal(*report_cli(android(copy), capsys, "--device-json", str(tmp_path / "d.json")),
                            "is not JSON")


def test_report_out_that_is_a_file_is_refused_before_computing(copy, capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_line_refusal(*report_cli(android(copy), capsys, "--out", str(tmp_path / "file")), "is a file")
    assert_one_line_refusal(*report_cli(android(copy), capsys, "--out", str(tmp_path / "file" / "sub")),
                            "cannot be made")


def _read_only_dir(tmp_path: Path) -> Path:
    """A directory this process cannot write in: chmod 555, or (root ignores modes) a read-only mount."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        return d
    for d in (Path("/sys/kernel"), Path("/proc/self")):
        try:
            (d / ".probe").write_text("")
        except OSError:
            return d
    # root ignores file modes, so the test needs a read-only mount; CI's containers have /sys or /proc read-only
    require(False, "running as root with no read-only directory to try (no read-only /sys/kernel or /proc/self)")


def test_report_read_only_out_dir_is_refused_before_computing(copy, capsys, tmp_path):
    ro = _read_only_dir(tmp_path)
    assert_one_line_refusal(*report_cli(android(copy), capsys, "--out", str(ro)), "cannot be written")


@pytest.mark.parametrize("flag, value", [("--threads", "-1"), ("--limit", "0"), ("--runs", "0")])
def test_report_bad_numbers_are_one_line_errors(copy, capsys, flag, value):
    assert_one_line_refusal(*report_cli(android(copy), capsys, flag, value), f"{flag} {value}: must be >= 1")


def test_export_read_only_or_file_out_is_refused_before_exporting(copy, capsys, tmp_path):
    from lowering.export import main

    ro = _read_only_dir(tmp_path)
    code = main(["--target", "android", "--checkpoint", str(copy / "ckpt"), "--out", str(ro)])
    assert_one_line_refusal(code, capsys.readouterr().err, "--out", "cannot be written")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "android").write_text("a file where the bundle goes")
    code = main(["--target", "android", "--checkpoint", str(copy / "ckpt"), "--out", str(tmp_path / "o")])
    assert_one_line_refusal(code, capsys.readouterr().err, "is a file")
    assert (tmp_path / "o" / "android").read_text() == "a file where the bundle goes"


def test_export_checkpoint_config_of_the_wrong_type_is_a_one_line_error(copy, capsys, tmp_path):
    from lowering.export import main

    cfg = json.loads((copy / "ckpt" / "config.json").read_text())
    cfg["embed_dim"] = "64"
    (copy / "ckpt" / "config.json").write_text(json.dumps(cfg))
    code = main(["--target", "android", "--checkpoint", str(copy / "ckpt"), "--out", str(tmp_path / "o")])
    assert_one_line_refusal(code, capsys.readouterr().err, "'embed_dim' must be an integer, got \"64\"")


# --------------------------------------------------------------------- 3. the report's eager checkpoint
def test_report_checkpoint_is_stored_relative_to_the_bundle_at_export(exported):
    student = bm.load_manifest(android(exported))["student"]
    assert student["checkpoint_from_bundle"] == "../../ckpt"
    assert set(student["checkpoint_sha256"]) == {"config.json", "model.safetensors", "tokenizer.model",
                                                 "tokenizer.json"}


def test_report_finds_the_manifest_checkpoint_relative_to_the_bundle_from_another_directory(copy, elevater_dir,
                                                                                            tmp_path, monkeypatch):
    from lowering.report import build_report, manifest_checkpoint

    bundle = android(copy)
    # as given at export: relative to a directory this run is not in (the case)
    edit(bundle, lambda m: m["student"].__setitem__("checkpoint", "runs/demo/stage2/checkpoint"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    found, why = manifest_checkpoint(bundle, bm.load_manifest(bundle))
    assert found is not None and found.resolve() == (copy / "ckpt").resolve(), why
    report = build_report(bundle, images=str(elevater_dir), limit=None, runs=1, threads=1)
    assert "image_encoder_eager_fp32" in [e["name"] for e in report["artifacts"]]
    assert Path(report["eager_checkpoint"]).resolve() == (copy / "ckpt").resolve()


def test_report_refuses_a_manifest_checkpoint_whose_sha256_differs(copy, elevater_dir, tiny_tokenizer, capsys):
    from lowering.report import build_report

    torch.manual_seed(123)  # another student at the same path: the wrong model for this bundle
    cfg = load_preset("tiny")
    cfg.text.vocab_size = tiny_tokenizer.vocab_size
    save_student(DCCLIPStudent(cfg).eval(), tiny_tokenizer, copy / "ckpt")
    edit(android(copy), lambda m: m["student"].__setitem__("checkpoint", str(copy / "ckpt")))
    report = build_report(android(copy), images=str(elevater_dir), limit=None, runs=1, threads=1)
    assert "image_encoder_eager_fp32" not in [e["name"] for e in report["artifacts"]]
    assert report["eager_checkpoint"] is None
    err = capsys.readouterr().err
    assert "no eager row" in err and "differs from the sha256 the manifest recorded" in err
    assert "Pass --checkpoint DIR" in err


def test_report_explicit_checkpoint_that_is_not_the_bundles_is_used_and_noted(copy, tiny_tokenizer, capsys):
    from lowering.report import eager_checkpoint

    torch.manual_seed(7)
    cfg = load_preset("tiny")
    cfg.text.vocab_size = tiny_tokenizer.vocab_size
    other = save_student(DCCLIPStudent(cfg).eval(), tiny_tokenizer, copy / "other")
    notes = []
    m = bm.load_manifest(android(copy))
    assert eager_checkpoint(android(copy), m, str(other), log=notes.append) == str(other)
    assert notes and "not the checkpoint this bundle was exported from" in notes[0]
    assert eager_checkpoint(android(copy), m, str(copy / "ckpt"), log=notes.append) == str(copy / "ckpt")
    assert len(notes) == 1


def test_report_manifest_without_checkpoint_hashes_gives_no_eager_row(copy):
    from lowering.report import manifest_checkpoint

    edit(android(copy), lambda m: m["student"].__setitem__("checkpoint_sha256", {}))
    found, why = manifest_checkpoint(android(copy), bm.load_manifest(android(copy)))
    assert found is None and "no sha256" in why


# --------------------------------------------------------------------------------- 5. verify_coreml
def _snapshot(root: Path) -> dict[str, tuple]:
    return {p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_verify_coreml_never_rewrites_a_file_of_the_bundle(copy, capsys):
    from lowering.verify_coreml import main

    before = _snapshot(ios(copy))
    assert main([str(ios(copy))]) == 0, capsys.readouterr()
    assert _snapshot(ios(copy)) == before  # Manifest.json of each package included: same inode, time, bytes


@pytest.mark.parametrize("value", ["../../outside.mlpackage", "/tmp/outside.mlpackage"])
def test_verify_coreml_mlpackage_path_outside_the_bundle_is_refused_untouched(copy, capsys, value, tmp_path):
    from lowering.verify_coreml import main

    bundle = ios(copy)
    pkg = next(a["file"] for a in bm.load_manifest(bundle)["artifacts"] if a["format"] == "mlpackage")
    target = (bundle / value) if not value.startswith("/") else tmp_path / "outside.mlpackage"
    value = value if not value.startswith("/") else str(target)
    shutil.copytree(bundle / pkg, target)
    before = _snapshot(target)
    edit(bundle, lambda m: next(a for a in m["artifacts"] if a["file"] == pkg).__setitem__("file", value))
    code = main([str(bundle)])
    assert_one_line_refusal(code, capsys.readouterr().err, "not a relative path inside the bundle")
    assert _snapshot(target) == before


def test_verify_coreml_package_manifest_naming_a_spec_outside_is_refused(copy, capsys):
    from lowering.verify_coreml import verify

    bundle = ios(copy)
    pkg = next(a["file"] for a in bm.load_manifest(bundle)["artifacts"] if a["format"] == "mlpackage")
    info = json.loads((bundle / pkg / "Manifest.json").read_text())
    info["itemInfoEntries"][info["rootModelIdentifier"]]["path"] = "../../../../outside"
    (bundle / pkg / "Manifest.json").write_text(json.dumps(info))
    relist(bundle, f"{pkg}/Manifest.json")
    lines = []
    assert verify(bundle, log=lines.append) is False
    assert any(line.startswith(f"FAIL {pkg}") and "not a relative path inside the package" in line for line in lines)


def test_verify_coreml_bundle_that_does_not_match_is_failed_before_opening_anything(copy):
    from lowering.verify_coreml import verify

    bundle = ios(copy)
    (bundle / "stray.bin").write_bytes(b"x")
    lines = []
    assert verify(bundle, log=lines.append) is False
    assert lines[-1] == "FAIL the bundle does not match its manifest: nothing in it was opened"


# ---------------------------------------------------------------------------------------- 11. permissions
def test_permissions_of_exported_bundles_follow_the_umask(exported):
    for root in (android(exported), ios(exported), exported / "ckpt"):
        for p in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))
