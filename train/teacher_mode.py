"""How a stage gets its teacher's outputs: a disk cache filled once, or the teacher run online in each step.

The cache pays the teacher once per image and is the fast choice when a set is trained for many epochs
and its maps fit on disk. At DC-CLIP's scale they do not: AltCLIP's ViT-L/14 map is 1024 x 16 x 16 fp16,
512 KB per image, 0.5 TB for a million images. `auto` therefore caches sets up to ONLINE_ABOVE images and
runs the teacher online above that (and always for streamed shards, which have no index to cache by).
"""
from __future__ import annotations

import argparse

import torch

from dcclip_mobile.errors import UsageError

from .device import AMP_DTYPES

TEACHER_MODES = ("auto", "online", "cache")
ONLINE_ABOVE = 20_000  # images; 20k ViT-L/14 maps are 10 GB of cache, about what a scratch disk holds


def add_teacher_mode_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("teacher")
    g.add_argument("--teacher-mode", default="auto", choices=TEACHER_MODES,
                   help=f"cache: fill a feature cache once; online: run the teacher in each step, nothing on disk; "
                        f"auto: cache up to {ONLINE_ABOVE} images, online above that and for tar shards")
    g.add_argument("--teacher-map-pool", type=int, default=None, metavar="K",
                   help="average-pool the teacher's feature map to K x K before the loss and the cache "
                        "(a ViT-L/14 16x16 map at K=8 costs a quarter)")


def teacher_mode(mode: str, n_images: int | None, map_pool: int | None = None) -> str:
    """The mode to use: n_images None means a stream, which only the online teacher can serve."""
    if map_pool is not None and map_pool < 1:
        raise UsageError(f"--teacher-map-pool {map_pool}: give K >= 1 (the pooled map is K x K)")
    if mode == "cache" and n_images is None:
        raise UsageError("--teacher-mode cache needs an indexed image set; tar shards stream, so use "
                         "--teacher-mode online (or auto)")
    if mode == "auto":
        return "online" if n_images is None or n_images > ONLINE_ABOVE else "cache"
    return mode


def place_teacher(teacher, device: torch.device, amp: str):
    """The teacher on the training device; on a GPU it runs in the amp dtype outright (it is frozen, so
    nothing needs its fp32 weights), on the CPU in fp32 (autocast decides per op)."""
    if device.type == "cuda" and amp != "off":
        return teacher.to(device, AMP_DTYPES[amp])
    return teacher.to(device)


def teacher_batch(device: torch.device) -> int:
    """Images per teacher call when filling a cache: small on the CPU (cache-friendly), large on a GPU."""
    return 64 if device.type == "cuda" else 4
