"""Image-text pairs streamed from webdataset tar shards (open_clip's / img2dataset's layout).

Why: a pairs file (CSV/JSONL) needs one file open per image and random access over the whole set; at
scale the data lives in tar shards read sequentially. This module reads them with the webdataset package
and adds what training needs on top: a deterministic assignment of shards to every reader (rank x
DataLoader worker), an infinite epoch-after-epoch stream, and exact resumption at a micro-batch index.

Layout: each sample is `KEY.jpg|.jpeg|.png|.webp` (the image), `KEY.txt` (the caption, UTF-8) and an
optional `KEY.json` (`{"lang": "en"|"zh"}`, default "en"). Shards are named in open_clip's brace form,
`data/{00000..00009}.tar`, several specs joined by `::`. An optional `sizes.json` beside the shards maps
shard file name -> sample count; with it, resuming skips whole shards without opening them.

The stream (ShardStream), exactly:
  * R = world * max(num_workers, 1) readers; reader r = rank * max(num_workers, 1) + worker_id.
  * Epoch e permutes the shard list with torch.Generator seeded seed + e; reader r takes perm[r::R], so
    across all readers each epoch covers every sample once. A reader's stream is its shards' samples in
    file order, epoch after epoch, forever (readers with more samples reach the next epoch later).
  * A DataLoader over an IterableDataset takes batch k from worker k % W, so after `start_batch`
    micro-batches worker w has produced ceil((start_batch - w) / W) of them; its reader skips that many
    * batch_size samples without decoding an image. A resumed DataLoader again takes its first batch from
    worker 0, so on resume worker w reads as worker (w + start_batch) % W of the uninterrupted run (the
    reader id above uses that worker id): the resumed run sees exactly the batches an uninterrupted one
    sees from start_batch on.

Also a converter: `python -m dcclip_mobile.data.shards --pairs FILE --out DIR [--per-shard N]` writes a
pairs file as shards in this layout, with sizes.json, and prints the spec to pass as `--images`.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import braceexpand
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from webdataset.tariterators import group_by_keys, meta_prefix, meta_suffix, tar_file_iterator
from webdataset.writer import TarWriter

from ..atomic import atomic_open, atomic_write_text
from ..errors import UsageError, run_main
from .preprocess import ImageLoadError, load_image, to_rgb

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")   # the image members decode_pair looks for, in this order
LANGS = ("en", "zh")
SIZES_FILE = "sizes.json"
SPEC_FORM = "a .tar path, a brace form like 'data/{00000..00009}.tar', or several joined by '::'"
# webdataset's tar_file_iterator skips these members; the header-only counter must skip the same ones
_SKIP_META = re.compile(r"__[^/]*__($|/)")


# ---------------------------------------------------------------------------------------------- specs

def _spec_parts(spec: str) -> list[str]:
    return [p.strip() for p in str(spec).split("::")]


def is_shard_spec(spec: str) -> bool:
    """True for '...tar' paths, brace forms '{a..b}.tar' and '::'-joined lists of those (no disk access)."""
    if not isinstance(spec, str) or not spec.strip():
        return False
    for part in _spec_parts(spec):
        if not part:
            return False
        if part.endswith(".tar"):
            continue
        # a brace that holds the extension itself, e.g. 'data/{a.tar,b.tar}'
        if "{" not in part or not all(x.endswith(".tar") for x in braceexpand.braceexpand(part)):
            return False
    return True


def expand_shards(spec: str) -> list[str]:
    """Brace-expand each '::'-separated part; every shard must be an existing file, listed once."""
    if not is_shard_spec(spec):
        raise ValueError(f"shard spec {spec!r} is not {SPEC_FORM}")
    urls: list[str] = []
    for part in _spec_parts(spec):
        urls.extend(braceexpand.braceexpand(part))
    for u in urls:
        if not os.path.isfile(u):
            raise ValueError(f"shard {u!r} (from {spec!r}) does not exist; expected {SPEC_FORM}, "
                             f"every file present (python -m dcclip_mobile.data.shards writes such shards)")
    seen: set[str] = set()
    for u in urls:
        # a shard listed twice would be read twice per epoch, breaking 'every sample once'
        if os.path.realpath(u) in seen:
            raise ValueError(f"shard {u!r} appears twice in {spec!r}; list each shard once")
        seen.add(os.path.realpath(u))
    return urls


def shard_sizes(urls: Iterable[str]) -> dict[str, int] | None:
    """{url: sample count} from the sizes.json beside each shard; None unless every shard's directory has one.

    A sizes.json that exists but lacks a shard or holds anything but non-negative integers is an error: a
    stale count would silently shift resumed positions."""
    urls = list(urls)
    tables: dict[str, dict] = {}
    out: dict[str, int] = {}
    for u in urls:
        d = os.path.dirname(os.path.abspath(u))
        if d not in tables:
            path = os.path.join(d, SIZES_FILE)
            if not os.path.isfile(path):
                return None
            try:
                table = json.loads(Path(path).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{path!r} is not JSON ({e}); fix or delete it") from None
            if not isinstance(table, dict):
                raise ValueError(f"{path!r} must map shard file name -> sample count, "
                                 f"got a {type(table).__name__}; fix or delete it")
            for name, n in table.items():
                if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                    raise ValueError(f"{path!r}: count for {name!r} is {n!r}; counts must be non-negative "
                                     f"integers; fix or delete it")
            tables[d] = table
        name = os.path.basename(u)
        if name not in tables[d]:
            raise ValueError(f"{os.path.join(d, SIZES_FILE)!r} has no count for shard {name!r}; regenerate "
                             f"it or delete it (then counts are read from the shards)")
        out[u] = tables[d][name]
    return out


# -------------------------------------------------------------------------------------------- samples

@dataclass
class ShardSample:
    """One raw sample, not decoded yet."""
    key: str
    url: str
    index_in_shard: int
    reader_index: int            # this reader's running position: 0, 1, 2, ... (skipped samples count)
    data: dict[str, bytes]       # extension -> raw bytes ("jpg", "txt", "json", ...)
    epoch: int = 0               # the reader's epoch this sample belongs to
    reader: int = 0              # the reader id (rank * max(num_workers, 1) + worker_id)


def _raw_samples(url: str) -> Iterator[dict]:
    """webdataset's own member reading and key grouping over one local shard, the file closed after."""
    try:
        with open(url, "rb") as f:
            files = ({**m, "__url__": url} for m in tar_file_iterator(f))
            yield from group_by_keys(files)
    except (tarfile.TarError, ValueError) as e:
        raise ValueError(f"shard {url!r} is not a readable tar in the webdataset layout: {e}") from None


def iter_shard(url: str) -> Iterator[ShardSample]:
    """The samples of one shard in file order; index_in_shard = reader_index = 0, 1, ..."""
    for i, s in enumerate(_raw_samples(url)):
        yield ShardSample(s["__key__"], url, i, i, {k: v for k, v in s.items() if not k.startswith("__")})


def count_samples(url: str) -> int:
    """The number of samples iter_shard(url) yields, from the tar headers alone (members are seeked over).

    Same member filter as webdataset's tar_file_iterator, same grouping (its group_by_keys)."""
    def names():
        with tarfile.open(url, "r:*") as tf:
            for ti in tf:
                name = ti.name
                if not ti.isreg() or name is None:
                    continue
                if "/" not in name and name.startswith(meta_prefix) and name.endswith(meta_suffix):
                    continue
                if _SKIP_META.match(name):
                    continue
                yield {"fname": name, "data": b"", "__url__": url}
    try:
        return sum(1 for _ in group_by_keys(names()))
    except (tarfile.TarError, ValueError) as e:
        raise ValueError(f"shard {url!r} is not a readable tar in the webdataset layout: {e}") from None


def _decode_image(raw: bytes, where: str) -> Image.Image:
    # the checks of preprocess.load_image, on bytes
    if not raw:
        raise ImageLoadError(f"{where}: image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except UnidentifiedImageError:
        raise ImageLoadError(f"{where}: image is not one Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"{where}: image is over Pillow's pixel limit: {e}") from None
    except (OSError, SyntaxError) as e:
        raise ImageLoadError(f"{where}: image is truncated or corrupt: {e}") from None


def decode_pair(sample: ShardSample) -> tuple[Image.Image, str, str]:
    """(RGB image, caption, lang). ImageLoadError for a missing or unreadable image; ValueError for a
    missing, empty or non-UTF-8 caption, bad JSON, or a lang other than en/zh. Both name key and shard."""
    where = f"sample {sample.key!r} in shard {sample.url!r}"
    ext = next((e for e in IMAGE_EXTS if e in sample.data), None)
    if ext is None:
        raise ImageLoadError(f"{where} has no image (.{'/.'.join(IMAGE_EXTS)}); it has {sorted(sample.data)}")
    image = _decode_image(sample.data[ext], where)
    if "txt" not in sample.data:
        raise ValueError(f"{where} has no caption (.txt); it has {sorted(sample.data)}")
    try:
        caption = sample.data["txt"].decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: caption is not UTF-8 ({e})") from None
    if not caption.strip():
        raise ValueError(f"{where}: caption is empty")
    lang = "en"
    if "json" in sample.data:
        try:
            meta = json.loads(sample.data["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{where}: .json is not UTF-8 JSON ({e})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{where}: .json must be an object, got a {type(meta).__name__}")
        lang = meta.get("lang") or "en"      # img2dataset's metadata has no lang: English
        if lang not in LANGS:
            raise ValueError(f"{where}: lang {lang!r}; accepted: 'en', 'zh'")
    return image, caption, lang


# --------------------------------------------------------------------------------------------- stream

def batches_done_by_worker(start_batch: int, worker: int, num_workers: int) -> int:
    """How many of the first start_batch batches worker `worker` made (batch k comes from worker k % W)."""
    w = max(num_workers, 1)
    return max(0, -(-(start_batch - worker) // w))


class ShardStream(torch.utils.data.IterableDataset):
    """An infinite, deterministic, resumable stream of decode(sample) over tar shards (see the module doc)."""

    def __init__(self, spec_or_urls: str | Iterable[str], decode: Callable[[ShardSample], object], seed: int = 0):
        if isinstance(spec_or_urls, (str, os.PathLike)):
            urls = expand_shards(str(spec_or_urls))
        else:
            urls = [str(u) for u in spec_or_urls]
            if not urls:
                raise ValueError(f"ShardStream got an empty shard list; pass {SPEC_FORM}")
            expand_shards("::".join(urls))        # the same existence / duplicate checks
        self.urls = urls
        self.decode = decode
        self.seed = int(seed)
        self.sizes = shard_sizes(urls)
        self._counts: dict[str, int] = dict(self.sizes or {})   # counted lazily when sizes.json is absent
        self.configure(rank=0, world=1, num_workers=0, batch_size=1, start_batch=0)

    def configure(self, rank: int, world: int, num_workers: int, batch_size: int, start_batch: int) -> None:
        """Set this process's place; called before DataLoader(self, batch_size, num_workers) is built."""
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} / world {world}: need world >= 1 and 0 <= rank < world")
        if num_workers < 0 or batch_size < 1 or start_batch < 0:
            raise ValueError(f"num_workers {num_workers}, batch_size {batch_size}, start_batch {start_batch}: "
                             f"need num_workers >= 0, batch_size >= 1, start_batch >= 0")
        readers = world * max(num_workers, 1)
        if len(self.urls) < readers:
            raise ValueError(f"{len(self.urls)} shards for {readers} readers (world {world} x "
                             f"{max(num_workers, 1)} workers): every reader needs a shard. Write more, "
                             f"smaller shards (--per-shard), or use fewer DataLoader workers or ranks")
        self.rank, self.world, self.num_workers = rank, world, num_workers
        self.batch_size, self.start_batch = batch_size, start_batch

    def reader_shards(self, epoch: int, reader: int, readers: int) -> list[str]:
        """The shards `reader` reads in `epoch`, in reading order."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(len(self.urls), generator=g).tolist()
        return [self.urls[i] for i in perm[reader::readers]]

    def _size(self, url: str) -> int:
        if url not in self._counts:
            self._counts[url] = count_samples(url)
        return self._counts[url]

    def reader_stream(self, reader: int, readers: int, skip: int = 0) -> Iterator[ShardSample]:
        """Reader `reader`'s raw samples forever, the first `skip` passed over without decoding anything."""
        pos, epoch = 0, 0
        while True:
            seen = 0
            for url in self.reader_shards(epoch, reader, readers):
                if skip > 0 and skip >= self._size(url):
                    # a whole shard behind the resume point: with sizes.json it is not even opened
                    n = self._size(url)
                    skip, pos, seen = skip - n, pos + n, seen + n
                    continue
                n = 0
                for s in iter_shard(url):
                    if n >= skip:
                        yield ShardSample(s.key, url, n, pos, s.data, epoch, reader)
                    n, pos = n + 1, pos + 1
                skip = 0
                if url in self._counts and self._counts[url] != n:
                    raise ValueError(f"shard {url!r} holds {n} samples but sizes.json says {self._counts[url]}; "
                                     f"regenerate sizes.json or delete it")
                self._counts[url] = n
                seen += n
            if seen == 0:
                raise ValueError(f"reader {reader}'s shards {self.reader_shards(epoch, reader, readers)} "
                                 f"hold no samples; the stream would never yield")
            epoch += 1

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 0) if info is None else (info.id, info.num_workers)
        if workers != self.num_workers:
            raise RuntimeError(f"ShardStream was configured for num_workers={self.num_workers} but is iterated "
                               f"with {workers} DataLoader workers; call configure() with the DataLoader's "
                               f"num_workers before building it")
        w = max(self.num_workers, 1)
        # A fresh DataLoader starts its round-robin at worker 0, but the uninterrupted run's batch start_batch
        # came from worker start_batch % W: rotate, so this worker plays the one that made that batch's slot.
        logical = (worker + self.start_batch) % w
        reader = self.rank * w + logical
        skip = batches_done_by_worker(self.start_batch, logical, self.num_workers) * self.batch_size
        for sample in self.reader_stream(reader, self.world * w, skip):
            yield self.decode(sample)


# ------------------------------------------------------------------------------------------ converter

def _image_member(path: Path) -> tuple[str, bytes]:
    """(extension, bytes) to store: the file's own bytes for jpg/jpeg/png/webp, else a PNG of it."""
    ext = path.suffix.lower().lstrip(".")
    if ext in IMAGE_EXTS:
        if not path.is_file():
            raise ImageLoadError(f"image file {str(path)!r} does not exist")
        raw = path.read_bytes()
        _check_header(raw, path)
        return ext, raw
    buf = io.BytesIO()
    load_image(path).save(buf, format="PNG")
    return "png", buf.getvalue()


def _check_header(raw: bytes, path: Path) -> None:
    # header only (cheap): catches missing, empty and non-image files before they reach a shard
    if not raw:
        raise ImageLoadError(f"image file {str(path)!r} is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(raw)):
            pass
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise ImageLoadError(f"{str(path)!r} is not an image Pillow can read") from None


def _write_tar(path: Path, samples: list[dict]) -> None:
    """Write one shard under a temporary name beside it, then rename: a shard is whole or absent."""
    with atomic_open(path) as f:
        w = TarWriter(f, encoder=False)
        for s in samples:
            w.write(s)
        w.close()


def convert_pairs(pairs_path: str | Path, out: str | Path, per_shard: int = 1000, progress: bool = True) -> str:
    """Write a pairs file as shards DIR/00000.tar ... plus DIR/sizes.json; return the spec for --images."""
    from tqdm import tqdm

    from .pairs import PairsFile

    if per_shard < 1:
        raise UsageError(f"--per-shard {per_shard}: must be >= 1")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; give a directory")
    if out.is_dir():
        old = sorted(p.name for p in out.iterdir() if p.suffix == ".tar" or p.name == SIZES_FILE)
        if old:
            # mixing with an earlier conversion's shards would leave stale ones the spec does not name
            raise UsageError(f"--out {str(out)!r} already holds shards ({', '.join(old[:3])}"
                             f"{', ...' if len(old) > 3 else ''}); give a new directory or delete them")
    pairs = PairsFile(pairs_path)
    out.mkdir(parents=True, exist_ok=True)
    n = len(pairs)
    n_shards = math.ceil(n / per_shard)
    sw, kw = max(5, len(str(n_shards - 1))), max(9, len(str(n - 1)))   # zero-padded: order = name order
    sizes: dict[str, int] = {}
    written: list[Path] = []
    try:
        with tqdm(total=n, unit="pair", desc=f"shards -> {out}", disable=not progress) as bar:
            for s in range(n_shards):
                samples = []
                for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                    p = pairs.pairs[i]
                    if not p.caption.strip():
                        raise ValueError(f"{str(pairs_path)!r} row {i + 1}: empty caption")
                    try:
                        ext, raw = _image_member(p.filepath)
                    except ImageLoadError as e:
                        raise ValueError(f"{str(pairs_path)!r} row {i + 1}: {e}") from None
                    samples.append({"__key__": f"{i:0{kw}d}", ext: raw, "txt": p.caption.encode("utf-8"),
                                    "json": json.dumps({"lang": p.lang}).encode("utf-8")})
                    bar.update(1)
                name = f"{s:0{sw}d}.tar"
                _write_tar(out / name, samples)
                written.append(out / name)
                sizes[name] = len(samples)
    except BaseException:
        # a failed conversion leaves no shards behind, so a rerun into the same directory works
        for p in written:
            p.unlink(missing_ok=True)
        raise
    atomic_write_text(out / SIZES_FILE, json.dumps(sizes, indent=1) + "\n")
    if n_shards == 1:
        return str(out / f"{0:0{sw}d}.tar")
    return str(out / f"{{{0:0{sw}d}..{n_shards - 1:0{sw}d}}}.tar")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dcclip_mobile.data.shards",
                                 description="Write a pairs file (CSV/TSV/JSONL) as webdataset tar shards.")
    ap.add_argument("--pairs", required=True, help="pairs file: filepath, caption, lang per row")
    ap.add_argument("--out", required=True, help="directory for NNNNN.tar and sizes.json (new or empty)")
    ap.add_argument("--per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    return run_main(ap, lambda args: print(convert_pairs(args.pairs, args.out, args.per_shard)), argv)


if __name__ == "__main__":
    sys.exit(main())
