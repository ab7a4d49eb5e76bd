"""Zero-shot evaluation of a student checkpoint or a teacher, the same way: class names x templates per
language, top-1/top-5 per language, on one image source or on every ELEVATER data set under a root.

    python -m train.evaluate --teacher offline --dataset fashion-mnist --langs en,zh --json out.json
    python -m train.evaluate --teacher altclip:BAAI/AltCLIP --dataset /data/elevater/cifar-10
    python -m train.evaluate --checkpoint runs/demo/stage2/checkpoint --dataset fashion-mnist
    python -m train.evaluate --checkpoint runs/demo/stage2/checkpoint --elevater-root /data/elevater \
        --json elevater.json --markdown elevater.md

One source: prints (and with --json writes) {"en": {"top1": .., "top5": ..}, "zh": {..}, "n": .., "wall_s": ..}.
--elevater-root: prints the paper's table (data set x language, top-1, top-5 where a set has >= 5 classes, the
mean over sets; --markdown writes it) and with --json writes the whole result (dcclip_mobile.elevater_suite).
Teacher image features go through the teacher feature cache, so a second evaluation is quick.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dcclip_mobile import elevater_suite as suite
from dcclip_mobile.atomic import atomic_write_text
from dcclip_mobile.checkpoint import load_student
from dcclip_mobile.data.labels import LANGS
from dcclip_mobile.data.preprocess import preprocess_batch
from dcclip_mobile.teachers import TEACHER_SPECS, build_teacher
from dcclip_mobile.teachers.cache import teacher_cache_dir
from dcclip_mobile.zeroshot import evaluate_zero_shot, parse_langs, student_image_embeddings, student_text_encoder
from dcclip_mobile.data.preprocess import ImagePreprocess
from dcclip_mobile.errors import UsageError, run_main

from .device import OnDevice, add_device_args, resolve_device
from .sources import add_image_source_args, image_source
from .teacher_mode import teacher_batch


def student_embeddings(model, source) -> torch.Tensor:
    pre = ImagePreprocess.for_student(model.cfg)
    return student_image_embeddings(
        model, lambda a, b: preprocess_batch([source.image(i) for i in range(a, b)], pre), len(source))


def evaluate_student(model, tokenizer, source, n_templates: int | None = None, langs=LANGS,
                     templates: dict[str, list[str]] | None = None) -> dict:
    t = time.perf_counter()
    result = evaluate_zero_shot(student_text_encoder(model, tokenizer), source, langs,
                                encode_images=model.encode_image, pre=ImagePreprocess.for_student(model.cfg),
                                n_templates=n_templates, templates=templates)
    return {**result, "wall_s": time.perf_counter() - t}


def teacher_text_encoder(teacher):
    return suite.batched_text_encoder(lambda texts: teacher.encode_text(texts).embedding.cpu())


def evaluate_teacher(teacher, source, cache: Path, n_templates: int | None = None,
                     langs=LANGS, batch_size: int = 4,
                     templates: dict[str, list[str]] | None = None) -> tuple[dict, torch.Tensor]:
    """Accuracy dict and the teacher's image embeddings (cached: the student comparison reuses them)."""
    t = time.perf_counter()
    emb = suite.cached_teacher_images(teacher, cache, batch_size)(source)
    result = evaluate_zero_shot(teacher_text_encoder(teacher), source, langs, image_embeddings=emb,
                                n_templates=n_templates, templates=templates)
    return {**result, "wall_s": time.perf_counter() - t}, emb


def evaluate_elevater(args: argparse.Namespace) -> dict:
    """Every ELEVATER set under --elevater-root, scored by the student or the teacher. The sets are opened and
    the templates resolved before any model loads, so a bad root fails in seconds, not after AltCLIP loads."""
    t = time.perf_counter()
    langs = parse_langs(args.langs)
    layout = suite.find_datasets(args.elevater_root)
    for name, why in layout.skipped.items():
        print(f"warning: skipping {str(layout.root / name)!r}: {why}", file=sys.stderr)
    sources = suite.open_datasets(layout)
    templates = suite.resolve_templates(langs, *args.templates)
    if args.checkpoint:
        model, tokenizer = load_student(args.checkpoint)
        model = OnDevice(model, resolve_device(args.device))
        who = {"checkpoint": str(args.checkpoint)}
        result = suite.evaluate_suite(sources, student_text_encoder(model, tokenizer), langs,
                                      encode_images=model.encode_image, pre=ImagePreprocess.for_student(model.cfg),
                                      templates=templates)
    else:
        device = resolve_device(args.device)
        teacher = build_teacher(args.teacher).to(device)
        args.batch_size = args.batch_size or teacher_batch(device)
        who = {"teacher_id": teacher.teacher_id}
        result = suite.evaluate_suite(sources, teacher_text_encoder(teacher), langs, templates=templates,
                                      embed_set=suite.cached_teacher_images(teacher, teacher_cache_dir(args.cache),
                                                                            args.batch_size))
    return {"root": str(layout.root.resolve()), **who, **result, "skipped": layout.skipped,
            "templates": templates, "wall_s": time.perf_counter() - t}


def evaluate_one(args: argparse.Namespace) -> dict:
    """One image source (--images): Fashion-MNIST, a pairs file or one ELEVATER folder."""
    n_templates, templates = args.templates
    source = image_source(args, split="test")
    device = resolve_device(args.device)
    if args.checkpoint:
        model, tokenizer = load_student(args.checkpoint)
        return evaluate_student(OnDevice(model, device), tokenizer, source, n_templates, args.langs, templates)
    cache = teacher_cache_dir(args.cache)
    teacher = build_teacher(args.teacher).to(device)
    args.batch_size = args.batch_size or teacher_batch(device)
    result, _ = evaluate_teacher(teacher, source, cache, n_templates, args.langs, args.batch_size, templates)
    return {**result, "teacher_id": teacher.teacher_id}


def templates_arg(value: str) -> tuple[int | None, dict[str, list[str]] | None]:
    """--templates N (the first N of the 80 CLIP templates) or FILE (JSON {lang: [".. {c} .."]})."""
    if value.isdigit():
        if int(value) < 1:
            raise argparse.ArgumentTypeError(f"{value!r}: give N >= 1 templates, or a JSON templates file")
        return int(value), None
    try:
        return None, suite.read_templates(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", help="student checkpoint directory")
    who.add_argument("--teacher", help=TEACHER_SPECS)
    add_image_source_args(ap, default_limit=None)
    ap.set_defaults(images=None)  # so that --images next to --elevater-root can be told apart and refused
    ap.add_argument("--dataset", "--data", dest="images", help="the same as --images (default fashion-mnist)")
    ap.add_argument("--elevater-root", metavar="DIR",
                    help="evaluate every ELEVATER data set under DIR (DIR/<set>/label.txt, label_cn.txt, "
                         "test/<class id>/<images>); folders that are not one are skipped with a warning")
    ap.add_argument("--langs", default=",".join(LANGS), help="comma-separated languages (default en,zh)")
    ap.add_argument("--templates", type=templates_arg, default=(None, None), metavar="N|FILE",
                    help="the first N of the 80 CLIP templates (default all), or a JSON file "
                         '{"en": ["a photo of a {c}."], "zh": ["一张{c}的照片。"]}')
    ap.add_argument("--cache", default=None, help="teacher feature cache (default <DCCLIP_CACHE>/teacher_features)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="images per teacher call (default 4 on the CPU, 64 on a GPU)")
    add_device_args(ap, amp=False)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (default: torch's choice); on a busy 2-core machine 1 is much faster")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--markdown", metavar="FILE", help="with --elevater-root: also write the table here")
    return ap


def check_args(args: argparse.Namespace) -> None:
    """Options that belong to one mode only: refused in the other rather than silently ignored; outputs that
    cannot be written refused before any work."""
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path and Path(path).is_dir():
            raise UsageError(f"{flag} {path!r} is a directory; give a file name")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: give a number of images >= 1 (or leave it out for the whole set)")
    if args.threads is not None and args.threads < 0:
        raise UsageError(f"--threads {args.threads}: give a number of threads >= 1, or 0 for torch's default")
    if args.elevater_root:
        for given, name in ((args.images, "--images/--dataset"), (args.limit, "--limit")):
            if given is not None:
                raise UsageError(f"{name} {given!r} does not combine with --elevater-root, which evaluates every "
                                 "set under its folder in full; give one or the other")
    else:
        if args.markdown:
            raise UsageError(f"--markdown {args.markdown!r} writes the --elevater-root table; give --elevater-root DIR")
        args.images = args.images or "fashion-mnist"


def write_outputs(args: argparse.Namespace, result: dict) -> None:
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if args.elevater_root:
        who = result.get("teacher_id") or result.get("checkpoint")
        n = ", ".join(f"{lang.upper()} {len(ts)}" for lang, ts in result["templates"].items())
        table = suite.markdown_table(result, f"Zero-shot accuracy (%) of {who} on the ELEVATER sets under "
                                             f"{result['root']} (templates: {n})")
        print(table, end="")
        if args.markdown:
            atomic_write_text(args.markdown, table)
    else:
        print(text, end="")
    if args.json:
        atomic_write_text(args.json, text)


def run(args: argparse.Namespace) -> None:
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    write_outputs(args, evaluate_elevater(args) if args.elevater_root else evaluate_one(args))


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
