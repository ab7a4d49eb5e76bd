"""Stage 2: align the two students with symmetric InfoNCE on English and Chinese image-text pairs.

    python -m train.align --init runs/demo/stage1/checkpoint --images fashion-mnist --out runs/demo/stage2

Starts from a stage-1 checkpoint. On a labeled set (Fashion-MNIST, ELEVATER) captions are made from the
labels, English and Chinese alternating, and same-class pairs count as positives; a pairs file brings its
own captions, and so do webdataset tar shards ('data/{00000..00099}.tar'), which stream. --distill-weight
keeps the image embeddings near the teacher's while aligning; that teacher is cached or run online
(--teacher-mode), on --device in --amp precision like the student.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from dcclip_mobile.atomic import atomic_write_text
from dcclip_mobile.checkpoint import load_student
from dcclip_mobile.teachers import build_teacher
from dcclip_mobile.teachers.cache import cache_image_features, cache_text_features, teacher_cache_dir

from dcclip_mobile.data.shards import is_shard_spec
from dcclip_mobile.data.preprocess import ImagePreprocess
from dcclip_mobile.errors import UsageError, run_main

from .cli import add_image_tower_args, add_train_args, train_config_from_args
from .datasets import AlignSet, collate_skipping_bad
from .device import add_device_args, resolve_amp, resolve_channels_last, resolve_device
from .loop import TrainConfig, init_distributed, throughput_summary, train
from .sources import add_image_source_args, image_source
from .distill import class_prompt_corpus
from .replay import TextReplay
from .stages import AlignStage, OnlineTeacher
from .streams import align_stream, stream_dataset_id
from .teacher_mode import add_teacher_mode_args, place_teacher, teacher_batch, teacher_mode

DEFAULTS = TrainConfig(steps=300, batch_size=64, lr=1e-3, warmup_steps=20, checkpoint_every=100)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m train.align", description=__doc__.splitlines()[0])
    ap.add_argument("--init", required=True, help="stage-1 checkpoint directory")
    add_image_source_args(ap, default_limit=10000)
    ap.add_argument("--distill-weight", type=float, default=0.0,
                    help="weight of 1-cos(student, teacher) image embeddings (needs --teacher)")
    ap.add_argument("--affinity-weight", type=float, default=0.0,
                    help="weight of the teacher's image-caption affinities over each batch (needs --teacher)")
    ap.add_argument("--text-distill-weight", type=float, default=0.0,
                    help="weight of 1-cos(student, teacher) caption embeddings (needs --teacher)")
    ap.add_argument("--replay-corpus-size", type=int, default=0,
                    help="bilingual class prompts (stage 1's kind of corpus, same seed) replayed with the teacher's "
                         "embeddings while aligning, so the text tower keeps the teacher's geometry on classes it "
                         "does not align on (needs --teacher; 0: off)")
    ap.add_argument("--replay-texts", type=int, default=256, help="replayed texts per step")
    ap.add_argument("--replay-weight", type=float, default=1.0, help="weight of 1-cos(student, teacher) on them")
    add_image_tower_args(ap, 0, "first image layers kept fixed")
    ap.add_argument("--teacher", default=None, help="teacher for --distill-weight / --affinity-weight")
    ap.add_argument("--cache", default=None)
    add_teacher_mode_args(ap)
    add_device_args(ap)
    ap.add_argument("--no-label-positives", action="store_true",
                    help="plain InfoNCE even on labeled data (same-class pairs become negatives)")
    ap.add_argument("--out", default="runs/align")
    add_train_args(ap, DEFAULTS)
    return ap


def run(args: argparse.Namespace) -> Path:
    cfg = train_config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.replay_corpus_size < 0:
        raise UsageError(f"--replay-corpus-size must be >= 0, got {args.replay_corpus_size}")
    asked = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in
             ("distill_weight", "affinity_weight", "text_distill_weight", "replay_corpus_size") if getattr(args, k) > 0]
    wants_teacher = bool(asked)
    if wants_teacher and not args.teacher:
        raise UsageError(f"{' and '.join(asked)} need{'s' if len(asked) == 1 else ''} a teacher: add --teacher "
                         f"(e.g. --teacher offline, the one stage 1 distilled from)")
    device = resolve_device(args.device)
    amp = resolve_amp(args.amp, device)
    info = init_distributed(device)
    student, tokenizer = load_student(args.init)
    stream = is_shard_spec(args.images)
    images = None if stream else image_source(args, split="train")
    mode = teacher_mode(args.teacher_mode, None if stream else len(images), args.teacher_map_pool)
    teacher = place_teacher(build_teacher(args.teacher), device, amp) if wants_teacher else None
    online = OnlineTeacher(teacher) if wants_teacher and mode == "online" else None
    pre = ImagePreprocess.for_student(student.cfg)
    teacher_pre = teacher.preprocess if online else None
    if stream:
        data = align_stream(args.images, args.seed, pre, tokenizer, teacher_pre)
        images_id = stream_dataset_id(data.urls)
    else:
        labels = torch.as_tensor(images.labels) if hasattr(images, "labels") else None
        teacher_emb = None
        cache = teacher_cache_dir(args.cache)
        if (args.distill_weight > 0 or args.affinity_weight > 0) and mode == "cache":  # only these read them
            teacher_emb = cache_image_features(teacher, images.image, len(images), images.dataset_id, cache,
                                               batch_size=teacher_batch(device), workers=cfg.num_workers, rank=info.rank,
                                               world=info.world)["embedding"]
        data = AlignSet(images, pre, tokenizer, labels=labels, classnames=getattr(images, "classes", None),
                        teacher_embeddings=teacher_emb, teacher_pre=teacher_pre)
        if mode == "cache" and (args.affinity_weight > 0 or args.text_distill_weight > 0):
            data.teacher_text = cache_text_features(teacher, data.captions, f"captions-{images.dataset_id}",
                                                    cache, rank=info.rank, world=info.world)["embedding"]
        images_id = images.dataset_id
    stage = AlignStage(student, args.distill_weight, label_aware=not args.no_label_positives,
                       affinity_weight=args.affinity_weight, affinity_scale=args.affinity_scale,
                       frozen_image_layers=args.freeze_image_layers, text_distill_weight=args.text_distill_weight,
                       image_lr_scale=args.image_lr_scale, online=online,
                       replay=replay_bank(args, teacher, tokenizer, info) if args.replay_corpus_size else None,
                       replay_weight=args.replay_weight)
    ckpt = train(stage, data, collate_skipping_bad, tokenizer, cfg, args.out, resume=args.resume, stop_after=args.stop_after,
                 desc=f"stage 2 align ({device.type}, amp {amp})", device=device, amp=amp, channels_last=resolve_channels_last(args.channels_last, device),
                 extra_state={"init": str(args.init), "images": images_id})
    if info.is_main:
        atomic_write_text(Path(args.out) / "stage.json", json.dumps(
            {"stage": "align", "init": str(args.init), "checkpoint": str(ckpt), "device": str(device), "amp": amp,
             "world": info.world, "teacher_mode": mode if wants_teacher else None,
             "throughput": throughput_summary(args.out)}, indent=2) + "\n")
    return ckpt


def replay_bank(args: argparse.Namespace, teacher, tokenizer, info) -> TextReplay:
    """Stage 1's kind of corpus (class prompts, the seen classes' names among them, never a held-out one) with
    the teacher's embeddings, cached like stage 1's (the same texts hit the same cache)."""
    corpus = class_prompt_corpus(args.replay_corpus_size, args.seed)
    emb = cache_text_features(teacher, corpus, f"corpus-{len(corpus)}", teacher_cache_dir(args.cache),
                              rank=info.rank, world=info.world)["embedding"]
    tokens = tokenizer(corpus)
    return TextReplay(tokens["input_ids"], tokens["attention_mask"], emb, args.replay_texts,
                      seed=args.seed * 1009 + info.rank)  # each rank its own draws


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), lambda args: print(f"stage 2 checkpoint: {run(args)}"), argv)


if __name__ == "__main__":
    sys.exit(main())
