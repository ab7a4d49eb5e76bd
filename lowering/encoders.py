"""The two graphs that ship: each tower plus L2 normalization, one output, fixed shapes.

The app gets exactly what it scores with (a unit-length embedding), so no app re-implements
normalization, and the feature map that only stage 1 needs never leaves the phone's memory.

Text length buckets: the Android text .pte holds one method per length in `text_lengths(cfg)` (`forward` at
the full context, `forward_12`, `forward_16`, `forward_32`), sharing one copy of the weights; the app runs the
shortest that holds its tokens. Measured on the demo student (fp32, 2 threads): 16 tokens 0.71 ms vs 64 tokens
2.40 ms; a dynamic sequence length lowered to 19 XNNPACK partitions and ran slower at every length.
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
    """input_ids, attention_mask int64 [1,L] -> embedding float32 [1,D], unit length; L is the context length,
    or a shorter length bucket (the first L positions of the tokenizer's right-padded output)."""

    def __init__(self, tower: TextStudent, embed_dim: int, length: int | None = None):
        super().__init__()
        self.tower = tower
        self.normalize = L2Normalize(embed_dim)
        self.length = length or tower.cfg.context_length

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.length == self.tower.cfg.context_length:
            return self.normalize(self.tower(input_ids, attention_mask)[1])
        return self.normalize(self.tower.forward_prefix(input_ids, attention_mask)[1])


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32", "int64", "int32", ...

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def spec_dicts(specs: list[TensorSpec]) -> list[dict]:
    """Specs as the manifest lists them."""
    return [s.to_dict() for s in specs]


# Below the context. With the presets' 12,000-piece tokenizer 94% (EN) / 91% (ZH) of ImageNet class names and 74% /
# 95% of their prompts in the first 8 CLIP templates fit 12 tokens, 98% / 99% of the prompts 16. The small student's
# static int8 text .pte (its MLP then at ratio 4; 2 threads, interleaved, 8 x 40 calls) ran 8 / 10 / 12 / 16 / 24 /
# 32 / 64 tokens in 0.20 / 0.21 / 0.22 / 0.29 / 0.39 / 0.44 / 0.77 ms: below 12 tokens the per-op cost is the floor.
SHORT_TEXT_LENGTHS = (12, 16, 32)


def text_lengths(cfg: StudentConfig) -> tuple[int, ...]:
    """The text length buckets an Android text .pte holds, shortest first; the last is the context length."""
    L = cfg.text.context_length
    return tuple(n for n in SHORT_TEXT_LENGTHS if n < L) + (L,)


def text_method(cfg: StudentConfig, length: int) -> str:
    """The .pte method of a length bucket: `forward` at the full context (what an app that knows no buckets
    calls), `forward_<L>` below it."""
    return "forward" if length == cfg.text.context_length else f"forward_{length}"


def make_encoder(model: DCCLIPStudent, tower: str, length: int | None = None) -> nn.Module:
    if tower == "image":
        return ImageEncoder(model.image, model.cfg.embed_dim).eval()
    if tower == "text":
        return TextEncoder(model.text, model.cfg.embed_dim, length).eval()
    raise ValueError(f"unknown tower {tower!r}; accepted: {', '.join(TOWERS)}")


def input_specs(cfg: StudentConfig, tower: str, batch: int = 1, id_dtype: str = "int64",
                length: int | None = None) -> list[TensorSpec]:
    """The inputs an artifact takes. Core ML has no int64 inputs, so its bundles say int32."""
    if tower == "image":
        s = cfg.image.image_size
        return [TensorSpec("pixel_values", (batch, 3, s, s), "float32")]
    L = length or cfg.text.context_length
    return [TensorSpec("input_ids", (batch, L), id_dtype), TensorSpec("attention_mask", (batch, L), id_dtype)]


def output_spec(cfg: StudentConfig, batch: int = 1) -> TensorSpec:
    return TensorSpec("embedding", (batch, cfg.embed_dim), "float32")


def example_inputs(cfg: StudentConfig, tower: str, length: int | None = None) -> tuple[torch.Tensor, ...]:
    """Inputs of the exported shape (batch 1); only their shapes and dtypes matter to export."""
    if tower == "image":
        s = cfg.image.image_size
        return (torch.zeros(1, 3, s, s),)
    L = length or cfg.text.context_length
    ids = torch.zeros(1, L, dtype=torch.long)
    mask = torch.zeros(1, L, dtype=torch.long)
    ids[0, :2] = torch.tensor([2, 3])
    mask[0, :2] = 1
    return ids, mask


def used_length(attention_mask: torch.Tensor) -> int:
    """Positions a right-padded batch-1 text uses: up to its last token (1 for an all-pad row)."""
    used = attention_mask.reshape(-1).nonzero()
    return int(used.max()) + 1 if len(used) else 1


def shortest_bucket(lengths, n_tokens: int) -> int:
    """The shortest length bucket that holds n_tokens (the apps pick the same way)."""
    for L in sorted(lengths):
        if n_tokens <= L:
            return L
    raise ValueError(f"a text of {n_tokens} tokens is longer than every length bucket {sorted(lengths)}")
