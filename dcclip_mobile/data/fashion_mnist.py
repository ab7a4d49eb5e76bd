"""Fashion-MNIST, the built-in demo set, from Debian's `dataset-fashion-mnist` package, with bilingual labels."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DCClipError

DEFAULT_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
CLASSES_EN = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
CLASSES_ZH = ["T恤", "裤子", "套头衫", "连衣裙", "外套", "凉鞋", "衬衫", "运动鞋", "包", "短靴"]
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


class DatasetMissingError(DCClipError, FileNotFoundError):
    pass


def fashion_mnist_present(split: str = "test", root: str | Path = DEFAULT_DIR) -> bool:
    return all((Path(root) / f).is_file() for f in _FILES[split])


def _read_idx(path: Path, magic: int, header: int) -> np.ndarray:
    data = gzip.open(path).read()
    if int.from_bytes(data[:4], "big") != magic:
        raise ValueError(f"{str(path)!r} is not an IDX file (magic {data[:4].hex()})")
    return np.frombuffer(data, np.uint8, offset=header)


class FashionMNIST:
    """split 'train' (60k) or 'test' (10k); `limit` keeps the first n (the files are class-balanced in
    any prefix only roughly, so `limit` takes a seeded class-stratified subset instead)."""

    def __init__(self, split: str, root: str | Path = DEFAULT_DIR, limit: int | None = None, seed: int = 0):
        if split not in _FILES:
            raise ValueError(f"Fashion-MNIST split {split!r}; accepted: {', '.join(_FILES)}")
        root = Path(root)
        files = [root / f for f in _FILES[split]]
        if not fashion_mnist_present(split, root):
            raise DatasetMissingError(
                f"Fashion-MNIST is not in {str(root)!r}; install it with `apt-get install dataset-fashion-mnist` "
                "(or set FASHION_MNIST_DIR to a folder holding the four .gz files)")
        images = _read_idx(files[0], 2051, 16).reshape(-1, 28, 28)
        labels = _read_idx(files[1], 2049, 8).astype(np.int64)
        if limit is not None and limit < len(labels):
            rng = np.random.default_rng(seed)
            per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(10)]
            idx = np.sort(np.concatenate([p[: limit // 10 + (c < limit % 10)] for c, p in enumerate(per_class)]))
            images, labels = images[idx], labels[idx]
        self.split, self.images, self.labels = split, images, labels
        self.dataset_id = f"fashion-mnist-{split}-{len(labels)}-s{seed}"
        self.classes = {"en": CLASSES_EN, "zh": CLASSES_ZH}

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i], mode="L").convert("RGB")

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return self.image(i), int(self.labels[i])
