"""Static int8 calibration, before and after: seconds per tower and the parity gate's figures of each .pte.

    python bench/bench_calibration.py [--preset small] [--checkpoint DIR] [--repeats 3] [--eval-images 256]
                                      [--out bench/results/calibration_<name>.json]

before  lowering/quantize.py's static int8 up to commit c8341f8, rebuilt here: the XNNPACK quantizer's default
        config (histogram observers), the graph exported at batch 1, every calibration input run one at a time.
after   quantize_encoder(..., "int8", ...) as it is now: min/max observers, the calibration graph exported with
        a dynamic batch and run CALIBRATION_BATCH inputs at a time, at most CALIBRATION_LIMIT[tower] inputs.

Both get what the export gives quantize_encoder: Fashion-MNIST test images (the first eval_images/2) and the
export's calibration texts, per length bucket of the text tower (lowering.towers). Seconds: quantize_encoder
(export, prepare, calibration forwards, convert; for the text tower summed over its length buckets), the two
recipes interleaved `--repeats` times; median and range. Parity: each recipe's XNNPACK .pte on the gate's
parity images and texts, by the gate's rule (lowering.towers.artifact_parity), once. Without --checkpoint, a
fresh student of the preset (BatchNorm statistics from Fashion-MNIST; bench_lowering.fresh_student).
Prints a table; writes JSON; asserts nothing.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lowering import fresh_student  # noqa: E402

from dcclip_mobile.checkpoint import load_student  # noqa: E402
from lowering import quantize  # noqa: E402
from lowering.executorch_backend import LengthBucketRunner, PteRunner, lower_methods_to_pte  # noqa: E402
from lowering.inputs import default_eval_set  # noqa: E402
from lowering.towers import artifact_parity, make_references, make_towers  # noqa: E402

BEFORE_COMMIT = "c8341f8"


def before_int8(encoder, tower: str, example: tuple, calibration) -> torch.nn.Module:
    """Static int8 as lowering/quantize.py did it at BEFORE_COMMIT."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    encoder = copy.deepcopy(encoder).eval()
    with torch.no_grad():
        if tower == "text":
            quantize._quantize_embedding(encoder, 8)
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        quantizer.set_filter_function(quantize._may_quantize(tower, "int8"))
        prepared = prepare_pt2e(torch.export.export(encoder, example).module(), quantizer)
        for args in calibration:
            prepared(*args)
        return convert_pt2e(prepared)


def after_int8(encoder, tower: str, example: tuple, calibration) -> torch.nn.Module:
    return quantize.quantize_encoder(encoder, tower, "int8", example, calibration)


RECIPES = {"before": before_int8, "after": after_int8}


def quantize_tower(tower, recipe) -> tuple[dict, float]:
    """({method: (quantized module, example)}, seconds of quantization over the tower's length buckets)."""
    methods, seconds = {}, 0.0
    for length in tower.lengths or (None,):
        example = tower.example_inputs(length)
        t0 = time.perf_counter()
        q = RECIPES[recipe](tower.encoder(length), tower.name, example, tower.calibration(length))
        seconds += time.perf_counter() - t0
        methods[tower.method(length)] = (q, example)
    return methods, seconds


def parity_of(tower, methods: dict, refs) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = lower_methods_to_pte(methods, "xnnpack")
    buckets = {L: tower.method(L) for L in tower.lengths}
    runner = LengthBucketRunner(lowered.buffer, buckets) if buckets else PteRunner(lowered.buffer)
    p = artifact_parity(tower, runner.run_batch(tower.parity_inputs), refs, quantized=True)
    return {"size_bytes": len(lowered.buffer), "partitions": lowered.partitions, "mean_cosine": p.mean_cosine,
            "min_cosine": p.min_cosine, "top1_agreement": p.top1_agreement, "worst_bucket": p.worst_bucket,
            "passed": p.passed, "failures": p.failures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eval-images", type=int, default=256)
    ap.add_argument("--towers", default="image,text")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    eval_set = default_eval_set(n_calibration=args.eval_images // 2, n_parity=args.eval_images)
    model, tok = load_student(args.checkpoint) if args.checkpoint else fresh_student(args.preset, eval_set)
    model.eval()
    refs = make_references(model, tok, eval_set)
    towers = [t for t in make_towers(model, refs) if t.name in args.towers.split(",")]
    name = model.cfg.name
    rows = []
    for tower in towers:
        seconds = {r: [] for r in RECIPES}
        parity = {}
        for rep in range(args.repeats):
            for recipe in RECIPES if rep % 2 == 0 else reversed(list(RECIPES)):  # interleaved, order alternating
                methods, s = quantize_tower(tower, recipe)
                seconds[recipe].append(s)
                print(f"  {tower.name} {recipe} repeat {rep + 1}: {s:.1f} s", flush=True)
                if recipe not in parity:
                    parity[recipe] = parity_of(tower, methods, refs)
        for recipe in RECIPES:
            s = seconds[recipe]
            rows.append({"tower": tower.name, "recipe": recipe, "calibration_inputs": len(tower.calibration_inputs),
                         "length_buckets": list(tower.lengths), "seconds": s, "median_s": statistics.median(s),
                         "min_s": min(s), "max_s": max(s), **parity[recipe]})
    image_size = model.cfg.image.image_size
    weights = f"checkpoint {args.checkpoint}" if args.checkpoint else "fresh weights"
    print(f"\n{name} ({weights}), image {image_size} px, static int8, {args.repeats} interleaved repeats, "
          f"{torch.get_num_threads()} threads\n")
    print("| tower | recipe | calibration s median (min-max) | MB | mean cos | min cos | top-1 agree | gate |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        gate = "PASS" if r["passed"] else "FAIL: " + "; ".join(r["failures"])
        print(f"| {r['tower']} | {r['recipe']} | {r['median_s']:.1f} ({r['min_s']:.1f}-{r['max_s']:.1f}) "
              f"| {r['size_bytes'] / 1e6:.2f} | {r['mean_cosine']:.5f} | {r['min_cosine']:.5f} "
              f"| {r['top1_agreement']:.4f} | {gate} |")
    out = Path(args.out or f"bench/results/calibration_{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"preset": name, "checkpoint": args.checkpoint, "image_size": image_size,
                               "repeats": args.repeats, "threads": torch.get_num_threads(), "before": BEFORE_COMMIT,
                               "calibration_batch": quantize.CALIBRATION_BATCH,
                               "calibration_limit": quantize.CALIBRATION_LIMIT, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
