"""The two stages as modules the training loop runs: what a batch is and what the loss is.

Stage 1 (DistillStage): a batch holds a student-preprocessed image micro-batch with the teacher's
cached feature map and embedding, and a tokenized text micro-batch (English and Chinese) with the
teacher's cached pooled features and embedding.
Stage 2 (AlignStage): a batch holds image-caption pairs (captions in both languages, mixed) and, for
the optional distillation term, the teacher's cached image embeddings.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from dcclip_mobile.losses import (FeatureMapAdapter, PooledAdapter, affinity_distill_loss, clip_contrastive_loss,
                                  embedding_distill_loss, feature_distill_loss)
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.teachers.cache import teacher_image_targets

from .loop import StageModule
from .replay import TextReplay


def freeze_image_prefix(student: DCCLIPStudent, k: int) -> int:
    """An inherited tower's first layers already see well; training them costs most of a step (they run at
    the highest resolutions), so they stay fixed: no gradient, BatchNorm statistics frozen (see train())."""
    n = len(student.image.features)
    if not 0 <= k < n:
        raise ValueError(f"frozen image layers must be in [0, {n - 1}], got {k}")
    for p in student.image.features[:k].parameters():
        p.requires_grad_(False)
    return k


def image_forward(student: DCCLIPStudent, pixel_values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image tower with its first k layers run without autograd."""
    if not k:
        return student.image(pixel_values)
    with torch.no_grad():
        x = student.image.features[:k](pixel_values)
    fmap = student.image.features[k:](x)
    return fmap, student.image.embed(fmap)


class OnlineTeacher:
    """The teacher run inside each training step, on the training device and without gradients: nothing is
    written to disk, which is what a million-image set needs (a ViT-L/14 map is 512 KB per image in fp16).
    Deliberately not an nn.Module attribute of the stage, so it is neither trained, checkpointed nor wrapped
    by DistributedDataParallel."""

    def __init__(self, teacher, map_pool: int | None = None, corpus: Sequence[str] | None = None):
        self.teacher, self.map_pool, self.corpus = teacher, map_pool, corpus

    def images(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap, emb = teacher_image_targets(self.teacher, pixel_values, self.map_pool)
        # clone outside inference mode: the losses save their targets for backward, which inference tensors refuse
        return fmap.clone(), emb.clone()

    def texts(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.teacher.encode_text(list(texts))
        return f.pooled.to(device).float().clone(), f.embedding.to(device).float().clone()

    def corpus_texts(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.texts([self.corpus[i] for i in index.flatten().tolist()], device)


def teacher_clock(stage: StageModule):
    """The loop's clock for the teacher's share of a step (none outside the loop)."""
    clock = getattr(stage, "clock", None)
    return clock.measure("teacher") if clock is not None else contextlib.nullcontext()


class FrozenPrefixStage(StageModule):
    """A stage whose image tower may be partly (a prefix) or wholly (image_lr_scale 0) fixed."""
    frozen_image_layers: int = 0

    def fix_image_tower(self, frozen_layers: int, lr_scale: float) -> None:
        if not lr_scale >= 0:
            raise ValueError(f"image_lr_scale must be >= 0, got {lr_scale}")
        self.frozen_image_layers = freeze_image_prefix(self.student, frozen_layers)
        self.image_lr_scale = lr_scale

    def train(self, mode: bool = True) -> "FrozenPrefixStage":
        super().train(mode)
        # a fixed part keeps its BatchNorm statistics too (train mode would move them even with no gradient)
        self.student.image.features[:self.frozen_image_layers].eval()
        if self.image_lr_scale == 0:
            self.student.image.eval()
        return self


@dataclass
class DistillWeights:
    image_map: float = 1.0        # SmoothL1 on the adapted feature map (the paper's term)
    text_features: float = 1.0    # SmoothL1 on the adapted pooled text features
    image_embedding: float = 1.0  # optional: 1 - cos(student, teacher) image embeddings
    text_embedding: float = 1.0   # optional: 1 - cos(student, teacher) text embeddings
    affinity: float = 1.0         # image-text affinity mimicking over the batch (needs the joint space)

    def validate(self) -> None:
        for k, v in vars(self).items():
            if not v >= 0:
                raise ValueError(f"loss weight {k} must be >= 0, got {v}")
        if not any(vars(self).values()):
            raise ValueError("all stage-1 loss weights are 0; at least one term must be on")


class DistillStage(FrozenPrefixStage):
    """Feature-map distillation through a 1x1 conv adapter (image) and a linear adapter (text), SmoothL1.

    The embedding terms need the student's joint space to be the teacher's (embed_dim equal), which is
    what makes a stage-1 student usable for zero-shot before stage 2; they are off when dims differ.
    """

    def __init__(self, student: DCCLIPStudent, teacher_map_channels: int, teacher_text_dim: int,
                 teacher_embed_dim: int, weights: DistillWeights, affinity_scale: float = 100.0,
                 frozen_image_layers: int = 0, image_lr_scale: float = 1.0, online: OnlineTeacher | None = None):
        super().__init__()
        weights.validate()
        self.online = online  # None: the batches carry the cached teacher outputs
        self.student = student
        self.image_adapter = FeatureMapAdapter(student.image.feature_channels, teacher_map_channels)
        self.text_adapter = PooledAdapter(student.text.feature_dim, teacher_text_dim)
        self.weights = weights
        self.embedding_terms = student.cfg.embed_dim == teacher_embed_dim
        # stage 1 has no contrastive term: the temperature is stage 2's to learn (and a parameter that gets no
        # gradient stops DistributedDataParallel); without the embedding terms the projections get none either
        student.logit_scale.requires_grad_(False)
        self.find_unused_parameters = not self.embedding_terms
        self.affinity_scale = affinity_scale
        self.fix_image_tower(frozen_image_layers, image_lr_scale)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.weights
        if self.online is not None:
            device = batch["pixel_values"].device
            with teacher_clock(self), torch.no_grad():
                batch["teacher_map"], batch["teacher_image_embedding"] = self.online.images(batch["teacher_pixel_values"])
                pooled_t, emb_t = self.online.corpus_texts(batch["text_index"], device)
            m = batch["input_ids"].shape[1]
            batch["teacher_text_features"] = pooled_t.unflatten(0, (-1, m))
            batch["teacher_text_embedding"] = emb_t.unflatten(0, (-1, m))
        fmap, img_emb = image_forward(self.student, batch["pixel_values"], self.frozen_image_layers)
        teacher_map = batch["teacher_map"]
        l_map = feature_distill_loss(self.image_adapter(fmap, teacher_map.shape[-2:]).float(), teacher_map)
        # texts come [B, m, ...] (m per image, see DistillSet): one flat text batch of B*m
        flat = {k: batch[k].flatten(0, 1) for k in ("input_ids", "attention_mask", "teacher_text_features",
                                                    "teacher_text_embedding")}
        pooled, txt_emb = self.student.text.forward_trimmed(flat["input_ids"], flat["attention_mask"])
        # losses in fp32 whatever the forward's autocast precision
        img_emb, txt_emb = img_emb.float(), txt_emb.float()
        l_text = feature_distill_loss(self.text_adapter(pooled).float(), flat["teacher_text_features"])
        loss = w.image_map * l_map + w.text_features * l_text
        metrics = {"image_map": l_map.item(), "text_features": l_text.item()}
        if self.embedding_terms:
            l_img_emb = embedding_distill_loss(img_emb, batch["teacher_image_embedding"])
            l_txt_emb = embedding_distill_loss(txt_emb, flat["teacher_text_embedding"])
            loss = loss + w.image_embedding * l_img_emb + w.text_embedding * l_txt_emb
            metrics.update(image_cos=1 - l_img_emb.item(), text_cos=1 - l_txt_emb.item())
            if w.affinity:
                l_aff = affinity_distill_loss(img_emb, txt_emb, batch["teacher_image_embedding"],
                                              flat["teacher_text_embedding"], self.affinity_scale)
                loss = loss + w.affinity * l_aff
                metrics["affinity"] = l_aff.item()
        return loss, metrics


class AlignStage(FrozenPrefixStage):
    """Symmetric InfoNCE between the two students, learnable (clamped) temperature; optionally terms that keep
    what stage 1 transferred while aligning: image embeddings near the teacher's (distill_weight), caption
    embeddings near the teacher's (text_distill_weight), and the batch's image-text affinities the teacher's
    (affinity_weight, TinyCLIP's affinity mimicking), and texts replayed from stage 1's corpus near the
    teacher's (replay, replay_weight; train/replay.py)."""

    def __init__(self, student: DCCLIPStudent, distill_weight: float = 0.0, label_aware: bool = True,
                 affinity_weight: float = 0.0, affinity_scale: float = 100.0, frozen_image_layers: int = 0,
                 text_distill_weight: float = 0.0, image_lr_scale: float = 1.0, online: OnlineTeacher | None = None,
                 replay: TextReplay | None = None, replay_weight: float = 1.0):
        super().__init__()
        self.online = online
        self.replay, self.replay_weight = replay, replay_weight
        for name, v in (("distill_weight", distill_weight), ("affinity_weight", affinity_weight),
                        ("text_distill_weight", text_distill_weight), ("replay_weight", replay_weight)):
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        self.student = student
        self.distill_weight, self.affinity_weight, self.affinity_scale = distill_weight, affinity_weight, affinity_scale
        self.text_distill_weight = text_distill_weight
        self.label_aware = label_aware
        self.fix_image_tower(frozen_image_layers, image_lr_scale)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        if self.online is not None:
            with teacher_clock(self), torch.no_grad():
                if self.distill_weight > 0 or self.affinity_weight > 0:
                    _, batch["teacher_image_embedding"] = self.online.images(batch["teacher_pixel_values"])
                if self.text_distill_weight > 0 or self.affinity_weight > 0:
                    _, batch["teacher_text_embedding"] = self.online.texts(batch["caption"], batch["input_ids"].device)
        _, img = image_forward(self.student, batch["pixel_values"], self.frozen_image_layers)
        _, txt = self.student.text.forward_trimmed(batch["input_ids"], batch["attention_mask"])
        img, txt = img.float(), txt.float()  # losses in fp32 whatever the forward's autocast precision
        img_n, txt_n = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
        labels = batch.get("labels") if self.label_aware else None
        loss = clip_contrastive_loss(img_n, txt_n, self.student.scale(), labels)
        metrics = {"infonce": loss.item(), "logit_scale": self.student.scale().item(),
                   "skipped_images": float(batch.get("skipped", 0))}
        if self.distill_weight > 0 and "teacher_image_embedding" in batch:
            l_d = embedding_distill_loss(img, batch["teacher_image_embedding"])
            loss = loss + self.distill_weight * l_d
            metrics["image_cos"] = 1 - l_d.item()
        if self.text_distill_weight > 0 and "teacher_text_embedding" in batch:
            l_t = embedding_distill_loss(txt, batch["teacher_text_embedding"])
            loss = loss + self.text_distill_weight * l_t
            metrics["text_cos"] = 1 - l_t.item()
        if self.affinity_weight > 0 and "teacher_text_embedding" in batch:
            l_a = affinity_distill_loss(img, txt, batch["teacher_image_embedding"], batch["teacher_text_embedding"],
                                        self.affinity_scale)
            loss = loss + self.affinity_weight * l_a
            metrics["affinity"] = l_a.item()
        if self.replay is not None and self.replay_weight > 0:
            r = self.replay.draw()
            _, replayed = self.student.text.forward_trimmed(r["input_ids"], r["attention_mask"])
            l_r = embedding_distill_loss(replayed.float(), r["teacher_embedding"])
            loss = loss + self.replay_weight * l_r
            metrics["replay_cos"] = 1 - l_r.item()
        return loss, metrics
