"""Text replay for stage 2: keep distilling the text student on stage 1's broad corpus while it aligns.

Aligning on a few hundred class names moves the whole text tower (the embedding table and every layer are
shared), and the prompts of classes nobody aligned on move with it: the teacher's geometry, which the
zero-shot ability is, erodes. Replay draws texts from a bank of (tokenized text, teacher embedding) each step
and adds 1 - cos(student, teacher) on them, so the tower is pulled back toward the teacher everywhere, not only
on the captions of the batch (learning without forgetting, with the teacher as the anchor).

The bank lives on the stage as non-persistent buffers (the teacher's cached embeddings are rebuilt from the
cache on resume); the number of draws so far is a persistent buffer, so a resumed run draws what the
uninterrupted run would have.
"""
from __future__ import annotations

import torch
from torch import nn


class TextReplay(nn.Module):
    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, teacher_embedding: torch.Tensor,
                 texts_per_step: int, seed: int = 0):
        super().__init__()
        n = len(input_ids)
        if not (len(attention_mask) == len(teacher_embedding) == n):
            raise ValueError(f"replay bank rows differ: {n} texts, {len(attention_mask)} masks, "
                             f"{len(teacher_embedding)} teacher embeddings")
        if n == 0:
            raise ValueError("the replay bank is empty: give a corpus of at least one text")
        if texts_per_step < 1:
            raise ValueError(f"replay texts per step must be >= 1, got {texts_per_step}")
        self.register_buffer("input_ids", input_ids, persistent=False)
        self.register_buffer("attention_mask", attention_mask, persistent=False)
        self.register_buffer("teacher_embedding", teacher_embedding.float(), persistent=False)
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self.texts_per_step, self.seed = texts_per_step, seed

    def __len__(self) -> int:
        return len(self.input_ids)

    def draw(self) -> dict[str, torch.Tensor]:
        """The next texts_per_step rows, without repeats inside a step, seeded by (seed, draw number)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.draws))
        idx = torch.randperm(len(self), generator=g)[:self.texts_per_step].to(self.input_ids.device)
        self.draws += 1
        return {"input_ids": self.input_ids[idx], "attention_mask": self.attention_mask[idx],
                "teacher_embedding": self.teacher_embedding[idx]}
