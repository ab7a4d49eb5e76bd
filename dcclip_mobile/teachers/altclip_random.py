"""An AltCLIP with random weights, saved the way `save_pretrained` saves a real one, so the real loading path
(`AltCLIPTeacher(directory)`) runs offline: at `tiny` size for tests, at AltCLIP's own size (ViT-L/14 +
XLM-R-large, BAAI/AltCLIP's config) for GPU throughput checks that must not depend on the hub.

    python -m dcclip_mobile.teachers.altclip_random --arch large --out /tmp/altclip-random
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from ..errors import run_main

# BAAI/AltCLIP's architecture: a ViT-L/14 at 224 px and an XLM-R-large text tower, both projected to 768
ARCHS = {
    "large": dict(
        text_config=dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                         intermediate_size=4096, max_position_embeddings=514, project_dim=768, type_vocab_size=1),
        vision_config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                           image_size=224, patch_size=14, projection_dim=768),
        projection_dim=768),
    "tiny": dict(
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=80, project_dim=24),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8, projection_dim=16),
        projection_dim=16),
}
TOKENIZER_TEXTS = [
    "a photo of a dog.", "a photo of a cat.", "a blurry photo of the car.", "a drawing of a house.",
    "一张狗的照片。", "一张猫的照片。", "一张模糊的汽车的照片。", "一幅房子的画。", "mixed 中英文 text, 混合的句子.",
]


def write_random_altclip(directory: str | Path, arch: str = "tiny", texts: Sequence[str] = TOKENIZER_TEXTS,
                         seed: int = 0, device: str = "cpu") -> Path:
    """Model, tokenizer and preprocessor config in `directory`. The tokenizer is a small SentencePiece model
    trained on `texts` (its ids are a subset of the model's vocabulary, which keeps AltCLIP's full size).
    A directory already holding the model is reused."""
    import sentencepiece as spm
    from transformers import AltCLIPConfig, AltCLIPModel, CLIPImageProcessor, XLMRobertaTokenizer

    if arch not in ARCHS:
        raise ValueError(f"arch {arch!r}; accepted: {', '.join(ARCHS)}")
    d = Path(directory)
    if (d / "model.safetensors").is_file() and (d / "preprocessor_config.json").is_file():
        return d
    d.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(list(texts) * 4), model_prefix=str(d / "spm"),
                                   vocab_size=200, minloglevel=2, hard_vocab_limit=False)
    tok = XLMRobertaTokenizer(vocab_file=str(d / "spm.model"))
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in ARCHS[arch].items()}
    spec["text_config"].setdefault("vocab_size", len(tok))
    spec["text_config"]["pad_token_id"] = tok.pad_token_id
    torch.manual_seed(seed)
    with torch.device(device):  # initializing 0.9 B parameters is much quicker on a GPU
        model = AltCLIPModel(AltCLIPConfig(**spec))
    model.save_pretrained(d)
    del model
    tok.save_pretrained(d)
    size = spec["vision_config"]["image_size"]
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(d)
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dcclip_mobile.teachers.altclip_random", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="tiny", choices=sorted(ARCHS))
    ap.add_argument("--out", required=True)
    return run_main(ap, lambda args: print(write_random_altclip(args.out, args.arch)), argv)


if __name__ == "__main__":
    sys.exit(main())
