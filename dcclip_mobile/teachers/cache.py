"""Teacher outputs on disk, so a teacher runs once per data set and not once per epoch or stage.

A cache is a directory named by a hash of (teacher id, data set id, preprocessing, kind) holding
fp16 safetensors shards and `meta.json`, which lists the finished shards. Each shard is written atomically
and then recorded, so an interrupted fill resumes at the first missing shard and never reads half a shard.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable, Sequence

import torch
import numpy as np
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..assets import cache_dir
from ..atomic import atomic_write_text
from ..errors import DCClipError
from .base import Teacher

CACHE_FORMAT_VERSION = 1


def teacher_cache_dir(override: str | Path | None = None) -> Path:
    """Where teacher features live: `override` (a --cache option) or <DCCLIP_CACHE>/teacher_features."""
    return Path(override) if override else cache_dir() / "teacher_features"


class CacheMissingError(DCClipError, FileNotFoundError):
    pass


class DiskSpaceError(DCClipError, OSError):
    """The disk cannot hold a cache about to be filled."""


def check_disk_space(directory: Path, needed: int, what: str) -> None:
    """Print the projected size; refuse (before any work) when the disk's free space cannot hold it."""
    free = shutil.disk_usage(directory).free
    print(f"teacher cache {str(directory)!r}: {what} = {needed / 2 ** 30:.2f} GiB projected, "
          f"{free / 2 ** 30:.1f} GiB free", flush=True)
    if needed > 0.95 * free:
        raise DiskSpaceError(f"the teacher cache needs {needed / 2 ** 30:.2f} GiB but {str(directory)!r} has "
                             f"{free / 2 ** 30:.2f} GiB free; use --teacher-mode online (nothing on disk), "
                             "--teacher-map-pool K (a K x K map), or --cache on a larger disk")


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

    def shard_path(self, s: int) -> Path:
        return self.dir / f"shard_{s:05d}.safetensors"

    def done(self) -> set[int]:
        """The finished shards: those whose file exists (each is renamed into place whole, so a file that
        exists is complete; a rank that died half-way leaves its shard missing, never torn)."""
        return {s for s in range(self.n_shards) if self.shard_path(s).is_file()}

    def complete(self) -> bool:
        return len(self.done()) == self.n_shards

    def fill(self, compute: Callable[[int, int], dict[str, torch.Tensor]], desc: str = "teacher",
             rank: int = 0, world: int = 1, row_bytes: int | None = None) -> "TeacherCache":
        """compute(start, stop) -> {name: tensor[stop-start, ...]}; called only for missing shards, and under
        torchrun only for this rank's (shard s belongs to rank s % world), so every rank fills in parallel.
        Rank 0 writes meta.json, the one record of what the cache is. With row_bytes, the projected size is
        printed before the fill and a disk that cannot hold it is refused before any work."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if rank == 0 and not (self.dir / "meta.json").is_file():
            atomic_write_text(self.dir / "meta.json", json.dumps(self.meta, indent=1))
        missing = [s for s in range(self.n_shards) if not self.shard_path(s).is_file()]
        if missing and row_bytes and rank == 0:
            rows = sum(min(self.size, (s + 1) * self.shard_size) - s * self.shard_size for s in missing)
            check_disk_space(self.dir, rows * row_bytes, f"{desc}: {rows} rows x {row_bytes / 1024:.1f} KiB")
        todo = [s for s in missing if s % world == rank]
        for s in tqdm(todo, desc=desc, unit="shard", disable=not todo):
            start, stop = s * self.shard_size, min(self.size, (s + 1) * self.shard_size)
            out = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in compute(start, stop).items()}
            tmp = self.dir / f".shard_{s:05d}.tmp-{rank}"
            save_file(out, str(tmp))
            tmp.replace(self.shard_path(s))
        return self

    def load(self, lazy: bool = False) -> dict[str, torch.Tensor]:
        """All shards, fp16: concatenated in memory, or with lazy=True as ShardedTensors that read rows
        from the memory-mapped shards on demand (for sets whose feature maps do not fit in memory)."""
        if not self.complete():
            raise CacheMissingError(f"teacher cache {str(self.dir)!r} is incomplete ({len(self.done())}/"
                                    f"{self.n_shards} shards); fill it first (python -m train.distill fills it)")
        files = [self.shard_path(s) for s in range(self.n_shards)]
        if lazy:
            with safe_open(str(files[0]), "pt") as f:
                names = list(f.keys())
            return {k: ShardedTensor(files, k, self.shard_size, self.size) for k in names}
        shards = [load_file(str(f)) for f in files]
        return {k: torch.cat([sh[k] for sh in shards]) for k in shards[0]}


class ShardedTensor:
    """One cached tensor across its shards, indexed like a tensor's first dimension (an int, a slice or a
    sequence of ints) and read from the memory-mapped safetensors files only as rows are asked for."""

    def __init__(self, files: Sequence[Path], name: str, shard_size: int, size: int):
        self.files, self.name, self.shard_size, self.size = list(files), name, shard_size, size
        self._handles: dict[int, object] = {}
        with safe_open(str(self.files[0]), "pt") as f:
            sl = f.get_slice(name)
            self.shape = (size, *sl.get_shape()[1:])
        self.dtype = torch.float16

    def __len__(self) -> int:
        return self.size

    def __getstate__(self):  # DataLoader workers: reopen the files there
        return {**self.__dict__, "_handles": {}}

    def _row(self, i: int) -> torch.Tensor:
        if not -self.size <= i < self.size:
            raise IndexError(f"index {i} out of range for {self.size} cached rows")
        i %= self.size
        s, j = divmod(i, self.shard_size)
        if s not in self._handles:
            self._handles[s] = safe_open(str(self.files[s]), "pt")
        return self._handles[s].get_slice(self.name)[j:j + 1][0]

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.ndim == 0):
            return self._row(int(index))
        rows = range(self.size)[index] if isinstance(index, slice) else [int(i) for i in index]
        if len(rows) == 0:
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype)
        return torch.stack([self._row(i) for i in rows])


def _barrier(world: int) -> None:
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def pool_map(feature_map: torch.Tensor, k: int | None) -> torch.Tensor:
    """The teacher's map average-pooled to k x k (None or a map already that small: unchanged). A ViT-L/14
    map is 1024 x 16 x 16; pooled to 8 x 8 it costs a quarter on disk and in the loss."""
    if not k or feature_map.shape[-1] <= k:
        return feature_map
    return torch.nn.functional.adaptive_avg_pool2d(feature_map.float(), k)


def teacher_image_targets(teacher: Teacher, pixel_values: torch.Tensor, map_pool: int | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """What stage 1 learns from a picture, cached or online: the teacher's feature map (pooled to map_pool) and
    embedding, float32 on the teacher's device."""
    f = teacher.encode_image(pixel_values)
    return pool_map(f.feature_map, map_pool).float(), f.embedding.float()


def image_row_bytes(teacher: Teacher, map_pool: int | None = None) -> int:
    """Bytes of one cached image row (fp16 map + embedding)."""
    side = min(teacher.feature_size, map_pool) if map_pool else teacher.feature_size
    return 2 * (teacher.feature_channels * side * side + teacher.embed_dim)


def cache_image_features(teacher: Teacher, images: Callable[[int], object], size: int, dataset_id: str,
                         root: str | Path, batch_size: int = 4, shard_size: int | None = None,
                         lazy: bool = False, map_pool: int | None = None, rank: int = 0,
                         world: int = 1, workers: int = 0) -> dict[str, torch.Tensor]:
    """{"feature_map": [N,C,H,W], "embedding": [N,D]} (fp16) of the teacher on images(0..size-1) (PIL
    images), computed once and cached; lazy=True reads rows from disk on demand (see TeacherCache.load).
    Under torchrun every rank fills its own shards; the caller waits at a barrier before loading.
    Small batches are faster on a CPU: EfficientNet-Lite0 on one thread ran 35-39 img/s at batch 2-4 and
    14 img/s at batch 64 (its activations outgrow the caches); on a GPU give a large batch_size.
    workers > 0 decodes and preprocesses in that many DataLoader processes: on a lent H200 the fill ran
    about 330 images/s with ViT-L/14, bounded by preprocessing in the one process."""
    pooled_id = f"{dataset_id}-pool{map_pool}" if map_pool else dataset_id
    # 256 rows a shard, but at least 8 shards for a small set, so torchrun ranks share even a small fill
    shard_size = shard_size or max(1, min(256, -(-size // 8)))
    cache = TeacherCache(root, teacher.teacher_id, pooled_id, teacher.preprocess.key(), "image", size, shard_size)

    batches = None  # the preprocessed batches of this rank's missing shards, in fill order

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        nonlocal batches
        if batches is None:
            batches = iter(_preprocessed_batches(cache, images, teacher.preprocess, batch_size, rank, world, workers))
        maps, embs = [], []
        for _ in range(start, stop, batch_size):
            fmap, emb = teacher_image_targets(teacher, next(batches), map_pool)
            maps.append(fmap.cpu())
            embs.append(emb.cpu())
        return {"feature_map": torch.cat(maps), "embedding": torch.cat(embs)}

    cache.fill(compute, desc=f"teacher images ({dataset_id})", rank=rank, world=world,
               row_bytes=image_row_bytes(teacher, map_pool))
    _barrier(world)  # every rank's shards are in place before anyone reads
    return cache.load(lazy)


class _Preprocessed(torch.utils.data.Dataset):
    def __init__(self, images: Callable[[int], object], pre):
        self.images, self.pre = images, pre

    def __getitem__(self, i: int) -> torch.Tensor:
        from ..data.preprocess import preprocess_image
        return preprocess_image(self.images(i), self.pre)


def _preprocessed_batches(cache: TeacherCache, images, pre, batch_size: int, rank: int, world: int, workers: int):
    """Batches of the missing shards this rank fills, never straddling a shard (the order fill() asks in)."""
    todo = [s for s in range(cache.n_shards) if not cache.shard_path(s).is_file() and s % world == rank]
    plan = [list(range(i, min(stop, i + batch_size)))
            for s in todo for stop in [min(cache.size, (s + 1) * cache.shard_size)]
            for i in range(s * cache.shard_size, stop, batch_size)]
    if workers == 0:
        from ..data.preprocess import preprocess_batch
        return (preprocess_batch([images(j) for j in rows], pre) for rows in plan)
    return torch.utils.data.DataLoader(_Preprocessed(images, pre), batch_sampler=plan, num_workers=workers)


def cache_text_features(teacher: Teacher, texts: Sequence[str], dataset_id: str, root: str | Path,
                        batch_size: int = 256, shard_size: int = 4096, rank: int = 0,
                        world: int = 1) -> dict[str, torch.Tensor]:
    """Teacher pooled features and embeddings for `texts`, cached (under torchrun, filled by every rank)."""
    content = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]  # same name, other texts: other cache
    cache = TeacherCache(root, teacher.teacher_id, f"{dataset_id}-{content}", "text", "text", len(texts), shard_size)

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        pooled, embs = [], []
        for i in range(start, stop, batch_size):
            f = teacher.encode_text(list(texts[i:min(stop, i + batch_size)]))
            pooled.append(f.pooled.cpu())
            embs.append(f.embedding.cpu())
        return {"pooled": torch.cat(pooled), "embedding": torch.cat(embs)}

    cache.fill(compute, desc=f"teacher texts ({dataset_id})", rank=rank, world=world,
               row_bytes=2 * (teacher.text_feature_dim + teacher.embed_dim))
    _barrier(world)
    return cache.load()
