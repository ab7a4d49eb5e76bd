"""Where training runs and in what precision: `--device`, `--amp`, and the per-step clock.

Every runner resolves its device here, so `--device cuda` on a machine without CUDA fails the same way
everywhere, and a torchrun rank on a GPU node takes the GPU of its LOCAL_RANK. Mixed precision follows
the usual recipe: autocast around the forward, a gradient scaler for fp16 only (bf16 has fp32's range),
fp32 master weights, losses and optimizer state, so checkpoints stay fp32 and lowering never changes.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
from dataclasses import dataclass, field

import torch

from dcclip_mobile.errors import DCClipError

DEVICE_CHOICES = "auto|cpu|cuda|cuda:N"
AMP_CHOICES = ("bf16", "fp16", "off")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(DCClipError, ValueError):
    """A --device or --amp value this machine cannot honour."""


def _cuda_found() -> str:
    if not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA (a CPU build)"
        return f"torch {torch.__version__} built with {built}, 0 CUDA devices visible"
    return f"{torch.cuda.device_count()} CUDA device(s): " + ", ".join(
        torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> this rank's GPU when CUDA is present, else the CPU; 'cuda' -> cuda:LOCAL_RANK (0 outside
    torchrun); 'cuda:N' -> that GPU. A GPU that is not there is a DeviceError naming what was found."""
    spec = (spec or "auto").strip().lower()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = local_rank if spec == "cuda" else spec[len("cuda:"):]
        try:
            index = int(index)
        except ValueError:
            raise DeviceError(f"--device {spec!r}: accepted {DEVICE_CHOICES}") from None
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise DeviceError(f"--device {spec!r} asks for CUDA device {index}, but this machine has {_cuda_found()}; "
                              "use --device cpu (or auto, which falls back to the CPU)")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    raise DeviceError(f"--device {spec!r}: accepted {DEVICE_CHOICES}")


def resolve_channels_last(channels_last: bool | None, device: torch.device) -> bool:
    """--channels-last / --no-channels-last, or by default on for CUDA (cuDNN's depthwise and 1x1 convolutions
    are faster in NHWC) and off on the CPU."""
    return device.type == "cuda" if channels_last is None else channels_last


def resolve_amp(amp: str | None, device: torch.device) -> str:
    """None -> bf16 on CUDA, off on the CPU; fp16 needs CUDA (the CPU has no fp16 gradient scaler path)."""
    if amp is None:
        return "bf16" if device.type == "cuda" else "off"
    if amp not in AMP_CHOICES:
        raise DeviceError(f"--amp {amp!r}: accepted {', '.join(AMP_CHOICES)}")
    if amp == "fp16" and device.type != "cuda":
        raise DeviceError("--amp fp16 needs a CUDA device; on the CPU use --amp bf16 or off")
    return amp


def autocast(device: torch.device, amp: str):
    """The forward's precision context: autocast to bf16/fp16, or nothing."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """fp16's loss scaling; a disabled scaler (a no-op) for bf16 and fp32."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def to_device(batch, device: torch.device, channels_last: bool = False):
    """Every tensor of a (nested) batch on `device`; pinned host memory makes the copy asynchronous.
    channels_last: 4-d tensors (pictures, teacher maps) in NHWC."""
    if torch.is_tensor(batch):
        if channels_last and batch.ndim == 4:
            return batch.to(device, non_blocking=True, memory_format=torch.channels_last)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and torch.is_tensor(batch[0]):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a clock reading means work done, not work queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: the CUDA allocator's peak on a GPU, the process's peak resident size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 1024  # macOS reports bytes, Linux KiB


@dataclass
class StepClock:
    """Seconds of one optimizer step split into data (waiting for and moving batches), teacher (an online
    teacher's forward, which the stage reports) and student (the rest: forward, backward, optimizer)."""
    device: torch.device
    parts: dict[str, float] = field(default_factory=lambda: {"data": 0.0, "teacher": 0.0})
    start: float = 0.0

    def begin(self) -> None:
        self.parts = {"data": 0.0, "teacher": 0.0}
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def measure(self, part: str):
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.parts[part] = self.parts.get(part, 0.0) + time.perf_counter() - t0

    def end(self) -> dict[str, float]:
        synchronize(self.device)
        total = time.perf_counter() - self.start
        out = {f"{k}_s": v for k, v in self.parts.items()}
        out["student_s"] = max(0.0, total - sum(self.parts.values()))
        out["step_s"] = total
        return out


class OnDevice:
    """A student for evaluation on `device`: its encoders take and return host tensors (what the zero-shot
    code passes around), and run on the device in between; everything else is the model's own."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model, self.device = model.to(device), device

    def __getattr__(self, name):
        return getattr(self.model, name)

    @torch.no_grad()
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values.to(self.device)).float().cpu()

    @torch.no_grad()
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids.to(self.device), attention_mask.to(self.device)).float().cpu()


def add_device_args(ap: argparse.ArgumentParser, amp: bool = True) -> None:
    g = ap.add_argument_group("device")
    g.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES} (auto: this rank's GPU when CUDA is present)")
    if amp:
        g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC weights and pictures for the image tower (default: on with CUDA, off on the CPU; "
                            "a stage-1 step of `base` at batch 128 on an H200, bf16: 0.118 s NHWC vs 0.184 s NCHW, "
                            "bench/gpu_student_step.py)")
        g.add_argument("--amp", default=None, choices=AMP_CHOICES,
                       help="mixed precision of the forward passes (default: bf16 on CUDA, off on the CPU); "
                            "weights, losses and optimizer state stay fp32")
