"""The two towers as export sees them, and the eager student's answers the parity gate compares with.

A `Tower` holds what ExecuTorch's examples keep in an `EagerModelBase` (the eager module, its example inputs),
what a manifest records of it (input and output specs) and what the gate runs it on (parity and calibration
inputs, with the eager student's embeddings of the parity inputs), so export is a loop over towers and
precisions. A text tower has length buckets (encoders.text_lengths): its Android .pte holds a method per length,
each quantized on the calibration texts that fit it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.tokenizer import BilingualTokenizer

from .encoders import (TensorSpec, example_inputs, input_specs, make_encoder, output_spec, text_lengths, text_method,
                       used_length)
from .inputs import (LENGTH_CALIBRATION, LENGTH_PARITY, EvalSet, default_length_pool, image_inputs, length_texts,
                     text_bucket, text_inputs)
from .parity import Parity, measure, top1_agreement
from .scoring import prototypes


@dataclass
class References:
    """The eager student's answers on the parity inputs, computed once per export."""

    image_inputs: list[tuple]
    image_calibration: list[tuple]
    text_inputs: list[tuple]
    text_calibration: list[tuple]
    text_languages: list[str]
    text_buckets: list[str]  # per parity text: its language and length bucket ("zh 50-64")
    image: torch.Tensor  # [N,D]
    text: torch.Tensor  # [T,D]
    # per language: where its decision prompts sit in `text` (group-major), and the prompts per group
    decisions: dict[str, tuple[slice, int]]
    length_texts: dict = field(default_factory=dict)  # what filled the length buckets: the manifest's record


def _decision_slices(eval_set: EvalSet) -> dict[str, tuple[slice, int]]:
    """parity_texts() starts with the decision groups, language after language: their rows in `text`."""
    out, start = {}, 0
    for lang, groups in eval_set.decision_groups().items():
        n = sum(len(g) for g in groups)
        out[lang], start = (slice(start, start + n), len(groups[0])), start + n
    return out


def length_sets(tokenizer: BilingualTokenizer, eval_set: EvalSet) -> tuple[list, list, str]:
    """(parity texts, calibration texts, where from): each length bucket up to the context filled per language,
    LENGTH_PARITY texts for the gate and LENGTH_CALIBRATION other ones for calibration."""
    if eval_set.length_pool is not None:
        pool_p = pool_c = eval_set.length_pool
        source = "given"
    else:
        pool_p, source = default_length_pool(seed=1)
        pool_c, _ = default_length_pool(seed=2)
    parity = length_texts(tokenizer, pool_p, LENGTH_PARITY)
    calibration = length_texts(tokenizer, pool_c, LENGTH_CALIBRATION, exclude={t for _, t in parity})
    return parity, calibration, source


def _interleave(a: list, b: list) -> list:
    """a and b alternately (the longer one's rest at the end), so a prefix of the calibration holds both."""
    out = []
    for i in range(max(len(a), len(b))):
        out += ([a[i]] if i < len(a) else []) + ([b[i]] if i < len(b) else [])
    return out


@torch.no_grad()
def make_references(model: DCCLIPStudent, tokenizer: BilingualTokenizer, eval_set: EvalSet) -> References:
    cfg = model.cfg
    long_parity, long_calibration, source = length_sets(tokenizer, eval_set)
    parity_texts = eval_set.parity_texts() + long_parity
    imgs = image_inputs(eval_set.parity_images, cfg)
    txts = text_inputs([t for _, t in parity_texts], tokenizer)
    calib_texts = _interleave(eval_set.calibration_texts or eval_set.parity_texts(), long_calibration)
    image_enc, text_enc = make_encoder(model, "image"), make_encoder(model, "text")
    return References(
        image_inputs=imgs, image_calibration=image_inputs(eval_set.calibration_images, cfg),
        text_inputs=txts, text_calibration=text_inputs([t for _, t in calib_texts], tokenizer),
        text_languages=[lang for lang, _ in parity_texts],
        text_buckets=[text_bucket(lang, int(mask.sum())) for (lang, _), (_, mask) in zip(parity_texts, txts)],
        image=torch.cat([image_enc(*a) for a in imgs]), text=torch.cat([text_enc(*a) for a in txts]),
        decisions=_decision_slices(eval_set),
        length_texts={"source": source, "parity": len(long_parity), "calibration": len(long_calibration),
                      "per_bucket": {"parity": LENGTH_PARITY, "calibration": LENGTH_CALIBRATION}})


@dataclass
class Tower:
    """One tower of the student, as export lowers and checks it. `length` below is a length bucket, or None for
    the tower's one full shape."""

    name: str  # "image" or "text"
    model: DCCLIPStudent
    parity_inputs: list[tuple]  # batch-1 input tuples at the full shape
    calibration_inputs: list[tuple]
    reference: torch.Tensor  # [N, D]: the eager student's embeddings of parity_inputs
    parity_groups: list[str] | None = None  # per parity input, the gate's group (a text's language and length)
    lengths: tuple[int, ...] = ()  # length buckets, shortest first, the last the full shape; () for none

    def encoder(self, length: int | None = None) -> nn.Module:
        return make_encoder(self.model, self.name, length)

    def example_inputs(self, length: int | None = None) -> tuple[torch.Tensor, ...]:
        return example_inputs(self.model.cfg, self.name, length)

    def input_specs(self, id_dtype: str = "int64") -> list[TensorSpec]:
        return input_specs(self.model.cfg, self.name, id_dtype=id_dtype)

    def output_spec(self) -> TensorSpec:
        return output_spec(self.model.cfg)

    def method(self, length: int | None = None) -> str:
        """The .pte method that runs inputs of this length."""
        return "forward" if length is None else text_method(self.model.cfg, length)

    def calibration(self, length: int | None = None) -> list[tuple]:
        """The calibration inputs a method sees on a phone: for a length bucket, the texts that fit it, cut to it
        (when none fits, as with long labels in a short bucket, every text's first `length` tokens)."""
        if length is None:
            return self.calibration_inputs
        fitting = [(ids, mask) for ids, mask in self.calibration_inputs if used_length(mask) <= length]
        return [(ids[:, :length], mask[:, :length]) for ids, mask in fitting or self.calibration_inputs]


def make_towers(model: DCCLIPStudent, refs: References) -> tuple[Tower, Tower]:
    return (Tower("image", model, refs.image_inputs, refs.image_calibration, refs.image),
            Tower("text", model, refs.text_inputs, refs.text_calibration, refs.text, refs.text_buckets,
                  text_lengths(model.cfg)))


def artifact_parity(tower: Tower, got: torch.Tensor, refs: References, quantized: bool) -> Parity:
    """Cosine figures against the eager tower, and zero-shot top-1 agreement (English and Chinese class sets
    pooled) with the artifact's embeddings in place of the eager ones on its side; classes are built by the
    bundle's scoring rule (the mean over a class's templates)."""
    sides = {"image": refs.image, "text": refs.text, tower.name: got}
    agree, n = 0.0, 0
    for sl, k in refs.decisions.values():
        a, m = top1_agreement(refs.image, sides["image"], prototypes(refs.text[sl], k),
                              prototypes(sides["text"][sl], k))
        agree, n = agree + a * m, n + m
    return measure(tower.reference, got, quantized, (agree / n, n) if n else None, buckets=tower.parity_groups)
