"""The held-out protocol: seen, zero-shot (unseen) and generalized accuracy per language, and how closely a
student follows its teacher.

A set is a labeled image source whose classes each carry an `unseen` flag (True: no stage saw the class with
a label, nor any picture of it). For each language:
  - seen: images of seen classes, candidates the seen classes (a supervised figure once stage 2 aligned on them);
  - zero_shot: images of unseen classes, candidates the unseen classes only;
  - generalized: every class a candidate; seen and unseen images scored apart, and their harmonic mean
    (the generalized zero-shot convention).
A set none of whose classes any stage saw (Fashion-MNIST here) has only the zero-shot figure.

Fidelity, on the zero-shot images: top-1 agreement with the teacher's predictions, the retained share of the
teacher's accuracy above chance ((student - chance) / (teacher - chance)), the cosine of image embeddings
and of class prototypes to the teacher's, and cross-lingual agreement (the English and the Chinese
prediction for the same image).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .zeroshot import EncodeTexts, LabeledImages, class_prototypes


@dataclass
class HeldoutSet:
    name: str
    source: LabeledImages
    unseen: list[bool]  # per class

    def __post_init__(self):
        n = len(next(iter(self.source.classes.values())))
        if len(self.unseen) != n:
            raise ValueError(f"held-out set {self.name!r}: {len(self.unseen)} unseen flags for {n} classes")
        if not any(self.unseen):
            raise ValueError(f"held-out set {self.name!r} has no unseen class: it cannot measure zero-shot")


def prototypes(encode_texts: EncodeTexts, s: HeldoutSet, langs: Sequence[str],
               n_templates: int | None = None) -> dict[str, torch.Tensor]:
    return {lang: class_prototypes(encode_texts, s.source.classes[lang], lang, n_templates) for lang in langs}


def _top1(logits: torch.Tensor, labels: torch.Tensor, candidates: torch.Tensor) -> tuple[float, torch.Tensor]:
    masked = logits.masked_fill(~candidates[None, :], float("-inf"))
    pred = masked.argmax(-1)
    return float((pred == labels).float().mean()) if len(labels) else float("nan"), pred


def score(image_emb: torch.Tensor, protos: dict[str, torch.Tensor], s: HeldoutSet) -> dict:
    """{lang: {"zero_shot", "seen"?, "generalized"?: {"seen", "unseen", "harmonic"}}, "chance": {...},
    "_pred": {lang: zero-shot predictions}} for one set."""
    labels = torch.as_tensor(s.source.labels)
    unseen_cls = torch.as_tensor(s.unseen)
    seen_cls = ~unseen_cls
    img_unseen = unseen_cls[labels]
    emb = F.normalize(image_emb.float(), dim=-1)
    out: dict = {"chance": {"zero_shot": 1 / int(unseen_cls.sum())}, "_pred": {}}
    if seen_cls.any():
        out["chance"]["seen"] = 1 / int(seen_cls.sum())
    for lang, p in protos.items():
        logits = emb @ p.T
        r: dict = {}
        r["zero_shot"], out["_pred"][lang] = _top1(logits[img_unseen], labels[img_unseen], unseen_cls)
        if seen_cls.any():
            r["seen"], _ = _top1(logits[~img_unseen], labels[~img_unseen], seen_cls)
            every = torch.ones_like(unseen_cls)
            gs, _ = _top1(logits[~img_unseen], labels[~img_unseen], every)
            gu, _ = _top1(logits[img_unseen], labels[img_unseen], every)
            r["generalized"] = {"seen": gs, "unseen": gu, "harmonic": 2 * gs * gu / (gs + gu) if gs + gu else 0.0}
        out[lang] = r
    return out


def retention(student: float, teacher: float, chance: float) -> float | None:
    """The student's share of the teacher's accuracy above chance; None where the teacher is at chance."""
    return (student - chance) / (teacher - chance) if teacher > chance else None


def fidelity(student: dict, teacher: dict, s: HeldoutSet, student_img: torch.Tensor, teacher_img: torch.Tensor,
             student_protos: dict[str, torch.Tensor], teacher_protos: dict[str, torch.Tensor]) -> dict:
    """Per language: retention, agreement with the teacher; and the embedding cosines, cross-lingual agreement."""
    unseen_img = torch.as_tensor(s.unseen)[torch.as_tensor(s.source.labels)]
    chance = student["chance"]["zero_shot"]
    out: dict = {}
    for lang in student_protos:
        out[lang] = {
            "retention": retention(student[lang]["zero_shot"], teacher[lang]["zero_shot"], chance),
            "agreement": float((student["_pred"][lang] == teacher["_pred"][lang]).float().mean()),
            "prototype_cosine": float(F.cosine_similarity(student_protos[lang], teacher_protos[lang], dim=-1).mean()),
        }
    cos = F.cosine_similarity(student_img[unseen_img].float(), teacher_img[unseen_img].float(), dim=-1)
    out["image_cosine"] = float(cos.mean())
    langs = list(student_protos)
    if len(langs) == 2:
        a, b = (student["_pred"][lang] for lang in langs)
        out["cross_lingual_agreement"] = float((a == b).float().mean())
    return out


def public(result: dict) -> dict:
    """The result without its private prediction tensors (for JSON)."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def mean_over_sets(per_set: dict[str, dict], langs: Sequence[str]) -> dict:
    """The mean of each language's zero-shot (and seen / harmonic where present) figures over sets."""
    out: dict = {}
    for lang in langs:
        rows = [r[lang] for r in per_set.values()]
        m = {"zero_shot": sum(r["zero_shot"] for r in rows) / len(rows)}
        with_seen = [r for r in rows if "seen" in r]
        if with_seen:
            m["seen"] = sum(r["seen"] for r in with_seen) / len(with_seen)
            m["harmonic"] = sum(r["generalized"]["harmonic"] for r in with_seen) / len(with_seen)
        out[lang] = m
    out["chance"] = sum(r["chance"]["zero_shot"] for r in per_set.values()) / len(per_set)
    return out


def mean_fidelity(fid: dict[str, dict], langs: Sequence[str]) -> dict:
    """The mean over sets of each fidelity figure (retention over the sets where the teacher beats chance)."""
    out = {}
    for lang in langs:
        vals = [f[lang]["retention"] for f in fid.values() if f[lang]["retention"] is not None]
        out[lang] = {"retention": sum(vals) / len(vals) if vals else None,
                     "agreement": sum(f[lang]["agreement"] for f in fid.values()) / len(fid),
                     "prototype_cosine": sum(f[lang]["prototype_cosine"] for f in fid.values()) / len(fid),
                     **{k: sum(f[lang][k] for f in fid.values()) / len(fid)
                        for k in ("image_tower_zero_shot", "text_tower_zero_shot")}}
    out["image_cosine"] = sum(f["image_cosine"] for f in fid.values()) / len(fid)
    xl = [f["cross_lingual_agreement"] for f in fid.values() if "cross_lingual_agreement" in f]
    if xl:
        out["cross_lingual_agreement"] = sum(xl) / len(xl)
    return out


def zero_shot_hits(result: dict, s: HeldoutSet) -> dict[str, torch.Tensor]:
    """Per language, whether each unseen image's zero-shot top-1 was right (from score()'s private predictions)."""
    labels = torch.as_tensor(s.source.labels)
    unseen_labels = labels[torch.as_tensor(s.unseen)[labels]]
    return {lang: pred == unseen_labels for lang, pred in result["_pred"].items()}


def retention_interval(student_hits: dict[str, torch.Tensor], teacher_hits: dict[str, torch.Tensor],
                       chances: dict[str, float], level: float = 0.9, n_boot: int = 2000, seed: int = 0
                       ) -> list[float] | None:
    """A paired bootstrap interval for retention_of_means in one language: each set's unseen images resampled
    with replacement, the same draw for student and teacher. The held-out sets are a few hundred images, so a
    retention measured on them moves by +-15 points between resamples: read two runs' figures against it."""
    g = torch.Generator().manual_seed(seed)
    student_mean = teacher_mean = 0.0
    for name, hits in student_hits.items():
        idx = torch.randint(0, len(hits), (n_boot, len(hits)), generator=g)
        student_mean = student_mean + hits.float()[idx].mean(1) / len(student_hits)
        teacher_mean = teacher_mean + teacher_hits[name].float()[idx].mean(1) / len(student_hits)
    chance = sum(chances.values()) / len(chances)
    above = teacher_mean - chance
    keep = above > 0  # resamples where the teacher is at chance say nothing about retention
    if not bool(keep.any()):
        return None
    r = (student_mean[keep] - chance) / above[keep]
    lo, hi = torch.quantile(r, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=r.dtype)).tolist()
    return [lo, hi]


def retention_of_means(student: dict, teacher: dict, langs: Sequence[str] = ("en", "zh")) -> dict:
    """The headline: the student's share of the teacher's above-chance zero-shot accuracy, mean over the sets."""
    chance = teacher["mean"]["chance"]
    return {lang: (student["mean"][lang]["zero_shot"] - chance) / (teacher["mean"][lang]["zero_shot"] - chance)
            for lang in langs}
