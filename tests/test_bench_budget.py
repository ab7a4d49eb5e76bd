"""bench/bench_budget.py on a fake demo directory: a summary.json as train.demo writes it and an Android bundle whose
manifest is made of the project's own Artifact records and file table. Nothing is timed here: the budget's
table and JSON must carry the files' numbers, flag the skipped (resumed) stages, and refuse a directory without
summary.json in one line."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dcclip_mobile import bundle_manifest as bm

REPO = Path(__file__).resolve().parents[1]

SUMMARY = {
    "protocol": {"preset": "small-lite", "threads": 0},
    "stages": {"assets": {"wall_s": 0.104},
               "distill": {"wall_s": 0.0002, "checkpoint": "x", "heldout": {"wall_s": 107.4}},
               "align": {"wall_s": 37.4, "checkpoint": "x", "heldout": {"wall_s": 99.6}},
               "export": {"wall_s": 50.6, "bundles": {}},
               "report": {"wall_s": 12.3, "dir": "x"}},
    "teacher": {"teacher_id": "offline", "wall_s": 271.8},
    "total_wall_s": 600.0,
}


@pytest.fixture(scope="module")
def budget_mod():
    saved = list(sys.path)  # the script puts bench/ and the repo on sys.path: keep the session's own
    spec = importlib.util.spec_from_file_location("bench_budget", REPO / "bench" / "bench_budget.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    sys.path[:] = saved


def _artifact(tower: str, precision: str, file: str, size: int, **kw) -> bm.Artifact:
    parity = {"gate": "quantized", "n": 256, "mean_cosine": 0.995, "min_cosine": 0.91, "max_abs_diff": 0.1,
              "top1_agreement": 0.984, "top1_decisions": 512, "passed": True, "failures": []}
    parity.update(kw.pop("parity", {}))
    return bm.Artifact(tower=tower, backend="xnnpack", format="pte", precision=precision, file=file, size_bytes=size,
                       inputs=[{"name": "x", "shape": [1, 3, 160, 160], "dtype": "float32"}],
                       output={"name": "embedding", "shape": [1, 256], "dtype": "float32"},
                       quantization=kw.pop("quantization", {"scheme": "pt2e-static"}), delegate_partitions=1,
                       ops_outside_delegate={}, parity=parity, **kw)


def write_bundle(directory: Path, artifacts: list[bm.Artifact]) -> dict:
    """A bundle directory whose manifest passes bm.load_manifest: artifact files of their recorded size, the
    files the manifest names, and the file table of them all."""
    directory.mkdir(parents=True)
    for a in artifacts:
        (directory / a.file).write_bytes(b"\0" * a.size_bytes)
    (directory / "golden.json").write_text('{"format_version": 1, "texts": [], "images": []}\n')
    (directory / "tokenizer.model").write_bytes(b"sp" * 100)
    (directory / "tokenizer.json").write_text("{}\n")
    manifest = {"format_version": bm.BUNDLE_FORMAT_VERSION, "target": "android", "student": {"name": "small-lite"},
                "embed_dim": 256, "logit_scale": 100.0, "image": {}, "default_precision": "int8",
                "text": {"context_length": 64, "tokenizer": {"model": "tokenizer.model", "json": "tokenizer.json"}},
                "artifacts": [a.to_dict() for a in artifacts], "class_embeddings": None, "golden": "golden.json",
                "parity_gate": {"passed": False, "overridden": False, "failures": []},
                "files": bm.file_table(directory)}
    (directory / bm.MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    assert bm.load_manifest(directory)["artifacts"] == manifest["artifacts"]  # a bundle the project itself reads
    return manifest


@pytest.fixture()
def demo(tmp_path) -> Path:
    d = tmp_path / "demo"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps(SUMMARY))
    buckets = [{"length": 16, "method": "forward_16", "delegate_partitions": 1, "latency_ms_host": 0.41},
               {"length": 32, "method": "forward_32", "delegate_partitions": 1, "latency_ms_host": 0.68},
               {"length": 64, "method": "forward", "delegate_partitions": 1, "latency_ms_host": 1.65}]
    write_bundle(d / "bundles" / "android", [
        _artifact("image", "int8", "image_encoder_xnnpack_int8.pte", 2_600_000, latency_ms_host=4.08,
                  export_seconds=21.37, default=True),
        _artifact("text", "int8", "text_encoder_xnnpack_int8.pte", 3_600_000, latency_ms_host=1.65,
                  export_seconds=9.12, default=True, length_buckets=buckets,
                  parity={"mean_cosine": 0.978, "top1_agreement": 0.934, "passed": False,
                          "failures": ["top-1 agreement 0.934 < 0.97"]})])
    return d


def _row(table: str, item: str) -> list[str]:
    """The cells of the table row whose item column is `item`."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 1 and cells[1] == item:
            return cells
    raise AssertionError(f"no row {item!r} in:\n{table}")


def test_stage_times_and_resumed_flags_come_from_summary(budget_mod, demo):
    budget = budget_mod.build_budget(demo)
    stages = {s["stage"]: s for s in budget["stages"]}
    assert [s["stage"] for s in budget["stages"]] == ["assets", "teacher", "distill", "distill_heldout", "align",
                                                       "align_heldout", "export", "report"]
    assert stages["teacher"]["wall_s"] == 271.8 and stages["align"]["wall_s"] == 37.4
    assert stages["distill_heldout"]["wall_s"] == 107.4 and stages["report"]["wall_s"] == 12.3
    # under 1 s: a step the demo skipped, not a time it takes
    assert stages["distill"]["flag"] == "resumed, not measured"
    # assets on disk are what setup.sh leaves on a fresh machine: not a resumed run
    assert stages["assets"]["flag"] is None and "setup.sh" in stages["assets"]["note"]
    assert stages["teacher"]["flag"] is None and stages["align"]["flag"] is None
    assert budget["any_resumed"] is True
    assert budget["total_wall_s"] == 600.0
    measured = 0.104 + 271.8 + 0.0002 + 107.4 + 37.4 + 99.6 + 50.6 + 12.3
    assert budget["rest_wall_s"] == pytest.approx(600.0 - measured)

    table = budget_mod.to_markdown(budget)
    assert _row(table, "stage 2 (align)")[2] == "37.4"
    assert _row(table, "teacher (held-out sets)")[2] == "271.8"
    distill = _row(table, "stage 1 (distill)")
    assert distill[2] == "0.0" and "resumed, not measured" in distill[-1]
    assert _row(table, "the rest")[2] == f"{600.0 - measured:.1f}"
    assert _row(table, "**total**")[2] == "600.0" and "resumed" in _row(table, "**total**")[-1]


def test_artifacts_and_bundle_carry_the_manifest_numbers(budget_mod, demo):
    budget = budget_mod.build_budget(demo)
    [bundle] = budget["bundles"]
    on_disk = sum(p.stat().st_size for p in (demo / "bundles" / "android").rglob("*") if p.is_file())
    assert bundle["target"] == "android" and bundle["size_bytes_on_disk"] == on_disk and bundle["files"] == 6
    assert bundle["default_artifacts_bytes"] == 6_200_000
    assert bundle["export_seconds_sum"] == pytest.approx(21.37 + 9.12)
    image, text = bundle["artifacts"]
    assert (image["tower"], image["precision"], image["backend"], image["size_bytes"]) == ("image", "int8", "xnnpack",
                                                                                           2_600_000)
    assert image["export_seconds"] == 21.37 and image["latency_ms_host"] == 4.08
    assert image["latency_ms_host_by_length"] is None
    assert text["latency_ms_host_by_length"] == {16: 0.41, 32: 0.68, 64: 1.65}
    assert (text["mean_cosine"], text["min_cosine"], text["top1_agreement"], text["passed"]) == (0.978, 0.91, 0.934,
                                                                                                False)

    table = budget_mod.to_markdown(budget)
    img = _row(table, "android image xnnpack pte int8")
    assert img[2:5] == ["21.37", "2.60", "4.08"]
    assert img[6] == "0.99500 / 0.91000, top-1 0.984" and img[7].startswith("PASS, default")
    txt = _row(table, "android text xnnpack pte int8")
    assert txt[2:5] == ["9.12", "3.60", "1.65 (16: 0.41 / 32: 0.68 / 64: 1.65)"]
    assert txt[6] == "0.97800 / 0.91000, top-1 0.934" and txt[7].startswith("FAIL: top-1 agreement 0.934 < 0.97")
    disk = _row(table, "android on disk (6 files)")
    assert disk[2:4] == ["30.49", f"{on_disk / 1e6:.2f}"]

    # JSON as written: the same numbers, and what this run did not measure says so
    saved = json.loads(json.dumps(budget))
    assert saved["bundles"][0]["artifacts"][1]["latency_ms_host_by_length"] == {"16": 0.41, "32": 0.68, "64": 1.65}
    assert saved["peers"]["measured"] is False and "--side-by-side" in saved["peers"]["note"]
    assert saved["calibration"]["measured"] is False and "--calibrate" in saved["calibration"]["note"]
    assert "not measured in this run" in _row(table, "not measured in this run")[1]


def test_calibration_seconds_from_the_manifest_or_this_run(budget_mod, demo, tmp_path):
    timed = [{"tower": "image", "precision": "int8", "seconds": 2.5, "source": "timed in this run"}]
    budget = budget_mod.build_budget(demo, calibration=timed)
    assert budget["calibration"] == {"measured": True, "source": "timed in this run", "rows": timed}
    assert _row(budget_mod.to_markdown(budget), "image int8 static")[2] == "2.5"

    # a manifest that records calibration seconds wins over timing
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text(json.dumps(SUMMARY))
    write_bundle(other / "bundles" / "android", [
        _artifact("text", "int8", "text_encoder_xnnpack_int8.pte", 1000, latency_ms_host=1.0, export_seconds=5.0,
                  quantization={"scheme": "pt2e-static", "calibration_seconds": 4.4})])
    budget = budget_mod.build_budget(other, calibration=timed)
    assert budget["calibration"]["source"] == "manifest"
    assert [(c["tower"], c["seconds"]) for c in budget["calibration"]["rows"]] == [("text", 4.4)]


def test_peer_ratios_are_rows_of_the_table(budget_mod, demo):
    ratios = {t: {"teacher_over_student_int8": a, "peer_int8_over_student_int8_latency": b,
                  "peer_int8_over_student_int8_size": c} for t, a, b, c in (("image", 1568.0, 8.38, 3.35),
                                                                            ("text", 2060.6, 1.67, 4.31))}
    ratios["text_short"] = {"tokens": 16, "full_context_over_short": 4.0, "peer_int8_over_student_int8_latency": 6.73}
    peers = {"measured": True, "json": "x.json", "student": "dcclip-small, fresh weights", "threads": 2, "runs": 20,
             "rounds": 6, "ratios": ratios, "rows": []}
    table = budget_mod.to_markdown(budget_mod.build_budget(demo, peers=peers))
    assert _row(table, "image: AltCLIP eager fp32 / student int8 .pte, latency")[5] == "1568.00x"
    assert _row(table, "text: TinyCLIP int8 .pte / student int8 .pte, size")[5] == "4.31x"
    assert _row(table, "text, a 16-token query in its bucket: TinyCLIP int8 / student int8, latency")[5] == "6.73x"
    assert "not measured in this run" not in table
    assert "MobileCLIP" not in table  # a run from before MobileCLIP-S0 joined the bench: no such rows


def test_mobileclip_ratios_are_rows_and_a_failed_peer_says_so(budget_mod, demo):
    ratios = {t: {"teacher_over_student_int8": 900.0, "peer_int8_over_student_int8_latency": 2.0,
                  "peer_int8_over_student_int8_size": 3.0, "mobileclip_int8_over_student_int8_latency": m,
                  "mobileclip_int8_over_student_int8_size": 4.5} for t, m in (("image", 9.25), ("text", None))}
    ratios["text_short"] = {"tokens": 16, "full_context_over_short": 4.0, "peer_int8_over_student_int8_latency": 6.0,
                            "mobileclip_int8_over_student_int8_latency": 12.5}
    peers = {"measured": True, "json": "x.json", "student": "dcclip-small, fresh weights", "threads": 2, "runs": 20,
             "rounds": 6, "ratios": ratios, "rows": []}
    table = budget_mod.to_markdown(budget_mod.build_budget(demo, peers=peers))
    assert _row(table, "image: MobileCLIP-S0 int8 .pte / student int8 .pte, latency")[5] == "9.25x"
    assert _row(table, "text: MobileCLIP-S0 int8 .pte / student int8 .pte, latency")[5].startswith("failed")
    assert _row(table, "text, a 16-token query in its bucket: MobileCLIP-S0 int8 / student int8, latency")[5] == "12.50x"


def test_the_command_writes_json_and_refuses_bad_input_in_one_line(budget_mod, demo, tmp_path, capsys):
    out = tmp_path / "res" / "budget.json"
    assert budget_mod.main(["--demo", str(demo), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["total_wall_s"] == 600.0 and written["bundles"][0]["artifacts"][0]["size_bytes"] == 2_600_000
    assert "| demo stage | stage 2 (align) | 37.4 |" in capsys.readouterr().out

    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, words in ((["--demo", str(empty)], [repr(str(empty)), "no summary.json", "python -m train.demo"]),
                        (["--demo", str(tmp_path / "nope")], ["not a directory", "python -m train.demo"]),
                        (["--demo", str(demo), "--calibrate"], [repr(str(demo / "stage2" / "checkpoint")),
                                                                  "python -m train.demo"]),
                        (["--demo", str(demo), "--threads", "0"], ["--threads 0"])):
        assert budget_mod.main(argv + ["--out", str(tmp_path / "x.json")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        assert all(w in err for w in words), (argv, err)
    (empty / "summary.json").write_text("{not json")
    assert budget_mod.main(["--demo", str(empty), "--out", str(tmp_path / "x.json")]) == 2
    assert "is not JSON" in capsys.readouterr().err


def test_round_ratio_takes_each_rounds_ratio_before_the_median(budget_mod):
    from bench_side_by_side import round_ratio  # bench/ is on the path while budget_mod is loaded

    # round 2 slowed both runners 3x: the pooled medians' ratio moves, the round-by-round one does not
    slow, fast = {"round_medians_ms": [2.0, 6.0, 2.0]}, {"round_medians_ms": [1.0, 3.0, 1.0]}
    assert round_ratio(slow, fast) == 2.0
    assert round_ratio({"round_medians_ms": [3.0, 2.0, 4.0]}, {"round_medians_ms": [1.0, 1.0, 1.0]}) == 3.0
