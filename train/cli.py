"""Command-line options both stage runners share, turned into a TrainConfig."""
from __future__ import annotations

import argparse
import dataclasses

from dcclip_mobile.atomic import check_writable_dir
from dcclip_mobile.errors import UsageError

from .loop import TrainConfig


def add_train_args(ap: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    g = ap.add_argument_group("optimization")
    g.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps")
    g.add_argument("--batch-size", type=int, default=defaults.batch_size, help="per process, per micro-batch")
    g.add_argument("--grad-accum", type=int, default=defaults.grad_accum, help="micro-batches per step")
    g.add_argument("--lr", type=float, default=defaults.lr)
    g.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    g.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    g.add_argument("--min-lr-ratio", type=float, default=defaults.min_lr_ratio, help="cosine floor, x lr")
    g.add_argument("--seed", type=int, default=defaults.seed)
    g.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    g.add_argument("--log-every", type=int, default=defaults.log_every)
    g.add_argument("--workers", "--num-workers", dest="num_workers", type=int, default=defaults.num_workers,
                   help="DataLoader worker processes per rank (decoding and augmenting images off the training loop)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    g.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (with a checkpoint) after N more steps, to train in slices; continue with --resume")
    g.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")


def add_image_tower_args(ap: argparse.ArgumentParser, freeze_default: int, freeze_help: str) -> None:
    """How much of the image tower a stage trains, and the affinity term's scale: the options both stages share."""
    g = ap.add_argument_group("image tower")
    g.add_argument("--image-lr-scale", type=float, default=1.0,
                   help="learning-rate factor of the image tower; 0 keeps it fixed, BatchNorm statistics included")
    g.add_argument("--freeze-image-layers", type=int, default=freeze_default, help=freeze_help)
    g.add_argument("--affinity-scale", type=float, default=100.0, help="logit scale of the affinity term")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig, and the checks a runner makes before any work: numbers in range and an --out
    it can write (a file there, or a read-only disk, is refused now rather than after the teacher's fill)."""
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    cfg.validate()
    if getattr(args, "threads", 0) < 0:
        raise UsageError(f"--threads {args.threads}: give a number of threads >= 1, or 0 for torch's default")
    if getattr(args, "stop_after", None) is not None and args.stop_after < 1:
        raise UsageError(f"--stop-after {args.stop_after}: give a number of steps >= 1")
    if getattr(args, "out", None):
        check_writable_dir(args.out, "--out")
    return cfg

