"""The two stages as modules the training loop runs: what a batch is and what the loss is.

Stage 1 (DistillStage): a batch holds a student-preprocessed image micro-batch with the teacher's
cached feature map and embedding, and a tokenized text micro-batch (English and Chinese) with the
teacher's cached pooled features and embedding.
Stage 2 (AlignStage): a batch holds image-caption pairs (captions in both languages, mixed) and, for
the optional distillation term, the teacher's cached image embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dcclip_mobile.losses import (FeatureMapAdapter, PooledAdapter, clip_contrastive_loss, embedding_distill_loss,
                                  feature_distill_loss)
from dcclip_mobile.models import DCCLIPStudent

from .loop import StageModule


@dataclass
class DistillWeights:
    image_map: float = 1.0        # SmoothL1 on the adapted feature map (the paper's term)
    text_features: float = 1.0    # SmoothL1 on the adapted pooled text features
    image_embedding: float = 1.0  # optional: 1 - cos(student, teacher) image embeddings
    text_embedding: float = 1.0   # optional: 1 - cos(student, teacher) text embeddings

    def validate(self) -> None:
        for k, v in vars(self).items():
            if not v >= 0:
                raise ValueError(f"loss weight {k} must be >= 0, got {v}")
        if not any(vars(self).values()):
            raise ValueError("all stage-1 loss weights are 0; at least one term must be on")


class DistillStage(StageModule):
    """Feature-map distillation through a 1x1 conv adapter (image) and a linear adapter (text), SmoothL1.

    The embedding terms need the student's joint space to be the teacher's (embed_dim equal), which is
    what makes a stage-1 student usable for zero-shot before stage 2; they are off when dims differ.
    """

    def __init__(self, student: DCCLIPStudent, teacher_map_channels: int, teacher_text_dim: int,
                 teacher_embed_dim: int, weights: DistillWeights):
        super().__init__()
        weights.validate()
        self.student = student
        self.image_adapter = FeatureMapAdapter(student.image.feature_channels, teacher_map_channels)
        self.text_adapter = PooledAdapter(student.text.feature_dim, teacher_text_dim)
        self.weights = weights
        self.embedding_terms = student.cfg.embed_dim == teacher_embed_dim

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.weights
        fmap, img_emb = self.student.image(batch["pixel_values"])
        teacher_map = batch["teacher_map"]
        l_map = feature_distill_loss(self.image_adapter(fmap, teacher_map.shape[-2:]), teacher_map)
        # texts come [B, m, ...] (m per image, see DistillSet): one flat text batch of B*m
        flat = {k: batch[k].flatten(0, 1) for k in ("input_ids", "attention_mask", "teacher_text_features",
                                                    "teacher_text_embedding")}
        pooled, txt_emb = self.student.text.forward_trimmed(flat["input_ids"], flat["attention_mask"])
        l_text = feature_distill_loss(self.text_adapter(pooled), flat["teacher_text_features"])
        loss = w.image_map * l_map + w.text_features * l_text
        metrics = {"image_map": l_map.item(), "text_features": l_text.item()}
        if self.embedding_terms:
            l_img_emb = embedding_distill_loss(img_emb, batch["teacher_image_embedding"])
            l_txt_emb = embedding_distill_loss(txt_emb, flat["teacher_text_embedding"])
            loss = loss + w.image_embedding * l_img_emb + w.text_embedding * l_txt_emb
            metrics.update(image_cos=1 - l_img_emb.item(), text_cos=1 - l_txt_emb.item())
        return loss, metrics


class AlignStage(StageModule):
    """Symmetric InfoNCE between the two students, learnable (clamped) temperature; optionally a term that
    keeps the image embeddings near the teacher's (stage-1 knowledge) while aligning."""

    def __init__(self, student: DCCLIPStudent, distill_weight: float = 0.0, label_aware: bool = True):
        super().__init__()
        if distill_weight < 0:
            raise ValueError(f"distill_weight must be >= 0, got {distill_weight}")
        self.student = student
        self.distill_weight = distill_weight
        self.label_aware = label_aware

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        _, img = self.student.image(batch["pixel_values"])
        _, txt = self.student.text.forward_trimmed(batch["input_ids"], batch["attention_mask"])
        img_n, txt_n = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
        labels = batch.get("labels") if self.label_aware else None
        loss = clip_contrastive_loss(img_n, txt_n, self.student.scale(), labels)
        metrics = {"infonce": loss.item(), "logit_scale": self.student.scale().item(),
                   "skipped_images": float(batch.get("skipped", 0))}
        if self.distill_weight > 0 and "teacher_image_embedding" in batch:
            l_d = embedding_distill_loss(img, batch["teacher_image_embedding"])
            loss = loss + self.distill_weight * l_d
            metrics["image_cos"] = 1 - l_d.item()
        return loss, metrics
