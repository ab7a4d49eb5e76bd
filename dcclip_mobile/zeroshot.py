"""Zero-shot classification, the same way for a teacher and a student: class names x templates per
language -> one normalized prototype per class; top-1/top-5 of image embeddings against them."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .data.labels import prompts

EncodeTexts = Callable[[list[str]], torch.Tensor]


def class_prototypes(encode_texts: EncodeTexts, classnames: Sequence[str], lang: str,
                     n_templates: int | None = None) -> torch.Tensor:
    """[C, D]: the normalized mean of each class's normalized prompt embeddings."""
    ps = prompts(list(classnames), lang, n_templates)
    emb = F.normalize(encode_texts([p for row in ps for p in row]).float(), dim=-1)
    return F.normalize(emb.reshape(len(ps), len(ps[0]), -1).mean(1), dim=-1)


def topk_accuracy(image_emb: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor,
                  ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    logits = F.normalize(image_emb.float(), dim=-1) @ prototypes.T
    top = logits.topk(max(ks), dim=-1).indices
    hit = top == torch.as_tensor(labels)[:, None]
    return {f"top{k}": float(hit[:, :k].any(1).float().mean()) for k in ks}


def zero_shot(image_emb: torch.Tensor, labels: torch.Tensor, encode_texts: EncodeTexts,
              classnames: dict[str, Sequence[str]], n_templates: int | None = None) -> dict[str, dict[str, float]]:
    """{lang: {"top1", "top5"}} for every language in `classnames`."""
    return {lang: topk_accuracy(image_emb, class_prototypes(encode_texts, names, lang, n_templates), labels)
            for lang, names in classnames.items()}


def student_text_encoder(model, tokenizer, batch_size: int = 256) -> EncodeTexts:
    @torch.inference_mode()
    def encode(texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            t = tokenizer(texts[i:i + batch_size])
            out.append(model.encode_text(t["input_ids"], t["attention_mask"]))
        return torch.cat(out)
    return encode


@torch.inference_mode()
def student_image_embeddings(model, pixels: Callable[[int, int], torch.Tensor], n: int,
                             batch_size: int = 128) -> torch.Tensor:
    """pixels(start, stop) -> preprocessed [stop-start, 3, S, S]; returns normalized [n, D]."""
    return torch.cat([model.encode_image(pixels(i, min(n, i + batch_size))) for i in range(0, n, batch_size)])
