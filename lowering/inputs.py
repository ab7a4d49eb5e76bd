"""Real inputs for calibration and parity: eval images, English and Chinese texts, a label set.

Calibration and parity use disjoint images and differently worded prompts, so the gate does not
measure a quantizer on the very inputs it was calibrated on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from dcclip_mobile.config import StudentConfig
from dcclip_mobile.data.fashion_mnist import CLASSES_EN, CLASSES_ZH, DatasetMissingError, FashionMNIST
from dcclip_mobile.data.preprocess import ImagePreprocess, preprocess_image
from dcclip_mobile.tokenizer import BilingualTokenizer

FASHION_LABELS_EN, FASHION_LABELS_ZH = list(CLASSES_EN), list(CLASSES_ZH)
TEMPLATES = {"en": "a photo of a {}.", "zh": "一张{}的照片。"}
CALIBRATION_TEMPLATES = {"en": ["a blurry photo of a {}.", "a close-up photo of the {}.", "a {} on a white background."],
                         "zh": ["一张模糊的{}的照片。", "{}的特写照片。", "白色背景上的{}。"]}
EXTRA_TEXTS = [("en", "a person walking a dog in the park"), ("zh", "公园里遛狗的人"),
               ("en", "two cats sleeping on a sofa"), ("zh", "沙发上睡觉的两只猫"),
               ("en", "mixed 中英文 caption"), ("zh", "一辆红色的汽车停在路边。")]


class InputsError(ValueError):
    """Calibration or parity inputs cannot be made (missing data, bad label files)."""


@dataclass
class EvalSet:
    """Raw images and texts; `tensors()` turns them into model inputs for one student."""

    calibration_images: list[Image.Image]
    parity_images: list[Image.Image]
    labels: dict[str, list[str]]  # {"en": [...], "zh": [...]}, same classes in the same order
    calibration_texts: list[tuple[str, str]] = field(default_factory=list)  # (language, text)
    extra_texts: list[tuple[str, str]] = field(default_factory=lambda: list(EXTRA_TEXTS))

    def class_texts(self) -> dict[str, list[str]]:
        return {lang: [TEMPLATES[lang].format(label) for label in self.labels[lang]] for lang in ("en", "zh")}

    def parity_texts(self) -> list[tuple[str, str]]:
        """(language, text): the class prompts of both languages first, then free captions."""
        ct = self.class_texts()
        return [("en", t) for t in ct["en"]] + [("zh", t) for t in ct["zh"]] + list(self.extra_texts)


def read_labels(path_en: str | Path | None, path_zh: str | Path | None) -> dict[str, list[str]]:
    """One label per line, English and Chinese files of the same length; Fashion-MNIST's when both are None."""
    if path_en is None and path_zh is None:
        return {"en": list(FASHION_LABELS_EN), "zh": list(FASHION_LABELS_ZH)}
    if path_en is None or path_zh is None:
        raise InputsError("give both --labels (English) and --labels-zh (Chinese), one label per line, same order")
    out = {}
    for lang, p in (("en", path_en), ("zh", path_zh)):
        p = Path(p)
        if not p.is_file():
            raise InputsError(f"label file {str(p)!r} does not exist")
        out[lang] = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(out["en"]) != len(out["zh"]) or len(out["en"]) < 2:
        raise InputsError(f"label files must list the same classes, at least 2: {len(out['en'])} English "
                          f"vs {len(out['zh'])} Chinese")
    return out


def fashion_mnist_images(indices: list[int]) -> list[Image.Image]:
    """Fashion-MNIST test images as RGB PIL images (Debian's dataset-fashion-mnist)."""
    try:
        test = FashionMNIST("test")
    except DatasetMissingError as e:
        raise InputsError(f"{e}; or pass eval images to export_bundle()") from None
    return [test.image(i) for i in indices]


def default_eval_set(labels: dict[str, list[str]] | None = None, n_calibration: int = 128,
                     n_parity: int = 256) -> EvalSet:
    """Fashion-MNIST test images (calibration: the first n, parity: from index 5000) and prompts.

    256 parity images make 512 top-1 decisions: the int8 gate's 0.97 then sits ~2 standard errors below
    a true 0.98 agreement. At 64 images (128 decisions) a stage-2 student whose int8 image tower agrees
    on 97.9% of 512 images failed the gate at 96.1% (5 flips)."""
    labels = labels or {"en": list(FASHION_LABELS_EN), "zh": list(FASHION_LABELS_ZH)}
    calib = fashion_mnist_images(list(range(n_calibration)))
    parity = fashion_mnist_images(list(range(5000, 5000 + n_parity)))
    # interleaved (English, Chinese, next label, ...), so any prefix calibrates on both languages
    calib_texts = [(lang, CALIBRATION_TEMPLATES[lang][j].format(labels[lang][i]))
                   for j in range(len(CALIBRATION_TEMPLATES["en"])) for i in range(len(labels["en"]))
                   for lang in ("en", "zh")][:max(2, n_calibration)]
    return EvalSet(calibration_images=calib, parity_images=parity, labels=labels, calibration_texts=calib_texts)


def image_preprocess(cfg: StudentConfig) -> ImagePreprocess:
    return ImagePreprocess(cfg.image.image_size, tuple(cfg.image.image_mean), tuple(cfg.image.image_std))


def image_preprocess_description(cfg: StudentConfig) -> dict:
    """The rule (dcclip_mobile.data.preprocess) as the manifest states it for the apps."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in image_preprocess(cfg).to_dict().items()}


def preprocess(img: Image.Image, cfg: StudentConfig) -> torch.Tensor:
    """PIL image -> float32 [1,3,S,S], by training's one preprocessing."""
    return preprocess_image(img, image_preprocess(cfg)).unsqueeze(0).contiguous()


def image_inputs(images: list[Image.Image], cfg: StudentConfig) -> list[tuple[torch.Tensor]]:
    return [(preprocess(img, cfg),) for img in images]


def text_inputs(texts: list[str], tokenizer: BilingualTokenizer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for t in texts:
        enc = tokenizer([t])
        out.append((enc["input_ids"], enc["attention_mask"]))
    return out
