"""Bilingual label text: ImageNet class names and CLIP zero-shot templates in English and Chinese
(from the clip-benchmark wheel, an offline asset), and the text corpus stage 1 distills text on."""
from __future__ import annotations

import json
import random
from functools import lru_cache

from ..assets import asset_dir
from .fashion_mnist import CLASSES_EN, CLASSES_ZH

LANGS = ("en", "zh")
_FILES = {"en": ("en_classnames.json", "en_zeroshot_classification_templates.json"),
          "zh": ("cn_classnames.json", "cn_zeroshot_classification_templates.json")}


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"language {lang!r}; accepted: {', '.join(LANGS)}")


@lru_cache(maxsize=None)
def _load(lang: str, which: int) -> tuple[str, ...]:
    _check_lang(lang)
    path = asset_dir("bilingual-labels") / "clip_benchmark" / "datasets" / _FILES[lang][which]
    return tuple(json.loads(path.read_text(encoding="utf-8"))["imagenet1k"])


def imagenet_classnames(lang: str) -> list[str]:
    return list(_load(lang, 0))


def templates(lang: str) -> list[str]:
    """The 80 ImageNet zero-shot templates of `lang`, each with a "{c}" for the class name."""
    return list(_load(lang, 1))


def prompts(classnames: list[str], lang: str, n_templates: int | None = None) -> list[list[str]]:
    """prompts[c] = the class name c in each template (the first n_templates, or all)."""
    ts = templates(lang)[:n_templates]
    return [[t.replace("{c}", name) for t in ts] for name in classnames]


def bilingual_corpus(size: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, lang) pairs for stage-1 text distillation: every Fashion-MNIST class in every template of both
    languages, then ImageNet class names in random templates, half English, half Chinese, up to `size`."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for lang, names in (("en", CLASSES_EN), ("zh", CLASSES_ZH)):
        out += [(p, lang) for row in prompts(names, lang) for p in row]
    while len(out) < size:
        lang = LANGS[len(out) % 2]
        name = rng.choice(_load(lang, 0))
        out.append((rng.choice(_load(lang, 1)).replace("{c}", name), lang))
    return out[:size]
