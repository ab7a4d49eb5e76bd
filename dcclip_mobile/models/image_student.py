"""ImageStudent: a MobileNetV2-style convolutional tower.

Why this shape: conv + BatchNorm + ReLU6 is the op set every mobile runtime delegates whole
(XNNPACK on Android, the ANE on iOS), BatchNorm folds into the preceding conv at export, and the
last feature map is spatial, which stage 1 needs to distill the teacher's feature map.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ImageStudentConfig


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: float, kernel: int = 3):
        super().__init__()
        hidden = round(cin * expand_ratio)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_act(cin, hidden, 1))
        layers += [conv_bn_act(hidden, hidden, kernel, stride, groups=hidden), conv_bn_act(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


def check_pixel_values(pixel_values: object, image_size: int) -> None:
    # Shapes are static under torch.export, so this check costs nothing in an exported graph.
    expected = f"a float tensor [batch, 3, {image_size}, {image_size}] (normalized RGB)"
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be {expected}, got {type(pixel_values).__name__}")
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, image_size, image_size):
        raise ValueError(f"pixel_values has shape {tuple(pixel_values.shape)}; expected {expected}. "
                         "Preprocess images with dcclip_mobile.data.preprocess first.")
    if not pixel_values.is_floating_point():
        raise ValueError(f"pixel_values has dtype {pixel_values.dtype}; expected {expected}")


class ImageStudent(nn.Module):
    """pixel_values float32 [B,3,S,S] (normalized) -> (feature_map [B,C,S/32,S/32], embedding [B,D])."""

    def __init__(self, cfg: ImageStudentConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [conv_bn_act(3, cfg.stem_channels, 3, 2)]
        cin = cfg.stem_channels
        for expand, cout, blocks, first_stride, *kernel in cfg.stages:
            for i in range(blocks):
                layers.append(InvertedResidual(cin, cout, first_stride if i == 0 else 1, expand, *kernel))
                cin = cout
        layers.append(conv_bn_act(cin, cfg.feature_channels, 1))
        self.features = nn.Sequential(*layers)
        if cfg.head_anchors:
            # embedding = softmax(anchor logits) @ anchor embeddings: a soft choice among K concepts, the
            # shape of a ConSE teacher and of a zero-shot ImageNet head (see models/inherit.py); a linear
            # head could not follow the offline teacher even on its own features (measured: docs/design.md)
            self.anchor_logits = nn.Linear(cfg.feature_channels, cfg.head_anchors)
            self.anchor_embed = nn.Linear(cfg.head_anchors, embed_dim, bias=False)
        else:
            self.proj = nn.Linear(cfg.feature_channels, embed_dim, bias=False)
        self.feature_channels = cfg.feature_channels
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.cfg.head_anchors:
            nn.init.normal_(self.anchor_logits.weight, std=self.cfg.feature_channels ** -0.5)
            nn.init.zeros_(self.anchor_logits.bias)
            nn.init.normal_(self.anchor_embed.weight, std=self.cfg.head_anchors ** -0.5)
        else:
            nn.init.normal_(self.proj.weight, std=self.cfg.feature_channels ** -0.5)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_pixel_values(pixel_values, self.cfg.image_size)
        feature_map = self.features(pixel_values)
        return feature_map, self.embed(feature_map)

    def embed(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The joint-space embedding of a last feature map (pool, then the head)."""
        # keepdim: XNNPACK takes a spatial mean only in its 4-D form; without it the mean splits the graph
        pooled = feature_map.mean(dim=(2, 3), keepdim=True).flatten(1)
        if self.cfg.head_anchors:
            return self.anchor_embed(self.anchor_logits(pooled).softmax(dim=-1))
        return self.proj(pooled)
