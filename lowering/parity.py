"""The parity gate: an exported artifact must compute what the PyTorch student computes.

Figures, per artifact, on real inputs (eval images; English and Chinese texts):
  mean_cosine, min_cosine  between the artifact's embeddings and the eager student's
  max_abs_diff             largest elementwise difference of the (unit-length) embeddings
  top1_agreement           zero-shot top-1 with the artifact vs with the eager student: for an image
                           artifact, its image embeddings against the eager class-text embeddings; for
                           a text artifact, eager image embeddings against its class-text embeddings
                           (English and Chinese class sets, each image counted once per language)
Gate:  fp32 artifacts: min_cosine >= 0.9999.
       quantized artifacts: mean_cosine >= 0.99 and top1_agreement >= 0.97.
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
THRESHOLDS = {"fp32_min_cosine": FP32_MIN_COSINE, "quantized_mean_cosine": QUANTIZED_MEAN_COSINE,
              "quantized_top1_agreement": QUANTIZED_TOP1_AGREEMENT}


@dataclass
class Parity:
    gate: str  # "fp32", "quantized" or "structure"
    n: int = 0
    mean_cosine: float | None = None
    min_cosine: float | None = None
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    top1_decisions: int = 0
    passed: bool = False
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.gate == "structure":
            return "structure " + ("ok" if self.passed else "; ".join(self.failures))
        top1 = "-" if self.top1_agreement is None else f"{self.top1_agreement:.4f}"
        return (f"cos mean {self.mean_cosine:.6f} min {self.min_cosine:.6f} maxabs {self.max_abs_diff:.2e} "
                f"top1 {top1} (n={self.n}) {'PASS' if self.passed else 'FAIL: ' + '; '.join(self.failures)}")


def top1_agreement(queries_ref: torch.Tensor, queries_got: torch.Tensor,
                   classes_ref: torch.Tensor, classes_got: torch.Tensor) -> tuple[float, int]:
    """Share of queries whose top-1 class is the same with the artifact's side as with the eager side."""
    ref = (queries_ref @ classes_ref.T).argmax(dim=-1)
    got = (queries_got @ classes_got.T).argmax(dim=-1)
    return float((ref == got).float().mean()), int(ref.numel())


def measure(reference: torch.Tensor, got: torch.Tensor, quantized: bool,
            agreement: tuple[float, int] | None = None) -> Parity:
    """Compare [N,D] embeddings and apply the gate for fp32 or quantized artifacts."""
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
    if not torch.isfinite(got).all():
        p.failures.append("the artifact's output has NaN or inf")
    if quantized:
        if p.mean_cosine < QUANTIZED_MEAN_COSINE:
            p.failures.append(f"mean cosine {p.mean_cosine:.4f} < {QUANTIZED_MEAN_COSINE}")
        if p.top1_agreement is None:
            p.failures.append("no zero-shot top-1 agreement measured (no class texts)")
        elif p.top1_agreement < QUANTIZED_TOP1_AGREEMENT:
            p.failures.append(f"top-1 agreement {p.top1_agreement:.4f} < {QUANTIZED_TOP1_AGREEMENT}")
    elif p.min_cosine < FP32_MIN_COSINE:
        p.failures.append(f"min cosine {p.min_cosine:.6f} < {FP32_MIN_COSINE}")
    p.passed = not p.failures
    return p


def structure_gate(problems: list[str]) -> Parity:
    return Parity(gate="structure", passed=not problems, failures=list(problems))
