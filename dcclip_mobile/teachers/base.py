"""The teacher protocol: what every teacher gives the students to learn from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..data.preprocess import ImagePreprocess


@dataclass
class ImageFeatures:
    feature_map: torch.Tensor  # [B, C, H, W]
    embedding: torch.Tensor    # [B, D], joint space, L2-normalized


@dataclass
class TextFeatures:
    pooled: torch.Tensor       # [B, C]
    embedding: torch.Tensor    # [B, D], joint space, L2-normalized


class Teacher(Protocol):
    teacher_id: str               # names the teacher and its weights, for cache keys
    preprocess: ImagePreprocess   # how images must be prepared for encode_image
    feature_channels: int         # C of the image feature map
    feature_size: int             # H (= W) of the image feature map
    text_feature_dim: int         # C of the pooled text features
    embed_dim: int                # D
    device: torch.device          # where encode_* run and what they return on (float32)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "Teacher": ...

    def encode_image(self, pixel_values: torch.Tensor) -> ImageFeatures: ...

    def encode_text(self, texts: list[str]) -> TextFeatures: ...
