"""The training loop both stages share.

What it promises: AdamW with linear warmup + cosine decay, gradient accumulation, a progress bar,
metrics appended to `metrics.jsonl`, an atomic checkpoint every N steps, `resume` that continues
exactly (same data order, same losses), fixed seeds, and DistributedDataParallel under `torchrun`
(gloo on CPU, NCCL on GPU), on any device and in mixed precision (train/device.py), with each step's
time split into data / teacher / student, images/s and peak memory in the log.

A stage hands it a `StageModule`: an nn.Module that owns the student and the stage's extra trainable
parts (adapters), and whose forward(batch) returns (loss, {metric: float}). The checkpoint directory is a
student checkpoint (so `load_student` reads it) plus the trainer's state.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import dataclasses
import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from dcclip_mobile.atomic import atomic_directory, recover_directory
from dcclip_mobile.data.preprocess import ImageLoadError
from dcclip_mobile.checkpoint import write_student_files
from dcclip_mobile.errors import DCClipError
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.tokenizer import BilingualTokenizer

from .device import StepClock, autocast, grad_scaler, peak_memory_mb, to_device

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


class TrainConfigError(DCClipError, ValueError):
    """A training option is out of range or inconsistent."""


@dataclass
class TrainConfig:
    steps: int = 100               # optimizer steps
    batch_size: int = 64           # per process, per micro-batch
    grad_accum: int = 1            # micro-batches per optimizer step
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 10
    min_lr_ratio: float = 0.01     # cosine decays to lr * min_lr_ratio
    seed: int = 0
    checkpoint_every: int = 50     # steps; the last step always checkpoints
    log_every: int = 1
    num_workers: int = 0           # DataLoader workers

    def validate(self) -> None:
        checks = [
            (self.steps > 0, f"steps must be > 0, got {self.steps}"),
            (self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}"),
            (self.grad_accum > 0, f"grad_accum must be > 0, got {self.grad_accum}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.warmup_steps <= self.steps, f"warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}"),
            (0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.checkpoint_every > 0, f"checkpoint_every must be > 0, got {self.checkpoint_every}"),
            (self.log_every > 0, f"log_every must be > 0, got {self.log_every}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise TrainConfigError(msg)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine to cfg.lr * min_lr_ratio at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class StageModule(nn.Module):
    """Base class of a stage: holds `student` (a DCCLIPStudent) and whatever else the stage trains;
    a subclass's forward(batch) returns (loss, {metric name: float})."""

    student: DCCLIPStudent
    image_lr_scale: float = 1.0

    def lr_scale(self, name: str) -> float:
        """The learning-rate factor of parameter `name`: an inherited image tower learns slower than the
        parts that start from scratch (at the text tower's rate it collapsed to one embedding, measured)."""
        return self.image_lr_scale if name.startswith("student.image.") else 1.0


# ----------------------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device | str = "cpu") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1: NCCL for GPU ranks, gloo for CPU ranks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.device(device).type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size())


# ------------------------------------------------------------------------------------------ data order
class ResumableBatchSampler(torch.utils.data.Sampler):
    """Micro-batches of indices in a seeded order, starting at any micro-batch.

    Epoch e shuffles with seed + e; each process takes its own slice, so the order depends only on
    (seed, world size, micro-batch number) and a resumed run sees exactly what the first run would have.
    """

    def __init__(self, n: int, batch_size: int, seed: int, dist_info: DistInfo, start: int, total: int | None = None):
        self.per_epoch = n // (batch_size * dist_info.world)
        if self.per_epoch == 0:
            raise TrainConfigError(f"the data set has {n} samples, fewer than one batch "
                                   f"({batch_size} x {dist_info.world} processes); lower batch_size")
        self.n, self.batch_size, self.seed, self.dist = n, batch_size, seed, dist_info
        self.start, self.total = start, total

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("an open-ended sampler has no length")
        return self.total - self.start

    def __iter__(self):
        order, order_epoch = None, -1
        # open-ended (total None) when the loop may skip batches whose every image is bad
        for k in (range(self.start, self.total) if self.total is not None else itertools.count(self.start)):
            epoch, j = divmod(k, self.per_epoch)
            if epoch != order_epoch:
                order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
                order_epoch = epoch
            first = (j * self.dist.world + self.dist.rank) * self.batch_size
            yield order[first: first + self.batch_size].tolist()


# ----------------------------------------------------------------------------------- checkpoint state
def save_training_checkpoint(directory: Path, stage: StageModule, tokenizer: BilingualTokenizer,
                             optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig, extra: dict) -> None:
    """Student checkpoint + the trainer's state, written as one atomic directory. No pickle: tensors in
    safetensors, everything else in JSON."""
    tensors = {f"stage.{k}": v.detach().to("cpu").contiguous().clone() for k, v in stage.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, pstate in opt["state"].items():
        for name, value in pstate.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(value).detach().to("cpu").clone()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"step": step, "train_config": dataclasses.asdict(cfg), "param_groups": opt["param_groups"], **extra}
    student = stage.student
    if any(p.device.type != "cpu" for p in student.parameters()):
        student = copy.deepcopy(student).to("cpu")  # safetensors writes host memory; the student is small
    with atomic_directory(directory) as tmp:
        write_student_files(student, tokenizer, tmp)
        save_file(tensors, str(tmp / STATE_TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=2) + "\n")


def load_training_checkpoint(directory: Path, stage: StageModule, optimizer: torch.optim.Optimizer) -> dict:
    """Restore what save_training_checkpoint wrote; returns its JSON metadata (with "step")."""
    directory = recover_directory(directory) or directory  # a swap interrupted between its renames
    for f in (STATE_TENSORS, STATE_JSON):
        if not (directory / f).is_file():
            raise TrainConfigError(f"cannot resume: {str(directory / f)!r} is missing; start without --resume "
                                   "or point --out at the run to continue")
    try:
        meta = json.loads((directory / STATE_JSON).read_text())
        tensors = load_file(str(directory / STATE_TENSORS))
    except (json.JSONDecodeError, SafetensorError, OSError) as e:
        raise TrainConfigError(f"cannot resume: the training state in {str(directory)!r} is damaged ({e}); "
                               "start again without --resume, or restore the checkpoint directory") from None
    stage.load_state_dict({k[len("stage."):]: v for k, v in tensors.items() if k.startswith("stage.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return meta


# ----------------------------------------------------------------------------------------------- train
MAX_BAD_SHARE = 0.05  # the run stops when more than this share of the samples it drew could not be loaded


def train(stage: StageModule, dataset: torch.utils.data.Dataset, collate: Callable, tokenizer: BilingualTokenizer,
          cfg: TrainConfig, out_dir: str | Path, resume: bool = False, desc: str = "train",
          stop_after: int | None = None, extra_state: dict | None = None,
          device: torch.device | str = "cpu", amp: str = "off", channels_last: bool = False) -> Path:
    """Run (or resume) a stage on `device` in precision `amp` (train/device.py); returns the checkpoint
    directory `out_dir/checkpoint`.

    `dataset` is map-style (indexed, ordered by ResumableBatchSampler) or a stream with a
    `configure(rank, world, num_workers, batch_size, start_batch)` method (data/shards.py's ShardStream).
    stop_after: stop (with a checkpoint) after this many optimizer steps, as an interruption would;
    used by tests and by users who train in slices.
    """
    cfg.validate()
    device = torch.device(device)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoint"
    metrics_path = out_dir / "metrics.jsonl"
    info = init_distributed(device)
    torch.manual_seed(cfg.seed)
    stage.to(device)
    if channels_last:
        stage.to(memory_format=torch.channels_last)  # 4-d weights NHWC; checkpoints are saved contiguous

    groups: dict[tuple[bool, float], list] = {}
    for name, p in stage.named_parameters():
        if p.requires_grad and stage.lr_scale(name) == 0:
            p.requires_grad_(False)  # a frozen part: no gradient, no optimizer state
        if p.requires_grad:
            decays = not (p.ndim < 2 or "logit_scale" in name)
            groups.setdefault((decays, stage.lr_scale(name)), []).append(p)
    optimizer = torch.optim.AdamW([{"params": ps, "weight_decay": cfg.weight_decay if decays else 0.0,
                                    "lr_scale": scale} for (decays, scale), ps in sorted(groups.items())],
                                  lr=cfg.lr, foreach=True)  # foreach: one kernel per op over all tensors
    scaler = grad_scaler(device, amp)
    step = 0
    if resume:
        meta = load_training_checkpoint(ckpt_dir, stage, optimizer)
        step = meta["step"]
        if meta["train_config"] != dataclasses.asdict(cfg):
            changed = {k: (v, dataclasses.asdict(cfg)[k]) for k, v in meta["train_config"].items()
                       if dataclasses.asdict(cfg).get(k) != v}
            raise TrainConfigError(f"cannot resume {str(ckpt_dir)!r} with different options {changed} "
                                   "(saved, now): a resumed run must be the same run")
        if "grad_scaler" in meta and scaler.is_enabled():
            scaler.load_state_dict(meta["grad_scaler"])
    # micro-batches drawn so far, skipped all-bad ones included: where the data order resumes
    drawn = meta.get("batches_drawn", step * cfg.grad_accum) if resume else 0
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics_path, step)

    model: nn.Module = stage
    if info.world > 1:
        model = nn.parallel.DistributedDataParallel(stage, device_ids=[device.index] if device.type == "cuda" else None,
                                                    find_unused_parameters=getattr(stage, "find_unused_parameters", False))
    pin = device.type == "cuda"
    if hasattr(dataset, "configure"):  # a stream: it skips what the first run consumed itself
        dataset.configure(info.rank, info.world, cfg.num_workers, cfg.batch_size, drawn)
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, collate_fn=collate,
                                             num_workers=cfg.num_workers, pin_memory=pin)
    else:
        sampler = ResumableBatchSampler(len(dataset), cfg.batch_size, cfg.seed, info, start=drawn)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=cfg.num_workers, pin_memory=pin)
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    stage.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not info.is_main, dynamic_ncols=True)
    batches = iter(loader)
    clock = StepClock(device)
    stage.clock = clock  # a stage with an online teacher reports its teacher time here
    seen, bad, step_times = 0, 0, []
    while step < end:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        sums: dict[str, float] = {}
        images = 0
        clock.begin()
        for micro in range(cfg.grad_accum):
            with clock.measure("data"):
                batch, skipped, n_drawn = _next_good_batch(batches, out_dir if info.is_main else None)
                drawn += n_drawn
                batch = to_device(batch, device, channels_last)
            seen, bad = seen + skipped + _batch_len(batch), bad + skipped
            if bad > MAX_BAD_SHARE * seen and seen >= 100:
                raise ImageLoadError(f"{bad} of the {seen} samples drawn so far could not be loaded (over "
                                     f"{MAX_BAD_SHARE:.0%}); see {str(out_dir / SKIPPED_LOG)!r} and fix the data")
            images += _batch_len(batch)
            sync = micro == cfg.grad_accum - 1 or info.world == 1
            ctx = contextlib.nullcontext() if sync else model.no_sync()
            with ctx:
                with autocast(device, amp):
                    loss, metrics = model(batch)
                scaler.scale(loss.float() / cfg.grad_accum).backward()
            for k, v in {"loss": loss.item(), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        times = clock.end()
        step_times.append(times["step_s"])
        sums.update(times)
        sums["images_per_s"] = images * info.world / times["step_s"]
        if info.world > 1:
            sums = _mean_across(sums, info)  # each rank's images_per_s already counts every rank
        sums["peak_mem_mb"] = peak_memory_mb(device)
        sums["eta_s"] = statistics.median(step_times[-20:]) * (end - step)
        bar.update(1)
        bar.set_postfix(loss=f"{sums['loss']:.4f}", lr=f"{lr:.2e}", img_s=f"{sums['images_per_s']:.0f}",
                        mem=f"{sums['peak_mem_mb']:.0f}M")
        if info.is_main and (step % cfg.log_every == 0 or step == end):
            with metrics_path.open("a") as f:
                f.write(json.dumps({"step": step, "lr": lr, **sums}) + "\n")
        if step % cfg.checkpoint_every == 0 or step == end:
            if info.is_main:
                extra = {**(extra_state or {}), "batches_drawn": drawn,
                         **({"grad_scaler": scaler.state_dict()} if scaler.is_enabled() else {})}
                save_training_checkpoint(ckpt_dir, stage, tokenizer, optimizer, step, cfg, extra)
            if info.world > 1:
                dist.barrier()
    bar.close()
    stage.eval()
    del stage.clock
    return ckpt_dir


SKIPPED_LOG = "skipped.jsonl"


def _next_good_batch(batches, log_dir: Path | None) -> tuple[dict, int, int]:
    """The next batch with at least one good sample, how many bad samples were skipped on the way
    (collate functions mark bad samples in batch["bad"], a list of {"sample", "reason"}; each is logged),
    and how many batches were drawn."""
    skipped, drawn = 0, 0
    while True:
        batch = next(batches)
        drawn += 1
        bad = batch.pop("bad", []) if isinstance(batch, dict) else []
        skipped += len(bad)
        if bad and log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            with (log_dir / SKIPPED_LOG).open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(b, ensure_ascii=False) + "\n" for b in bad)
        if batch.get("empty"):
            continue  # every sample of this batch was bad: skip the batch, not the run
        return batch, skipped, drawn


def _batch_len(batch: dict) -> int:
    return len(batch["pixel_values"]) if "pixel_values" in batch else 0


def throughput_summary(out_dir: str | Path, warmup: int = 2) -> dict:
    """Medians of the logged per-step figures (the first `warmup` steps left out: they pay for start-up),
    for a stage's stage.json."""
    rows = read_metrics(out_dir)
    rows = rows[warmup:] if len(rows) > warmup else rows
    keys = ("images_per_s", "step_s", "data_s", "teacher_s", "student_s")
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if k in r]
        if vals:
            out[f"median_{k}"] = statistics.median(vals)
    peaks = [r["peak_mem_mb"] for r in rows if "peak_mem_mb" in r]
    if peaks:
        out["peak_mem_mb"] = max(peaks)
    out["steps_measured"] = len(rows)
    return out


def read_metrics(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines past the resumed step, so a resumed run's log reads as one run; a line torn by a kill
    (the last one, half written) is dropped too."""
    if path.exists():
        keep = []
        for line in path.read_text().split("\n"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # empty, or torn by an interruption
            if isinstance(row, dict) and row.get("step", step + 1) <= step:
                keep.append(line)
        path.write_text("".join(line + "\n" for line in keep))


def _mean_across(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / info.world for k, v in zip(keys, t)}

