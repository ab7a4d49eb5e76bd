"""Teacher outputs on disk, so a teacher runs once per data set and not once per epoch or stage.

A cache is a directory named by a hash of (teacher id, data set id, preprocessing, kind) holding
fp16 safetensors shards and `meta.json`, which lists the finished shards. Each shard is written atomically
and then recorded, so an interrupted fill resumes at the first missing shard and never reads half a shard.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..atomic import atomic_write_text
from .base import Teacher

CACHE_FORMAT_VERSION = 1


class CacheMissingError(FileNotFoundError):
    pass


class TeacherCache:
    def __init__(self, root: str | Path, teacher_id: str, dataset_id: str, preprocess_key: str, kind: str,
                 size: int, shard_size: int = 256):
        if kind not in ("image", "text"):
            raise ValueError(f"cache kind {kind!r}; accepted: 'image', 'text'")
        self.meta = {"format_version": CACHE_FORMAT_VERSION, "teacher_id": teacher_id, "dataset_id": dataset_id,
                     "preprocess": preprocess_key, "kind": kind, "size": size, "shard_size": shard_size}
        key = hashlib.sha256(json.dumps(self.meta, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / f"{kind}-{key}"
        self.shard_size = shard_size
        self.size = size

    @property
    def n_shards(self) -> int:
        return -(-self.size // self.shard_size)

    def done(self) -> set[int]:
        p = self.dir / "meta.json"
        return set(json.loads(p.read_text())["done"]) if p.is_file() else set()

    def complete(self) -> bool:
        return len(self.done()) == self.n_shards

    def _record(self, done: set[int]) -> None:
        atomic_write_text(self.dir / "meta.json", json.dumps({**self.meta, "done": sorted(done)}, indent=1))

    def fill(self, compute: Callable[[int, int], dict[str, torch.Tensor]], desc: str = "teacher") -> "TeacherCache":
        """compute(start, stop) -> {name: tensor[stop-start, ...]}; called only for missing shards."""
        self.dir.mkdir(parents=True, exist_ok=True)
        done = self.done()
        todo = [s for s in range(self.n_shards) if s not in done]
        for s in tqdm(todo, desc=desc, unit="shard", disable=not todo):
            start, stop = s * self.shard_size, min(self.size, (s + 1) * self.shard_size)
            out = {k: v.detach().to(torch.float16).contiguous() for k, v in compute(start, stop).items()}
            tmp = self.dir / f".shard_{s:05d}.tmp"
            save_file(out, str(tmp))
            tmp.replace(self.dir / f"shard_{s:05d}.safetensors")
            done.add(s)
            self._record(done)
        return self

    def load(self) -> dict[str, torch.Tensor]:
        """All shards concatenated, fp16."""
        if not self.complete():
            raise CacheMissingError(f"teacher cache {str(self.dir)!r} is incomplete ({len(self.done())}/"
                                    f"{self.n_shards} shards); fill it first (python -m train.distill fills it)")
        shards = [load_file(str(self.dir / f"shard_{s:05d}.safetensors")) for s in range(self.n_shards)]
        return {k: torch.cat([sh[k] for sh in shards]) for k in shards[0]}


def cache_image_features(teacher: Teacher, images: Callable[[int], object], size: int, dataset_id: str,
                         root: str | Path, batch_size: int = 64, shard_size: int = 256) -> dict[str, torch.Tensor]:
    """Teacher feature maps and embeddings for images(0..size-1) (PIL images), cached."""
    from ..data.preprocess import preprocess_batch

    cache = TeacherCache(root, teacher.teacher_id, dataset_id, teacher.preprocess.key(), "image", size, shard_size)

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        maps, embs = [], []
        for i in range(start, stop, batch_size):
            batch = preprocess_batch([images(j) for j in range(i, min(stop, i + batch_size))], teacher.preprocess)
            f = teacher.encode_image(batch)
            maps.append(f.feature_map)
            embs.append(f.embedding)
        return {"feature_map": torch.cat(maps), "embedding": torch.cat(embs)}

    return cache.fill(compute, desc=f"teacher images ({dataset_id})").load()


def cache_text_features(teacher: Teacher, texts: Sequence[str], dataset_id: str, root: str | Path,
                        batch_size: int = 256, shard_size: int = 4096) -> dict[str, torch.Tensor]:
    """Teacher pooled features and embeddings for `texts`, cached."""
    content = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]  # same name, other texts: other cache
    cache = TeacherCache(root, teacher.teacher_id, f"{dataset_id}-{content}", "text", "text", len(texts), shard_size)

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        pooled, embs = [], []
        for i in range(start, stop, batch_size):
            f = teacher.encode_text(list(texts[i:min(stop, i + batch_size)]))
            pooled.append(f.pooled)
            embs.append(f.embedding)
        return {"pooled": torch.cat(pooled), "embedding": torch.cat(embs)}

    return cache.fill(compute, desc=f"teacher texts ({dataset_id})").load()
