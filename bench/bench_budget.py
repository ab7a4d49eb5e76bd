"""The whole budget in one table: the demo's wall time per stage, every artifact's export seconds, size, host
latency and parity, calibration seconds, and the ratios against AltCLIP, TinyCLIP and MobileCLIP-S0.

    python bench/bench_budget.py [--demo runs/demo] [--calibrate] [--side-by-side] [--threads 2]
                                 [--runs 20] [--rounds 6] [--out bench/results/budget.json]

demo stages  read from <demo>/summary.json (python -m train.demo): stages.{assets,distill,align,export,report}.wall_s,
             the teacher's teacher.wall_s, total_wall_s. The demo skips what is already done (assets on disk, the
             teacher's cache, a finished stage), and a skipped stage records a few milliseconds: a figure under
             1 s is flagged "resumed, not measured" (a stage resumed midway records only what ran after the
             resume, which nothing in summary.json tells apart). The held-out evaluations after stages 1 and 2
             (stages.{distill,align}.heldout.wall_s) are rows of their own; "the rest" is the total less all rows.
artifacts    read from <demo>/bundles/*/manifest.json (lowering.export): per artifact its size, export_seconds
             (for an int8 .pte this includes quantization and calibration), latency_ms_host (median, batch 1;
             per length bucket when the artifact has them; null for Core ML, which runs on Apple devices only)
             and its parity-gate figures; per bundle the size of every file in it on disk.
calibration  static int8 seconds per tower: from the manifest where an artifact records
             quantization.calibration_seconds; otherwise, with --calibrate, timed here once per tower on the demo's
             stage-2 checkpoint with bench_calibration's "after" recipe (lowering.quantize.quantize_encoder on
             Fashion-MNIST calibration images and the export's calibration texts, summed over the text tower's
             length buckets). Off by default: it loads Fashion-MNIST and the checkpoint and quantizes both towers.
peers        with --side-by-side, bench_side_by_side.measure in this process (minutes): the AltCLIP teacher and
             TinyCLIP ViT-8M/16 + Text-3M and MobileCLIP-S0 against the `small` student with fresh weights (not the demo's
             checkpoint; timing does not depend on weights), runners timed interleaved; its own table is printed
             first and its JSON written beside --out. Without it the ratios are not measured in this run.

The stage and artifact figures are what the demo recorded when it ran; calibration and peer figures are measured
now, on this machine. Prints a markdown table and notes; writes JSON; asserts nothing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dcclip_mobile import bundle_manifest as bm  # noqa: E402
from dcclip_mobile.atomic import atomic_write_text  # noqa: E402
from dcclip_mobile.errors import UsageError, run_main  # noqa: E402

RESUMED_BELOW_S = 1.0
RESUMED = "resumed, not measured"
# summary.json's timed steps in the order the demo runs them: (key, path to its wall_s, label, what a skip means);
# the held-out evaluations after stages 1 and 2 run even when their stage was skipped, and are never skipped
STAGES = (("assets", ("stages", "assets"), "assets (fetch)", "assets already on disk"),
          ("teacher", ("teacher",), "teacher (held-out sets)", "teacher embeddings read from its cache"),
          ("distill", ("stages", "distill"), "stage 1 (distill)", "its checkpoint was already finished"),
          ("distill_heldout", ("stages", "distill", "heldout"), "held-out evaluation after stage 1", None),
          ("align", ("stages", "align"), "stage 2 (align)", "its checkpoint was already finished"),
          ("align_heldout", ("stages", "align", "heldout"), "held-out evaluation after stage 2", None),
          ("export", ("stages", "export"), "export (bundles + parity gate)", None),
          ("report", ("stages", "report"), "report (on-device accuracy)", None))
RUN_DEMO = "run `python -m train.demo` first (it writes runs/demo), or pass --demo DIR of a finished demo run"


# ------------------------------------------------------------------------------------------- reading the demo
def read_summary(demo: Path) -> dict:
    """<demo>/summary.json, or a UsageError naming the path and what to do."""
    if not demo.is_dir():
        raise UsageError(f"--demo {str(demo)!r} is not a directory; {RUN_DEMO}")
    path = demo / "summary.json"
    if not path.is_file():
        raise UsageError(f"--demo {str(demo)!r} has no summary.json (the demo writes it when it finishes); {RUN_DEMO}")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{str(path)!r} is not JSON ({e}); re-run `python -m train.demo --out {demo}`") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("stages"), dict):
        raise UsageError(f"{str(path)!r} has no \"stages\" object, so train.demo did not write it; "
                         f"re-run `python -m train.demo --out {demo}`")
    return summary


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where} is {value!r}, not a number of seconds; re-run `python -m train.demo`")
    return float(value)


def stage_rows(summary: dict, source: str = "summary.json") -> tuple[list[dict], dict]:
    """One row per demo stage in run order ({stage, label, wall_s (None when absent), flag, note}) and the
    totals ({total_wall_s, stages_wall_s, rest_wall_s, any_resumed})."""
    rows = []
    for key, path, label, skipped in STAGES:
        entry: object = summary
        for k in path:
            entry = entry.get(k) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or "wall_s" not in entry:
            note = ("not run (the demo ran with --no-export)" if key in ("export", "report") else
                    f"absent from {source}")
            rows.append({"stage": key, "label": label, "wall_s": None, "flag": None, "note": note})
            continue
        wall = _seconds(entry["wall_s"], f"{source} {'.'.join(path)}.wall_s")
        resumed = wall < RESUMED_BELOW_S
        what = skipped or "this step is never skipped, so the figure is unexpected"
        if resumed and key == "assets":  # setup.sh installs them: on a fresh machine the demo finds them too
            rows.append({"stage": key, "label": label, "wall_s": wall, "flag": None,
                         "note": f"{wall:.3f} s: already on disk, as setup.sh leaves them on a fresh machine"})
            continue
        rows.append({"stage": key, "label": label, "wall_s": wall, "flag": RESUMED if resumed else None,
                     "note": f"{wall:.3f} s recorded: {what}" if resumed else ""})
    if "total_wall_s" not in summary:
        raise UsageError(f"{source} has no total_wall_s, so the demo did not finish; re-run `python -m train.demo`")
    total = _seconds(summary["total_wall_s"], f"{source} total_wall_s")
    stages = sum(r["wall_s"] for r in rows if r["wall_s"] is not None)
    return rows, {"total_wall_s": total, "stages_wall_s": stages, "rest_wall_s": total - stages,
                  "any_resumed": any(r["flag"] for r in rows)}


def disk_bytes(directory: Path) -> tuple[int, int]:
    """(bytes, files) of every regular file under `directory` (symbolic links not followed)."""
    sizes = [p.stat().st_size for p in directory.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(sizes), len(sizes)


def artifact_row(target: str, a: dict) -> dict:
    """What the budget shows of one manifest artifact entry."""
    parity = a.get("parity") or {}
    buckets = a.get("length_buckets")
    return {"target": target, "tower": a["tower"], "precision": a["precision"], "backend": a["backend"],
            "format": a["format"], "file": a["file"], "default": bool(a.get("default")),
            "size_bytes": a["size_bytes"], "export_seconds": a.get("export_seconds"),
            "latency_ms_host": a.get("latency_ms_host"),
            "latency_ms_host_by_length": None if buckets is None else
            {int(b["length"]): b.get("latency_ms_host") for b in buckets},
            "parity_gate": parity.get("gate"), "mean_cosine": parity.get("mean_cosine"),
            "min_cosine": parity.get("min_cosine"), "top1_agreement": parity.get("top1_agreement"),
            "passed": parity.get("passed"), "failures": parity.get("failures") or [],
            "calibration_seconds": (a.get("quantization") or {}).get("calibration_seconds")}


def bundle_records(demo: Path) -> tuple[list[dict], list[str]]:
    """Each bundle under <demo>/bundles (by name): its artifacts, its size on disk, the sum of its export
    seconds; and notes on what was skipped."""
    root = demo / "bundles"
    if not root.is_dir():
        return [], [f"no bundles: {str(root)!r} does not exist (the demo ran with --no-export, or its export failed)"]
    bundles, notes = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (d / bm.MANIFEST_FILE).is_file():
            notes.append(f"skipped {str(d)!r}: no {bm.MANIFEST_FILE} (not a bundle written by lowering.export)")
            continue
        manifest = bm.load_manifest(d)  # a BundleError (one line: the file and what to do) if it is malformed
        artifacts = [artifact_row(manifest["target"], a) for a in manifest["artifacts"]]
        size, files = disk_bytes(d)
        exported = [a["export_seconds"] for a in artifacts if a["export_seconds"] is not None]
        bundles.append({"target": manifest["target"], "dir": str(d), "size_bytes_on_disk": size, "files": files,
                        "default_artifacts_bytes": sum(a["size_bytes"] for a in artifacts if a["default"]),
                        "export_seconds_sum": sum(exported), "default_precision": manifest.get("default_precision"),
                        "parity_gate_passed": (manifest.get("parity_gate") or {}).get("passed"),
                        "artifacts": artifacts})
    if not bundles:
        notes.append(f"no bundles: {str(root)!r} holds no directory with a {bm.MANIFEST_FILE}")
    return bundles, notes


def manifest_calibration(bundles: list[dict]) -> list[dict]:
    """Calibration seconds the manifests record (quantization.calibration_seconds), one row per artifact."""
    return [{"tower": a["tower"], "target": a["target"], "precision": a["precision"],
             "seconds": float(a["calibration_seconds"]), "source": f"manifest ({a['target']}/{a['file']})"}
            for b in bundles for a in b["artifacts"] if a["calibration_seconds"] is not None]


# ------------------------------------------------------------------------------------------- measuring now
def time_calibration(checkpoint: Path, n_calibration: int = 128) -> list[dict]:
    """Static int8 seconds per tower of the checkpoint's student, bench_calibration's "after" recipe, once."""
    import bench_calibration

    from dcclip_mobile.checkpoint import load_student
    from lowering.inputs import default_eval_set
    from lowering.towers import make_references, make_towers

    model, tok = load_student(checkpoint)
    # parity images only feed the references make_towers needs, not calibration: a few are enough
    eval_set = default_eval_set(n_calibration=n_calibration, n_parity=8)
    towers = make_towers(model, make_references(model, tok, eval_set))
    rows = []
    for tower in towers:
        _, seconds = bench_calibration.quantize_tower(tower, "after")
        rows.append({"tower": tower.name, "precision": "int8", "seconds": seconds,
                     "calibration_inputs": len(tower.calibration_inputs), "length_buckets": list(tower.lengths),
                     "source": f"timed in this run (bench_calibration 'after', {checkpoint})"})
        print(f"  calibration {tower.name}: {seconds:.1f} s", flush=True)
    return rows


def measure_peers(args: argparse.Namespace, out: Path) -> dict:
    """bench_side_by_side's measurement in this process; its rows and ratios."""
    import bench_side_by_side

    from dcclip_mobile.timing import threads

    side_out = out.with_name(out.stem + "_side_by_side.json")
    ns = argparse.Namespace(runs=args.runs, rounds=args.rounds, threads=args.threads, out=str(side_out))
    with threads(args.threads):
        result = bench_side_by_side.measure(ns)
    return {"measured": True, "json": str(side_out), "student": "dcclip-small, fresh weights (bench_side_by_side)",
            "threads": args.threads, "runs": args.runs, "rounds": args.rounds, "ratios": result["ratios"],
            "rows": result["rows"]}


# ------------------------------------------------------------------------------------------- the budget
def build_budget(demo: str | Path, calibration: list[dict] | None = None, peers: dict | None = None) -> dict:
    """Everything the table shows, as JSON. `calibration`: rows timed in this run (None: not timed);
    `peers`: measure_peers' result (None: not measured)."""
    demo = Path(demo)
    summary = read_summary(demo)
    stages, totals = stage_rows(summary, str(demo / "summary.json"))
    bundles, bundle_notes = bundle_records(demo)
    recorded = manifest_calibration(bundles)
    if recorded:
        calib = {"measured": True, "source": "manifest", "rows": recorded}
    elif calibration is not None:
        calib = {"measured": True, "source": "timed in this run", "rows": calibration}
    else:
        calib = {"measured": False, "source": None, "rows": [],
                 "note": "no manifest records calibration seconds; pass --calibrate to time static int8 calibration "
                         "of each tower on the demo's stage-2 checkpoint"}
    protocol = summary.get("protocol") if isinstance(summary.get("protocol"), dict) else {}
    return {"demo": str(demo), "summary_written": _mtime(demo / "summary.json"),
            "preset": protocol.get("preset"), "demo_threads": protocol.get("threads"),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "stages": stages, **totals, "bundles": bundles, "bundle_notes": bundle_notes, "calibration": calib,
            "peers": peers or {"measured": False,
                               "note": "the AltCLIP, TinyCLIP and MobileCLIP-S0 ratios were not measured in this run; pass "
                                       "--side-by-side (minutes)"}}


def _mtime(path: Path) -> str:
    return datetime.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")


def _num(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


PEER_RATIOS = (  # bench_side_by_side's ratios per tower: (key, part, what the ratio is)
    ("teacher_over_student_int8", "vs AltCLIP", "AltCLIP eager fp32 / student int8 .pte, latency"),
    ("peer_int8_over_student_int8_latency", "vs TinyCLIP", "TinyCLIP int8 .pte / student int8 .pte, latency"),
    ("peer_int8_over_student_int8_size", "vs TinyCLIP", "TinyCLIP int8 .pte / student int8 .pte, size"),
    ("mobileclip_int8_over_student_int8_latency", "vs MobileCLIP-S0",
     "MobileCLIP-S0 int8 .pte / student int8 .pte, latency"),
    ("mobileclip_int8_over_student_int8_size", "vs MobileCLIP-S0", "MobileCLIP-S0 int8 .pte / student int8 .pte, size"))


def table_rows(budget: dict) -> list[list[str]]:
    """The budget's one table: [part, item, seconds, MB, host ms, ratio, parity, note] per row."""
    rows = []
    for s in budget["stages"]:
        rows.append(["demo stage", s["label"], _num(s["wall_s"], ".1f"), "", "", "", "",
                     "; ".join(x for x in (s["flag"], s["note"]) if x)])
    rows.append(["demo stage", "the rest", _num(budget["rest_wall_s"], ".1f"), "", "", "", "",
                 "total less the rows above: building the held-out sets, loading checkpoints"])
    rows.append(["demo stage", "**total**", _num(budget["total_wall_s"], ".1f"), "", "", "", "",
                 "includes resumed stages: not a fresh run's time" if budget["any_resumed"] else ""])
    for b in budget["bundles"]:
        for a in b["artifacts"]:
            by_length = a["latency_ms_host_by_length"]
            ms = _num(a["latency_ms_host"], ".2f")
            if by_length:
                ms += " (" + " / ".join(f"{L}: {_num(v, '.2f') or '-'}" for L, v in by_length.items()) + ")"
            if a["mean_cosine"] is not None:
                parity = (f"{a['mean_cosine']:.5f} / {a['min_cosine']:.5f}, top-1 "
                          f"{_num(a['top1_agreement'], '.3f') or '-'}")
            else:
                parity = f"{a['parity_gate'] or 'no'} gate"
            gate = "" if a["passed"] is None else "PASS" if a["passed"] else "FAIL: " + "; ".join(a["failures"])
            note = ", ".join(x for x in (gate, "default" if a["default"] else "",
                                         "ms by length in ()" if by_length else "") if x)
            rows.append(["artifact", f"{b['target']} {a['tower']} {a['backend']} {a['format']} {a['precision']}",
                         _num(a["export_seconds"], ".2f"), f"{a['size_bytes'] / 1e6:.2f}", ms, "", parity, note])
        rows.append(["bundle", f"{b['target']} on disk ({b['files']} files)", f"{b['export_seconds_sum']:.2f}",
                     f"{b['size_bytes_on_disk'] / 1e6:.2f}", "", "", "",
                     "seconds: its artifacts' export summed; default artifacts "
                     f"{b['default_artifacts_bytes'] / 1e6:.2f} MB"])
    if not budget["bundles"]:
        rows.append(["bundle", "none", "", "", "", "", "", "; ".join(budget["bundle_notes"])])
    calib = budget["calibration"]
    for c in calib["rows"]:
        rows.append(["calibration", f"{c['tower']} {c['precision']} static", f"{c['seconds']:.1f}", "", "", "", "",
                     c["source"]])
    if not calib["measured"]:
        rows.append(["calibration", "not measured", "", "", "", "", "", calib["note"]])
    peers = budget["peers"]
    if peers["measured"]:
        for tower in ("image", "text"):
            r = peers["ratios"][tower]
            for key, part, what in PEER_RATIOS:
                if key in r:  # runs before MobileCLIP-S0 joined the bench have no such key; a failed peer has None
                    ratio = "failed (see the side-by-side rows)" if r[key] is None else f"{r[key]:.2f}x"
                    rows.append([part, f"{tower}: {what}", "", "", "", ratio, "", peers["student"]])
        short = peers["ratios"].get("text_short")
        if short:
            rows.append(["vs TinyCLIP", f"text, a {short['tokens']}-token query in its bucket: TinyCLIP int8 / "
                         "student int8, latency", "", "", "", f"{short['peer_int8_over_student_int8_latency']:.2f}x",
                         "", peers["student"]])
        if short and short.get("mobileclip_int8_over_student_int8_latency") is not None:
            rows.append(["vs MobileCLIP-S0", f"text, a {short['tokens']}-token query in its bucket: MobileCLIP-S0 "
                         "int8 / student int8, latency", "", "", "",
                         f"{short['mobileclip_int8_over_student_int8_latency']:.2f}x", "", peers["student"]])
    else:
        rows.append(["vs peers", "not measured in this run", "", "", "", "", "", peers["note"]])
    return rows


HEADER = ["part", "item", "seconds", "MB", "host ms", "ratio", "parity: mean / min cos, top-1", "note"]


def to_markdown(budget: dict) -> str:
    """The table and the notes under it, as printed."""
    lines = [f"budget of {budget['demo']} (summary.json written {budget['summary_written']}, preset "
             f"{budget['preset']}); this machine: {budget['machine']['cpus']} CPUs, {budget['machine']['platform']}",
             "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in table_rows(budget)]
    notes = [f"a demo figure under {RESUMED_BELOW_S:.0f} s is a step the demo skipped ({RESUMED}); re-run the demo "
             "in a fresh --out to measure it"] if budget["any_resumed"] else []
    notes += budget["bundle_notes"]
    notes.append("stage and artifact figures are what the demo recorded when it ran; export seconds of an int8 "
                 ".pte include its calibration; host ms is null for Core ML (Apple devices only)")
    if budget["peers"]["measured"]:
        notes.append(f"peer ratios: {budget['peers']['student']}, {budget['peers']['threads']} threads, "
                     f"{budget['peers']['rounds']} interleaved rounds x {budget['peers']['runs']} calls; rows in "
                     f"{budget['peers']['json']}")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


# ------------------------------------------------------------------------------------------- the command
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python bench/bench_budget.py", description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="runs/demo", help="a finished `python -m train.demo` output directory")
    ap.add_argument("--calibrate", action="store_true",
                    help="time static int8 calibration per tower on <demo>/stage2/checkpoint (loads Fashion-MNIST)")
    ap.add_argument("--side-by-side", action="store_true",
                    help="measure the AltCLIP, TinyCLIP and MobileCLIP-S0 ratios in this run (bench_side_by_side; minutes)")
    ap.add_argument("--threads", type=int, default=2, help="threads for --calibrate and --side-by-side")
    ap.add_argument("--runs", type=int, default=20, help="--side-by-side: calls per round")
    ap.add_argument("--rounds", type=int, default=6, help="--side-by-side: interleaved rounds")
    ap.add_argument("--out", default="bench/results/budget.json")
    return ap


def run(args: argparse.Namespace) -> None:
    for flag, value in (("--threads", args.threads), ("--runs", args.runs), ("--rounds", args.rounds)):
        if value < 1:
            raise UsageError(f"{flag} {value}: give a whole number >= 1")
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {args.out!r} is a directory; give a file name, e.g. {str(out / 'budget.json')!r}")
    demo = Path(args.demo)
    budget = build_budget(demo)  # reads and checks everything on disk before anything slow runs
    calibration = peers = None
    if args.calibrate and not budget["calibration"]["measured"]:
        checkpoint = demo / "stage2" / "checkpoint"
        if not checkpoint.is_dir():
            raise UsageError(f"--calibrate times the demo's stage-2 checkpoint, and {str(checkpoint)!r} does not "
                             f"exist; {RUN_DEMO}")
        from dcclip_mobile.timing import threads
        print(f"timing static int8 calibration of {checkpoint}, {args.threads} threads", flush=True)
        with threads(args.threads):
            calibration = time_calibration(checkpoint)
    if args.side_by_side:
        peers = measure_peers(args, out)
    if calibration is not None or peers is not None:
        budget = build_budget(demo, calibration, peers)
    print()
    print(to_markdown(budget))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(budget, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {out}")


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
