"""Folding a tuned prompt (train.prompt_tune --save) into a bundle, and scoring the bundle it gives.

    python -m lowering.export --target android --checkpoint CKPT --prompts PROMPT_DIR [--images TASK_DIR] ...
    python -m lowering.prompts score --bundle OUT/android --images TASK_DIR [--split test] [--json FILE]

A text prompt changes nothing the phone runs: its class embeddings (the label set it was tuned for, English and
Chinese, computed once by the eager student through the learned context) replace the bundle's class embeddings,
and the encoders stay what they would have been without it. The Android and iOS cores classify with the shipped
embeddings as they always did. The manifest's class_embeddings entry gains a "prompt" object that names the
prompt (its files' sha256, method, task, shots, seed); its templates stay the hand-written ones the prompt
started from, which is what an app re-embedding a new label set on the phone uses (a tuned context has no
words to re-embed with).

A visual (padding) prompt is a constant image added to the normalized input; it is folded into the image
graph as one `add` before the first convolution (PromptedImageStudent), so the image artifact, its golden
vectors and its parity gate are all of the prompted tower. A unified prompt folds both.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.errors import run_main
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.prompt_tuning.prompts import LANGS, Prompt, PromptError, PromptedImageStudent
from dcclip_mobile.prompt_tuning.store import PROMPT_JSON, PROMPT_TENSORS, load_prompt
from dcclip_mobile.tokenizer import BilingualTokenizer


@dataclass
class FoldedPrompt:
    """A saved prompt made ready for export: the student to export (its image tower prompted when the prompt has
    a visual part), the label set and the class embeddings to ship."""
    directory: Path
    info: dict
    prompt: Prompt
    model: DCCLIPStudent
    classes: dict[str, list[str]]
    embeddings: dict[str, torch.Tensor]   # {lang: [C, D]} unit length

    @property
    def templates(self) -> dict[str, list[str]]:
        return {lang: [self.prompt.spec.templates[lang]] for lang in LANGS}

    def manifest_entry(self) -> dict:
        spec = self.prompt.spec
        return {"method": spec.method, "context": spec.context, "init": spec.init,
                "files": {f: bm.file_sha256(self.directory / f) for f in (PROMPT_JSON, PROMPT_TENSORS)},
                "source": str(self.directory), "task": self.info.get("task"), "mode": self.info.get("mode"),
                "shots": self.info.get("shots"), "seed": self.info.get("seed"), "scores": self.info.get("scores"),
                "text": "class embeddings from the tuned context (eager fp32 text tower)" if spec.has_text else
                        "class embeddings from the hand-written templates",
                "image": f"padding prompt ({spec.pad} px border) added to the input inside the image graph"
                         if spec.has_visual else "unchanged"}

    def check_labels(self, labels: dict[str, list[str]] | None) -> None:
        if labels is None or any(list(labels[lang]) != self.classes[lang] for lang in LANGS):
            raise PromptError(f"the prompt in {str(self.directory)!r} was tuned for {len(self.classes['en'])} classes "
                              f"({', '.join(self.classes['en'][:4])}, ...): the bundle must ship exactly that label "
                              "set (leave --labels out, or give the same classes in the same order)")

    def write_class_embeddings(self, directory: Path, entry: dict | None) -> dict:
        """Replace the exporter's class_embeddings.json in a (staged) bundle directory with the prompt's; returns
        the manifest's class_embeddings entry."""
        if entry is None:
            raise PromptError("the bundle ships no class embeddings to replace (a pairs file without --labels)")
        path = directory / entry["file"]
        data = json.loads(path.read_text(encoding="utf-8"))
        self.check_labels({lang: data[f"labels_{lang}"] for lang in LANGS})
        for lang in LANGS:
            data[f"embeddings_{lang}"] = [[round(float(v), 7) for v in row] for row in self.embeddings[lang]]
        data["templates"] = self.templates
        data["prompt"] = self.manifest_entry()
        path.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
        return {**entry, "templates": self.templates, "prompt": data["prompt"]}


def with_image_prompt(model: DCCLIPStudent, prompt_image: torch.Tensor | None) -> DCCLIPStudent:
    """A copy of the student whose image tower adds `prompt_image` to its input (the student itself if None)."""
    if prompt_image is None:
        return model
    out = DCCLIPStudent(model.cfg)
    out.load_state_dict(model.state_dict())
    out.image = PromptedImageStudent(out.image, prompt_image)
    return out.eval()


@torch.no_grad()
def fold_prompt(directory: str | Path, model: DCCLIPStudent, tokenizer: BilingualTokenizer) -> FoldedPrompt:
    """Load a saved prompt for `model` and compute what a bundle ships with it."""
    directory = Path(directory)
    prompt, info = load_prompt(directory, model, tokenizer)
    classes = info.get("classes")
    if not classes:
        raise PromptError(f"prompt {str(directory)!r} names no label set (prompt.json 'classes'); save it with "
                          "train.prompt_tune --save, which records the task's classes")
    model = model.eval()
    embeddings = {}
    for lang in LANGS:
        tokens = prompt.class_tokens(model.text, tokenizer, classes[lang], lang)
        embeddings[lang] = prompt.class_embeddings(model.text, tokens, lang).float().cpu()
    return FoldedPrompt(directory, info, prompt, with_image_prompt(model, prompt.image_prompt()), classes, embeddings)


# ------------------------------------------------------------------------------------------ scoring a bundle
def score_bundle(bundle: str | Path, images: str, split: str = "test", limit: int | None = None) -> dict:
    """Top-1 of the bundle's default image artifact against the class embeddings it ships (what the apps
    classify with), per language, on an image source whose classes are the bundle's label set."""
    from dcclip_mobile.data.sources import open_image_source
    from dcclip_mobile.data.preprocess import ImagePreprocess, preprocess_image
    from dcclip_mobile.zeroshot import topk_accuracy

    from .report import embed_images, runner_for, shipped_class_embeddings

    bundle = Path(bundle)
    manifest = bm.load_manifest(bundle)
    source = open_image_source(images, split, limit)
    shipped = shipped_class_embeddings(bundle, manifest, source.classes, PromptError)
    art = next((a for a in manifest["artifacts"] if a["tower"] == "image" and a["default"]), None)
    run = runner_for(bundle, art, manifest) if art else None
    if run is None:
        raise PromptError(f"bundle {str(bundle)!r}: its default image artifact cannot run on this host")
    p = manifest["image"]["preprocess"]
    pre = ImagePreprocess.from_dict(p)
    pixels = torch.stack([preprocess_image(source.image(i), pre) for i in range(len(source))])
    emb = embed_images(run, pixels)
    labels = torch.as_tensor(source.labels)
    acc = {lang: topk_accuracy(emb, shipped[lang], labels)["top1"] for lang in LANGS}
    return {"bundle": str(bundle), "artifact": art["file"], "images": len(source), "dataset_id": source.dataset_id,
            "prompt": (manifest.get("class_embeddings") or {}).get("prompt"), "top1": acc, "size_bytes": art["size_bytes"],
            "latency_ms_host": art.get("latency_ms_host")}


def markdown_row(r: dict) -> str:
    p = r["prompt"] or {}
    what = f"{p['method']} prompt ({p.get('mode')}, {p.get('shots')} shots, seed {p.get('seed')})" if p else "templates"
    lat = r["latency_ms_host"]
    return (f"| {Path(r['bundle']).name}/{r['artifact']} | {what} | {r['size_bytes'] / 1e6:.2f} | "
            f"{'–' if lat is None else f'{lat:.2f}'} | {100 * r['top1']['en']:.1f}% | {100 * r['top1']['zh']:.1f}% | "
            f"{r['images']} |")


MARKDOWN_HEAD = ("| artifact | class embeddings | size MB | median ms | EN top-1 | ZH top-1 | images |\n"
                 "|---|---|--:|--:|--:|--:|--:|")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lowering.prompts", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="top-1 of a bundle (default image artifact + shipped class embeddings)")
    s.add_argument("--bundle", required=True, nargs="+", help="bundle directories (OUT/android, ...)")
    s.add_argument("--images", required=True, help="the task: an ELEVATER folder (or fashion-mnist)")
    s.add_argument("--split", default="test")
    s.add_argument("--limit", type=int, default=None)
    s.add_argument("--json", default=None)
    return run_main(ap, score, argv)


def score(args: argparse.Namespace) -> None:
    rows = [score_bundle(b, args.images, args.split, args.limit) for b in args.bundle]
    print(MARKDOWN_HEAD)
    for r in rows:
        print(markdown_row(r))
    if args.json:
        from dcclip_mobile.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
