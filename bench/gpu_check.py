"""Does training run at AltCLIP's size on a GPU, and how fast? One command, every figure in one JSON.

    python bench/gpu_check.py --out /tmp/gpu_check          # on a CUDA machine: AltCLIP-size teacher, `base` student
    python bench/gpu_check.py --out /tmp/gpu_check --tiny   # anywhere: the same steps at test size (CI runs this)

It writes AltCLIP's real architecture (ViT-L/14 + XLM-R-large, BAAI/AltCLIP's config) with random weights
to a local directory, so the teacher loads through the real `from_pretrained` path with no hub; makes
labeled synthetic pictures (colour classes, captions in English and Chinese) as a pairs file, as
webdataset shards and as an ELEVATER folder; then runs the real runners:
  1. stage 1 with the online teacher from the tar shards (bf16 on CUDA, DataLoader workers);
  2. stage 1 from a teacher cache (filled first, then trained from);
  3. stage 2 from the shards, with the online teacher's image-embedding term;
  4. a short train.evaluate of the stage-2 student on the ELEVATER folder.
Each stage's images/s, step time split into data / teacher / student, peak memory and the projected hours
for one million pairs go to <out>/gpu_check.json. Random weights: the figures are speed and memory, not
accuracy.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcclip_mobile.atomic import atomic_write_text  # noqa: E402
from dcclip_mobile.data.shards import convert_pairs  # noqa: E402
from dcclip_mobile.teachers.altclip_random import write_random_altclip  # noqa: E402
from train import align, distill, evaluate  # noqa: E402

COLOURS = [("red", "红色", (220, 30, 30)), ("green", "绿色", (30, 180, 40)), ("blue", "蓝色", (30, 60, 220)),
           ("yellow", "黄色", (240, 220, 30)), ("purple", "紫色", (140, 40, 170)), ("orange", "橙色", (250, 140, 20)),
           ("black", "黑色", (15, 15, 15)), ("white", "白色", (245, 245, 245))]
PAIRS = 1_000_000  # the projection: hours for this many image-text pairs per stage


def picture(i: int, size: int) -> tuple[Image.Image, int]:
    """Colour class i % 8 as a noisy blob on a random background (deterministic in i)."""
    rng = np.random.default_rng(i)
    c = i % len(COLOURS)
    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8) // 3 + 80
    y, x = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    r = size * rng.uniform(0.25, 0.4)
    mask = (y - cy) ** 2 + (x - cx) ** 2 < r ** 2
    img[mask] = np.clip(np.array(COLOURS[c][2]) + rng.normal(0, 12, (mask.sum(), 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(img), c


def write_data(root: Path, n: int, per_shard: int, size: int = 96) -> dict:
    """pairs.jsonl + tar shards (training) and an ELEVATER folder (evaluation) of colour pictures."""
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img, c = picture(i, size)
        img.save(root / "imgs" / f"{i}.png")
        en, zh, _ = COLOURS[c]
        rows.append({"filepath": f"imgs/{i}.png", "lang": "en" if i % 2 == 0 else "zh",
                     "caption": f"a photo of something {en}." if i % 2 == 0 else f"一张{zh}东西的照片。"})
    (root / "pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    spec = convert_pairs(root / "pairs.jsonl", root / "shards", per_shard=per_shard, progress=False)
    ev = root / "elevater"
    (ev / "label.txt").parent.mkdir(parents=True, exist_ok=True)
    (ev / "label.txt").write_text("".join(en + "\n" for en, _, _ in COLOURS))
    (ev / "label_cn.txt").write_text("".join(zh + "\n" for _, zh, _ in COLOURS), encoding="utf-8")
    for i in range(n, n + 8 * len(COLOURS)):
        img, c = picture(i, size)
        (ev / "test" / f"{c:03d}").mkdir(parents=True, exist_ok=True)
        img.save(ev / "test" / f"{c:03d}" / f"{i}.png")
    templates = root / "templates.json"  # its own templates: the registry's template asset is not on a GPU node
    templates.write_text(json.dumps({"en": ["a photo of something {c}."], "zh": ["一张{c}东西的照片。"]},
                                    ensure_ascii=False), encoding="utf-8")
    texts = root / "texts.txt"
    texts.write_text("".join(f"a photo of something {en}.\n一张{zh}东西的照片。\n{en}\n{zh}\n" for en, zh, _ in COLOURS),
                     encoding="utf-8")
    return {"pairs": str(root / "pairs.jsonl"), "shards": spec, "elevater": str(ev), "texts": str(texts),
            "templates": str(templates)}


def stage_figures(out: Path, wall: float) -> dict:
    stage = json.loads((out / "stage.json").read_text())
    t = stage["throughput"]
    rate = t.get("median_images_per_s", 0.0)
    return {"device": stage["device"], "amp": stage["amp"], "teacher_mode": stage.get("teacher_mode"),
            "images_per_s": rate, "step_s": t.get("median_step_s"), "data_s": t.get("median_data_s"),
            "teacher_s": t.get("median_teacher_s"), "student_s": t.get("median_student_s"),
            "peak_mem_mb": t.get("peak_mem_mb"), "steps_measured": t.get("steps_measured"), "wall_s": wall,
            "projected_hours_per_million_pairs": PAIRS / rate / 3600 if rate else None}


def timed(fn, argv: list[str]) -> float:
    t = time.perf_counter()
    rc = fn(argv)
    if rc != 0:
        raise SystemExit(f"gpu_check: {fn.__module__} {' '.join(argv)} exited {rc}")
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="work directory; gpu_check.json is written here")
    ap.add_argument("--tiny", action="store_true", help="test size: tiny teacher and student (the default off CUDA)")
    ap.add_argument("--steps", type=int, default=None, help="steps per stage (default 40 on CUDA, 3 tiny)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 128 on CUDA, 8 tiny")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 8 on CUDA, 0 tiny)")
    ap.add_argument("--amp", default=None, choices=["bf16", "fp16", "off"])
    ap.add_argument("--channels-last", action="store_true", help="pass --channels-last to the training runners")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    tiny = args.tiny or not cuda
    steps = args.steps or (3 if tiny else 40)
    batch = args.batch_size or (8 if tiny else 128)
    workers = args.workers if args.workers is not None else (0 if tiny else 8)
    amp = args.amp or ("bf16" if cuda else "off")
    device = "cuda" if cuda else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                    "tiny": tiny, "steps": steps, "batch_size": batch, "workers": workers, "amp": amp,
                    "channels_last": args.channels_last}

    t = time.perf_counter()
    teacher_dir = write_random_altclip(out / "altclip", "tiny" if tiny else "large", device=device)
    report["teacher_write_s"] = time.perf_counter() - t
    n = steps * batch  # one epoch: every stage reads each picture once
    for old in ("data", "cache", "s1_online", "s1_cache", "s2"):  # a rerun starts clean (the teacher is reused)
        shutil.rmtree(out / old, ignore_errors=True)
    data = write_data(out / "data", n, per_shard=max(1, n // max(16, 2 * max(workers, 1))))
    preset, cache = ("tiny" if tiny else "base"), str(out / "cache")
    common = ["--teacher", f"altclip:{teacher_dir}", "--steps", str(steps), "--batch-size",
              str(batch), "--warmup-steps", "0", "--device", device, "--amp", amp, "--workers", str(workers),
              "--checkpoint-every", str(steps), *(["--channels-last"] if args.channels_last else [])]
    s1 = ["--preset", preset, "--corpus-size", "0", "--texts", data["texts"], "--texts-per-image", "2", *common]
    stages = {}
    wall = timed(distill.main, [*s1, "--images", data["shards"], "--teacher-mode", "online", "--out", str(out / "s1_online")])
    stages["stage1_online"] = stage_figures(out / "s1_online", wall)
    cache_steps = max(2, steps // 4)  # the fill covers all n pictures (its wall time shows it); then a few steps
    s1_cache = [a if a != str(steps) else str(cache_steps) for a in s1]
    wall = timed(distill.main, [*s1_cache, "--images", data["pairs"], "--teacher-mode", "cache", "--cache", cache,
                                "--out", str(out / "s1_cache")])
    stages["stage1_cache"] = stage_figures(out / "s1_cache", wall)
    stages["stage1_cache"]["includes_cache_fill_in_wall_s"] = True
    wall = timed(align.main, ["--init", str(out / "s1_online" / "checkpoint"), "--images", data["shards"],
                              "--distill-weight", "1", "--teacher-mode", "online", *common,
                              "--out", str(out / "s2")])
    stages["stage2_online"] = stage_figures(out / "s2", wall)
    t = time.perf_counter()
    rc = evaluate.main(["--checkpoint", str(out / "s2" / "checkpoint"), "--images", data["elevater"],
                        "--device", device, "--templates", data["templates"], "--json", str(out / "eval.json")])
    if rc != 0:
        raise SystemExit(f"gpu_check: train.evaluate exited {rc}")
    ev = json.loads((out / "eval.json").read_text())
    report["evaluate"] = {"wall_s": time.perf_counter() - t, "images": 8 * len(COLOURS),
                          "top1": {lang: ev[lang]["top1"] for lang in ("en", "zh") if lang in ev}}
    report["stages"] = stages
    if cuda:
        report["peak_mem_mb_process"] = torch.cuda.max_memory_allocated() / 2 ** 20
    atomic_write_text(out / "gpu_check.json", json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"gpu_check: {out / 'gpu_check.json'}")
    return 0


def print_table(report: dict) -> None:
    print(f"\n{report['device']} · torch {report['torch']} · amp {report['amp']} · batch {report['batch_size']} · "
          f"{report['steps']} steps · {'tiny' if report['tiny'] else 'AltCLIP-size teacher, base student'}")
    print(f"| stage | images/s | step s | data s | teacher s | student s | peak MB | h / 1M pairs |")
    print("|---|---|---|---|---|---|---|---|")
    f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"
    for name, s in report["stages"].items():
        print(f"| {name} | {f(s['images_per_s'], 1)} | {f(s['step_s'])} | {f(s['data_s'])} | {f(s['teacher_s'])} | "
              f"{f(s['student_s'])} | {f(s['peak_mem_mb'], 0)} | {f(s['projected_hours_per_million_pairs'], 2)} |")


if __name__ == "__main__":
    sys.exit(main())
