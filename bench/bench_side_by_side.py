"""Side by side, in one run on this machine: the AltCLIP teacher's towers, the student (eager, .pte fp32,
.pte int8), and a peer a user would pick instead (TinyCLIP ViT-8M/16 + Text-3M), all lowered the same way.

    python bench/bench_side_by_side.py [--runs 20] [--out bench/results/side_by_side.json]

Batch 1, 224x224 images, text at each model's context (student 64 tokens, AltCLIP 64, TinyCLIP 77),
2 threads. The student's and TinyCLIP's runners of one tower are timed interleaved (dcclip_mobile.timing:
--rounds rounds of --runs calls each, in turn), so their ratios come from one run under the same drift; each
row states its median and the spread of its per-round medians. AltCLIP's towers take seconds per call and
are timed apart (median of a few calls). Random weights except the student's BatchNorm statistics
(estimated on Fashion-MNIST) and its tokenizer; timing and size do not depend on weights. Prints a table and
the ratios; writes JSON; asserts nothing.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lowering import fresh_student  # noqa: E402
from peers import TinyCLIPImage, TinyCLIPText, altclip_towers, tinyclip_inputs  # noqa: E402

from dcclip_mobile.models import count_parameters  # noqa: E402
from dcclip_mobile.timing import interleaved_ms, median_ms, threads  # noqa: E402
from lowering.encoders import example_inputs, make_encoder  # noqa: E402
from lowering.executorch_backend import PteRunner, lower_to_pte  # noqa: E402
from lowering.inputs import default_eval_set, image_inputs, text_inputs  # noqa: E402
from lowering.quantize import quantize_encoder  # noqa: E402


def pte_rows(model_name: str, tower: str, module, example, calibration) -> list[dict]:
    """The fp32 and int8 .pte of one tower: rows with their runner and inputs, timed later, together."""
    rows = []
    for precision in ("fp32", "int8"):
        q = quantize_encoder(module, tower, precision, example, calibration)
        lowered = lower_to_pte(q, example, "xnnpack")
        rows.append({"model": model_name, "tower": tower, "runtime": f"executorch-xnnpack-{precision}",
                     "size_bytes": len(lowered.buffer), "partitions": lowered.partitions,
                     "run": (PteRunner(lowered.buffer), example)})
        print(f"  {model_name} {tower} .pte {precision}: {len(lowered.buffer) / 1e6:.1f} MB", flush=True)
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


def measure(args: argparse.Namespace) -> None:
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
        rows += pte_rows("dcclip-small", tower, enc, ex, calib[tower])

    print("TinyCLIP ViT-8M/16 + Text-3M", flush=True)
    torch.manual_seed(0)
    peers = {"image": TinyCLIPImage().eval(), "text": TinyCLIPText().eval()}
    inputs = tinyclip_inputs()
    for tower, module in peers.items():
        rows.append({"model": "tinyclip-8m16-3m", "tower": tower, "runtime": "pytorch-eager-fp32",
                     "size_bytes": 4 * count_parameters(module), "run": (eager(module), inputs[tower])})
        calib_peer = [tinyclip_inputs()[tower] for _ in range(8)]
        rows += pte_rows("tinyclip-8m16-3m", tower, module, inputs[tower], calib_peer)

    for tower in ("image", "text"):  # one interleaved timing per tower: the student's and the peer's together
        timed = [r for r in rows if r["tower"] == tower and "run" in r]
        print(f"timing {len(timed)} {tower} runners interleaved: {args.rounds} rounds x {args.runs} calls", flush=True)
        result = interleaved_ms({f"{r['model']}/{r['runtime']}": r.pop("run") for r in timed},
                                rounds=args.rounds, runs=args.runs)
        for r in timed:
            t = result[f"{r['model']}/{r['runtime']}"]
            r.update(latency_ms=t["median_ms"], spread_ms=t["spread_ms"])

    def get(model, tower, runtime):
        return next(r for r in rows if (r["model"], r["tower"], r["runtime"]) == (model, tower, runtime))

    print(f"\nbatch 1, {args.threads} threads, median ms over {args.rounds} interleaved rounds x {args.runs} calls, "
          f"spread = min..max of the round medians (AltCLIP: median of {max(3, args.runs // 4)}, timed apart)\n")
    print("| model | tower | runtime | size MB | latency ms | spread ms | XNNPACK partitions |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        spread = "-" if "spread_ms" not in r else f"{r['spread_ms'][0]:.2f}-{r['spread_ms'][1]:.2f}"
        print(f"| {r['model']} | {r['tower']} | {r['runtime']} | {r['size_bytes'] / 1e6:.1f} | {r['latency_ms']:.2f} "
              f"| {spread} | {r.get('partitions', '')} |")
    ratios = {}
    for tower in ("image", "text"):
        teacher = get("altclip", tower, "pytorch-eager-fp32")["latency_ms"]
        student = get("dcclip-small", tower, "executorch-xnnpack-int8")
        peer = get("tinyclip-8m16-3m", tower, "executorch-xnnpack-int8")
        ratios[tower] = {"teacher_over_student_int8": teacher / student["latency_ms"],
                         "peer_int8_over_student_int8_latency": peer["latency_ms"] / student["latency_ms"],
                         "peer_int8_over_student_int8_size": peer["size_bytes"] / student["size_bytes"]}
    bundle = sum(get("dcclip-small", t, "executorch-xnnpack-int8")["size_bytes"] for t in ("image", "text"))
    print("\nratios:")
    for tower, r in ratios.items():
        print(f"  {tower}: AltCLIP eager / student int8 .pte = {r['teacher_over_student_int8']:.0f}x; "
              f"TinyCLIP int8 / student int8: latency {r['peer_int8_over_student_int8_latency']:.2f}x, "
              f"size {r['peer_int8_over_student_int8_size']:.2f}x")
    print(f"  student int8 encoders together: {bundle / 1e6:.2f} MB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "runs": args.runs, "rounds": args.rounds, "rows": rows,
                               "ratios": ratios,
                               "student_int8_encoders_bytes": bundle}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
