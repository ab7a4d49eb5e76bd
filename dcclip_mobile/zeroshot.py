"""Zero-shot classification, the same way for a teacher and a student: class names x templates per
language -> one normalized prototype per class; top-1/top-5 of image embeddings against them.

Anything that can embed is evaluated through one function, `evaluate_zero_shot`, given a pair of
encoders: `encode_images(pixels [B,3,S,S]) -> [B,D]` and `encode_texts(list[str]) -> [B,D]`.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data.labels import LANGS, prompts
from .data.preprocess import ImagePreprocess, preprocess_batch

EncodeTexts = Callable[[list[str]], torch.Tensor]
EncodeImages = Callable[[torch.Tensor], torch.Tensor]


class LabeledImages(Protocol):
    """What a zero-shot set gives: FashionMNIST and ElevaterFolder both are one."""
    labels: Sequence[int]
    classes: dict[str, list[str]]  # {"en": [...], "zh": [...]}, index = label
    dataset_id: str

    def __len__(self) -> int: ...

    def image(self, i: int): ...


def class_prototypes(encode_texts: EncodeTexts, classnames: Sequence[str], lang: str,
                     n_templates: int | None = None, templates: Sequence[str] | None = None) -> torch.Tensor:
    """[C, D]: the normalized mean of each class's normalized prompt embeddings. The prompts are the class
    names in `templates` ("{c}" marks the name) or, by default, the 80 CLIP templates of `lang` (an asset)."""
    if templates is None:
        ps = prompts(list(classnames), lang, n_templates)
    else:
        if not templates or any("{c}" not in t for t in templates):
            raise ValueError(f"templates must be non-empty and each hold '{{c}}' for the class name: {list(templates)!r}")
        ps = [[t.replace("{c}", name) for t in list(templates)[:n_templates]] for name in classnames]
    return prompt_prototypes(encode_texts([p for row in ps for p in row]), len(ps[0]))


def prompt_prototypes(prompt_embeddings: torch.Tensor, n_templates: int) -> torch.Tensor:
    """[C*k, D] class-major prompt embeddings -> [C, D]: each class the normalized mean of its k unit-length
    prompt embeddings. The one rule of the evaluator, the exporter's class embeddings and the report."""
    emb = F.normalize(prompt_embeddings.float(), dim=-1)
    return F.normalize(emb.reshape(-1, n_templates, emb.shape[-1]).mean(1), dim=-1)


def topk_accuracy(image_emb: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor,
                  ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    if len(image_emb) != len(labels):
        raise ValueError(f"{len(image_emb)} image embeddings but {len(labels)} labels")
    ks = [k for k in ks if k <= len(prototypes)]  # top-5 of a 3-class set is meaningless
    logits = F.normalize(image_emb.float(), dim=-1) @ prototypes.T
    top = logits.topk(max(ks), dim=-1).indices
    hit = top == torch.as_tensor(labels)[:, None]
    return {f"top{k}": float(hit[:, :k].any(1).float().mean()) for k in ks}


def zero_shot(image_emb: torch.Tensor, labels: torch.Tensor, encode_texts: EncodeTexts,
              classnames: dict[str, Sequence[str]], n_templates: int | None = None,
              templates: dict[str, Sequence[str]] | None = None) -> dict[str, dict[str, float]]:
    """{lang: {"top1", "top5"}} for every language in `classnames`."""
    return {lang: topk_accuracy(image_emb, class_prototypes(encode_texts, names, lang, n_templates,
                                                            None if templates is None else templates[lang]), labels)
            for lang, names in classnames.items()}


def parse_langs(spec: str | Sequence[str]) -> list[str]:
    """'en,zh' -> ['en', 'zh'], each checked."""
    langs = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    bad = [lang for lang in langs if lang not in LANGS]
    if bad or not langs:
        raise ValueError(f"languages {spec!r}: {bad or 'none given'}; accepted: {', '.join(LANGS)} (comma-separated)")
    return langs


@torch.inference_mode()
def embed_images(encode_images: EncodeImages, source: LabeledImages, pre: ImagePreprocess,
                 batch_size: int = 64, desc: str = "images") -> torch.Tensor:
    """[N, D] float32: every image of `source`, preprocessed by `pre`, through encode_images."""
    out = []
    for i in tqdm(range(0, len(source), batch_size), desc=desc, unit="batch", disable=len(source) <= batch_size):
        batch = preprocess_batch([source.image(j) for j in range(i, min(len(source), i + batch_size))], pre)
        out.append(encode_images(batch).float())
    return torch.cat(out)


def evaluate_zero_shot(encode_texts: EncodeTexts, source: LabeledImages, langs: Sequence[str] = LANGS, *,
                       encode_images: EncodeImages | None = None, pre: ImagePreprocess | None = None,
                       image_embeddings: torch.Tensor | None = None, n_templates: int | None = None,
                       templates: dict[str, Sequence[str]] | None = None, batch_size: int = 64) -> dict:
    """{"en": {"top1", "top5"}, "zh": {...}, "n": N}: zero-shot accuracy on `source` per language.

    Give either `encode_images` with the preprocessing `pre` it expects, or precomputed (e.g. cached)
    `image_embeddings` [N, D] in the source's order. `templates` ({lang: ["a photo of a {c}.", ..]})
    replaces the 80 CLIP templates per language (which need the bilingual-labels asset)."""
    langs = parse_langs(langs)
    if image_embeddings is None:
        if encode_images is None or pre is None:
            raise ValueError("evaluate_zero_shot needs encode_images and pre, or image_embeddings")
        image_embeddings = embed_images(encode_images, source, pre, batch_size, desc=f"embed {source.dataset_id}")
    missing = [lang for lang in langs if lang not in source.classes]
    if missing:
        raise ValueError(f"{source.dataset_id} has no class names in {missing}; it has {sorted(source.classes)}")
    acc = zero_shot(image_embeddings, torch.as_tensor(source.labels), encode_texts,
                    {lang: source.classes[lang] for lang in langs}, n_templates, templates)
    return {**acc, "n": len(source)}


def student_text_encoder(model, tokenizer, batch_size: int = 256) -> EncodeTexts:
    """Normalized student text embeddings, computed without pad columns (TextStudent.forward_trimmed: the same
    outputs as the full-context forward; prompts average ~10 of 64 tokens)."""
    @torch.inference_mode()
    def encode(texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            t = tokenizer(texts[i:i + batch_size])
            out.append(F.normalize(model.text.forward_trimmed(t["input_ids"], t["attention_mask"])[1], dim=-1))
        return torch.cat(out)
    return encode


@torch.inference_mode()
def student_image_embeddings(model, pixels: Callable[[int, int], torch.Tensor], n: int,
                             batch_size: int = 128) -> torch.Tensor:
    """pixels(start, stop) -> preprocessed [stop-start, 3, S, S]; returns normalized [n, D]."""
    return torch.cat([model.encode_image(pixels(i, min(n, i + batch_size))) for i in range(0, n, batch_size)])
