"""Stage batches from streamed tar shards (dcclip_mobile/data/shards.py): what one shard sample becomes.

A stream has no index, so its teacher outputs come from the online teacher (stages.OnlineTeacher), not a
cache. Stage 1 takes only the picture of a sample (its texts come from the bilingual corpus, m per
image, picked by a hash of the sample's key so a resumed run picks the same); stage 2 takes the picture
and its caption, tokenized in the DataLoader worker.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import torch

from dcclip_mobile.data.preprocess import ImageLoadError, ImagePreprocess, preprocess_image
from dcclip_mobile.data.shards import ShardSample, ShardStream, decode_pair
from dcclip_mobile.tokenizer import BilingualTokenizer

from .datasets import bad_sample


class DistillStreamItem:
    """Sample -> a DistillSet-shaped item for an online teacher."""

    def __init__(self, pre: ImagePreprocess, teacher_pre: ImagePreprocess, tokens: dict[str, torch.Tensor],
                 texts_per_image: int):
        self.pre, self.teacher_pre, self.tokens, self.m = pre, teacher_pre, tokens, texts_per_image
        self.n_texts = len(tokens["input_ids"])

    def __call__(self, sample: ShardSample) -> dict:
        try:
            img, _, _ = decode_pair(sample)
        except (ImageLoadError, ValueError) as e:
            return bad_sample(f"{sample.url}:{sample.key}", str(e))
        first = zlib.crc32(f"{sample.url}/{sample.key}".encode()) * self.m
        t = (first + torch.arange(self.m)) % self.n_texts
        return {"pixel_values": preprocess_image(img, self.pre), "teacher_pixel_values": preprocess_image(img, self.teacher_pre),
                "input_ids": self.tokens["input_ids"][t], "attention_mask": self.tokens["attention_mask"][t],
                "text_index": t}


class AlignStreamItem:
    """Sample -> an AlignSet-shaped item (caption tokenized here, in the worker)."""

    def __init__(self, pre: ImagePreprocess, tokenizer: BilingualTokenizer, teacher_pre: ImagePreprocess | None):
        self.pre, self.tokenizer, self.teacher_pre = pre, tokenizer, teacher_pre

    def __call__(self, sample: ShardSample) -> dict:
        try:
            img, caption, _ = decode_pair(sample)
        except (ImageLoadError, ValueError) as e:
            return bad_sample(f"{sample.url}:{sample.key}", str(e))
        tok = self.tokenizer([caption])
        item = {"pixel_values": preprocess_image(img, self.pre), "input_ids": tok["input_ids"][0],
                "attention_mask": tok["attention_mask"][0]}
        if self.teacher_pre is not None:
            item["teacher_pixel_values"] = preprocess_image(img, self.teacher_pre)
            item["caption"] = caption
        return item


def distill_stream(spec: str, seed: int, pre: ImagePreprocess, teacher_pre: ImagePreprocess,
                   tokens: dict[str, torch.Tensor], texts_per_image: int) -> ShardStream:
    return ShardStream(spec, DistillStreamItem(pre, teacher_pre, tokens, texts_per_image), seed=seed)


def align_stream(spec: str, seed: int, pre: ImagePreprocess, tokenizer: BilingualTokenizer,
                 teacher_pre: ImagePreprocess | None) -> ShardStream:
    return ShardStream(spec, AlignStreamItem(pre, tokenizer, teacher_pre), seed=seed)


def stream_dataset_id(urls: Sequence[str]) -> str:
    """Names a shard set for the run's records (the files, not their contents: streams are never cached)."""
    return f"shards-{len(urls)}-{zlib.crc32('::'.join(urls).encode()):08x}"
