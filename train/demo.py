"""The README's main job: the whole recipe on the offline default, end to end, in minutes on a laptop CPU.

    python -m train.demo [--out runs/demo]

fetch assets -> teacher cache -> stage 1 (Fashion-MNIST train images, no labels, + the bilingual corpus)
-> stage 2 (Fashion-MNIST train images with English/Chinese captions from their labels) -> zero-shot
evaluation on a class-balanced subset of the Fashion-MNIST test split after each stage, in both languages
-> export (Android .pte fp32/int8, iOS Core ML) behind the parity gate -> on-device report -> summary.json.
Re-running resumes: the teacher cache is reused and finished stages are skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dcclip_mobile import assets
from dcclip_mobile.atomic import atomic_write_text
from dcclip_mobile.checkpoint import load_student
from dcclip_mobile.data.fashion_mnist import FashionMNIST
from dcclip_mobile.teachers import build_teacher
from dcclip_mobile.teachers.cache import teacher_cache_dir

from . import align, distill
from .cli import run_main
from .evaluate import evaluate_student, evaluate_teacher, student_embeddings


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m train.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--image-size", type=int, default=112,
                    help="student input size (Fashion-MNIST is 28x28: 112 loses nothing and trains 4x faster than 224)")
    ap.add_argument("--distill-images", type=int, default=4000, help="stage-1 images (the teacher runs on these)")
    ap.add_argument("--align-images", type=int, default=12000, help="stage-2 labeled images")
    ap.add_argument("--test-images", type=int, default=2000, help="class-balanced test subset (10000 = all)")
    ap.add_argument("--corpus-size", type=int, default=8000)
    ap.add_argument("--distill-steps", type=int, default=200)
    ap.add_argument("--align-steps", type=int, default=600)
    ap.add_argument("--report-images", type=int, default=1000, help="eval images for the on-device report")
    ap.add_argument("--no-export", action="store_true", help="stop after stage 2 (no bundles, no report)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def stage_done(out: Path, steps: int) -> bool:
    meta = out / "checkpoint" / "training_state.json"
    return meta.is_file() and json.loads(meta.read_text())["step"] >= steps


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"protocol": vars(args), "stages": {}}
    t0 = time.perf_counter()

    t = time.perf_counter()
    for name in assets.ASSETS:
        assets.fetch(name, quiet=False)
    summary["stages"]["assets"] = {"wall_s": time.perf_counter() - t}

    test = FashionMNIST("test", limit=args.test_images, seed=args.seed)
    teacher = build_teacher("offline")
    cache = teacher_cache_dir()
    t = time.perf_counter()
    teacher_acc, teacher_test_emb = evaluate_teacher(teacher, test, cache)
    summary["teacher"] = {"id": teacher.teacher_id, "zero_shot": teacher_acc, "wall_s": time.perf_counter() - t}
    print(f"teacher zero-shot: {_fmt(teacher_acc)}", flush=True)

    s1 = out / "stage1"
    common = ["--seed", str(args.seed), "--threads", str(args.threads)]
    t = time.perf_counter()
    if not stage_done(s1, args.distill_steps):
        distill.run(distill.build_parser().parse_args([
            "--images", "fashion-mnist", "--limit", str(args.distill_images), "--corpus-size", str(args.corpus_size),
            "--preset", args.preset, "--image-size", str(args.image_size), "--out", str(s1),
            "--steps", str(args.distill_steps), "--warmup-steps", str(args.distill_steps // 10), *common, *(["--resume"] if (s1 / "checkpoint").exists() else [])]))
    wall1 = time.perf_counter() - t
    model, tokenizer = load_student(s1 / "checkpoint")
    acc1 = evaluate_student(model, tokenizer, test)
    cos = F.cosine_similarity(student_embeddings(model, test), teacher_test_emb, dim=-1)
    summary["stages"]["distill"] = {"wall_s": wall1, "zero_shot": acc1, "checkpoint": str(s1 / "checkpoint"),
                                    "image_cosine_to_teacher": {"mean": float(cos.mean()), "min": float(cos.min())}}
    print(f"stage 1: {_fmt(acc1)}; image cosine to teacher {cos.mean():.4f}", flush=True)

    s2 = out / "stage2"
    t = time.perf_counter()
    if not stage_done(s2, args.align_steps):
        align.run(align.build_parser().parse_args([
            "--init", str(s1 / "checkpoint"), "--images", "fashion-mnist", "--limit", str(args.align_images),
            "--out", str(s2), "--steps", str(args.align_steps), "--warmup-steps", str(args.align_steps // 10), *common,
            *(["--resume"] if (s2 / "checkpoint").exists() else [])]))
    wall2 = time.perf_counter() - t
    model, tokenizer = load_student(s2 / "checkpoint")
    acc2 = evaluate_student(model, tokenizer, test)
    summary["stages"]["align"] = {"wall_s": wall2, "zero_shot": acc2, "checkpoint": str(s2 / "checkpoint")}
    print(f"stage 2: {_fmt(acc2)}", flush=True)

    summary["checkpoint"] = str(s2 / "checkpoint")
    if not args.no_export:
        summary["stages"]["export"], summary["stages"]["report"] = export_and_report(
            model, tokenizer, s2 / "checkpoint", out, args.report_images)
    summary["total_wall_s"] = time.perf_counter() - t0
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def export_and_report(model, tokenizer, checkpoint: Path, out: Path, report_images: int) -> tuple[dict, dict]:
    """Android (fp32 and int8 .pte) and iOS (Core ML fp16) bundles behind the parity gate, then the report."""
    from lowering.export import export_bundles
    from lowering.report import build_report, plot, to_markdown

    t = time.perf_counter()
    result = export_bundles(model, tokenizer, ["android", "ios"], out / "bundles",
                            {"android": ["fp32", "int8"], "ios": ["fp16"]}, checkpoint=checkpoint)
    export = {"wall_s": time.perf_counter() - t, "bundles": {k: str(v) for k, v in result.bundles.items()}}
    t = time.perf_counter()
    report = build_report(out / "bundles" / "android", limit=report_images, checkpoint=str(checkpoint))
    rdir = out / "report-android"
    rdir.mkdir(exist_ok=True)
    (rdir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (rdir / "report.md").write_text(to_markdown(report))
    plot(report, rdir)
    print(to_markdown(report), flush=True)
    return export, {"wall_s": time.perf_counter() - t, "dir": str(rdir)}


def _fmt(acc: dict) -> str:
    return ", ".join(f"{lang} top-1 {acc[lang]['top1']:.1%} top-5 {acc[lang]['top5']:.1%}" for lang in ("en", "zh"))


def main(argv: list[str] | None = None) -> int:
    def run_and_locate(args: argparse.Namespace) -> Path:
        run(args)
        return Path(args.out) / "summary.json"
    return run_main(build_parser(), run_and_locate, "summary", argv)


if __name__ == "__main__":
    sys.exit(main())
