"""Tar shards: spec expansion, sample decoding, the pairs -> shards converter, and ShardStream's reader
assignment, determinism and exact resumption through real DataLoaders (tiny images made here)."""
import io
import itertools
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from webdataset.writer import TarWriter

from dcclip_mobile.data.preprocess import ImageLoadError
from dcclip_mobile.data.shards import (
    ShardSample, ShardStream, batches_done_by_worker, convert_pairs, count_samples, decode_pair,
    expand_shards, is_shard_spec, iter_shard, main, shard_sizes,
)


def _img_bytes(fmt: str, color=(200, 30, 10), size=(6, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


PNG = _img_bytes("PNG")


def _write_shard(path, samples):
    with open(path, "wb") as f:
        w = TarWriter(f, encoder=False)
        for s in samples:
            w.write(s)
        w.close()


def _make_shards(d, counts, sizes_json=True):
    """Shards d/00000.tar ... with counts[i] samples each; keys say shard and index."""
    d.mkdir(parents=True, exist_ok=True)
    for s, n in enumerate(counts):
        _write_shard(d / f"{s:05d}.tar", [{"__key__": f"s{s}_{i:03d}", "png": PNG, "txt": f"cap {s} {i}".encode()}
                                          for i in range(n)])
    if sizes_json:
        (d / "sizes.json").write_text(json.dumps({f"{s:05d}.tar": n for s, n in enumerate(counts)}))
    return str(d / f"{{00000..{len(counts) - 1:05d}}}.tar")


def _ident(s: ShardSample):
    # no image decoding: the stream's positions are what these tests check
    return (s.url, s.key, s.epoch, s.reader, s.reader_index)


def test_spec_forms_and_expansion(tmp_path):
    spec = _make_shards(tmp_path / "a", [1, 1, 1])
    _make_shards(tmp_path / "b", [1, 1])
    assert is_shard_spec("x.tar") and is_shard_spec("d/{00000..00009}.tar") and is_shard_spec("a.tar::b/{0..3}.tar")
    assert is_shard_spec("d/{a.tar,b.tar}")
    assert not is_shard_spec("pairs.csv") and not is_shard_spec("images/") and not is_shard_spec("a.tar::")
    urls = expand_shards(f"{spec}::{tmp_path}/b/{{00000..00001}}.tar")
    assert [os.path.relpath(u, tmp_path) for u in urls] == [
        "a/00000.tar", "a/00001.tar", "a/00002.tar", "b/00000.tar", "b/00001.tar"]
    with pytest.raises(ValueError, match=r"00003\.tar.*does not exist.*brace form"):
        expand_shards(f"{tmp_path}/a/{{00000..00005}}.tar")
    with pytest.raises(ValueError, match="not a .tar path"):
        expand_shards(str(tmp_path / "pairs.csv"))
    with pytest.raises(ValueError, match="appears twice"):
        expand_shards(f"{spec}::{tmp_path}/a/00000.tar")


def test_shard_sizes(tmp_path):
    urls = expand_shards(_make_shards(tmp_path / "a", [2, 3]))
    assert shard_sizes(urls) == {urls[0]: 2, urls[1]: 3}
    (tmp_path / "a" / "sizes.json").write_text(json.dumps({"00000.tar": 2, "00001.tar": -1}))
    with pytest.raises(ValueError, match="non-negative"):
        shard_sizes(urls)
    (tmp_path / "a" / "sizes.json").write_text(json.dumps({"00000.tar": 2}))
    with pytest.raises(ValueError, match="no count for shard '00001.tar'"):
        shard_sizes(urls)
    os.remove(tmp_path / "a" / "sizes.json")
    assert shard_sizes(urls) is None


def test_iter_shard_and_header_count_agree(tmp_path):
    # a metadata member and a directory entry are skipped by both readers
    path = tmp_path / "x.tar"
    _write_shard(path, [{"__key__": "k0", "png": PNG, "txt": b"a"}, {"__key__": "k1", "jpg": b"j", "txt": b"b"}])
    with tarfile.open(path, "a") as tf:
        for name, data in [("__meta__", b"m"), ("k2.txt", b"c")]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("sub")
        ti.type = tarfile.DIRTYPE
        tf.addfile(ti)
    got = list(iter_shard(str(path)))
    assert [(s.key, s.index_in_shard, s.reader_index, sorted(s.data)) for s in got] == [
        ("k0", 0, 0, ["png", "txt"]), ("k1", 1, 1, ["jpg", "txt"]), ("k2", 2, 2, ["txt"])]
    assert count_samples(str(path)) == 3


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")])
def test_decode_pair_formats(fmt, ext):
    s = ShardSample("k", "d/0.tar", 0, 0, {ext: _img_bytes(fmt), "txt": "一只猫".encode(), "json": b'{"lang": "zh"}'})
    img, caption, lang = decode_pair(s)
    assert img.mode == "RGB" and img.size == (6, 4) and (caption, lang) == ("一只猫", "zh")
    assert np.abs(np.asarray(img, np.int16) - (200, 30, 10)).max() <= (0 if ext != "jpg" else 8)
    img2, _, lang2 = decode_pair(ShardSample("k", "d/0.tar", 0, 0, {ext: _img_bytes(fmt), "txt": b"a cat"}))
    assert lang2 == "en"


def test_decode_pair_errors():
    def sample(**data):
        return ShardSample("key7", "d/00003.tar", 0, 0, data)
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(noisy, format="PNG")
    with pytest.raises(ImageLoadError, match=r"key7.*00003\.tar.*truncated or corrupt"):
        decode_pair(sample(png=noisy.getvalue()[:len(noisy.getvalue()) // 2], txt=b"x"))
    with pytest.raises(ImageLoadError, match="not one Pillow can read"):
        decode_pair(sample(jpg=b"not an image", txt=b"x"))
    with pytest.raises(ImageLoadError, match="empty"):
        decode_pair(sample(png=b"", txt=b"x"))
    with pytest.raises(ImageLoadError, match="has no image"):
        decode_pair(sample(txt=b"x"))
    with pytest.raises(ValueError, match=r"key7.*00003\.tar.*no caption"):
        decode_pair(sample(png=PNG))
    with pytest.raises(ValueError, match="not UTF-8"):
        decode_pair(sample(png=PNG, txt=b"\xff\xfe"))
    with pytest.raises(ValueError, match=r"key7.*lang 'fr'"):
        decode_pair(sample(png=PNG, txt=b"x", json=b'{"lang": "fr"}'))
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        decode_pair(sample(png=PNG, txt=b"x", json=b"{lang"))


def test_converter_round_trip(tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rows, want = [], []
    for i in range(7):
        color = (i * 30, 255 - i * 30, 7)
        fmt, ext = [("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp")][i % 3]
        Image.new("RGB", (5, 3), color).save(imgs / f"{i}.{ext}", format=fmt,
                                             **({"lossless": True} if fmt == "WEBP" else {}))
        lang = "zh" if i % 2 else "en"
        rows.append({"filepath": f"imgs/{i}.{ext}", "caption": f"caption {i} 说明", "lang": lang})
        want.append((f"caption {i} 说明", lang, color, "png" if ext == "bmp" else ext))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "shards"
    assert main(["--pairs", str(pairs), "--out", str(out), "--per-shard", "3"]) == 0
    spec = capsys.readouterr().out.strip()
    assert spec == f"{out}/{{00000..00002}}.tar"
    assert json.loads((out / "sizes.json").read_text()) == {"00000.tar": 3, "00001.tar": 3, "00002.tar": 1}
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    got = [s for u in expand_shards(spec) for s in iter_shard(u)]
    assert [s.key for s in got] == [f"{i:09d}" for i in range(7)]
    for s, (caption, lang, color, ext) in zip(got, want):
        img, c, l = decode_pair(s)
        assert (c, l) == (caption, lang) and ext in s.data
        assert {tuple(px) for px in np.asarray(img).reshape(-1, 3).tolist()} == {color}
    # the original bytes travel unchanged
    assert got[0].data["png"] == (imgs / "0.png").read_bytes()

    # bad input: one line on stderr, exit 2; a rerun into the same directory is refused
    assert main(["--pairs", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o2")]) == 2
    assert main(["--pairs", str(pairs), "--out", str(pairs)]) == 2
    assert main(["--pairs", str(pairs), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "does not exist" in err[0] and "is a file" in err[1] and "already holds" in err[2]
    # a missing image names its row, and leaves no shard behind
    (imgs / "5.bmp").unlink()
    assert main(["--pairs", str(pairs), "--out", str(tmp_path / "o3"), "--per-shard", "2"]) == 2
    assert "row 6" in capsys.readouterr().err and not list((tmp_path / "o3").glob("*.tar"))


def test_converter_cli_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dcclip_mobile.data.shards", "--pairs", str(tmp_path / "x.csv"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "does not exist" in r.stderr


def test_batches_done_by_worker():
    # batch k comes from worker k % W
    for start in range(9):
        for W in (1, 2, 3):
            assert sum(batches_done_by_worker(start, w, W) for w in range(W)) == start
            assert [batches_done_by_worker(start, w, W) for w in range(W)] == \
                [sum(1 for k in range(start) if k % W == w) for w in range(W)]
    assert batches_done_by_worker(5, 0, 0) == 5


def _run(spec, rank, world, workers, batch, start, n_batches, seed=3):
    stream = ShardStream(spec, _ident, seed=seed)
    stream.configure(rank=rank, world=world, num_workers=workers, batch_size=batch, start_batch=start)
    loader = torch.utils.data.DataLoader(stream, batch_size=batch, num_workers=workers, collate_fn=list)
    return list(itertools.islice(iter(loader), n_batches))


COUNTS = [5, 3, 7, 4, 6, 2, 5, 4, 3]   # 39 samples, uneven shards: skips cross shard and epoch edges


def test_stream_readers_cover_each_epoch_once_and_are_deterministic(tmp_path):
    spec = _make_shards(tmp_path / "d", COUNTS)
    everything = {(u, s.key) for u in expand_shards(spec) for s in iter_shard(u)}
    runs = {rank: _run(spec, rank, 2, 2, 3, 0, 12) for rank in (0, 1)}
    seen = {}
    for rank, batches in runs.items():
        for k, batch in enumerate(batches):
            for url, key, epoch, reader, _ in batch:
                assert reader == rank * 2 + k % 2          # batch k from worker k % 2
                seen.setdefault(epoch, []).append((url, key))
    # 2 ranks x 36 samples: every reader has left epoch 0 (at most 39 samples across 4 readers)
    assert sorted(seen[0]) == sorted(everything) and len(seen[0]) == len(set(seen[0]))
    assert len(set(seen[1])) == len(seen[1])
    assert _run(spec, 1, 2, 2, 3, 0, 12) == runs[1]
    # another seed orders shards differently
    assert _run(spec, 1, 2, 2, 3, 0, 12, seed=4) != runs[1]


@pytest.mark.parametrize("sizes_json", [True, False])
def test_stream_resume_is_exact(tmp_path, sizes_json):
    spec = _make_shards(tmp_path / "d", COUNTS, sizes_json=sizes_json)
    full = {rank: _run(spec, rank, 2, 2, 3, 0, 20) for rank in (0, 1)}
    assert max(s[2] for b in full[0] for s in b) >= 2       # the run reaches a third epoch
    for rank, start in [(0, 5), (1, 8), (0, 13)]:
        assert _run(spec, rank, 2, 2, 3, start, 20 - start) == full[rank][start:]
    # one reader per rank without workers
    single = _run(spec, 1, 2, 0, 4, 0, 12)
    assert _run(spec, 1, 2, 0, 4, 7, 5) == single[7:]


def test_resume_skips_without_decoding_or_opening(tmp_path):
    spec = _make_shards(tmp_path / "d", COUNTS)
    calls = []

    def decode(s):
        calls.append(s.reader_index)
        return _ident(s)
    stream = ShardStream(spec, decode, seed=1)
    first = stream.reader_shards(0, 0, 1)[0]
    n_first = COUNTS[int(os.path.basename(first)[:5])]
    full = list(itertools.islice(iter(stream), n_first + 6))
    calls.clear()
    # with sizes.json a shard behind the resume point is never opened: garbage in it goes unnoticed
    with open(first, "wb") as f:
        f.write(b"garbage")
    stream.configure(rank=0, world=1, num_workers=0, batch_size=2, start_batch=(n_first + 1) // 2)
    skip = (n_first + 1) // 2 * 2
    resumed = list(itertools.islice(iter(stream), n_first + 6 - skip))
    assert resumed == full[skip:] and calls == list(range(skip, n_first + 6))


def test_stream_refusals(tmp_path):
    spec = _make_shards(tmp_path / "d", [2, 2, 2])
    stream = ShardStream(spec, _ident)
    with pytest.raises(ValueError, match=r"3 shards for 4 readers.*more, smaller shards.*fewer DataLoader workers"):
        stream.configure(rank=0, world=2, num_workers=2, batch_size=1, start_batch=0)
    stream.configure(rank=0, world=1, num_workers=2, batch_size=1, start_batch=0)
    with pytest.raises(RuntimeError, match="num_workers=2"):
        next(iter(stream))
    (tmp_path / "d" / "sizes.json").write_text(json.dumps({"00000.tar": 2, "00001.tar": 5, "00002.tar": 2}))
    stream = ShardStream(spec, _ident)
    with pytest.raises(ValueError, match="holds 2 samples but sizes.json says 5"):
        list(itertools.islice(iter(stream), 7))
