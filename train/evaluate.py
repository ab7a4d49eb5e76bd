"""Zero-shot evaluation of a student checkpoint or a teacher, the same way: class names x templates per
language, top-1/top-5 per language.

    python -m train.evaluate --checkpoint runs/demo/stage2/checkpoint --images fashion-mnist
    python -m train.evaluate --teacher offline --images /data/elevater/cifar-10
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dcclip_mobile.assets import cache_dir
from dcclip_mobile.checkpoint import load_student
from dcclip_mobile.data.preprocess import preprocess_batch
from dcclip_mobile.teachers import build_teacher
from dcclip_mobile.teachers.cache import cache_image_features
from dcclip_mobile.zeroshot import student_image_embeddings, student_text_encoder, zero_shot

from .sources import add_image_source_args, image_source, student_preprocess


def student_embeddings(model, source) -> torch.Tensor:
    pre = student_preprocess(model.cfg)
    return student_image_embeddings(
        model, lambda a, b: preprocess_batch([source.image(i) for i in range(a, b)], pre), len(source))


def evaluate_student(model, tokenizer, source, n_templates: int | None = None) -> dict:
    t = time.perf_counter()
    emb = student_embeddings(model, source)
    acc = zero_shot(emb, torch.as_tensor(source.labels), student_text_encoder(model, tokenizer), source.classes,
                    n_templates)
    return {**acc, "wall_s": time.perf_counter() - t, "images": len(source)}


def evaluate_teacher(teacher, source, cache: Path, n_templates: int | None = None) -> tuple[dict, torch.Tensor]:
    """Accuracy dict and the teacher's image embeddings (cached: the student comparison reuses them)."""
    t = time.perf_counter()
    emb = cache_image_features(teacher, source.image, len(source), source.dataset_id, cache)["embedding"].float()
    acc = zero_shot(emb, torch.as_tensor(source.labels), lambda texts: teacher.encode_text(texts).embedding,
                    source.classes, n_templates)
    return {**acc, "wall_s": time.perf_counter() - t, "images": len(source)}, emb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.splitlines()[0])
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", help="student checkpoint directory")
    who.add_argument("--teacher", help="'offline' or 'altclip:<hub id or dir>'")
    add_image_source_args(ap, default_limit=None)
    ap.add_argument("--templates", type=int, default=None, help="use the first N templates (default all 80)")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    try:
        source = image_source(args, split="test")
        if args.checkpoint:
            model, tokenizer = load_student(args.checkpoint)
            result = evaluate_student(model, tokenizer, source, args.templates)
        else:
            cache = Path(args.cache) if args.cache else cache_dir() / "teacher_features"
            result, _ = evaluate_teacher(build_teacher(args.teacher), source, cache, args.templates)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
