"""Bilingual label text: ImageNet class names and CLIP zero-shot templates in English and Chinese
(from the clip-benchmark wheel, an offline asset), and the text corpus stage 1 distills text on."""
from __future__ import annotations

import json
import random
from functools import lru_cache
from typing import Sequence

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


def bilingual_corpus(size: int, seed: int = 0,
                     classnames: dict[str, Sequence[str]] | None = None) -> list[tuple[str, str]]:
    """`size` distinct (text, lang) pairs for stage-1 text distillation, half English and half Chinese, in a
    seeded random order. Per language: the target classes' names (`classnames`, by default Fashion-MNIST's)
    in random templates, up to a quarter of that language's share, then distinct (ImageNet class, template)
    prompts drawn at random, so the text student sees the demo's classes and a thousand others."""
    classnames = {"en": CLASSES_EN, "zh": CLASSES_ZH} if classnames is None else classnames
    for lang in classnames:
        _check_lang(lang)
    per_lang = {"en": (size + 1) // 2, "zh": size // 2}
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for lang in LANGS:
        names, ts, n = _load(lang, 0), _load(lang, 1), per_lang[lang]
        target = [t.replace("{c}", c) for c in classnames.get(lang, ()) for t in ts]
        take = rng.sample(target, min(len(target), n // 4))
        room = len(names) * len(ts)
        if n - len(take) > room:
            raise ValueError(f"a bilingual corpus of {size} texts needs {n - len(take)} ImageNet prompts in {lang!r}; "
                             f"there are {room}: ask for at most {2 * (room + len(target) // 4)}")
        picks = rng.sample(range(room), n - len(take))
        texts = set(take)
        for k in picks:  # a few templates read the same for two classes: skip repeats, keep the count
            texts.add(ts[k % len(ts)].replace("{c}", names[k // len(ts)]))
        if len(texts) < n:
            for k in rng.sample(range(room), room):
                texts.add(ts[k % len(ts)].replace("{c}", names[k // len(ts)]))
                if len(texts) == n:
                    break
            else:
                raise ValueError(f"only {len(texts)} distinct {lang!r} prompts exist; ask for a smaller corpus")
        out += [(t, lang) for t in sorted(texts)]
    rng.shuffle(out)
    return out
