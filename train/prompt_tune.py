"""Few-shot prompt tuning of a frozen student, one task at a time and multitask (MVLPT, arXiv 2211.11720):

    python -m train.prompt_tune --init runs/demo/stage2/checkpoint \\
        --tasks emoji-animals-nature,emoji-food-drink,emoji-travel-places,emoji-activities,emoji-objects,fashion-mnist \\
        --shots 1,4,16 --method text --seeds 0,1,2 --json runs/pt/results.json --markdown runs/pt/table.md

Tasks: the built-in ones (dcclip_mobile/data/tasks.py; written under --task-root on first use) or the path of any
ELEVATER folder with train/ and test/ splits. Every figure is top-1 on the task's test split, English and Chinese.
Modes (--modes), each a row of the table:
    zero-shot      the hand-written templates: the bundles' one per language, and the first 8 CLIP templates
    linear-probe   a logistic-regression head on the K shots' image embeddings (no text; an image-only reference)
    single         a prompt tuned on the target task's K shots alone, from the template (or random) start
    mt-source      the source prompt (learned jointly on the source tasks) used on the target as is, no target data
    mt-init        MVLPT (i): the source prompt initializes the target prompt, then tuned on the K shots
    mt-joint       MVLPT (ii): one prompt tuned jointly on the K shots of every --tasks task, scored on each
Source tasks: --source-tasks, or by default every other --tasks task (leave-one-out: a target's own images never
reach its source prompt). Source prompts use --source-shots shots per class, the same seed, and are
reused across K.

--save DIR writes every tuned prompt as DIR/<task>/<mode>-<K>shot-seed<S>/ (prompt.json + prompt.safetensors),
the input of `python -m lowering.export --prompts DIR/<task>/<...>`.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from dcclip_mobile.atomic import atomic_write_text
from dcclip_mobile.checkpoint import load_student
from dcclip_mobile.data.tasks import BUILTIN_TASKS, default_task_root, ensure_tasks, open_task
from dcclip_mobile.errors import UsageError, run_main
from dcclip_mobile.prompt_tuning import DEFAULT_TEMPLATES, Prompt, PromptSpec
from dcclip_mobile.prompt_tuning.engine import FitConfig, Shots, evaluate, fit, linear_probe, load_task_data, zero_shot
from dcclip_mobile.prompt_tuning.prompts import CONTEXTS, INITS, LANGS, METHODS
from dcclip_mobile.prompt_tuning.store import save_prompt

MODES = ("zero-shot", "linear-probe", "single", "mt-source", "mt-init", "mt-joint")
ZS_TEMPLATES = "zero-shot"
ZS_CLIP8 = "zero-shot-8"
MODE_LABELS = {ZS_TEMPLATES: "zero-shot (1 template)", ZS_CLIP8: "zero-shot (8 CLIP templates)",
               "linear-probe": "linear probe (image only)", "single": "single-task prompt",
               "mt-source": "source prompt, no target data", "mt-init": "multitask-initialized prompt (MVLPT i)",
               "mt-joint": "joint multitask prompt (MVLPT ii)"}


def _ints(spec: str, what: str) -> list[int]:
    try:
        out = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--{what} {spec!r}: comma-separated integers") from None
    if not out:
        raise UsageError(f"--{what} is empty")
    return out


def _names(spec: str) -> list[str]:
    return [s.strip() for s in spec.split(",") if s.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m train.prompt_tune", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--init", help="student checkpoint directory (frozen)")
    ap.add_argument("--tasks", help=f"comma-separated: built-in ({', '.join(BUILTIN_TASKS)}) or folders")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="instead of tuning: one table from the --json files of runs that split the seeds")
    ap.add_argument("--task-root", default=None, help=f"where built-in tasks live (default {default_task_root()})")
    ap.add_argument("--shots", default="1,4,16", help="K per class, comma-separated")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--method", default="text", choices=METHODS)
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated from {', '.join(MODES)}")
    ap.add_argument("--source-tasks", default=None, help="source tasks of mt-source/mt-init (default: leave-one-out)")
    ap.add_argument("--source-shots", type=int, default=16)
    ap.add_argument("--source-steps", type=int, default=None, help="default: --steps per source task")
    g = ap.add_argument_group("prompt")
    g.add_argument("--context", default="per-lang", choices=CONTEXTS, help="one context per language or shared")
    g.add_argument("--ctx-init", default="template", choices=INITS,
                   help=f"template: start at {DEFAULT_TEMPLATES}; random: --n-ctx vectors before the name")
    g.add_argument("--n-ctx", type=int, default=8)
    g.add_argument("--pad", type=int, default=8, help="visual/unified: padding prompt width in pixels")
    g = ap.add_argument_group("optimization")
    d = FitConfig()
    g.add_argument("--steps", type=int, default=d.steps, help="steps per task (a joint fit: this times the tasks)")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--visual-lr", type=float, default=d.visual_lr)
    g.add_argument("--logit-scale", type=float, default=None, help="default: the student's own")
    g.add_argument("--batch", type=int, default=d.batch, help="images per step (visual, unified)")
    ap.add_argument("--langs", default="en,zh")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--feature-cache", default=None, help="image-embedding cache (default <DCCLIP_CACHE>/prompt_features)")
    ap.add_argument("--json", default=None, help="write every figure and the summary here")
    ap.add_argument("--markdown", default=None, help="write the table here")
    ap.add_argument("--save", default=None, help="save every tuned prompt under this folder")
    return ap


class Runner:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.shots, self.seeds = _ints(args.shots, "shots"), _ints(args.seeds, "seeds")
        self.modes = _names(args.modes)
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise UsageError(f"--modes {bad}: accepted {', '.join(MODES)}")
        self.langs = tuple(_names(args.langs))
        if any(lang not in LANGS for lang in self.langs):
            raise UsageError(f"--langs {args.langs!r}: accepted {', '.join(LANGS)}")
        self.model, self.tokenizer = load_student(args.init)
        self.model.to(args.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        target_names = _names(args.tasks)
        source_names = _names(args.source_tasks) if args.source_tasks else []
        paths = ensure_tasks(list(dict.fromkeys(target_names + source_names)), args.task_root)
        cache = Path(args.feature_cache) if args.feature_cache else None
        self.data = {}
        for name, path in paths.items():
            self.data[name] = load_task_data(self.model, open_task(name, path), cache, keep_pixels=args.method != "text")
        self.targets = [Path(t).name if t not in BUILTIN_TASKS else t for t in target_names]
        self.sources = [Path(t).name if t not in BUILTIN_TASKS else t for t in source_names]
        if any(m in self.modes for m in ("mt-source", "mt-init")) and len(self.targets) + len(self.sources) < 2:
            raise UsageError("mt-source and mt-init need source tasks: give --source-tasks or two or more --tasks")
        self.rows: list[dict] = []
        self.source_prompts: dict[tuple, Prompt] = {}

    # ---- pieces
    def spec(self) -> PromptSpec:
        a = self.args
        return PromptSpec(method=a.method, context=a.context, init=a.ctx_init, n_ctx=a.n_ctx, pad=a.pad,
                          image_size=self.model.cfg.image.image_size).validate()

    def fit_config(self, steps: int, seed: int) -> FitConfig:
        a = self.args
        return FitConfig(steps=steps, lr=a.lr, visual_lr=a.visual_lr, logit_scale=a.logit_scale, langs=self.langs,
                         batch=a.batch, seed=seed)

    def new_prompt(self, seed: int) -> Prompt:
        return Prompt(self.spec(), self.model.text, self.tokenizer, seed=seed).to(self.args.device)

    def record(self, task: str, mode: str, shots: int | None, seed: int | None, scores: dict, seconds: float = 0.0,
               prompt: Prompt | None = None, **extra) -> None:
        row = {"task": task, "mode": mode, "method": self.args.method if mode not in (ZS_TEMPLATES, ZS_CLIP8, "linear-probe") else None,
               "shots": shots, "seed": seed, **{lang: scores[lang] for lang in scores}, "seconds": round(seconds, 2), **extra}
        self.rows.append(row)
        figures = " ".join(f"{lang.upper()} {100 * v:.1f}%" for lang, v in scores.items())
        print(f"  {task:<22} {mode:<13} K={shots if shots is not None else '-':<3} seed={seed if seed is not None else '-'}  "
              f"{figures}  ({seconds:.1f} s)", flush=True)
        if prompt is not None and self.args.save:
            d = self.data[task]
            save_prompt(prompt, self.model, Path(self.args.save) / task / f"{mode}-{shots}shot-seed{seed}",
                        classes={lang: list(d.task.classes[lang]) for lang in LANGS},
                        info={"task": task, "task_root": str(d.task.root), "mode": mode, "shots": shots, "seed": seed,
                              "scores": scores, "checkpoint": str(self.args.init)})

    def source_of(self, target: str) -> list[str]:
        pool = self.sources or self.targets
        return [t for t in pool if t != target]

    def source_prompt(self, target: str, seed: int) -> Prompt:
        names = tuple(self.source_of(target))
        key = (names, seed)
        if key not in self.source_prompts:
            prompt = self.new_prompt(seed)
            steps = self.args.source_steps or self.args.steps * len(names)
            t = time.perf_counter()
            shots = [Shots.draw(self.data[n], self.args.source_shots, seed) for n in names]
            fit(prompt, self.model, self.tokenizer, shots, self.fit_config(steps, seed))
            print(f"  source prompt for {target} (seed {seed}) on {', '.join(names)}: {steps} steps, "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
            self.source_prompts[key] = prompt
        return self.source_prompts[key]

    # ---- the protocol
    def run(self) -> dict:
        t_all = self.t_all = time.perf_counter()
        for name in self.targets:
            d = self.data[name]
            print(f"{name}: {d.task.n_classes} classes, {len(d.task.train)} pool / {len(d.task.test)} test images")
            if "zero-shot" in self.modes:
                t = time.perf_counter()
                one = {lang: [DEFAULT_TEMPLATES[lang]] for lang in LANGS}
                self.record(name, ZS_TEMPLATES, None, None, zero_shot(self.model, self.tokenizer, d, one, self.langs),
                            time.perf_counter() - t)
                eight = clip_templates(8)
                if eight is not None:
                    t = time.perf_counter()
                    self.record(name, ZS_CLIP8, None, None, zero_shot(self.model, self.tokenizer, d, eight, self.langs),
                                time.perf_counter() - t)
        for seed in self.seeds:
            for k in self.shots:
                for name in self.targets:
                    d = self.data[name]
                    shots = Shots.draw(d, k, seed)
                    if "linear-probe" in self.modes:
                        t = time.perf_counter()
                        acc = linear_probe(shots, d)
                        self.record(name, "linear-probe", k, seed, {lang: acc for lang in self.langs}, time.perf_counter() - t)
                    if "single" in self.modes:
                        prompt = self.new_prompt(seed)
                        r = fit(prompt, self.model, self.tokenizer, [shots], self.fit_config(self.args.steps, seed))
                        self.record(name, "single", k, seed, evaluate(prompt, self.model, self.tokenizer, d, self.langs),
                                    r["seconds"], prompt)
                    if "mt-source" in self.modes and k == self.shots[0]:  # no target data: once per seed
                        src = self.source_prompt(name, seed)
                        self.record(name, "mt-source", 0, seed, evaluate(src, self.model, self.tokenizer, d, self.langs))
                    if "mt-init" in self.modes:
                        prompt = copy.deepcopy(self.source_prompt(name, seed))
                        r = fit(prompt, self.model, self.tokenizer, [shots], self.fit_config(self.args.steps, seed))
                        self.record(name, "mt-init", k, seed, evaluate(prompt, self.model, self.tokenizer, d, self.langs),
                                    r["seconds"], prompt, source_tasks=self.source_of(name))
                self.flush()
                if "mt-joint" in self.modes and len(self.targets) > 1:
                    prompt = self.new_prompt(seed)
                    shots = [Shots.draw(self.data[n], k, seed) for n in self.targets]
                    r = fit(prompt, self.model, self.tokenizer, shots,
                            self.fit_config(self.args.steps * len(self.targets), seed))
                    for name in self.targets:
                        self.record(name, "mt-joint", k, seed,
                                    evaluate(prompt, self.model, self.tokenizer, self.data[name], self.langs),
                                    r["seconds"] / len(self.targets), prompt, joint_tasks=self.targets)
                self.flush()
        return self.result(t_all)

    def flush(self) -> None:
        """The figures so far into --json (atomically), so a run cut short still leaves them."""
        if self.args.json:
            Path(self.args.json).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.args.json, json.dumps({**self.result(self.t_all), "partial": True},
                                                         indent=1, ensure_ascii=False) + "\n")

    def result(self, t_all: float) -> dict:
        summary = summarize(self.rows, self.langs)
        return {"config": {k: v for k, v in vars(self.args).items()}, "langs": list(self.langs),
                "student": self.model.cfg.name, "logit_scale": float(self.model.scale()) if self.args.logit_scale is None
                else self.args.logit_scale,
                "tasks": {n: {"classes": self.data[n].task.n_classes, "pool_images": len(self.data[n].task.train),
                              "test_images": len(self.data[n].task.test), "root": str(self.data[n].task.root)}
                          for n in self.targets},
                "rows": self.rows, "summary": summary, "seconds": round(time.perf_counter() - t_all, 1)}


def clip_templates(n: int) -> dict[str, list[str]] | None:
    """The first n CLIP templates per language, or None without the bilingual-labels asset."""
    from dcclip_mobile.assets import assets_present
    from dcclip_mobile.data.labels import templates

    if not assets_present("bilingual-labels"):
        return None
    return {lang: templates(lang)[:n] for lang in LANGS}


# ------------------------------------------------------------------------------------------ the table
def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarize(rows: list[dict], langs) -> dict:
    """{"per_task": {task: {mode: {K: {lang: {mean, sd, n}}}}}, "mean": {mode: {K: {lang: {mean, sd, n}}}}}:
    per task the mean and sample sd over seeds; "mean" averages the tasks within each seed first, so its sd is
    the spread of the task-mean over seeds. K is "all" for the zero-shot rows and 0 for mt-source."""
    per: dict = {}
    for r in rows:
        k = "all" if r["shots"] is None else str(r["shots"])
        for lang in langs:
            per.setdefault(r["task"], {}).setdefault(r["mode"], {}).setdefault(k, {}).setdefault(lang, {})[r["seed"]] = r[lang]
    out = {"per_task": {}, "mean": {}}
    for task, modes in per.items():
        for mode, ks in modes.items():
            for k, by_lang in ks.items():
                for lang, by_seed in by_lang.items():
                    out["per_task"].setdefault(task, {}).setdefault(mode, {}).setdefault(k, {})[lang] = _stats(list(by_seed.values()))
    tasks = list(per)
    for mode in {m for t in per.values() for m in t}:
        for k in {k for t in per.values() for k in t.get(mode, {})}:
            for lang in langs:
                if not all(k in per[t].get(mode, {}) for t in tasks):
                    continue
                seeds = set.intersection(*(set(per[t][mode][k][lang]) for t in tasks))
                means = [statistics.fmean(per[t][mode][k][lang][s] for t in tasks) for s in sorted(seeds, key=str)]
                if means:
                    out["mean"].setdefault(mode, {}).setdefault(k, {})[lang] = _stats(means)
    return out


def _cell(s: dict | None) -> str:
    if s is None:
        return "–"
    if s["n"] > 1:
        return f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f}"
    return f"{100 * s['mean']:.1f}"


def markdown_table(result: dict) -> str:
    """Task x mode rows, K x language columns: top-1 %, mean ± sd over seeds; then the mean over tasks."""
    langs, summary = result["langs"], result["summary"]
    ks = sorted({r["shots"] for r in result["rows"] if r["shots"]}, key=int)
    order = [m for m in (ZS_TEMPLATES, ZS_CLIP8, "linear-probe", "mt-source", "single", "mt-init", "mt-joint")
             if any(r["mode"] == m for r in result["rows"])]
    head = ["task", "mode"] + [f"{k}-shot {lang.upper()}" for k in ks for lang in langs]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "--:|" * (len(head) - 2)]

    def row(label: str, mode: str, table: dict) -> str:
        cells = []
        for k in ks:
            key = "all" if mode in (ZS_TEMPLATES, ZS_CLIP8) else ("0" if mode == "mt-source" else str(k))
            for lang in langs:
                cells.append(_cell(table.get(mode, {}).get(key, {}).get(lang)))
        return f"| {label} | {MODE_LABELS[mode]} | " + " | ".join(cells) + " |"

    for task in result["tasks"]:
        for mode in order:
            lines.append(row(task, mode, summary["per_task"].get(task, {})))
    for mode in order:
        lines.append(row(f"**mean ({len(result['tasks'])} tasks)**", mode, summary["mean"]))
    notes = [f"\nTop-1 % on each task's test split, mean ± sample sd over seeds {result['config']['seeds']}; the mean "
             "over tasks is averaged within each seed first. Method: " + result["config"]["method"] +
             f"; logit scale {result['logit_scale']:.2f}. Zero-shot rows do not depend on K; the source prompt row "
             "uses no target data."]
    return "\n".join(lines + notes) + "\n"


def merge_results(paths: list[str]) -> dict:
    """One result from runs of the same protocol that split the seeds (or tasks): rows pooled, the summary redone.
    Runs must agree on the method, student and languages; a figure given twice is an error."""
    results = []
    for p in paths:
        try:
            results.append(json.loads(Path(p).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"--merge {p!r}: {e}") from None
    first = results[0]
    for p, r in zip(paths, results):
        for key in ("student", "langs", "logit_scale"):
            if r.get(key) != first.get(key):
                raise UsageError(f"--merge: {p!r} has {key} {r.get(key)!r}, {paths[0]!r} has {first.get(key)!r}")
        if r["config"]["method"] != first["config"]["method"]:
            raise UsageError(f"--merge: {p!r} tuned {r['config']['method']!r} prompts, {paths[0]!r} "
                             f"{first['config']['method']!r}")
    rows, seen = [], set()
    for r in results:
        for row in r["rows"]:
            key = (row["task"], row["mode"], row["shots"], row["seed"])
            if key in seen:
                if row["seed"] is None:  # the zero-shot rows: every run has them, and they must agree
                    continue
                raise UsageError(f"--merge: {key} appears twice")
            seen.add(key)
            rows.append(row)
    seeds = sorted({row["seed"] for row in rows if row["seed"] is not None})
    tasks = {}
    for r in results:
        tasks.update(r["tasks"])
    return {**first, "config": {**first["config"], "seeds": ",".join(map(str, seeds)), "merged_from": list(paths)},
            "tasks": tasks, "rows": rows, "summary": summarize(rows, first["langs"]),
            "seconds": sum(r["seconds"] for r in results)}


def run(args: argparse.Namespace) -> str:
    torch.set_num_threads(max(1, args.threads))
    if args.merge:
        result = merge_results(args.merge)
    else:
        if not args.init or not args.tasks:
            raise UsageError("--init and --tasks are required (unless --merge)")
        result = Runner(args).run()
    table = markdown_table(result)
    print("\n" + table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps({**result, "markdown": table}, indent=1, ensure_ascii=False) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.markdown, table)
    return f"{len(result['rows'])} figures in {result['seconds']:.0f} s" + (f"; {args.json}" if args.json else "")


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), lambda args: print(f"prompt tuning: {run(args)}"), argv)


if __name__ == "__main__":
    sys.exit(main())
