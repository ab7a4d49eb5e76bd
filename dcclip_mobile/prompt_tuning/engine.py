"""Fitting and scoring prompts on few-shot tasks, one task or several at once (MVLPT's multitask training).

The towers stay frozen (eval mode, BatchNorm statistics included). A text prompt trains on image embeddings
computed once per task split and cached on disk, so a step is one pass of the label sets through the text
tower; a visual or unified prompt runs the image tower on a batch of shots each step. Loss: cross-entropy
of logit_scale * cos(image, class) over the task's classes, averaged over the languages trained; in a
multitask fit each step draws one task (a seeded order that visits every task once per round), as MVLPT
samples a batch from one task per step.
"""
from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..assets import cache_dir
from ..atomic import atomic_write_bytes
from ..data.preprocess import ImagePreprocess, normalize_pixels, preprocess_batch, resize_and_crop, to_rgb
from ..data.tasks import Task, sample_shots
from ..models import DCCLIPStudent
from ..tokenizer import BilingualTokenizer
from ..zeroshot import class_prototypes
from .prompts import LANGS, Prompt, prompted_image_embeddings


def tower_fingerprint(module: torch.nn.Module) -> str:
    """A hash of a tower's weights and buffers: keys its cached embeddings."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def prompt_feature_cache() -> Path:
    return cache_dir() / "prompt_features"


class PixelCache:
    """Preprocessed images of one source, kept as the resized uint8 crops (a quarter of float32's memory) and
    normalized on the way out, so the result is exactly preprocess_batch's: a visual prompt's steps and
    evaluations decode each picture once."""

    def __init__(self, source, pre: ImagePreprocess, keep: bool = True):
        self.source, self.pre, self.keep, self.store = source, pre, keep, {}

    def __call__(self, indices: Sequence[int]) -> torch.Tensor:
        if not self.keep:
            return preprocess_batch([self.source.image(j) for j in indices], self.pre)
        out = []
        for j in indices:
            if j not in self.store:
                self.store[j] = np.asarray(resize_and_crop(to_rgb(self.source.image(j)), self.pre.size))
            out.append(normalize_pixels(self.store[j], self.pre))
        return torch.stack(out)


@torch.no_grad()
def embed_pixels(model: DCCLIPStudent, pixels: Callable[[Sequence[int]], torch.Tensor], indices: Sequence[int],
                 prompt_image: torch.Tensor | None = None, batch_size: int = 64) -> torch.Tensor:
    """[len(indices), D] unit-length embeddings of images (pixels(indices) -> preprocessed), with the visual
    prompt added when given."""
    out = []
    for i in range(0, len(indices), batch_size):
        x = pixels(indices[i:i + batch_size]).to(_device(model))
        out.append(prompted_image_embeddings(model.image, x, prompt_image))
    return torch.cat(out) if out else torch.zeros(0, model.cfg.embed_dim, device=_device(model))


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def split_features(model: DCCLIPStudent, task: Task, split: str, cache: Path | None = None, log=print) -> torch.Tensor:
    """Every image of a task split through the frozen image tower, cached under
    <cache>/<tower fingerprint>/<task>-<task fingerprint>-<split>.safetensors (written atomically)."""
    source = task.train if split == "train" else task.test
    cache = Path(cache) if cache is not None else prompt_feature_cache()
    pre = ImagePreprocess.for_student(model.cfg)
    path = cache / tower_fingerprint(model.image) / f"{task.name}-{task.fingerprint()}-{pre.key()}-{split}.safetensors"
    if path.is_file():
        emb = load_file(str(path))["embedding"]
        if emb.shape == (len(source), model.cfg.embed_dim):
            return emb.to(_device(model))
    t = time.perf_counter()
    emb = embed_pixels(model, PixelCache(source, pre, keep=False), list(range(len(source))))
    log(f"  embedded {task.name}/{split}: {len(source)} images in {time.perf_counter() - t:.1f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save as save_bytes

    atomic_write_bytes(path, save_bytes({"embedding": emb.cpu().contiguous()}))
    return emb


@dataclass
class TaskData:
    """A task with its images embedded (the train pool's and the test split's), and its pictures preprocessed
    on demand (kept in memory when keep_pixels: a visual prompt reads them every step)."""
    task: Task
    train_features: torch.Tensor
    test_features: torch.Tensor
    pre: ImagePreprocess | None = None
    keep_pixels: bool = False

    def __post_init__(self):
        self.pixels = {split: PixelCache(source, self.pre, self.keep_pixels)
                       for split, source in (("train", self.task.train), ("test", self.task.test))} if self.pre else {}

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def train_labels(self) -> torch.Tensor:
        return torch.as_tensor(self.task.train.labels, device=self.train_features.device)

    @property
    def test_labels(self) -> torch.Tensor:
        return torch.as_tensor(self.task.test.labels, device=self.test_features.device)


def load_task_data(model: DCCLIPStudent, task: Task, cache: Path | None = None, log=print,
                   keep_pixels: bool = False) -> TaskData:
    return TaskData(task, split_features(model, task, "train", cache, log), split_features(model, task, "test", cache, log),
                    ImagePreprocess.for_student(model.cfg), keep_pixels)


@dataclass
class Shots:
    """K shots per class of one task: indices into its train pool."""
    data: TaskData
    shots: int
    seed: int
    indices: list[int] = field(default_factory=list)

    @classmethod
    def draw(cls, data: TaskData, shots: int, seed: int) -> "Shots":
        return cls(data, shots, seed, sample_shots(data.task.train.labels, shots, seed, data.task.n_classes))

    @property
    def features(self) -> torch.Tensor:
        return self.data.train_features[self.indices]

    @property
    def labels(self) -> torch.Tensor:
        return self.data.train_labels[self.indices]


@dataclass
class FitConfig:
    steps: int = 100
    lr: float = 1e-2              # Adam, on every prompt parameter (chosen on emoji-activities, 4 shots, seeds 0-1)
    visual_lr: float = 0.05       # Adam, on the border values of a visual prompt (normalized-pixel units)
    logit_scale: float | None = None  # None: the student's own (exp of its learned temperature)
    langs: tuple[str, ...] = LANGS
    batch: int = 32               # images per step when the image tower runs (visual, unified)
    seed: int = 0


def _class_tokens(prompt: Prompt, model: DCCLIPStudent, tokenizer: BilingualTokenizer, data: TaskData, langs):
    return {lang: prompt.class_tokens(model.text, tokenizer, data.task.classes[lang], lang) for lang in langs}


def _param_groups(prompt: Prompt, cfg: FitConfig) -> list[dict]:
    visual = [p for n, p in prompt.named_parameters() if p.requires_grad and n == "visual"]
    other = [p for n, p in prompt.named_parameters() if p.requires_grad and n != "visual"]
    return [g for g in ({"params": other, "lr": cfg.lr}, {"params": visual, "lr": cfg.visual_lr}) if g["params"]]


def fit(prompt: Prompt, model: DCCLIPStudent, tokenizer: BilingualTokenizer, train: Sequence[Shots],
        cfg: FitConfig, log: Callable[[str], None] | None = None) -> dict:
    """Tune `prompt` in place on the shots of one or several tasks; returns {"loss": [per step], "seconds"}."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if not train:
        raise ValueError("fit needs the shots of at least one task")
    params = _param_groups(prompt, cfg)
    if not params:
        raise ValueError("the prompt has no trainable parameters")
    opt = torch.optim.Adam(params)
    scale = float(model.scale()) if cfg.logit_scale is None else float(cfg.logit_scale)
    tokens = [_class_tokens(prompt, model, tokenizer, s.data, cfg.langs) for s in train]
    rng = random.Random(f"fit:{cfg.seed}")
    order: list[int] = []
    losses, t0 = [], time.perf_counter()
    for step in range(cfg.steps):
        if not order:  # one round: every task once, in a seeded order
            order = rng.sample(range(len(train)), len(train))
        k = order.pop()
        shots, cache = train[k], {}
        if prompt.spec.has_visual:
            pick = rng.sample(range(len(shots.indices)), min(cfg.batch, len(shots.indices)))
            idx = [shots.indices[i] for i in pick]
            x = shots.data.pixels["train"](idx).to(_device(model))
            img = prompted_image_embeddings(model.image, x, prompt.image_prompt(cache))
            labels = shots.data.train_labels[idx]
        else:
            img, labels = shots.features, shots.labels
        loss = sum(F.cross_entropy(scale * img @ prompt.class_embeddings(model.text, tokens[k][lang], lang, cache).T,
                                   labels) for lang in cfg.langs) / len(cfg.langs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log and (step + 1) % max(1, cfg.steps // 4) == 0:
            log(f"    step {step + 1}/{cfg.steps} loss {sum(losses[-10:]) / len(losses[-10:]):.3f}")
    return {"loss": losses, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def evaluate(prompt: Prompt, model: DCCLIPStudent, tokenizer: BilingualTokenizer, data: TaskData,
             langs: Sequence[str] = LANGS) -> dict[str, float]:
    """{lang: top-1} on the task's test split with the prompt's class embeddings (and visual prompt)."""
    model.eval()
    cache: dict = {}
    if prompt.spec.has_visual:
        feats = embed_pixels(model, data.pixels["test"], list(range(len(data.task.test))), prompt.image_prompt(cache))
    else:
        feats = data.test_features
    out = {}
    for lang in langs:
        emb = prompt.class_embeddings(model.text, prompt.class_tokens(model.text, tokenizer, data.task.classes[lang], lang),
                                      lang, cache)
        out[lang] = float(((feats @ emb.T).argmax(1) == data.test_labels).float().mean())
    return out


@torch.no_grad()
def zero_shot(model: DCCLIPStudent, tokenizer: BilingualTokenizer, data: TaskData,
              templates: dict[str, Sequence[str]], langs: Sequence[str] = LANGS) -> dict[str, float]:
    """{lang: top-1} of the hand-written templates (zeroshot.class_prototypes: the mean over templates)."""
    dev = _device(model)

    def encode(texts: list[str]) -> torch.Tensor:
        t = tokenizer(texts)
        return model.encode_text(t["input_ids"].to(dev), t["attention_mask"].to(dev))

    out = {}
    for lang in langs:
        protos = class_prototypes(encode, data.task.classes[lang], lang, templates=templates[lang])
        out[lang] = float(((data.test_features @ protos.T).argmax(1) == data.test_labels).float().mean())
    return out


@torch.no_grad()
def linear_probe(shots: Shots, data: TaskData, steps: int = 200, lr: float = 0.05, wd: float = 1e-3) -> float:
    """Top-1 of a logistic-regression head on the frozen image embeddings (no text): the image-only baseline."""
    feats, labels = shots.features, shots.labels
    with torch.enable_grad():
        head = torch.nn.Linear(feats.shape[1], data.task.n_classes).to(feats.device)
        torch.nn.init.zeros_(head.weight)  # a convex problem: start at zero, so the figure has no seed of its own
        torch.nn.init.zeros_(head.bias)
        opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=wd)
        for _ in range(steps):
            loss = F.cross_entropy(head(feats * 10), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return float((head(data.test_features * 10).argmax(1) == data.test_labels).float().mean())
