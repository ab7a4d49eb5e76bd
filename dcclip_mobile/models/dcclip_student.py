"""DCCLIPStudent: the image and text students and the learnable temperature of stage 2."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import StudentConfig
from .image_student import ImageStudent
from .text_student import TextStudent


class DCCLIPStudent(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.image = ImageStudent(cfg.image, cfg.embed_dim)
        self.text = TextStudent(cfg.text, cfg.embed_dim)
        # log-space, as CLIP: exp() keeps the scale positive; clamped to logit_scale_max when used.
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(pixel_values)[1], dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(input_ids, attention_mask)[1], dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=self.cfg.logit_scale_max).exp()

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalized image embeddings, normalized text embeddings, and the (clamped) logit scale."""
        return self.encode_image(pixel_values), self.encode_text(input_ids, attention_mask), self.scale()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
