"""Zero-shot classification sets in the ELEVATER layout Chinese-CLIP publishes:

    ROOT/label.txt       one English class name per line (line i = class i)
    ROOT/label_cn.txt    one Chinese class name per line
    ROOT/<split>/<class id>/*.jpg|png|...   (class id = the line index, e.g. 000, 001 or 0, 1)
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from .preprocess import load_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
LABEL_FILES = {"en": "label.txt", "zh": "label_cn.txt"}
LAYOUT = "label.txt, label_cn.txt and <split>/<class id>/<images>"


def missing_layout_parts(root: str | Path, split: str = "test") -> list[str]:
    """Which of label.txt, label_cn.txt and <split>/ `root` lacks ([] = it is laid out as an ELEVATER set).
    Only looks at names, so a suite can sort its folders without listing every image."""
    root = Path(root)
    missing = [f for f in LABEL_FILES.values() if not (root / f).is_file()]
    return missing + ([f"{split}/"] if not (root / split).is_dir() else [])


class ElevaterFolder:
    def __init__(self, root: str | Path, split: str = "test"):
        root = Path(root)
        names = {}
        for lang, f in LABEL_FILES.items():
            p = root / f
            if not p.is_file():
                raise FileNotFoundError(f"ELEVATER folder {str(root)!r} has no {f}; the layout is {LAYOUT}")
            names[lang] = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names["en"]) != len(names["zh"]):
            raise ValueError(f"{str(root)!r}: label.txt has {len(names['en'])} classes, label_cn.txt {len(names['zh'])}")
        split_dir = root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"ELEVATER folder {str(root)!r} has no split {split!r}")
        self.files: list[Path] = []
        self.labels: list[int] = []
        for d in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if not d.name.isdigit() or int(d.name) >= len(names["en"]):
                raise ValueError(f"class folder {str(d)!r} is not a class id in 0..{len(names['en']) - 1}")
            for f in sorted(d.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    self.files.append(f)
                    self.labels.append(int(d.name))
        if not self.files:
            raise ValueError(f"ELEVATER split {str(split_dir)!r} has no images")
        self.classes = names
        self.dataset_id = f"elevater-{root.resolve()}-{split}-{len(self.files)}"

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> Image.Image:
        return load_image(self.files[i])
