"""Student presets side by side: parameters, eager latency at batch 1, and XNNPACK delegation.

    python bench/bench_students.py [--presets tiny small base] [--runs 30] [--out bench/results/students.json]

Delegation is counted on the final .pte program (lowering.executorch_backend.lower_to_pte, XNNPACK): the number
of delegate calls (partitions) and the ops left outside them. Each preset also runs with text.norm="layer"
(nn.LayerNorm), the variant the architecture was chosen against. Prints a table; writes JSON; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dcclip_mobile.config import load_preset
from dcclip_mobile.models import DCCLIPStudent, count_parameters
from dcclip_mobile.timing import median_ms
from lowering.executorch_backend import lower_to_pte


def eager_latency_ms(fn, args, runs: int, warmup: int = 5) -> float:
    with torch.inference_mode():
        return median_ms(fn, args, runs, warmup)


def xnnpack_delegation(module: torch.nn.Module, args: tuple) -> dict:
    lowered = lower_to_pte(module, args, "xnnpack")
    return {"partitions": lowered.partitions, "ops_outside": lowered.ops_outside}


def bench_preset(name: str, runs: int, norm: str | None = None) -> dict:
    cfg = load_preset(name)
    if norm:
        cfg.text.norm = norm
    torch.manual_seed(0)
    model = DCCLIPStudent(cfg).eval()
    s, L = cfg.image.image_size, cfg.text.context_length
    pixels = torch.randn(1, 3, s, s)
    ids = torch.randint(4, cfg.text.vocab_size, (1, L))
    mask = torch.ones(1, L, dtype=torch.long)
    return {
        "preset": name, "text_norm": cfg.text.norm, "image_size": s, "context_length": L,
        "image_params": count_parameters(model.image), "text_params": count_parameters(model.text),
        "image_eager_ms": eager_latency_ms(model.image, (pixels,), runs),
        "text_eager_ms": eager_latency_ms(model.text, (ids, mask), runs),
        "image_xnnpack": xnnpack_delegation(model.image, (pixels,)),
        "text_xnnpack": xnnpack_delegation(model.text, (ids, mask)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/students.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.presets:
        for norm in (None, "layer"):
            rows.append(bench_preset(name, args.runs, norm))
            r = rows[-1]
            print(f"measured {name} norm={r['text_norm']}", flush=True)

    print(f"\nbatch 1, {args.threads} threads, median of {args.runs} eager runs (fp32)\n")
    print("| preset | text norm | image in | ctx | image params | text params | image eager ms | text eager ms "
          "| image XNNPACK partitions | text XNNPACK partitions | text ops outside |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        outside = ", ".join(f"{k} x{v}" for k, v in r["text_xnnpack"]["ops_outside"].items())
        print(f"| {r['preset']} | {r['text_norm']} | {r['image_size']} | {r['context_length']} "
              f"| {r['image_params'] / 1e6:.2f}M | {r['text_params'] / 1e6:.2f}M | {r['image_eager_ms']:.1f} "
              f"| {r['text_eager_ms']:.1f} | {r['image_xnnpack']['partitions']} | {r['text_xnnpack']['partitions']} "
              f"| {outside} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "runs": args.runs, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
