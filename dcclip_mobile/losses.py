"""The two losses of DC-CLIP and the adapters stage 1 needs.

Stage 1 (distill): the student's feature map goes through a 1x1 conv adapter to the teacher's channel
count (and is resized to the teacher's grid when the two differ), then SmoothL1 to the teacher's map.
Text towers use different tokenizers, so their token grids do not line up: the pooled features go
through a linear adapter instead. The adapters exist only for training; they are not exported.

Stage 2 (align): symmetric InfoNCE, L = (L_i2t + L_t2i) / 2, with CLIP's learnable temperature.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureMapAdapter(nn.Module):
    """Student feature map [B,Cs,h,w] -> teacher's [B,Ct,H,W]: 1x1 conv, then bilinear resize if needed."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def forward(self, student_map: torch.Tensor, teacher_size: tuple[int, int]) -> torch.Tensor:
        x = self.conv(student_map)
        if tuple(x.shape[-2:]) != tuple(teacher_size):
            x = bilinear_resize(x, teacher_size)
        return x


def _linear_weights(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """[n_in, n_out]: 1-D linear interpolation (align_corners=False) as a matrix, F.interpolate's own weights."""
    eye = torch.eye(n_in, device=like.device, dtype=torch.float32)[:, None, :]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :].to(like.dtype)


def bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """F.interpolate(x, size, mode="bilinear", align_corners=False) as two small matmuls (bilinear is separable).
    On an H200, the adapter's bf16 upsample of a [128, 1024, 7, 7] map took 44 ms of a 139 ms step in
    upsample_bilinear2d's kernel (bench/gpu_student_step.py); a matmul of that size is microseconds."""
    rows = _linear_weights(x.shape[-2], size[0], x)
    cols = _linear_weights(x.shape[-1], size[1], x)
    return torch.einsum("bchw,hH,wW->bcHW", x, rows, cols)


class PooledAdapter(nn.Module):
    """Student pooled text features [B,Ws] -> the teacher's [B,Wt]."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.linear = nn.Linear(student_dim, teacher_dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(pooled)


def feature_distill_loss(adapted: torch.Tensor, teacher: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """SmoothL1 between the adapted student features and the teacher's (teacher in any float dtype)."""
    if adapted.shape != teacher.shape:
        raise ValueError(f"adapted student features {tuple(adapted.shape)} and teacher features "
                         f"{tuple(teacher.shape)} differ in shape; check the adapter's channels")
    return F.smooth_l1_loss(adapted, teacher.to(adapted.dtype), beta=beta)


def embedding_distill_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """1 - cosine between student and teacher joint-space embeddings: the optional embedding-level term."""
    return (1 - F.cosine_similarity(student_emb, teacher_emb.to(student_emb.dtype), dim=-1)).mean()


def clip_contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                          labels: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over normalized embeddings; row i of each is a pair.

    `labels` (optional, [B]) marks pairs that share a class: with few classes many captions in a batch
    describe the same thing, and treating them as negatives fights the signal; every same-label entry
    then counts as a positive (the targets are spread over them).
    """
    logits = logit_scale * image_emb @ text_emb.t()
    if labels is None:
        targets = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
    same = (labels[:, None] == labels[None, :]).to(logits.dtype)
    targets = same / same.sum(dim=1, keepdim=True)
    i2t = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    t2i = -(targets * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return (i2t + t2i) / 2


def affinity_distill_loss(student_image: torch.Tensor, student_text: torch.Tensor, teacher_image: torch.Tensor,
                          teacher_text: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """Affinity mimicking (TinyCLIP): the student's image-to-text and text-to-image similarity distributions
    over a batch follow the teacher's (KL, both directions). Cosine to the teacher's embedding is a weak
    signal where a teacher's embeddings share a large common direction (the offline teacher's: a cosine of
    0.8 there is chance-level zero-shot); the affinities weigh exactly the differences that rank classes."""
    s = scale * F.normalize(student_image, dim=-1) @ F.normalize(student_text, dim=-1).t()
    with torch.no_grad():
        t = scale * F.normalize(teacher_image.to(s.dtype), dim=-1) @ F.normalize(teacher_text.to(s.dtype), dim=-1).t()
    i2t = F.kl_div(F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), log_target=True, reduction="batchmean")
    t2i = F.kl_div(F.log_softmax(s.t(), dim=1), F.log_softmax(t.t(), dim=1), log_target=True, reduction="batchmean")
    return (i2t + t2i) / 2
