"""Where images come from, as the runners' --images option names them."""
from __future__ import annotations

import argparse
from pathlib import Path

from dcclip_mobile.config import StudentConfig
from dcclip_mobile.data.elevater import ElevaterFolder
from dcclip_mobile.data.fashion_mnist import FashionMNIST
from dcclip_mobile.data.pairs import PairsFile
from dcclip_mobile.data.preprocess import ImagePreprocess

IMAGE_SOURCES = "'fashion-mnist', a pairs file (.jsonl/.csv/.tsv), or an ELEVATER folder"


def add_image_source_args(ap: argparse.ArgumentParser, default_limit: int | None) -> None:
    ap.add_argument("--images", default="fashion-mnist", help=f"image source: {IMAGE_SOURCES}")
    ap.add_argument("--limit", type=int, default=default_limit,
                    help="use a seeded class-balanced subset of this many Fashion-MNIST images")


def image_source(args: argparse.Namespace, split: str):
    spec = args.images
    if spec == "fashion-mnist":
        return FashionMNIST(split, limit=args.limit, seed=getattr(args, "seed", 0))
    p = Path(spec)
    if p.is_file():
        return PairsFile(p)
    if p.is_dir():
        return ElevaterFolder(p, split="test" if split == "test" else split)
    raise ValueError(f"--images {spec!r} is neither 'fashion-mnist' nor an existing file or folder; "
                     f"accepted: {IMAGE_SOURCES}")


def student_preprocess(cfg: StudentConfig) -> ImagePreprocess:
    return ImagePreprocess(cfg.image.image_size, tuple(cfg.image.image_mean), tuple(cfg.image.image_std))
