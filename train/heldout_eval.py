"""The held-out evaluation of a teacher and its students (dcclip_mobile/heldout.py), on the sets no stage saw:

    python -m train.heldout_eval --checkpoint runs/demo/stage1/checkpoint [--json out.json]

Sets: each concrete emoji group (Animals & Nature, Food & Drink, Travel & Places, Activities, Objects) with its
seeded seen/unseen class split, and Fashion-MNIST's test split, which no stage trains on at all. The teacher
runs first (its image and prompt embeddings are cached), then each student is scored beside it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from dcclip_mobile.atomic import atomic_write_text
from dcclip_mobile.checkpoint import load_student
from dcclip_mobile.data.emoji import CLASS_GROUPS, GROUP_SLUGS, EmojiClasses
from dcclip_mobile.data.fashion_mnist import FashionMNIST, fashion_mnist_present
from dcclip_mobile.data.labels import LANGS
from dcclip_mobile.heldout import (HeldoutSet, fidelity, mean_fidelity, mean_over_sets, prototypes, public,
                                   retention_interval, retention_of_means, score, zero_shot_hits)
from dcclip_mobile.teachers import build_teacher
from dcclip_mobile.teachers.cache import cache_image_features, cache_text_features, teacher_cache_dir
from dcclip_mobile.zeroshot import embed_images, student_text_encoder
from dcclip_mobile.data.preprocess import ImagePreprocess
from dcclip_mobile.errors import run_main


def heldout_sets(seed: int = 0, views: int = 3, fashion_images: int = 2000) -> list[HeldoutSet]:
    sets = []
    for g in CLASS_GROUPS:
        src = EmojiClasses(g, "all", views, seed)
        sets.append(HeldoutSet(f"emoji-{GROUP_SLUGS[g]}", src, src.unseen))
    if fashion_images and fashion_mnist_present("test"):
        fm = FashionMNIST("test", limit=fashion_images, seed=seed)
        sets.append(HeldoutSet("fashion-mnist", fm, [True] * 10))
    return sets


class TeacherReference:
    """The teacher's embeddings and scores on every set, computed once (cached) and reused per student."""

    def __init__(self, teacher, sets: list[HeldoutSet], cache: Path, n_templates: int | None, langs=LANGS):
        t = time.perf_counter()
        self.teacher, self.sets, self.langs, self.n_templates = teacher, sets, list(langs), n_templates

        def encode_texts(texts: list[str]) -> torch.Tensor:
            return cache_text_features(teacher, texts, "heldout-prompts", cache)["embedding"].float()

        self.image, self.protos, self.results = {}, {}, {}
        for s in sets:
            self.image[s.name] = cache_image_features(teacher, s.source.image, len(s.source), s.source.dataset_id,
                                                      cache)["embedding"].float()
            self.protos[s.name] = prototypes(encode_texts, s, self.langs, n_templates)
            self.results[s.name] = score(self.image[s.name], self.protos[s.name], s)
        self.wall_s = time.perf_counter() - t
        # student image embeddings by image-tower digest: stages that keep the tower fixed embed the sets once
        self.student_images: dict[str, dict[str, torch.Tensor]] = {}

    def summary(self) -> dict:
        per_set = {name: public(r) for name, r in self.results.items()}
        return {"teacher_id": self.teacher.teacher_id, "sets": per_set, "mean": mean_over_sets(per_set, self.langs),
                "wall_s": self.wall_s}


def image_tower_digest(model) -> str:
    """sha256 over the image tower's parameters and buffers (BatchNorm statistics included), and its input size."""
    h = hashlib.sha256(str(model.cfg.image.image_size).encode())
    for name, t in model.image.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def evaluate_student_heldout(model, tokenizer, ref: TeacherReference) -> dict:
    """Seen / zero-shot / generalized per set and language, and fidelity to the teacher."""
    t = time.perf_counter()
    model.eval()
    encode_texts = student_text_encoder(model, tokenizer)
    pre = ImagePreprocess.for_student(model.cfg)
    per_set, fid, hits, teacher_hits, chances = {}, {}, {}, {}, {}
    images = ref.student_images.setdefault(image_tower_digest(model), {})
    for s in ref.sets:
        if s.name not in images:
            images[s.name] = embed_images(model.encode_image, s.source, pre, desc=f"student {s.name}")
        img = images[s.name]
        protos = prototypes(encode_texts, s, ref.langs, ref.n_templates)
        r = score(img, protos, s)
        fid[s.name] = fidelity(r, ref.results[s.name], s, img, ref.image[s.name], protos, ref.protos[s.name])
        # each tower alone beside the teacher's other one: which side loses the teacher's knowledge
        image_side, text_side = score(img, ref.protos[s.name], s), score(ref.image[s.name], protos, s)
        for lang in ref.langs:
            fid[s.name][lang]["image_tower_zero_shot"] = image_side[lang]["zero_shot"]
            fid[s.name][lang]["text_tower_zero_shot"] = text_side[lang]["zero_shot"]
        per_set[s.name] = public(r)
        hits[s.name], teacher_hits[s.name] = zero_shot_hits(r, s), zero_shot_hits(ref.results[s.name], s)
        chances[s.name] = r["chance"]["zero_shot"]
    interval = {lang: retention_interval({n: h[lang] for n, h in hits.items()},
                                         {n: h[lang] for n, h in teacher_hits.items()}, chances)
                for lang in ref.langs}
    return {"sets": per_set, "mean": mean_over_sets(per_set, ref.langs), "fidelity": fid,
            "fidelity_mean": mean_fidelity(fid, ref.langs), "retention_interval_90": interval,
            "wall_s": time.perf_counter() - t}


def markdown_rows(name: str, result: dict, langs=LANGS) -> list[str]:
    rows = []
    for set_name, r in result["sets"].items():
        cells = []
        for lang in langs:
            x = r[lang]
            seen = f"{x['seen']:.1%}" if "seen" in x else "-"
            h = f"{x['generalized']['harmonic']:.1%}" if "generalized" in x else "-"
            cells.append(f"{x['zero_shot']:.1%} | {seen} | {h}")
        rows.append(f"| {name} | {set_name} | {r['chance']['zero_shot']:.1%} | " + " | ".join(cells) + " |")
    return rows


MARKDOWN_HEADER = ("| model | set | chance | EN zero-shot | EN seen | EN H | ZH zero-shot | ZH seen | ZH H |\n"
                   "|---|---|---|---|---|---|---|---|---|")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m train.heldout_eval", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", default=[], help="student checkpoint (repeatable)")
    ap.add_argument("--teacher", default="offline")
    ap.add_argument("--templates", type=int, default=None, help="first N templates per language (default all 80)")
    ap.add_argument("--views", type=int, default=3, help="test views per emoji class")
    ap.add_argument("--fashion-images", type=int, default=2000, help="Fashion-MNIST test images (0: leave it out)")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--seed", type=int, default=0, help="the class split's seed (the one training used)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", help="write the result here")
    return ap


def run(args: argparse.Namespace) -> str:
    if args.threads:
        torch.set_num_threads(args.threads)
    ref = TeacherReference(build_teacher(args.teacher), heldout_sets(args.seed, args.views, args.fashion_images),
                           teacher_cache_dir(args.cache), args.templates)
    out = {"teacher": ref.summary(), "students": {}}
    lines = [MARKDOWN_HEADER, *markdown_rows("teacher", out["teacher"])]
    for ckpt in args.checkpoint:
        model, tokenizer = load_student(ckpt)
        r = evaluate_student_heldout(model, tokenizer, ref)
        r["retention_of_means"] = retention_of_means(r, out["teacher"])
        out["students"][ckpt] = r
        lines += markdown_rows(Path(ckpt).parent.name or ckpt, r)
        print(f"{ckpt}: retention {r['retention_of_means']} (90% interval {r['retention_interval_90']}), fidelity {r['fidelity_mean']}", flush=True)
    print("\n".join(lines))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return args.json or "printed"


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), lambda args: print(f"held-out evaluation: {run(args)}"), argv)


if __name__ == "__main__":
    sys.exit(main())
