"""Open an image source by name: 'fashion-mnist', a pairs file, or an ELEVATER folder."""
from __future__ import annotations

from pathlib import Path

from .elevater import ElevaterFolder
from .fashion_mnist import FashionMNIST
from .pairs import PairsFile

IMAGE_SOURCES = "'fashion-mnist', a pairs file (.jsonl/.csv/.tsv), or an ELEVATER folder"


def open_image_source(spec: str, split: str, limit: int | None = None, seed: int = 0):
    if spec == "fashion-mnist":
        return FashionMNIST(split, limit=limit, seed=seed)
    p = Path(spec)
    if p.is_file():
        return PairsFile(p)
    if p.is_dir():
        return ElevaterFolder(p, split=split)
    raise ValueError(f"image source {spec!r} is neither 'fashion-mnist' nor an existing file or folder; "
                     f"accepted: {IMAGE_SOURCES}")
