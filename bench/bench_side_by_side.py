"""Side by side, in one run on this machine: the AltCLIP teacher's towers, the student (eager, .pte fp32,
.pte int8), and two peers a user would pick instead (TinyCLIP ViT-8M/16 + Text-3M; MobileCLIP-S0's MCi0 +
its text encoder, reparameterized), all lowered the same way.

    python bench/bench_side_by_side.py [--runs 20] [--out bench/results/side_by_side.json]

Batch 1, 224x224 images (MobileCLIP-S0: 256x256, its configured size), text at each model's context (student
64 tokens, AltCLIP 64, TinyCLIP and MobileCLIP 77) and the student's text .pte at each of its length buckets
(12, 16, 32, 64: a 10-token query runs in the 12-token method), 2 threads. The student's and both peers' runners of
one tower are timed interleaved (dcclip_mobile.timing: --rounds rounds of --runs calls each, in turn), so
their ratios come from one run under the same drift; each
row states its median and the spread of its per-round medians. AltCLIP's towers take seconds per call and
are timed apart (median of a few calls). Random weights except the student's BatchNorm statistics
(estimated on Fashion-MNIST) and its tokenizer; timing and size do not depend on weights. Prints a table and
the ratios; writes JSON; asserts nothing. A peer's .pte that fails to quantize or lower gets a row saying so
in its partitions column, untimed, and its ratios are null.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lowering import fresh_student  # noqa: E402
from peers import (MobileCLIPImage, MobileCLIPText, TinyCLIPImage, TinyCLIPText, altclip_towers,  # noqa: E402
                   mobileclip_inputs, tinyclip_inputs)

from dcclip_mobile.models import count_parameters  # noqa: E402
from dcclip_mobile.timing import interleaved_ms, median_ms, threads  # noqa: E402
from lowering.encoders import example_inputs, make_encoder, text_lengths, text_method, used_length  # noqa: E402
from lowering.executorch_backend import PteRunner, lower_methods_to_pte, lower_to_pte  # noqa: E402
from lowering.inputs import default_eval_set, image_inputs, text_inputs  # noqa: E402
from lowering.quantize import quantize_encoder  # noqa: E402


def pte_rows(model_name: str, tower: str, module, example, calibration, keep_failures: bool = False) -> list[dict]:
    """The fp32 and int8 .pte of one tower: rows with their runner and inputs, timed later, together.
    keep_failures: a precision that fails to quantize or lower gets a row whose partitions column says why
    (no runner, no size) instead of stopping the run."""
    rows = []
    for precision in ("fp32", "int8"):
        try:
            q = quantize_encoder(module, tower, precision, example, calibration)
            lowered = lower_to_pte(q, example, "xnnpack")
        except Exception as exc:  # noqa: BLE001 - reported in the row, see keep_failures
            if not keep_failures:
                raise
            why = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]
            rows.append({"model": model_name, "tower": tower, "runtime": f"executorch-xnnpack-{precision}",
                         "size_bytes": None, "partitions": why})
            print(f"  {model_name} {tower} .pte {precision}: {why}", flush=True)
            continue
        rows.append({"model": model_name, "tower": tower, "runtime": f"executorch-xnnpack-{precision}",
                     "size_bytes": len(lowered.buffer), "partitions": lowered.partitions,
                     "run": (PteRunner(lowered.buffer), example)})
        print(f"  {model_name} {tower} .pte {precision}: {len(lowered.buffer) / 1e6:.1f} MB", flush=True)
    return rows


def bucket_rows(model_name: str, model, calibration) -> list[dict]:
    """The student's text .pte as it ships: a method per length bucket in one program; a row per precision and
    length, each timed on a text that fills its bucket."""
    rows = []
    cfg = model.cfg
    for precision in ("fp32", "int8"):
        methods = {}
        for L in text_lengths(cfg):
            ex = example_inputs(cfg, "text", L)
            calib = [(i[:, :L], m[:, :L]) for i, m in calibration if used_length(m) <= L]
            methods[text_method(cfg, L)] = (quantize_encoder(make_encoder(model, "text", L), "text", precision, ex, calib), ex)
        lowered = lower_methods_to_pte(methods, "xnnpack")
        for L in text_lengths(cfg):
            ids = torch.randint(5, cfg.text.vocab_size, (1, L))
            rows.append({"model": model_name, "tower": "text", "runtime": f"executorch-xnnpack-{precision}",
                         "tokens": L, "size_bytes": len(lowered.buffer),
                         "partitions": lowered.methods[text_method(cfg, L)]["partitions"],
                         "run": (PteRunner(lowered.buffer, text_method(cfg, L)), (ids, torch.ones(1, L, dtype=torch.long)))})
        print(f"  {model_name} text .pte {precision}, buckets {text_lengths(cfg)}: {len(lowered.buffer) / 1e6:.1f} MB",
              flush=True)
    return rows


def peer_rows(model_name: str, build_towers, make_inputs, keep_failures: bool = False) -> list[dict]:
    """A peer's towers (built under seed 0) as eager, .pte fp32 and .pte int8 rows, calibrated on 8 random inputs."""
    torch.manual_seed(0)
    rows, towers = [], build_towers()
    inputs = make_inputs()
    for tower, module in towers.items():
        module.eval()
        rows.append({"model": model_name, "tower": tower, "runtime": "pytorch-eager-fp32",
                     "size_bytes": 4 * count_parameters(module), "run": (eager(module), inputs[tower])})
        calib_peer = [make_inputs()[tower] for _ in range(8)]
        rows += pte_rows(model_name, tower, module, inputs[tower], calib_peer, keep_failures=keep_failures)
    return rows


def eager(module):
    """A module's forward without autograd, as a timing candidate."""
    def run(*args):
        with torch.inference_mode():
            return module(*args)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="calls per round")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/side_by_side.json")
    args = ap.parse_args()
    with threads(args.threads):
        measure(args)


def measure(args: argparse.Namespace) -> dict:
    """Time every runner, print the table and the ratios, write args.out; return what it wrote (rows without
    their runners, the ratios): bench/bench_budget.py --side-by-side reads it in the same process."""
    rows: list[dict] = []

    print("AltCLIP (ViT-L/14 + XLM-R-large), eager fp32", flush=True)
    alt = altclip_towers()
    px = torch.randn(1, 3, 224, 224)
    ids, mask = torch.randint(5, 250000, (1, 64)), torch.ones(1, 64, dtype=torch.long)
    image_fn = lambda x: alt.visual_projection(alt.vision_model(pixel_values=x).pooler_output)  # noqa: E731
    text_fn = lambda i, m: alt.text_projection(alt.text_model(input_ids=i, attention_mask=m).pooler_output)  # noqa: E731
    for tower, fn, a, module in (("image", image_fn, (px,), alt.vision_model), ("text", text_fn, (ids, mask), alt.text_model)):
        with torch.inference_mode():
            ms = median_ms(fn, a, max(3, args.runs // 4), warmup=1)
        rows.append({"model": "altclip", "tower": tower, "runtime": "pytorch-eager-fp32",
                     "size_bytes": 4 * count_parameters(module), "latency_ms": ms})
        print(f"  altclip {tower}: {ms:.1f} ms", flush=True)
    del alt
    gc.collect()

    print("student (small preset, 224 px, 64 tokens)", flush=True)
    eval_set = default_eval_set(n_calibration=16, n_parity=1)
    model, tok = fresh_student("small", eval_set)
    texts = [t for _, t in eval_set.calibration_texts] or ["a photo of a bag.", "一张包的照片。"]
    calib = {"image": image_inputs(eval_set.calibration_images, model.cfg), "text": text_inputs(texts, tok)}
    for tower in ("image", "text"):
        enc = make_encoder(model, tower).eval()
        ex = example_inputs(model.cfg, tower)
        rows.append({"model": "dcclip-small", "tower": tower, "runtime": "pytorch-eager-fp32",
                     "size_bytes": 4 * count_parameters(getattr(model, tower)), "run": (eager(enc), ex)})
        rows += pte_rows("dcclip-small", tower, enc, ex, calib[tower]) if tower == "image" else \
            bucket_rows("dcclip-small", model, calib[tower])

    print("TinyCLIP ViT-8M/16 + Text-3M", flush=True)
    rows += peer_rows("tinyclip-8m16-3m", lambda: {"image": TinyCLIPImage(), "text": TinyCLIPText()}, tinyclip_inputs)
    print("MobileCLIP-S0 (MCi0 + its text encoder, reparameterized)", flush=True)
    rows += peer_rows("mobileclip-s0", lambda: {"image": MobileCLIPImage(), "text": MobileCLIPText()},
                      mobileclip_inputs, keep_failures=True)

    for tower in ("image", "text"):  # one interleaved timing per tower: the student's and the peer's together
        timed = [r for r in rows if r["tower"] == tower and "run" in r]
        print(f"timing {len(timed)} {tower} runners interleaved: {args.rounds} rounds x {args.runs} calls", flush=True)
        result = interleaved_ms({_key(r): r.pop("run") for r in timed}, rounds=args.rounds, runs=args.runs)
        for r in timed:
            t = result[_key(r)]
            r.update(latency_ms=t["median_ms"], spread_ms=t["spread_ms"], round_medians_ms=t["round_medians_ms"])

    def get(model, tower, runtime, tokens=None):
        return next(r for r in rows if (r["model"], r["tower"], r["runtime"]) == (model, tower, runtime)
                    and r.get("tokens") in (tokens, None if tokens is None else -1))

    print(f"\nbatch 1, {args.threads} threads, median ms over {args.rounds} interleaved rounds x {args.runs} calls, "
          f"spread = min..max of the round medians (AltCLIP: median of {max(3, args.runs // 4)}, timed apart)\n")
    print("| model | tower | runtime | tokens | size MB | latency ms | spread ms | XNNPACK partitions |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        spread = "-" if "spread_ms" not in r else f"{r['spread_ms'][0]:.2f}-{r['spread_ms'][1]:.2f}"
        size = "-" if r["size_bytes"] is None else f"{r['size_bytes'] / 1e6:.1f}"
        ms = f"{r['latency_ms']:.2f}" if "latency_ms" in r else "-"
        print(f"| {r['model']} | {r['tower']} | {r['runtime']} | {r.get('tokens', '')} | {size} "
              f"| {ms} | {spread} | {r.get('partitions', '')} |")
    ratios = {}
    context = model.cfg.text.context_length
    for tower in ("image", "text"):
        teacher = get("altclip", tower, "pytorch-eager-fp32")["latency_ms"]
        student = get("dcclip-small", tower, "executorch-xnnpack-int8", context if tower == "text" else None)
        peer = get("tinyclip-8m16-3m", tower, "executorch-xnnpack-int8")
        mobileclip = get("mobileclip-s0", tower, "executorch-xnnpack-int8")
        ratios[tower] = {"teacher_over_student_int8": teacher / student["latency_ms"],
                         "peer_int8_over_student_int8_latency": peer["latency_ms"] / student["latency_ms"],
                         "peer_int8_over_student_int8_latency_by_round": round_ratio(peer, student),
                         "peer_int8_over_student_int8_size": peer["size_bytes"] / student["size_bytes"],
                         "mobileclip_int8_over_student_int8_latency": _ratio(mobileclip, student, "latency_ms"),
                         "mobileclip_int8_over_student_int8_size": _ratio(mobileclip, student, "size_bytes")}
    short = get("dcclip-small", "text", "executorch-xnnpack-int8", text_lengths(model.cfg)[0])
    full = get("dcclip-small", "text", "executorch-xnnpack-int8", context)
    ratios["text_short"] = {"tokens": short["tokens"],
                            "full_context_over_short": full["latency_ms"] / short["latency_ms"],
                            "full_context_over_short_by_round": round_ratio(full, short),
                            "peer_int8_over_student_int8_latency": get("tinyclip-8m16-3m", "text",
                                                                       "executorch-xnnpack-int8")["latency_ms"]
                            / short["latency_ms"],
                            "mobileclip_int8_over_student_int8_latency": _ratio(
                                get("mobileclip-s0", "text", "executorch-xnnpack-int8"), short, "latency_ms")}
    bundle = sum(get("dcclip-small", t, "executorch-xnnpack-int8", context if t == "text" else None)["size_bytes"]
                 for t in ("image", "text"))
    print("\nratios:")
    for tower, r in ratios.items():
        if tower == "text_short":
            print(f"  a query of up to {r['tokens']} tokens (its bucket): {r['full_context_over_short']:.2f}x faster than the "
                  f"{context}-token run (round by round: {r['full_context_over_short_by_round']:.2f}x); TinyCLIP int8 "
                  f"(77 tokens) / student int8: {r['peer_int8_over_student_int8_latency']:.2f}x")
            print(f"    MobileCLIP-S0 int8 (77 tokens) / student int8 ({r['tokens']} tokens): "
                  f"{_x(r['mobileclip_int8_over_student_int8_latency'])}")
            continue
        print(f"  {tower}: AltCLIP eager / student int8 .pte = {r['teacher_over_student_int8']:.0f}x; "
              f"TinyCLIP int8 / student int8: latency {r['peer_int8_over_student_int8_latency']:.2f}x "
              f"(round by round: {r['peer_int8_over_student_int8_latency_by_round']:.2f}x), "
              f"size {r['peer_int8_over_student_int8_size']:.2f}x")
        print(f"    MobileCLIP-S0 int8 / student int8: latency {_x(r['mobileclip_int8_over_student_int8_latency'])}, "
              f"size {_x(r['mobileclip_int8_over_student_int8_size'])}")
    print(f"  student int8 encoders together: {bundle / 1e6:.2f} MB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"threads": args.threads, "runs": args.runs, "rounds": args.rounds, "rows": rows, "ratios": ratios,
              "student_int8_encoders_bytes": bundle}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


def round_ratio(slow: dict, fast: dict) -> float:
    """The median over rounds of slow's round median / fast's: each ratio taken under one round's load, so a round
    the machine slowed for both cancels out (the pooled medians' ratio mixes rounds)."""
    return statistics.median(a / b for a, b in zip(slow["round_medians_ms"], fast["round_medians_ms"]))


def _ratio(peer: dict, student: dict, field: str) -> float | None:
    """peer[field] / student[field]; None when the peer's row has none (its .pte failed, see pte_rows)."""
    return None if peer.get(field) is None else peer[field] / student[field]


def _x(ratio: float | None) -> str:
    return "n/a (the .pte failed, see its row)" if ratio is None else f"{ratio:.2f}x"


def _key(r: dict) -> str:
    return f"{r['model']}/{r['runtime']}" + (f"@{r['tokens']}" if "tokens" in r else "")


if __name__ == "__main__":
    main()
