"""The two graphs that ship: each tower plus L2 normalization, one output, fixed shapes.

The app gets exactly what it scores with (a unit-length embedding), so no app re-implements
normalization, and the feature map that only stage 1 needs never leaves the phone's memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dcclip_mobile.config import StudentConfig
from dcclip_mobile.models import DCCLIPStudent, ImageStudent, TextStudent

TOWERS = ("image", "text")
# Same role as F.normalize's eps, squared because it clamps the sum of squares.
NORM_EPS_SQUARED = 1e-24


class L2Normalize(nn.Module):
    """x / max(||x||, 1e-12), written as ops XNNPACK and Core ML both take whole.

    F.normalize lowers to linalg_vector_norm + clamp + div, which the XNNPACK partitioner leaves
    outside; the sum of squares as a matmul with a ones vector stays inside. Quantizers are told to
    leave this module in fp32 (see quantize.py): its input range is the embedding's squared norm.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("ones", torch.ones(1, dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # clamp, not "+ eps": coremltools 9.0's fuse_linear_bias pass crashes on linear + scalar add
        return x * torch.rsqrt(nn.functional.linear(x * x, self.ones).clamp(min=NORM_EPS_SQUARED))


class ImageEncoder(nn.Module):
    """pixel_values float32 [1,3,S,S] (preprocessed) -> embedding float32 [1,D], unit length."""

    def __init__(self, tower: ImageStudent, embed_dim: int):
        super().__init__()
        self.tower = tower
        self.normalize = L2Normalize(embed_dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.tower(pixel_values)[1])


class TextEncoder(nn.Module):
    """input_ids, attention_mask int64 [1,L] -> embedding float32 [1,D], unit length."""

    def __init__(self, tower: TextStudent, embed_dim: int):
        super().__init__()
        self.tower = tower
        self.normalize = L2Normalize(embed_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.tower(input_ids, attention_mask)[1])


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32", "int64", "int32", ...

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def make_encoder(model: DCCLIPStudent, tower: str) -> nn.Module:
    if tower == "image":
        return ImageEncoder(model.image, model.cfg.embed_dim).eval()
    if tower == "text":
        return TextEncoder(model.text, model.cfg.embed_dim).eval()
    raise ValueError(f"unknown tower {tower!r}; accepted: {', '.join(TOWERS)}")


def input_specs(cfg: StudentConfig, tower: str, batch: int = 1, id_dtype: str = "int64") -> list[TensorSpec]:
    """The inputs an artifact takes. Core ML has no int64 inputs, so its bundles say int32."""
    if tower == "image":
        s = cfg.image.image_size
        return [TensorSpec("pixel_values", (batch, 3, s, s), "float32")]
    L = cfg.text.context_length
    return [TensorSpec("input_ids", (batch, L), id_dtype), TensorSpec("attention_mask", (batch, L), id_dtype)]


def output_spec(cfg: StudentConfig, batch: int = 1) -> TensorSpec:
    return TensorSpec("embedding", (batch, cfg.embed_dim), "float32")


def example_inputs(cfg: StudentConfig, tower: str) -> tuple[torch.Tensor, ...]:
    """Inputs of the exported shape (batch 1); only their shapes and dtypes matter to export."""
    if tower == "image":
        s = cfg.image.image_size
        return (torch.zeros(1, 3, s, s),)
    L = cfg.text.context_length
    ids = torch.zeros(1, L, dtype=torch.long)
    mask = torch.zeros(1, L, dtype=torch.long)
    ids[0, :2] = torch.tensor([2, 3])
    mask[0, :2] = 1
    return ids, mask
