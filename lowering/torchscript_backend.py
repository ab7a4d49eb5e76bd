"""TorchScript (traced) encoders for apps still on the PyTorch Mobile runtime."""
from __future__ import annotations

import io
import warnings

import torch
from torch import nn


def trace_encoder(encoder: nn.Module, example: tuple) -> bytes:
    """torch.jit.trace at the example's fixed shapes; the serialized module's bytes."""
    with warnings.catch_warnings():
        # tracing warns about the forward's shape checks being constant-folded, which is the point:
        # the shapes are fixed by the config.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(encoder.eval(), example, check_trace=True)
        traced = torch.jit.freeze(traced)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return buf.getvalue()


class TorchScriptRunner:
    def __init__(self, data: bytes | str):
        self.module = torch.jit.load(io.BytesIO(data) if isinstance(data, bytes) else data, map_location="cpu").eval()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(*inputs)

    def run_batch(self, inputs) -> torch.Tensor:
        return torch.cat([self(*args) for args in inputs])
