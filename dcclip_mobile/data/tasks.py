"""Few-shot tasks: labeled image sets with English and Chinese class names, each a folder in the ELEVATER
layout the toolkit already reads (data/elevater.py) with two splits:

    TASK/label.txt, label_cn.txt     class names, line i = class i
    TASK/train/<class id>/*.png      the pool K shots per class are drawn from (seeded)
    TASK/test/<class id>/*.png       the evaluation split; never drawn from

A user's own task is any such folder. The built-in ones are made offline from what setup.sh installs:

    emoji-<group>      the held-out (unseen) half of one of the five emoji class groups (data/emoji.py): classes
                       no distillation stage ever saw, as pictures or as names; train views are rendered with
                       another salt than test views, and the plain test picture never reaches the train split
    fashion-mnist      Fashion-MNIST: a seeded class-balanced pool from its train split, 1000 test images

    python -m dcclip_mobile.data.tasks --out DIR [--tasks A,B]     writes the built-in tasks
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..assets import cache_dir
from ..atomic import atomic_directory
from ..errors import run_main
from .elevater import ElevaterFolder, missing_layout_parts

TASK_INFO = "task.json"
TASK_FORMAT_VERSION = 1
SHOTS = (1, 2, 4, 8, 16)
EMOJI_TRAIN_VIEWS = 32   # the pool: twice the largest K, so 16-shot draws differ between seeds
EMOJI_TEST_VIEWS = 4     # the plain picture and 3 test views per class
FASHION_TRAIN_PER_CLASS = 64
FASHION_TEST_IMAGES = 1000


def _emoji_tasks() -> dict[str, str]:
    from .emoji import CLASS_GROUPS, GROUP_SLUGS

    return {f"emoji-{GROUP_SLUGS[g]}": g for g in CLASS_GROUPS}


BUILTIN_TASKS = (*_emoji_tasks(), "fashion-mnist")


def default_task_root() -> Path:
    """Where built-in tasks are written unless told otherwise: <DCCLIP_CACHE>/tasks."""
    return cache_dir() / "tasks"


# ------------------------------------------------------------------------------------------ writing
def _write_labels(root: Path, classes: dict[str, list[str]]) -> None:
    for lang, fname in (("en", "label.txt"), ("zh", "label_cn.txt")):
        (root / fname).write_text("".join(n + "\n" for n in classes[lang]), encoding="utf-8")


def _write_split(root: Path, split: str, images, labels: Sequence[int], n_classes: int) -> None:
    width = max(3, math.ceil(math.log10(n_classes + 1)))
    counts: dict[int, int] = {}
    for i, c in enumerate(labels):
        d = root / split / f"{c:0{width}d}"
        d.mkdir(parents=True, exist_ok=True)
        k = counts.get(c, 0)
        images(i).save(d / f"{k}.png")
        counts[c] = k + 1


def write_task(name: str, out: str | Path) -> Path:
    """Write built-in task `name` to OUT/name, atomically (a half-written task never exists)."""
    if name not in BUILTIN_TASKS:
        raise ValueError(f"unknown built-in task {name!r}; accepted: {', '.join(BUILTIN_TASKS)} "
                         "(or give the path of an ELEVATER folder with train/ and test/ splits)")
    final = Path(out) / name
    with atomic_directory(final) as tmp:
        if name == "fashion-mnist":
            from .fashion_mnist import FashionMNIST

            train = FashionMNIST("train", limit=FASHION_TRAIN_PER_CLASS * 10, seed=0)
            test = FashionMNIST("test", limit=FASHION_TEST_IMAGES, seed=0)
            classes = train.classes
            info = {"source": "Debian dataset-fashion-mnist", "train": train.dataset_id, "test": test.dataset_id}
        else:
            from .emoji import EmojiClasses, data_fingerprint

            group = _emoji_tasks()[name]
            train = EmojiClasses(group, "unseen", views=EMOJI_TRAIN_VIEWS, salt="fewshot")
            test = EmojiClasses(group, "unseen", views=EMOJI_TEST_VIEWS)
            classes = test.classes
            info = {"source": f"emoji group {group!r}, held-out (unseen) classes, data {data_fingerprint()}",
                    "train": train.dataset_id, "test": test.dataset_id}
        n = len(classes["en"])
        _write_labels(tmp, classes)
        _write_split(tmp, "train", train.image, [int(c) for c in train.labels], n)
        _write_split(tmp, "test", test.image, [int(c) for c in test.labels], n)
        info.update(format_version=TASK_FORMAT_VERSION, name=name, classes=n,
                    train_images=len(train), test_images=len(test))
        (tmp / TASK_INFO).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return final


def ensure_tasks(names: Sequence[str], root: str | Path | None = None, log=print) -> dict[str, Path]:
    """{name: folder}: each built-in task under `root` (written if missing), each path given as is."""
    root = Path(root) if root is not None else default_task_root()
    out = {}
    for spec in names:
        p = Path(spec)
        if spec not in BUILTIN_TASKS:
            if not p.is_dir():
                raise ValueError(f"task {spec!r} is neither a built-in task ({', '.join(BUILTIN_TASKS)}) nor a folder")
            out[p.name] = p
            continue
        folder = root / spec
        if missing_layout_parts(folder, "train") or missing_layout_parts(folder, "test"):
            log(f"writing task {spec} to {folder}")
            write_task(spec, root)
        out[spec] = folder
    return out


# ------------------------------------------------------------------------------------------ reading
@dataclass
class Task:
    """A task opened: its train pool and test split (both ElevaterFolder, the LabeledImages protocol)."""
    name: str
    root: Path
    train: ElevaterFolder
    test: ElevaterFolder

    @property
    def classes(self) -> dict[str, list[str]]:
        return self.test.classes

    @property
    def n_classes(self) -> int:
        return len(self.test.classes["en"])

    def fingerprint(self) -> str:
        """A hash of the names, labels and file sizes of both splits: keys cached image features."""
        h = hashlib.sha256(json.dumps(self.classes, ensure_ascii=False).encode())
        for split in (self.train, self.test):
            for f, y in zip(split.files, split.labels):
                h.update(f"{f.relative_to(self.root)}:{y}:{f.stat().st_size};".encode())
        return h.hexdigest()[:16]


def open_task(name: str, root: str | Path) -> Task:
    root = Path(root)
    for split in ("train", "test"):
        missing = missing_layout_parts(root, split)
        if missing:
            raise FileNotFoundError(f"task {name!r} at {str(root)!r} lacks {', '.join(missing)}; a task is an "
                                    "ELEVATER folder with label.txt, label_cn.txt, train/<class id>/ and test/<class id>/")
    train, test = ElevaterFolder(root, "train"), ElevaterFolder(root, "test")
    if train.classes != test.classes:
        raise ValueError(f"task {name!r}: train and test splits name different classes")
    return Task(name, root, train, test)


def sample_shots(labels: Sequence[int], shots: int, seed: int, n_classes: int | None = None) -> list[int]:
    """Indices of `shots` examples per class, drawn with `seed` (the same seed and pool give the same draw,
    and the draw for K is independent of the draw for another K). A class with fewer examples is an error:
    a K-shot figure must mean K per class."""
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    n_classes = n_classes if n_classes is not None else (max(by_class) + 1 if by_class else 0)
    out = []
    for c in range(n_classes):
        pool = by_class.get(c, [])
        if len(pool) < shots:
            raise ValueError(f"class {c} has {len(pool)} training examples; {shots} shots need {shots}")
        rng = random.Random(f"shots:{seed}:{shots}:{c}")
        out += sorted(rng.sample(pool, shots))
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m dcclip_mobile.data.tasks", description="write the built-in few-shot tasks")
    ap.add_argument("--out", default=None, help=f"folder (default {default_task_root()})")
    ap.add_argument("--tasks", default=",".join(BUILTIN_TASKS), help="comma-separated built-in task names")

    def run(args) -> None:
        out = Path(args.out) if args.out else default_task_root()
        for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            print(write_task(name, out))
    return run_main(ap, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
