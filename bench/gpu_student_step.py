"""Where a student's training step goes on a GPU: one stage-1 step (forward, backward, AdamW) of a preset's
student against AltCLIP-shaped targets (a 1024 x 16 x 16 map, 1024-d pooled text, 768-d embeddings), timed
in the variants that change its speed, plus the profiler's top operators for the first.

    python bench/gpu_student_step.py --json /tmp/step.json            # CUDA: the `base` student, batch 128
    python bench/gpu_student_step.py --preset tiny --batch-size 8      # anywhere, as a check of the script

Variants: fp32; bf16 autocast; bf16 + channels_last activations (cuDNN's depthwise and 1x1 kernels prefer
NHWC); bf16 + channels_last + torch.compile of the image tower. Median of --steps timed steps after warm-up.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcclip_mobile.config import load_preset  # noqa: E402
from dcclip_mobile.models import DCCLIPStudent  # noqa: E402
from train.device import autocast, synchronize  # noqa: E402
from train.stages import DistillStage, DistillWeights  # noqa: E402

TEACHER = {"map_channels": 1024, "map_size": 16, "text_dim": 1024, "embed_dim": 768}


def batch_for(cfg, n: int, texts_per_image: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    s, m, L = cfg.image.image_size, texts_per_image, cfg.text.context_length
    ids = torch.randint(5, cfg.text.vocab_size, (n, m, L), generator=g)
    mask = torch.zeros(n, m, L, dtype=torch.long)
    mask[..., :min(16, L)] = 1  # prompt-length texts in a full-context tensor, as the tokenizer pads them
    b = {"pixel_values": torch.randn(n, 3, s, s, generator=g), "input_ids": ids, "attention_mask": mask,
         "teacher_map": torch.randn(n, TEACHER["map_channels"], TEACHER["map_size"], TEACHER["map_size"], generator=g),
         "teacher_image_embedding": torch.nn.functional.normalize(torch.randn(n, TEACHER["embed_dim"], generator=g), dim=-1),
         "teacher_text_features": torch.randn(n, m, TEACHER["text_dim"], generator=g),
         "teacher_text_embedding": torch.nn.functional.normalize(torch.randn(n, m, TEACHER["embed_dim"], generator=g), dim=-1)}
    return {k: v.to(device) for k, v in b.items()}


def time_variant(preset: str, batch: int, steps: int, device, amp: str, channels_last: bool, compile_: bool) -> dict:
    torch.manual_seed(0)
    cfg = load_preset(preset)
    cfg.embed_dim = TEACHER["embed_dim"]
    stage = DistillStage(DCCLIPStudent(cfg), TEACHER["map_channels"], TEACHER["text_dim"], TEACHER["embed_dim"],
                         DistillWeights()).to(device)
    if channels_last:
        stage.to(memory_format=torch.channels_last)
    if compile_:
        stage.student.image = torch.compile(stage.student.image)
    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=1e-4, foreach=True)
    data = batch_for(cfg, batch, 2, device)
    if channels_last:
        data["pixel_values"] = data["pixel_values"].contiguous(memory_format=torch.channels_last)
    stage.train()
    times = []
    for i in range(steps + 5):
        synchronize(device)
        t = time.perf_counter()
        with autocast(device, amp):
            loss, _ = stage(dict(data))
        loss.float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        synchronize(device)
        if i >= 5:  # warm-up: cuDNN autotuning, compilation
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"amp": amp, "channels_last": channels_last, "compile": compile_, "median_step_s": med,
            "spread": [min(times), max(times)], "images_per_s": batch / med}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/gpu_student_step.py", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    variants = [("off", False, False), ("bf16", False, False), ("bf16", True, False)]
    if not args.no_compile:
        variants.append(("bf16", True, True))
    rows = []
    for amp, cl, comp in variants:
        try:
            rows.append(time_variant(args.preset, args.batch_size, args.steps, device, amp, cl, comp))
        except Exception as e:  # a variant that fails here is a finding, not the end of the run
            rows.append({"amp": amp, "channels_last": cl, "compile": comp, "error": f"{type(e).__name__}: {e}"[:300]})
        print(rows[-1], flush=True)
    profile = None
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile as prof
        cfg = load_preset(args.preset)
        cfg.embed_dim = TEACHER["embed_dim"]
        stage = DistillStage(DCCLIPStudent(cfg), TEACHER["map_channels"], TEACHER["text_dim"], TEACHER["embed_dim"],
                             DistillWeights()).to(device).train()
        data = batch_for(cfg, args.batch_size, 2, device)
        for _ in range(3):
            with autocast(device, "bf16"):
                loss, _ = stage(dict(data))
            loss.backward()
        with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            with autocast(device, "bf16"):
                loss, _ = stage(dict(data))
            loss.backward()
            synchronize(device)
        profile = p.key_averages().table(sort_by="cuda_time_total", row_limit=15)
        print(profile)
    out = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "preset": args.preset,
           "batch_size": args.batch_size, "variants": rows, "profile_top15": profile}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
