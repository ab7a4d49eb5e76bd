"""Architectures a user would pick instead of a dcclip-mobile student, rebuilt from published dimensions
(random weights: these exist to be timed and sized, not to be accurate).

- AltCLIP, the teacher: ViT-L/14 image tower + XLM-R-large text tower, through transformers' AltCLIPModel.
- TinyCLIP ViT-8M/16 + Text-3M (open_clip's config): a 10-layer, 256-wide ViT at patch 16 and a 3-layer,
  256-wide text transformer over CLIP's 49,408-token BPE vocabulary, 77 tokens.

The TinyCLIP towers use plain matmul + softmax attention, the form that lowers best (docs/design.md); the same
weights written with nn.MultiheadAttention lower to about twice the latency.
"""
from __future__ import annotations

import torch
from torch import nn


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, causal: bool, context: int):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        mask = torch.full((context, context), -1e4).triu(1) if causal else torch.zeros(context, context)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5 + self.mask, dim=-1)
        x = x + self.out((att @ v).transpose(1, 2).reshape(b, n, w))
        return x + self.mlp(self.ln2(x))


class TinyCLIPImage(nn.Module):
    """ViT-8M/16: 224 px, patch 16, width 256, 10 layers, 4 heads, embed 256."""

    def __init__(self, image_size=224, patch=16, width=256, layers=10, heads=4, embed_dim=256):
        super().__init__()
        n = (image_size // patch) ** 2 + 1
        self.patch = nn.Conv2d(3, width, patch, patch, bias=False)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, n, width) * 0.02)
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.blocks = nn.Sequential(*[_Block(width, heads, False, n) for _ in range(layers)])
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.blocks(self.ln_pre(x))
        return self.proj(self.ln_post(x[:, 0]))


class TinyCLIPText(nn.Module):
    """Text-3M: 77 tokens, vocab 49408, width 256, 3 layers, 4 heads, causal, embed 256."""

    def __init__(self, vocab=49408, context=77, width=256, layers=3, heads=4, embed_dim=256):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(context, width) * 0.01)
        self.blocks = nn.Sequential(*[_Block(width, heads, True, context) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, input_ids: torch.Tensor, eos_onehot: torch.Tensor) -> torch.Tensor:
        # CLIP pools at the EOT token with argmax over ids; a one-hot of its position (made on the host)
        # keeps that out of the graph, the same courtesy the student's mask pooling gets.
        x = self.ln(self.blocks(self.tok(input_ids) + self.pos))
        return self.proj((eos_onehot[:, :, None] * x).sum(1))


def tinyclip_inputs(batch: int = 1) -> dict[str, tuple]:
    ids = torch.randint(1, 49407, (batch, 77))
    onehot = torch.zeros(batch, 77)
    onehot[:, 20] = 1.0
    return {"image": (torch.randn(batch, 3, 224, 224),), "text": (ids, onehot)}


def altclip_towers():
    """AltCLIP's towers at their real sizes (ViT-L/14, XLM-R-large), random weights, eval mode."""
    from transformers import AltCLIPConfig, AltCLIPModel

    cfg = AltCLIPConfig(
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                           num_attention_heads=16, patch_size=14, image_size=224, projection_dim=768),
        text_config=dict(vocab_size=250002, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                         num_attention_heads=16, max_position_embeddings=514, type_vocab_size=1,
                         pad_token_id=1, project_dim=768),
        projection_dim=768)
    return AltCLIPModel(cfg).eval()
