"""Stage 1: distill the teacher's image feature maps and bilingual text features into a student.

    python -m train.distill --teacher offline --images fashion-mnist --out runs/demo/stage1

Trains the bilingual tokenizer on the text corpus, sizes the student from a preset (its joint space takes
the teacher's dimension so the embedding terms apply), and trains with the shared loop (resumable with
--resume) on --device in --amp precision. The teacher either fills a feature cache once (every torchrun
rank its own shards) or runs online inside each step (--teacher-mode; see train/teacher_mode.py).
--images also takes webdataset tar shards ('data/{00000..00099}.tar'), which stream with an online teacher.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from dcclip_mobile.atomic import atomic_write_text
from dcclip_mobile.config import load_preset
from dcclip_mobile.data.emoji import CLASS_GROUPS, class_emoji, emoji_present
from dcclip_mobile.data.corpus import fit_to_context, sentence_mix, tokenizer_texts, user_texts
from dcclip_mobile.data.labels import bilingual_corpus
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.models.inherit import (check_prunable, is_prunable, frozen_prefix_layers, identity_adapter_init, imagenet_bank_prompts,
                                          imagenet_class_bank, inherit_efficientnet_lite0, inherit_imagenet_head,
                                          load_efficientnet_lite0)
from dcclip_mobile.teachers import build_teacher
from dcclip_mobile.teachers.cache import cache_image_features, cache_text_features, teacher_cache_dir
from dcclip_mobile.tokenizer import BilingualTokenizer, normalize, train_tokenizer
from dcclip_mobile.data.shards import is_shard_spec
from dcclip_mobile.data.preprocess import ImagePreprocess
from dcclip_mobile.errors import UsageError, run_main

from .cli import add_image_tower_args, add_train_args, train_config_from_args
from .datasets import DistillSet, collate_skipping_bad
from .device import add_device_args, resolve_amp, resolve_channels_last, resolve_device
from .loop import TrainConfig, init_distributed, throughput_summary, train
from .sources import add_image_source_args, image_source
from .stages import DistillStage, DistillWeights, OnlineTeacher
from .streams import distill_stream, stream_dataset_id
from .teacher_mode import add_teacher_mode_args, place_teacher, teacher_batch, teacher_mode

DEFAULTS = TrainConfig(steps=150, batch_size=64, lr=2e-3, warmup_steps=15, checkpoint_every=50)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m train.distill", description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="offline", help="'offline' or 'altclip:<hub id or local dir>'")
    add_image_source_args(ap, default_limit=5000)
    ap.add_argument("--corpus-size", type=int, default=8000, help="bilingual class prompts to distill on")
    ap.add_argument("--sentences", type=int, default=None,
                    help="real English and Chinese sentences from the registry corpus (dcclip_mobile/data/corpus.py), "
                         "of lengths spread up to the context, added to the prompts (default: half of --corpus-size; "
                         "0: none)")
    ap.add_argument("--tokenizer-corpus", default="auto", choices=["auto", "registry", "texts"],
                    help="what the tokenizer trains on besides stage 1's texts: 'registry' adds the registry corpus's "
                         "sentences and word lists (sized by the vocabulary), 'texts' nothing; auto: registry when "
                         "--sentences > 0")
    ap.add_argument("--texts-per-image", type=int, default=8,
                    help="texts in each step per image (text steps are cheap; the text student needs many)")
    ap.add_argument("--texts", help="your own corpus, added to the others: a text file (one text per line, English "
                                    "or Chinese), a pairs file (.jsonl/.csv/.tsv: its captions) or webdataset shards "
                                    "(their captions); with --corpus-size 0 --sentences 0 it replaces them")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--inherit", default="auto", choices=["auto", "efficientnet-lite0", "none"],
                    help="start the image tower as a pruned pretrained EfficientNet-Lite0 (auto: when the preset "
                         "is built for it, e.g. small-lite)")
    add_image_tower_args(ap, -1, "first image layers kept fixed (-1: an inherited tower's layers above 1/16 "
                                 "resolution, else 0)")
    ap.add_argument("--image-size", type=int, help="override the preset's student input size")
    ap.add_argument("--vocab-size", type=int, help="tokenizer vocabulary bound (default: the preset's)")
    ap.add_argument("--cache", default=None, help="teacher feature cache (default: $DCCLIP_CACHE/teacher_features)")
    add_teacher_mode_args(ap)
    add_device_args(ap)
    ap.add_argument("--out", default="runs/distill")
    for name, default in vars(DistillWeights()).items():
        ap.add_argument(f"--w-{name.replace('_', '-')}", type=float, default=default, help=f"loss weight: {name}")
    add_train_args(ap, DEFAULTS)
    return ap


def run(args: argparse.Namespace) -> Path:
    cfg = train_config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = resolve_amp(args.amp, device)
    info = init_distributed(device)
    out = Path(args.out)
    cache = teacher_cache_dir(args.cache)
    teacher = place_teacher(build_teacher(args.teacher), device, amp)
    stream = is_shard_spec(args.images)
    images = None if stream else image_source(args, split="train")
    mode = teacher_mode(args.teacher_mode, None if stream else len(images), args.teacher_map_pool)
    student_cfg = load_preset(args.preset)
    if args.image_size:
        student_cfg.image.image_size = args.image_size
    student_cfg.embed_dim = teacher.embed_dim  # the student's joint space is the teacher's
    vocab_size, context = args.vocab_size or student_cfg.text.vocab_size, student_cfg.text.context_length
    corpus, tokenizer_extra = text_corpus(args, vocab_size, context)
    tokenizer = shared_tokenizer(out / "tokenizer", corpus + tokenizer_extra, vocab_size, context, args.resume, info)
    student_cfg.text.vocab_size = tokenizer.vocab_size
    # a text longer than the context is cut to what the student reads, so the teacher embeds the same words
    corpus = fit_to_context(corpus, lambda t: len(tokenizer.sp.encode(normalize(t))), context - 2)
    torch.manual_seed(args.seed)
    student = DCCLIPStudent(student_cfg)
    head_channels = inherit_weights(args.inherit, student, teacher, cache, info)

    weights = DistillWeights(**{k: getattr(args, f"w_{k}") for k in vars(DistillWeights())})
    frozen = args.freeze_image_layers if args.freeze_image_layers >= 0 else \
        0 if head_channels is None else frozen_prefix_layers(student.cfg.image)
    online = OnlineTeacher(teacher, args.teacher_map_pool, corpus) if mode == "online" else None
    stage = DistillStage(student, teacher.feature_channels, teacher.text_feature_dim, teacher.embed_dim, weights,
                         args.affinity_scale, frozen, args.image_lr_scale, online=online)
    if head_channels is not None and teacher.teacher_id.startswith("offline"):
        # the offline teacher's map is Lite0's own head: the adapter starts as the identity on the kept channels
        identity_adapter_init(stage.image_adapter.conv, head_channels)
    tokens = tokenizer(corpus)
    pre = ImagePreprocess.for_student(student_cfg)
    if stream:
        data = distill_stream(args.images, args.seed, pre, teacher.preprocess, tokens, args.texts_per_image)
        images_id = stream_dataset_id(data.urls)
    elif mode == "online":
        data = DistillSet(images, pre, None, tokens, None, args.texts_per_image, teacher_pre=teacher.preprocess)
        images_id = images.dataset_id
    else:
        teacher_images = cache_image_features(teacher, images.image, len(images), images.dataset_id, cache,
                                              batch_size=teacher_batch(device), workers=cfg.num_workers, map_pool=args.teacher_map_pool,
                                              rank=info.rank, world=info.world)
        teacher_texts = cache_text_features(teacher, corpus, f"corpus-{len(corpus)}", cache,
                                            rank=info.rank, world=info.world)
        data = DistillSet(images, pre, teacher_images, tokens, teacher_texts, args.texts_per_image)
        images_id = images.dataset_id
    ckpt = train(stage, data, collate_skipping_bad, tokenizer, cfg, out, resume=args.resume, stop_after=args.stop_after,
                 desc=f"stage 1 distill ({mode} teacher, {device.type}, amp {amp})", device=device, amp=amp, channels_last=resolve_channels_last(args.channels_last, device),
                 extra_state={"teacher": teacher.teacher_id, "images": images_id})
    if info.is_main:
        atomic_write_text(out / "stage.json", json.dumps(
            {"stage": "distill", "teacher": teacher.teacher_id, "teacher_mode": mode, "device": str(device),
             "amp": amp, "world": info.world, "checkpoint": str(ckpt),
             "throughput": throughput_summary(out)}, indent=2) + "\n")
    return ckpt


def text_corpus(args: argparse.Namespace, vocab_size: int, context: int) -> tuple[list[str], list[str]]:
    """(stage 1's texts, the tokenizer's extra texts). Stage 1: --corpus-size class prompts, --sentences
    registry sentences of every length up to the context (both languages, half each), then --texts (a text file,
    a pairs file's or shards' captions). The tokenizer also reads the registry corpus (--tokenizer-corpus)."""
    sentences = args.corpus_size // 2 if args.sentences is None else args.sentences
    if args.corpus_size < 0 or sentences < 0:
        raise UsageError("--corpus-size and --sentences must be >= 0")
    corpus = class_prompt_corpus(args.corpus_size, args.seed) if args.corpus_size > 0 else []
    if sentences > 0:
        corpus += [t for t, _ in sentence_mix(sentences, seed=args.seed, context_length=context)]
    if args.texts:
        corpus += [t for t, _ in user_texts(args.texts)]
    if not corpus:
        raise UsageError("the text corpus is empty: give --corpus-size > 0, --sentences > 0 or --texts FILE")
    registry = args.tokenizer_corpus == "registry" or (args.tokenizer_corpus == "auto" and sentences > 0)
    return corpus, tokenizer_texts(vocab_size, seed=args.seed) if registry else []


def shared_tokenizer(tok_dir: Path, corpus: list[str], vocab_size: int, context_length: int, resume: bool,
                     info) -> BilingualTokenizer:
    """Train the tokenizer once (rank 0) and let every rank load that one: trained per rank, the pieces
    could differ and the ranks would train different vocabularies."""
    if not (resume and (tok_dir / "tokenizer.model").is_file()) and info.is_main:
        train_tokenizer(corpus, vocab_size, context_length).save(tok_dir)
    if info.world > 1:
        torch.distributed.barrier()
    return BilingualTokenizer.load(tok_dir)


def class_prompt_corpus(size: int, seed: int) -> list[str]:
    """Stage 1's bilingual class prompts; stage 2's replay (train/replay.py) draws the same texts, so their teacher
    embeddings come from the same cache entry."""
    return [t for t, _ in bilingual_corpus(size, seed=seed, classnames=corpus_classnames(seed))]


def corpus_classnames(seed: int) -> dict[str, list[str]]:
    """The names the corpus leans on: the seen emoji classes (what stage 2 aligns on), never a held-out class;
    without the emoji data, none (ImageNet prompts only)."""
    if not emoji_present():
        return {"en": [], "zh": []}
    seen = [e for g in CLASS_GROUPS for e in class_emoji(g, "seen", seed)]
    # names only: adding their CLDR keywords (short, often one-character words in Chinese) lowered the stage-1
    # student's held-out retention from 48/51% to 43/17% (EN/ZH) in one run each
    return {lang: [e.name[lang] for e in seen] for lang in ("en", "zh")}


def inherit_weights(mode: str, student: DCCLIPStudent, teacher, cache, info=None) -> torch.Tensor | None:
    """Weight inheritance (models/inherit.py); returns the kept Lite0 head channels, or None when not inheriting."""
    if mode == "none" or (mode == "auto" and not is_prunable(student.cfg.image)):
        return None
    check_prunable(student.cfg.image)  # asked for by name: a clear error when the preset cannot inherit
    lite0 = load_efficientnet_lite0()
    kept = inherit_efficientnet_lite0(student.image.features, student.cfg.image, lite0)["head_channels"]
    if student.cfg.image.head_anchors:
        texts = imagenet_bank_prompts()
        rank, world = (info.rank, info.world) if info is not None else (0, 1)
        emb = cache_text_features(teacher, texts, "imagenet-class-bank", cache, rank=rank, world=world)["embedding"].float()
        inherit_imagenet_head(student.image, lite0, kept, imagenet_class_bank(emb))
    print(f"image tower inherited from EfficientNet-Lite0 ({len(kept)} of 1280 head channels kept)", flush=True)
    return kept


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), lambda args: print(f"stage 1 checkpoint: {run(args)}"), argv)


if __name__ == "__main__":
    sys.exit(main())
