"""The parity gate: an exported artifact must compute what the PyTorch student computes.

Figures, per artifact, on real inputs (eval images; English and Chinese texts):
  mean_cosine, min_cosine  between the artifact's embeddings and the eager student's
  max_abs_diff             largest elementwise difference of the (unit-length) embeddings
  top1_agreement           zero-shot top-1 with the artifact vs with the eager student: for an image
                           artifact, its image embeddings against the eager class-text embeddings; for
                           a text artifact, eager image embeddings against its class-text embeddings
                           (English and Chinese class sets, each image counted once per language)
  buckets                  for a text artifact, the cosine figures per language and input length in tokens
                           ("en 50-64": English inputs of 50 to 64 tokens, BOS and EOS counted), over the
                           class prompts and held-apart sentences of every length up to the context; the
                           worst bucket is named (worst_bucket)
Gate:  fp32 artifacts: min_cosine >= 0.9999 (so in every bucket).
       quantized artifacts: mean_cosine >= 0.99 and top1_agreement >= 0.97, and for a text artifact every
       length bucket's min_cosine >= 0.99: short class prompts alone would hide an encoder that drifts on
       the long sentences a phone's search box sends.
Core ML packages cannot run on Linux; they pass a structure gate here and are measured on macOS by
`python -m lowering.verify_coreml`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

FP32_MIN_COSINE = 0.9999
QUANTIZED_MEAN_COSINE = 0.99
QUANTIZED_TOP1_AGREEMENT = 0.97
QUANTIZED_BUCKET_MIN_COSINE = 0.99
THRESHOLDS = {"fp32_min_cosine": FP32_MIN_COSINE, "quantized_mean_cosine": QUANTIZED_MEAN_COSINE,
              "quantized_top1_agreement": QUANTIZED_TOP1_AGREEMENT,
              "quantized_bucket_min_cosine": QUANTIZED_BUCKET_MIN_COSINE}


@dataclass
class Parity:
    gate: str  # "fp32", "quantized" or "structure"
    n: int = 0
    mean_cosine: float | None = None
    min_cosine: float | None = None
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    top1_decisions: int = 0
    # text artifacts: {"en 1-16": {"n", "mean_cosine", "min_cosine"}, ...} and the bucket with the lowest min
    buckets: dict[str, dict] = field(default_factory=dict)
    worst_bucket: str | None = None
    passed: bool = False
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.gate == "structure":
            return "structure " + ("ok" if self.passed else "; ".join(self.failures))
        top1 = "-" if self.top1_agreement is None else f"{self.top1_agreement:.4f}"
        worst = ""
        if self.worst_bucket is not None:
            b = self.buckets[self.worst_bucket]
            worst = f" worst bucket {self.worst_bucket}: mean {b['mean_cosine']:.6f} min {b['min_cosine']:.6f} (n={b['n']})"
        return (f"cos mean {self.mean_cosine:.6f} min {self.min_cosine:.6f} maxabs {self.max_abs_diff:.2e} "
                f"top1 {top1} (n={self.n}){worst} {'PASS' if self.passed else 'FAIL: ' + '; '.join(self.failures)}")

    def bucket_table(self) -> str:
        """The per-bucket figures as Markdown rows (| bucket | n | mean | min |)."""
        return "\n".join(f"| {k} | {b['n']} | {b['mean_cosine']:.6f} | {b['min_cosine']:.6f} |"
                         for k, b in self.buckets.items())


def top1_agreement(queries_ref: torch.Tensor, queries_got: torch.Tensor,
                   classes_ref: torch.Tensor, classes_got: torch.Tensor) -> tuple[float, int]:
    """Share of queries whose top-1 class is the same with the artifact's side as with the eager side."""
    ref = (queries_ref @ classes_ref.T).argmax(dim=-1)
    got = (queries_got @ classes_got.T).argmax(dim=-1)
    return float((ref == got).float().mean()), int(ref.numel())


def measure(reference: torch.Tensor, got: torch.Tensor, quantized: bool,
            agreement: tuple[float, int] | None = None, buckets: list[str] | None = None) -> Parity:
    """Compare [N,D] embeddings and apply the gate for fp32 or quantized artifacts. `buckets` names each row's
    group (a text's language and length bucket): figures per group, and for a quantized artifact every group's
    min cosine must reach QUANTIZED_BUCKET_MIN_COSINE."""
    reference, got = reference.float(), got.float()
    if reference.shape != got.shape:
        return Parity(gate="quantized" if quantized else "fp32", passed=False,
                      failures=[f"output shape {tuple(got.shape)} != reference {tuple(reference.shape)}"])
    cos = F.cosine_similarity(reference, got, dim=-1)
    p = Parity(gate="quantized" if quantized else "fp32", n=int(reference.shape[0]),
               mean_cosine=float(cos.mean()), min_cosine=float(cos.min()),
               max_abs_diff=float((reference - got).abs().max()))
    if agreement is not None:
        p.top1_agreement, p.top1_decisions = agreement
    if buckets is not None:
        if len(buckets) != len(cos):
            raise ValueError(f"{len(buckets)} bucket names for {len(cos)} rows")
        for key in sorted(set(buckets), key=_bucket_order):
            c = cos[torch.tensor([b == key for b in buckets])]
            p.buckets[key] = {"n": int(c.numel()), "mean_cosine": float(c.mean()), "min_cosine": float(c.min())}
        if p.buckets:
            p.worst_bucket = min(p.buckets, key=lambda k: p.buckets[k]["min_cosine"])
    if not torch.isfinite(got).all():
        p.failures.append("the artifact's output has NaN or inf")
    if quantized:
        if p.mean_cosine < QUANTIZED_MEAN_COSINE:
            p.failures.append(f"mean cosine {p.mean_cosine:.4f} < {QUANTIZED_MEAN_COSINE}")
        if p.top1_agreement is None:
            p.failures.append("no zero-shot top-1 agreement measured (no class texts)")
        elif p.top1_agreement < QUANTIZED_TOP1_AGREEMENT:
            p.failures.append(f"top-1 agreement {p.top1_agreement:.4f} < {QUANTIZED_TOP1_AGREEMENT}")
        for key, b in p.buckets.items():
            if b["min_cosine"] < QUANTIZED_BUCKET_MIN_COSINE:
                p.failures.append(f"{key}-token inputs: min cosine {b['min_cosine']:.4f} < {QUANTIZED_BUCKET_MIN_COSINE} "
                                  f"(mean {b['mean_cosine']:.4f}, n={b['n']})")
    elif p.min_cosine < FP32_MIN_COSINE:
        p.failures.append(f"min cosine {p.min_cosine:.6f} < {FP32_MIN_COSINE}")
    p.passed = not p.failures
    return p


def _bucket_order(key: str) -> tuple:
    """'en 1-16' < 'en 17-32' < ... < 'zh 1-16': language, then the bucket's first length."""
    lang, _, rng = key.partition(" ")
    first = rng.split("-")[0].rstrip("+")
    return (lang, int(first) if first.isdigit() else 0, key)


def structure_gate(problems: list[str]) -> Parity:
    return Parity(gate="structure", passed=not problems, failures=list(problems))
