"""Training at scale, on the CPU: devices and mixed precision, the online teacher against the cache, the
parallel cache fill, tar shards, and 2-process torchrun (gloo). Real runners, the tiny AltCLIP teacher."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dcclip_mobile.checkpoint import save_student
from dcclip_mobile.data.fashion_mnist import fashion_mnist_present
from dcclip_mobile.data.shards import convert_pairs
from dcclip_mobile.teachers import build_teacher
from dcclip_mobile.teachers.cache import CacheMissingError, DiskSpaceError, TeacherCache, cache_image_features, check_disk_space
from train import align, distill
from train.device import DeviceError, resolve_amp, resolve_channels_last, resolve_device
from train.loop import read_metrics

REPO = Path(__file__).resolve().parents[1]
needs_fashion = pytest.mark.needs(fashion_mnist_present(), "Debian's dataset-fashion-mnist")


def write_pairs(d: Path, n: int = 16) -> Path:
    (d / "imgs").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (40, 40), (i * 37 % 256, i * 91 % 256, i * 53 % 256)).save(d / "imgs" / f"{i}.png")
        en = i % 2 == 0
        rows.append({"filepath": f"imgs/{i}.png", "caption": f"a photo of colour {i}" if en else f"一张颜色{i}的照片",
                     "lang": "en" if en else "zh"})
    p = d / "pairs.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p


def stage1_args(teacher_dir: Path, out: Path, images: str, *extra: str) -> list[str]:
    return ["--teacher", f"altclip:{teacher_dir}", "--images", images, "--preset", "tiny", "--steps", "3",
            "--batch-size", "8", "--warmup-steps", "0", "--corpus-size", "64", "--texts-per-image", "2",
            "--out", str(out), "--threads", "1", *extra]


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(out)]


# ------------------------------------------------------------------------------------------- devices
def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        # the error under test is the one for a machine without CUDA; CI's has none, so there it always runs
        pytest.skip("this machine has CUDA, so there is no missing-CUDA error to check")
    with pytest.raises(DeviceError, match="CUDA device 0.*0 CUDA devices visible.*--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match="accepted"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        resolve_amp("fp16", torch.device("cpu"))
    assert resolve_amp(None, torch.device("cpu")) == "off"
    # NHWC by default where it was measured faster (CUDA), never forced on the CPU; a flag overrides both
    assert [resolve_channels_last(None, torch.device(d)) for d in ("cuda", "cpu")] == [True, False]
    assert resolve_channels_last(False, torch.device("cuda")) is False and resolve_channels_last(True, torch.device("cpu"))
    # the runner: one line, exit 2, before any work
    rc = distill.main(["--device", "cuda", "--preset", "tiny", "--steps", "1", "--warmup-steps", "0",
                       "--out", str(tmp_path / "x")])
    assert rc == 2 and "--device 'cuda' asks for CUDA" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@needs_fashion
def test_amp_bf16_on_cpu_runs_lowers_the_loss_and_keeps_fp32_checkpoints(tiny_altclip_dir, tmp_path):
    out = tmp_path / "bf16"
    assert distill.main(stage1_args(tiny_altclip_dir, out, "fashion-mnist", "--limit", "32", "--amp", "bf16",
                                    "--steps", "8", "--cache", str(tmp_path / "cache"))) == 0
    ls = losses(out)
    assert len(ls) == 8 and ls[-1] < 0.7 * ls[0]
    assert all(t.dtype == torch.float32 for t in load_file(str(out / "checkpoint" / "model.safetensors")).values()
               if t.is_floating_point())
    stage = json.loads((out / "stage.json").read_text())
    assert stage["amp"] == "bf16" and stage["device"] == "cpu"
    row = read_metrics(out)[-1]
    for key in ("images_per_s", "data_s", "teacher_s", "student_s", "peak_mem_mb", "eta_s"):
        assert row[key] >= 0, key
    assert stage["throughput"]["median_images_per_s"] > 0


# ------------------------------------------------------------------------------------- teacher modes
@needs_fashion
def test_online_and_cache_teacher_give_the_same_stage1_losses(tiny_altclip_dir, tmp_path):
    for mode in ("online", "cache"):
        assert distill.main(stage1_args(tiny_altclip_dir, tmp_path / mode, "fashion-mnist", "--limit", "32",
                                        "--teacher-mode", mode, "--cache", str(tmp_path / "cache"))) == 0
    online, cached = losses(tmp_path / "online"), losses(tmp_path / "cache")
    assert len(online) == 3
    # the cache holds fp16; the affinity term (scale 100) magnifies that rounding to ~0.3% here
    assert online == pytest.approx(cached, rel=1e-2)
    assert online != cached  # really two paths: the cache's fp16 rounding shows
    assert json.loads((tmp_path / "online" / "stage.json").read_text())["teacher_mode"] == "online"
    assert len(list((tmp_path / "cache").glob("image-*"))) == 1  # the online run wrote nothing
    # a pooled map: the adapter's resize follows the teacher's (here 4x4 -> 2x2)
    assert distill.main(stage1_args(tiny_altclip_dir, tmp_path / "pool", "fashion-mnist", "--limit", "32",
                                    "--teacher-mode", "online", "--teacher-map-pool", "2")) == 0
    assert losses(tmp_path / "pool")[0] != online[0]


def test_parallel_cache_fill_by_rank_and_a_rank_that_died(tiny_altclip_dir, tmp_path):
    teacher = build_teacher(f"altclip:{tiny_altclip_dir}")
    imgs = [Image.new("RGB", (32, 32), (i * 20, 0, 0)) for i in range(10)]
    # rank 1 of 2 fills its shards (1 and 3 of 0..4); rank 0 "died": the cache is incomplete, not torn
    cache_fill = lambda rank: TeacherCache(tmp_path, teacher.teacher_id, "ten", teacher.preprocess.key(), "image",
                                           10, 2)
    with pytest.raises(CacheMissingError, match="incomplete \\(2/5 shards\\)"):
        cache_image_features(teacher, imgs.__getitem__, 10, "ten", tmp_path, batch_size=2, shard_size=2,
                             rank=1, world=2)
    assert cache_fill(1).done() == {1, 3}
    # the rerun (one process) fills only what is missing, and the whole equals a one-process fill
    whole = cache_image_features(teacher, imgs.__getitem__, 10, "ten", tmp_path, batch_size=2, shard_size=2)
    single = cache_image_features(teacher, imgs.__getitem__, 10, "ten", tmp_path / "one", batch_size=2, shard_size=2)
    assert torch.equal(whole["feature_map"], single["feature_map"])
    assert json.loads((cache_fill(0).dir / "meta.json").read_text())["size"] == 10
    with pytest.raises(DiskSpaceError, match="--teacher-mode online"):
        check_disk_space(tmp_path, 10 ** 18, "a petabyte")


# -------------------------------------------------------------------------------------------- shards
def test_pairs_file_as_shards_trains_to_the_same_first_losses(tiny_student, tiny_tokenizer, tmp_path):
    pairs = write_pairs(tmp_path / "data", n=16)
    spec = convert_pairs(pairs, tmp_path / "shards", per_shard=16, progress=False)
    init = tmp_path / "init"
    save_student(tiny_student, tiny_tokenizer, init)
    common = ["--init", str(init)]
    # one batch is the whole set, so both orders give the same batches (InfoNCE and BatchNorm are
    # permutation invariant): the file and its shards must train alike, step for step
    args = [*common, "--steps", "3", "--batch-size", "16", "--warmup-steps", "0", "--threads", "1"]
    assert align.main([*args, "--images", str(pairs), "--out", str(tmp_path / "file")]) == 0
    assert align.main([*args, "--images", spec, "--out", str(tmp_path / "tar")]) == 0
    assert losses(tmp_path / "tar") == pytest.approx(losses(tmp_path / "file"), rel=1e-5)


def test_a_batch_whose_every_image_is_bad_is_skipped_and_named(tiny_student, tiny_tokenizer, tmp_path):
    pairs = write_pairs(tmp_path / "data", n=8)
    (tmp_path / "data" / "imgs" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a torn file
    init = tmp_path / "init"
    save_student(tiny_student, tiny_tokenizer, init)
    out = tmp_path / "run"
    # batch size 1 over all 8 pairs: one batch holds only the bad image; the run skips it and goes on
    assert align.main(["--init", str(init), "--images", str(pairs), "--steps", "8", "--batch-size", "1",
                       "--warmup-steps", "0", "--out", str(out), "--threads", "1"]) == 0
    assert len(losses(out)) == 8
    (skipped,) = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert skipped["sample"].endswith("3.png") and skipped["reason"]


# ----------------------------------------------------------------------------------------- torchrun
def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--standalone", *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=240)


def test_torchrun_two_ranks_stream_shards_and_resume_exactly(tiny_altclip_dir, tmp_path):
    spec = convert_pairs(write_pairs(tmp_path / "data", n=32), tmp_path / "shards", per_shard=4, progress=False)
    base = ["-m", "train.distill", *stage1_args(tiny_altclip_dir, tmp_path / "whole", spec, "--steps", "4",
                                                 "--batch-size", "4", "--workers", "1")]
    r = torchrun(*base)
    assert r.returncode == 0, r.stderr[-3000:]
    sliced = [a if a != str(tmp_path / "whole") else str(tmp_path / "sliced") for a in base]
    r = torchrun(*sliced, "--stop-after", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(losses(tmp_path / "sliced")) == 2
    r = torchrun(*sliced, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert losses(tmp_path / "sliced") == losses(tmp_path / "whole")
    stage = json.loads((tmp_path / "whole" / "stage.json").read_text())
    assert stage["world"] == 2 and stage["teacher_mode"] == "online"


@needs_fashion
def test_torchrun_two_ranks_fill_one_complete_cache(tiny_altclip_dir, tmp_path):
    cache = tmp_path / "cache"
    r = torchrun("-m", "train.distill", *stage1_args(tiny_altclip_dir, tmp_path / "run", "fashion-mnist",
                                                     "--limit", "32", "--teacher-mode", "cache",
                                                     "--cache", str(cache), "--steps", "2"))
    assert r.returncode == 0, r.stderr[-3000:]
    (image_cache,) = cache.glob("image-*")
    shards = sorted(image_cache.glob("shard_*.safetensors"))
    assert len(shards) == 8 and not list(image_cache.glob(".shard_*"))  # 32 images, 4 a shard, none torn
    assert json.loads((image_cache / "meta.json").read_text())["size"] == 32


def test_cache_fill_through_dataloader_workers_equals_the_one_process_fill(tiny_altclip_dir, tmp_path):
    teacher = build_teacher(f"altclip:{tiny_altclip_dir}")
    imgs = [Image.new("RGB", (36, 30), (i * 20, 255 - i * 9, i * 3)) for i in range(11)]
    one = cache_image_features(teacher, imgs.__getitem__, 11, "eleven", tmp_path / "a", batch_size=3, shard_size=4)
    two = cache_image_features(teacher, imgs.__getitem__, 11, "eleven", tmp_path / "b", batch_size=3, shard_size=4,
                               workers=2)
    assert torch.equal(one["feature_map"], two["feature_map"]) and torch.equal(one["embedding"], two["embedding"])
