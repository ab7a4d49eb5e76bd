"""What each stage's batches are made of: images (preprocessed for the student), tokenized texts, and the
teacher's cached outputs, indexed together."""
from __future__ import annotations

import zlib
from typing import Protocol

import torch

from dcclip_mobile.data.labels import templates
from dcclip_mobile.data.preprocess import ImageLoadError, ImagePreprocess, preprocess_image
from dcclip_mobile.tokenizer import BilingualTokenizer


class ImageSource(Protocol):
    dataset_id: str

    def __len__(self) -> int: ...

    def image(self, i: int): ...


class DistillSet(torch.utils.data.Dataset):
    """Item k: image k mod N_images with its teacher map/embedding, and texts k*m .. k*m+m-1 (mod N_texts,
    m = texts_per_image) with their teacher features, stacked [m, ...]; one epoch covers the larger side.

    Text steps are cheap next to image steps (a short prompt against a feature map), and the text student
    needs many more samples than the image student to separate prompts that differ in one word, so it
    gets m texts per image."""

    def __init__(self, images: ImageSource, pre: ImagePreprocess, teacher_images: dict[str, torch.Tensor] | None,
                 tokens: dict[str, torch.Tensor], teacher_texts: dict[str, torch.Tensor] | None,
                 texts_per_image: int = 1, teacher_pre: ImagePreprocess | None = None):
        """teacher_images/teacher_texts None: an online teacher (stages.OnlineTeacher) computes them in the
        step, and an item carries the same view preprocessed for the teacher (teacher_pre) and text indices."""
        if texts_per_image < 1:
            raise ValueError(f"texts_per_image must be >= 1, got {texts_per_image}")
        if (teacher_images is None) != (teacher_pre is not None):
            raise ValueError("DistillSet: give cached teacher_images, or teacher_pre for an online teacher")
        self.images, self.pre, self.teacher_pre = images, pre, teacher_pre
        self.teacher_images, self.tokens, self.teacher_texts = teacher_images, tokens, teacher_texts
        self.n_images, self.n_texts = len(images), len(tokens["input_ids"])
        self.texts_per_image = texts_per_image

    def __len__(self) -> int:
        return max(self.n_images, -(-self.n_texts // self.texts_per_image))

    def __getitem__(self, k: int) -> dict:
        i, m = k % self.n_images, self.texts_per_image
        t = torch.arange(k * m, (k + 1) * m) % self.n_texts
        img = self.images.image(i)
        item = {"pixel_values": preprocess_image(img, self.pre),
                "input_ids": self.tokens["input_ids"][t], "attention_mask": self.tokens["attention_mask"][t]}
        if self.teacher_images is None:
            item["teacher_pixel_values"] = preprocess_image(img, self.teacher_pre)
        else:
            item["teacher_map"] = self.teacher_images["feature_map"][i].float()
            item["teacher_image_embedding"] = self.teacher_images["embedding"][i].float()
        if self.teacher_texts is None:
            item["text_index"] = t
        else:
            item["teacher_text_features"] = self.teacher_texts["pooled"][t].float()
            item["teacher_text_embedding"] = self.teacher_texts["embedding"][t].float()
        return item


def label_caption(i: int, label: int, classnames: dict[str, list[str]]) -> tuple[str, str]:
    """A fixed caption for labeled image i: English for even i, Chinese for odd i (so every shuffled batch
    mixes the two), in a template picked by a hash of i."""
    lang = "en" if i % 2 == 0 else "zh"
    ts = templates(lang)
    return ts[zlib.crc32(str(i).encode()) % len(ts)].replace("{c}", classnames[lang][label]), lang


def bad_sample(sample: str, reason: str) -> dict:
    """What a dataset returns for a sample that cannot be loaded; the collate drops it, the loop logs it."""
    return {"__bad__": {"sample": sample, "reason": reason}}


class AlignSet(torch.utils.data.Dataset):
    """Image-caption pairs for stage 2: a labeled set (captions made from labels in both languages) or a
    pairs file (its own captions). A bad image file yields bad_sample(); `collate_skipping_bad` drops it and
    the loop names it in skipped.jsonl. With teacher_pre (an online teacher), items also carry the image
    preprocessed for the teacher and the caption's text."""

    def __init__(self, images: ImageSource, pre: ImagePreprocess, tokenizer: BilingualTokenizer,
                 labels: torch.Tensor | None = None, classnames: dict[str, list[str]] | None = None,
                 teacher_embeddings: torch.Tensor | None = None, teacher_pre: ImagePreprocess | None = None):
        self.images, self.pre, self.labels, self.teacher = images, pre, labels, teacher_embeddings
        self.teacher_pre = teacher_pre
        self.teacher_text = None
        if labels is not None:
            captions = [label_caption(i, int(l), classnames) for i, l in enumerate(labels)]
        else:
            captions = [images.caption(i) for i in range(len(images))]
        self.langs = [lang for _, lang in captions]
        self.captions = [c for c, _ in captions]
        self.tokens = tokenizer(self.captions)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict | None:
        try:
            img = self.images.image(i)
        except ImageLoadError as e:
            pairs = getattr(self.images, "pairs", None)  # a pairs file names its image files
            return bad_sample(str(pairs[i].filepath) if pairs else f"{self.images.dataset_id}[{i}]", str(e))
        item = {"pixel_values": preprocess_image(img, self.pre), "input_ids": self.tokens["input_ids"][i],
                "attention_mask": self.tokens["attention_mask"][i]}
        if self.teacher_pre is not None:
            item["teacher_pixel_values"] = preprocess_image(img, self.teacher_pre)
            item["caption"] = self.captions[i]
        if self.labels is not None:
            item["labels"] = torch.as_tensor(int(self.labels[i]))
        if self.teacher is not None:
            item["teacher_image_embedding"] = self.teacher[i].float()
        if self.teacher_text is not None:
            item["teacher_text_embedding"] = self.teacher_text[i].float()
        return item


def collate_skipping_bad(items: list[dict | None]) -> dict:
    """A batch of the good items; the bad ones listed under "bad" (the loop logs them and, when no item was
    good, skips the batch: "empty")."""
    bad = [it["__bad__"] if it is not None else {"sample": "?", "reason": "no sample"}
           for it in items if it is None or "__bad__" in it]
    good = [it for it in items if it is not None and "__bad__" not in it]
    if not good:
        return {"empty": True, "bad": bad}
    batch = torch.utils.data.default_collate(good)
    batch["skipped"] = len(bad)
    batch["bad"] = bad
    return batch
