"""Open an image source by name: 'fashion-mnist', the rendered emoji, a pairs file, or an ELEVATER folder."""
from __future__ import annotations

from pathlib import Path

from .elevater import ElevaterFolder
from .emoji import CLASS_GROUPS, EmojiClasses, EmojiViews, ViewRecipe
from .fashion_mnist import FashionMNIST
from .pairs import PairsFile

IMAGE_SOURCES = ("'fashion-mnist', 'emoji[:V]' (unlabeled views of the training emoji; V views each, default 4), "
                 "'emoji-seen[:V]' (the seen emoji classes, labeled, V views each), a pairs file "
                 "(.jsonl/.csv/.tsv), or an ELEVATER folder")


def _views(spec: str, default: int) -> int:
    _, _, v = spec.partition(":")
    if not v:
        return default
    if not v.isdigit() or int(v) < 1:
        raise ValueError(f"{spec!r}: the views count after ':' must be a positive integer")
    return int(v)


def open_image_source(spec: str, split: str, limit: int | None = None, seed: int = 0):
    if spec == "fashion-mnist":
        return FashionMNIST(split, limit=limit, seed=seed)
    if spec.split(":")[0] == "emoji":
        return EmojiViews(_views(spec, 4), seed=seed, limit=limit)
    if spec.split(":")[0] == "emoji-seen":
        return EmojiClasses(CLASS_GROUPS, "seen", _views(spec, 4), seed, recipe=ViewRecipe(), salt="train")
    p = Path(spec)
    if p.is_file():
        return PairsFile(p)
    if p.is_dir():
        return ElevaterFolder(p, split=split)
    raise ValueError(f"image source {spec!r} is neither 'fashion-mnist' nor an existing file or folder; "
                     f"accepted: {IMAGE_SOURCES}")
