"""Where images come from, as the runners' --images option names them."""
from __future__ import annotations

import argparse

from dcclip_mobile.data.sources import IMAGE_SOURCES, open_image_source
from dcclip_mobile.errors import UsageError


def add_image_source_args(ap: argparse.ArgumentParser, default_limit: int | None) -> None:
    ap.add_argument("--images", default="fashion-mnist", help=f"image source: {IMAGE_SOURCES}")
    ap.add_argument("--limit", type=int, default=default_limit,
                    help="use a seeded class-balanced subset of this many Fashion-MNIST images")


def image_source(args: argparse.Namespace, split: str):
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: give a number of images >= 1 (or leave it out for the whole set)")
    try:
        return open_image_source(args.images, split, args.limit, getattr(args, "seed", 0))
    except ValueError as e:
        raise UsageError(f"--images: {e}") from None
