"""TextStudent: a small pre-norm transformer over bilingual SentencePiece ids.

Written for the phone, not for the paper: attention is plain matmul + softmax with a finite
additive mask (scaled_dot_product_attention lowers through a "safe softmax" expansion that falls
outside XNNPACK, and a -inf mask wrecks static int8 quantization, see docs/design.md), pooling is a
masked mean (no argmax over int64 ids, a Core ML trap), and every shape is fixed by the config.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import TextStudentConfig

# Finite, so a quantizer that observes `scores + mask` sees a bounded range; large enough that
# exp() of a masked score underflows to exactly 0 in fp32 and fp16.
MASK_VALUE = -1e4


class RMSNorm(nn.Module):
    """RMSNorm whose mean over channels is a matmul with a constant 1/d vector.

    Why not x.pow(2).mean(-1): the executorch 1.5.1 XNNPACK partitioner takes neither nn.LayerNorm nor a
    mean over the last dim, so either splits the graph twice per block; a linear it takes (bench/).
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("mean_weight", torch.full((1, dim), 1.0 / dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = nn.functional.linear(x * x, self.mean_weight)
        return x * torch.rsqrt(mean_square + self.eps) * self.weight


def make_norm(kind: str, dim: int) -> nn.Module:
    return RMSNorm(dim) if kind == "rms" else nn.LayerNorm(dim)


class Attention(nn.Module):
    """Multi-head attention as 3-D bmm + softmax over [B*heads, L, L].

    Separate q/k/v projections and 3-D bmm, because a fused qkv split (select) and 4-D matmul
    broadcasting (expand) are ops the XNNPACK partitioner leaves outside, each splitting the graph.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).transpose(1, 2).reshape(b * self.heads, n, self.head_dim)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        """x [B,L,W]; additive_mask [B,1,L]: 0 for tokens, MASK_VALUE for padding."""
        b, n, w = x.shape
        q = self._split_heads(self.q(x) * (self.head_dim ** -0.5))
        k = self._split_heads(self.k(x))
        v = self._split_heads(self.v(x))
        scores = torch.bmm(q, k.transpose(1, 2)).reshape(b, self.heads * n, n)
        attn = torch.softmax(scores + additive_mask, dim=-1).reshape(b * self.heads, n, n)
        y = torch.bmm(attn, v).reshape(b, self.heads, n, self.head_dim).transpose(1, 2).reshape(b, n, w)
        return self.out(y)


class Block(nn.Module):
    def __init__(self, cfg: TextStudentConfig):
        super().__init__()
        hidden = int(cfg.width * cfg.mlp_ratio)
        self.norm1 = make_norm(cfg.norm, cfg.width)
        self.attn = Attention(cfg.width, cfg.heads)
        self.norm2 = make_norm(cfg.norm, cfg.width)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, cfg.width))

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), additive_mask)
        return x + self.mlp(self.norm2(x))


def check_text_inputs(input_ids: object, attention_mask: object, context_length: int) -> None:
    # Shapes are static under torch.export, so this check costs nothing in an exported graph.
    expected = f"an integer tensor [batch, {context_length}] (use BilingualTokenizer to make them)"
    for name, t in (("input_ids", input_ids), ("attention_mask", attention_mask)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be {expected}, got {type(t).__name__}")
        if t.ndim != 2 or t.shape[1] != context_length:
            raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {expected}")
        if t.is_floating_point():
            raise ValueError(f"{name} has dtype {t.dtype}; expected {expected}")
    if input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} differ in shape")


class TextStudent(nn.Module):
    """input_ids int64 [B,L], attention_mask int64 [B,L] (1 = token, 0 = pad)
    -> (pooled [B,width], embedding [B,D])."""

    def __init__(self, cfg: TextStudentConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.final_norm = make_norm(cfg.norm, cfg.width)
        self.proj = nn.Linear(cfg.width, embed_dim, bias=False)
        self.feature_dim = cfg.width
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)
        nn.init.normal_(self.proj.weight, std=cfg.width ** -0.5)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_text_inputs(input_ids, attention_mask, self.cfg.context_length)
        return self._encode(input_ids, attention_mask)

    def forward_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() on the first n <= context_length positions ([B, n] inputs): the same outputs whenever every
        token lies within them (pads are masked and positions absolute). A phone's text encoder is exported at a
        few such lengths (length buckets), so a 10-token query does not pay for 64 positions."""
        n = input_ids.shape[-1] if isinstance(input_ids, torch.Tensor) and input_ids.ndim == 2 else -1
        if not 1 <= n <= self.cfg.context_length:
            check_text_inputs(input_ids, attention_mask, self.cfg.context_length)  # says what was expected
        check_text_inputs(input_ids, attention_mask, n)
        return self._encode(input_ids, attention_mask)

    def forward_trimmed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, groups: int = 4
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same outputs as forward (training uses this), computed without pad columns: the rows run in
        `groups` sub-batches of similar length, each trimmed to its own longest member. Pads are masked out of
        attention and pooling, positions are absolute and nothing is computed across rows, so this changes
        nothing but the cost: the demo's prompts average 10 of 64 tokens (~3x less), and a batch mixing them
        with 64-token sentences would otherwise run every row at 64 (a 512-text step of small-lite's text
        tower: 2.3-2.7 s grouped, 8.9-9.7 s as one batch)."""
        check_text_inputs(input_ids, attention_mask, self.cfg.context_length)
        n = len(input_ids)
        if groups <= 1 or n < 2 * groups:
            return self._encode_trimmed(input_ids, attention_mask)
        order = attention_mask.sum(1).argsort(stable=True)
        parts = [self._encode_trimmed(input_ids[idx], attention_mask[idx]) for idx in order.chunk(groups)]
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n, device=order.device)
        return torch.cat([p for p, _ in parts])[inverse], torch.cat([e for _, e in parts])[inverse]

    def _encode_trimmed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        used = attention_mask.bool().any(0).nonzero()
        keep = int(used.max()) + 1 if len(used) else 1  # up to the last column any row uses
        return self._encode(input_ids[:, :keep], attention_mask[:, :keep])

    def forward_embeddings(self, token_embeddings: torch.Tensor, attention_mask: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() from token embeddings [B,n,width] instead of ids (n <= context_length; positions are
        added here): prompt tuning puts learned vectors where template words' embeddings would be."""
        if token_embeddings.ndim != 3 or token_embeddings.shape[-1] != self.cfg.width \
                or not 1 <= token_embeddings.shape[1] <= self.cfg.context_length:
            raise ValueError(f"token_embeddings has shape {tuple(token_embeddings.shape)}; expected "
                             f"[batch, <= {self.cfg.context_length}, {self.cfg.width}]")
        if tuple(attention_mask.shape) != tuple(token_embeddings.shape[:2]):
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match token_embeddings "
                             f"{tuple(token_embeddings.shape[:2])}")
        return self._encode_embedded(token_embeddings, attention_mask)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode_embedded(self.token_embedding(input_ids), attention_mask)

    def _encode_embedded(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = attention_mask.to(torch.float32)  # [B,L]
        b, n = mask.shape
        full = n == self.cfg.context_length  # a Python branch: the exported (full-length) graph has no slices
        positions = self.position_embedding if full else self.position_embedding[:n]
        x = tokens + positions
        additive_mask = ((1.0 - mask) * MASK_VALUE).reshape(b, 1, n)  # broadcast over heads and queries
        for block in self.blocks:
            x = block(x, additive_mask)
        x = self.final_norm(x)
        # masked mean as matmuls (sum() is not delegated): counts = mask . mask (= the sum of a 0/1 mask, and
        # unlike mask @ ones it needs no constant, which XNNPACK leaves outside once sliced to a length bucket)
        m = mask.reshape(b, 1, n)
        counts = torch.bmm(m, m.transpose(1, 2)).reshape(b, 1).clamp(min=1.0)  # [B,1]
        pooled = torch.bmm((mask / counts).reshape(b, 1, n), x).reshape(b, -1)
        return pooled, self.proj(pooled)
