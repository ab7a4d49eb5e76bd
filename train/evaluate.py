"""Zero-shot evaluation of a student checkpoint or a teacher, the same way: class names x templates per
language, top-1/top-5 per language.

    python -m train.evaluate --teacher offline --dataset fashion-mnist --langs en,zh --json out.json
    python -m train.evaluate --teacher altclip:BAAI/AltCLIP --dataset /data/elevater/cifar-10
    python -m train.evaluate --checkpoint runs/demo/stage2/checkpoint --dataset fashion-mnist

Prints (and with --json writes) {"en": {"top1": .., "top5": ..}, "zh": {..}, "n": .., "wall_s": ..}.
Teacher image features go through the teacher feature cache, so a second evaluation is quick.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dcclip_mobile.checkpoint import load_student
from dcclip_mobile.data.labels import LANGS
from dcclip_mobile.data.preprocess import preprocess_batch
from dcclip_mobile.teachers import TEACHER_SPECS, build_teacher
from dcclip_mobile.teachers.cache import cache_image_features, teacher_cache_dir
from dcclip_mobile.zeroshot import evaluate_zero_shot, student_image_embeddings, student_text_encoder

from .sources import add_image_source_args, image_source, student_preprocess


def student_embeddings(model, source) -> torch.Tensor:
    pre = student_preprocess(model.cfg)
    return student_image_embeddings(
        model, lambda a, b: preprocess_batch([source.image(i) for i in range(a, b)], pre), len(source))


def evaluate_student(model, tokenizer, source, n_templates: int | None = None, langs=LANGS) -> dict:
    t = time.perf_counter()
    result = evaluate_zero_shot(student_text_encoder(model, tokenizer), source, langs,
                                encode_images=model.encode_image, pre=student_preprocess(model.cfg),
                                n_templates=n_templates)
    return {**result, "wall_s": time.perf_counter() - t}


def evaluate_teacher(teacher, source, cache: Path, n_templates: int | None = None,
                     langs=LANGS, batch_size: int = 4) -> tuple[dict, torch.Tensor]:
    """Accuracy dict and the teacher's image embeddings (cached: the student comparison reuses them)."""
    t = time.perf_counter()
    emb = cache_image_features(teacher, source.image, len(source), source.dataset_id, cache,
                               batch_size=batch_size)["embedding"].float()
    result = evaluate_zero_shot(lambda texts: teacher.encode_text(texts).embedding, source, langs,
                                image_embeddings=emb, n_templates=n_templates)
    return {**result, "wall_s": time.perf_counter() - t}, emb


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.splitlines()[0])
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", help="student checkpoint directory")
    who.add_argument("--teacher", help=TEACHER_SPECS)
    add_image_source_args(ap, default_limit=None)
    ap.add_argument("--dataset", "--data", dest="images", help="the same as --images")
    ap.add_argument("--langs", default=",".join(LANGS), help="comma-separated languages (default en,zh)")
    ap.add_argument("--templates", type=int, default=None, help="use the first N templates (default all 80)")
    ap.add_argument("--cache", default=None, help="teacher feature cache (default <DCCLIP_CACHE>/teacher_features)")
    ap.add_argument("--batch-size", type=int, default=4, help="images per teacher call (default 4)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (default: torch's choice); on a busy 2-core machine 1 is much faster")
    ap.add_argument("--json", help="also write the result here")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        source = image_source(args, split="test")
        if args.checkpoint:
            model, tokenizer = load_student(args.checkpoint)
            result = evaluate_student(model, tokenizer, source, args.templates, args.langs)
        else:
            cache = teacher_cache_dir(args.cache)
            teacher = build_teacher(args.teacher)
            result, _ = evaluate_teacher(teacher, source, cache, args.templates, args.langs, args.batch_size)
            result["teacher_id"] = teacher.teacher_id
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
