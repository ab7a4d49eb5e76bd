"""ELEVATER in full: zero-shot top-1/top-5 on every data set under one root, per language, and the table the
DC-CLIP and Chinese-CLIP papers report (data set x {EN, ZH}, plus the mean over data sets).

    ROOT/<data set>/label.txt, label_cn.txt, test/<class id>/<images>     (one set: data/elevater.py)

Each set is scored by `zeroshot.evaluate_zero_shot`, so a student, a teacher or anything else that can embed
is scored the same way given an encoder pair; `EmbedSet` lets a caller bring image embeddings from a cache.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from tqdm import tqdm

from .data.elevater import LABEL_FILES, LAYOUT, ElevaterFolder, missing_layout_parts
from .data.labels import LANGS, templates as clip_templates
from .data.preprocess import ImagePreprocess
from .zeroshot import EncodeImages, EncodeTexts, LabeledImages, evaluate_zero_shot, parse_langs

EmbedSet = Callable[[LabeledImages], torch.Tensor]  # every image of a set -> [N, D], in the set's order
METRICS = ("top1", "top5")
_LAYOUT_PARTS = len(LABEL_FILES) + 1  # the label files and the split folder


@dataclass
class SuiteLayout:
    root: Path
    datasets: dict[str, Path]  # name -> folder, sorted by name
    skipped: dict[str, str]    # folder name -> why it is not a data set


def expected_layout(root: str | Path, split: str = "test") -> str:
    return f"expected {Path(root) / '<data set>'}/ holding {LAYOUT.replace('<split>', split)}"


def find_datasets(root: str | Path, split: str = "test") -> SuiteLayout:
    """The ELEVATER data sets under `root`, one per sub-folder. A folder with none of the layout (notes, a
    cache) is skipped and reported; one with part of it is an error, since a silently missing set would
    change the mean the table reports."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ELEVATER root {str(root)!r} is not a folder; {expected_layout(root, split)}")
    if not missing_layout_parts(root, split):
        raise ValueError(f"{str(root)!r} is itself one ELEVATER data set, not a folder of them: give its parent "
                         f"folder, or evaluate it alone (python -m train.evaluate --images {root})")
    datasets, skipped = {}, {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        missing = missing_layout_parts(d, split)
        if not missing:
            datasets[d.name] = d
        elif len(missing) == _LAYOUT_PARTS:
            skipped[d.name] = f"not an ELEVATER data set: no {', '.join(missing)}"
        else:
            raise FileNotFoundError(f"ELEVATER data set {str(d)!r} is incomplete: no {', '.join(missing)}; the "
                                    f"layout is {LAYOUT.replace('<split>', split)} (fix it, or move it out of "
                                    f"{str(root)!r})")
    if not datasets:
        found = f" (only other folders: {', '.join(skipped)})" if skipped else ""
        raise ValueError(f"no ELEVATER data set under {str(root)!r}{found}; {expected_layout(root, split)}")
    return SuiteLayout(root, datasets, skipped)


def open_datasets(layout: SuiteLayout, split: str = "test") -> dict[str, ElevaterFolder]:
    """Every set opened (labels read, images listed) before any model runs, so a broken set fails in seconds."""
    return {name: ElevaterFolder(path, split) for name, path in layout.datasets.items()}


def read_templates(path: str | Path) -> dict[str, list[str]]:
    """A templates file: JSON {"en": ["a photo of a {c}.", ..], "zh": [..]}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"templates file {str(path)!r}: {e}; expected JSON like "
                         '{"en": ["a photo of a {c}."], "zh": ["一张{c}的照片。"]}') from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(t, str) for t in v)
                                             for v in data.values()):
        raise ValueError(f"templates file {str(path)!r} is not an object of string lists per language, e.g. "
                         '{"en": ["a photo of a {c}."], "zh": ["一张{c}的照片。"]}')
    return data


def resolve_templates(langs: Sequence[str], n_templates: int | None = None,
                      templates: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """{lang: the templates it will use}: `templates`, or the 80 CLIP templates (an asset), each cut to the
    first n_templates. Resolved up front so a missing asset or language fails before any image is embedded,
    and the result records exactly which prompts gave its numbers."""
    out = {}
    for lang in parse_langs(langs):
        if templates is None:
            ts = clip_templates(lang)
        elif lang in templates:
            ts = list(templates[lang])
        else:
            raise ValueError(f"no templates for language {lang!r}; given: {sorted(templates)}")
        ts = ts[:n_templates]
        if not ts or any("{c}" not in t for t in ts):
            raise ValueError(f"{lang!r} templates must be non-empty and each hold '{{c}}' for the class name: {ts!r}")
        out[lang] = ts
    return out


def evaluate_dataset(source: LabeledImages, encode_texts: EncodeTexts, langs: Sequence[str] = LANGS, *,
                     encode_images: EncodeImages | None = None, pre: ImagePreprocess | None = None,
                     image_embeddings: torch.Tensor | None = None, n_templates: int | None = None,
                     templates: Mapping[str, Sequence[str]] | None = None, batch_size: int = 64) -> dict:
    """One table row: {"en": {"top1", "top5"}, "zh": {..}, "n": images, "classes": C, "wall_s": s}; top5 only
    where C >= 5. The arguments are evaluate_zero_shot's."""
    t = time.perf_counter()
    r = evaluate_zero_shot(encode_texts, source, langs, encode_images=encode_images, pre=pre,
                           image_embeddings=image_embeddings, n_templates=n_templates, templates=templates,
                           batch_size=batch_size)
    return {**r, "classes": len(next(iter(source.classes.values()))), "wall_s": time.perf_counter() - t}


def evaluate_suite(sources: Mapping[str, LabeledImages], encode_texts: EncodeTexts, langs: Sequence[str] = LANGS,
                   *, encode_images: EncodeImages | None = None, pre: ImagePreprocess | None = None,
                   embed_set: EmbedSet | None = None, n_templates: int | None = None,
                   templates: Mapping[str, Sequence[str]] | None = None, batch_size: int = 64,
                   progress: bool = True) -> dict:
    """{"langs", "datasets": {name: row}, "mean": {lang: {metric}}, "mean_over": {metric: sets}} over `sources`.

    Images go through `encode_images` with its preprocessing `pre`, or through `embed_set` (e.g. a teacher's
    feature cache)."""
    langs = parse_langs(langs)
    if embed_set is None and (encode_images is None or pre is None):
        raise ValueError("evaluate_suite needs encode_images and pre, or embed_set")
    if not sources:
        raise ValueError("evaluate_suite got no data sets")
    rows = {}
    bar = tqdm(sources.items(), desc="ELEVATER", unit="set", disable=not progress)
    for name, source in bar:
        bar.set_postfix_str(name)
        emb = embed_set(source) if embed_set is not None else None
        rows[name] = evaluate_dataset(source, encode_texts, langs, encode_images=encode_images, pre=pre,
                                      image_embeddings=emb, n_templates=n_templates, templates=templates,
                                      batch_size=batch_size)
    return {"langs": langs, "datasets": rows, **suite_means(rows, langs)}


def suite_means(rows: Mapping[str, dict], langs: Sequence[str]) -> dict:
    """{"mean": {lang: {metric: mean over sets}}, "mean_over": {metric: how many sets}}. Top-5 is averaged
    over the sets that have it (>= 5 classes) only: a 3-class set has no top-5 to count."""
    mean = {lang: {} for lang in langs}
    over = {}
    for metric in METRICS:
        have = [r for r in rows.values() if metric in r[langs[0]]]
        if not have:
            continue
        over[metric] = len(have)
        for lang in langs:
            mean[lang][metric] = sum(r[lang][metric] for r in have) / len(have)
    return {"mean": mean, "mean_over": over}


def _pct(row: Mapping[str, float], metric: str) -> str:
    return f"{100 * row[metric]:.1f}" if metric in row else "–"


def markdown_table(result: Mapping, title: str | None = None) -> str:
    """The paper's table in markdown: one row per data set, EN/ZH top-1 and top-5 in %, then the mean."""
    langs, rows = result["langs"], result["datasets"]
    cols = [(lang, m) for lang in langs for m in METRICS if m in result["mean"][lang]]
    head = ["data set", "images", "classes"] + [f"{lang.upper()} top-{m[3:]}" for lang, m in cols]
    lines = [f"{title}\n"] if title else []
    lines += ["| " + " | ".join(head) + " |", "|---|" + "--:|" * (len(head) - 1)]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['n']} | {r['classes']} | " + " | ".join(_pct(r[lang], m) for lang, m in cols) + " |")
    mean = " | ".join(_pct(result["mean"][lang], m) for lang, m in cols)
    lines.append(f"| **mean ({len(rows)} sets)** | | | {mean} |")
    top5 = result["mean_over"].get("top5")
    if top5 is not None and top5 < len(rows):
        lines.append(f"\nTop-5 is the mean over the {top5} sets with at least 5 classes; – : fewer than 5 classes.")
    return "\n".join(lines) + "\n"


def batched_text_encoder(encode_texts: EncodeTexts, batch_size: int = 256) -> EncodeTexts:
    """encode_texts called on at most batch_size texts at a time: a set's prompts (classes x 80 templates,
    tens of thousands for 100+ classes) would otherwise go through a large text tower in one batch."""
    @torch.inference_mode()
    def encode(texts: list[str]) -> torch.Tensor:
        return torch.cat([encode_texts(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)])
    return encode


def cached_teacher_images(teacher, cache: str | Path, batch_size: int = 4) -> EmbedSet:
    """A teacher's image embeddings of a set through the teacher feature cache: each set is embedded once,
    and a later evaluation (or a student comparison) reads it from disk."""
    from .teachers.cache import cache_image_features

    def embed(source: LabeledImages) -> torch.Tensor:
        return cache_image_features(teacher, source.image, len(source), source.dataset_id, cache,
                                    batch_size=batch_size)["embedding"].float()
    return embed
