"""How long few-shot prompt tuning of one task takes on this machine (issue 14: under 2 minutes at 16 shots).

    python bench/bench_prompt_tune.py [--init runs/demo/stage2/checkpoint] [--tasks emoji-activities,fashion-mnist]
        [--shots 16] [--method text] [--steps 100] [--threads 1] [--out bench/results/prompt_tune.json]

Per task, from nothing cached: embed the K shots per class and the test split through the frozen image tower
(`embed`), tune the prompt (`fit`, the runner's default steps and learning rate), score it in both languages
(`score`); `total` is the three together, what a user adapting a model to a new label set waits for. Tasks are
the built-in ones (written under <DCCLIP_CACHE>/tasks first if missing, not timed) or ELEVATER folders. Prints a
table; writes JSON; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from dcclip_mobile.checkpoint import load_student
from dcclip_mobile.data.tasks import ensure_tasks, open_task, sample_shots
from dcclip_mobile.prompt_tuning import Prompt, PromptSpec
from dcclip_mobile.data.preprocess import ImagePreprocess
from dcclip_mobile.prompt_tuning.engine import FitConfig, PixelCache, Shots, TaskData, embed_pixels, evaluate, fit


def bench_task(model, tokenizer, name: str, path: Path, shots: int, method: str, steps: int, seed: int = 0) -> dict:
    task = open_task(name, path)
    pre = ImagePreprocess.for_student(model.cfg)
    t0 = time.perf_counter()
    idx = sample_shots(task.train.labels, shots, seed, task.n_classes)
    pool = torch.zeros(len(task.train), model.cfg.embed_dim)
    pool[idx] = embed_pixels(model, PixelCache(task.train, pre, keep=False), idx)
    test = embed_pixels(model, PixelCache(task.test, pre, keep=False), list(range(len(task.test))))
    t_embed = time.perf_counter() - t0
    data = TaskData(task, pool, test, pre, keep_pixels=method != "text")
    prompt = Prompt(PromptSpec(method=method, image_size=model.cfg.image.image_size), model.text, tokenizer, seed=seed)
    r = fit(prompt, model, tokenizer, [Shots(data, shots, seed, idx)], FitConfig(steps=steps, seed=seed))
    t1 = time.perf_counter()
    acc = evaluate(prompt, model, tokenizer, data)
    t_score = time.perf_counter() - t1
    return {"task": name, "classes": task.n_classes, "shots": shots, "method": method, "steps": steps,
            "shot_images": len(idx), "test_images": len(task.test), "embed_s": round(t_embed, 1),
            "fit_s": round(r["seconds"], 1), "score_s": round(t_score, 1),
            "total_s": round(t_embed + r["seconds"] + t_score, 1), "top1": acc,
            "final_loss": round(r["loss"][-1], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", default="runs/demo/stage2/checkpoint")
    ap.add_argument("--tasks", default="emoji-activities,fashion-mnist")
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--method", default="text", choices=["text", "visual", "unified"])
    ap.add_argument("--steps", type=int, default=FitConfig().steps)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/prompt_tune.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_student(args.init)
    for p in model.parameters():
        p.requires_grad_(False)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    paths = ensure_tasks(names)
    rows = [bench_task(model, tokenizer, name, path, args.shots, args.method, args.steps) for name, path in paths.items()]
    print(f"\n{model.cfg.name}, {args.method} prompt, {args.shots} shots, {args.steps} steps, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}\n")
    print("| task | classes | shot images | test images | embed s | fit s | score s | total s | EN top-1 | ZH top-1 |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['task']} | {r['classes']} | {r['shot_images']} | {r['test_images']} | {r['embed_s']} | {r['fit_s']} | "
              f"{r['score_s']} | **{r['total_s']}** | {100 * r['top1']['en']:.1f}% | {100 * r['top1']['zh']:.1f}% |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": args.init, "threads": args.threads, "machine": platform.machine(),
                               "rows": rows}, indent=1, ensure_ascii=False) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
