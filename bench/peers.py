"""Architectures a user would pick instead of a dcclip-mobile student, rebuilt from published dimensions
(random weights: these exist to be timed and sized, not to be accurate).

- AltCLIP, the teacher: ViT-L/14 image tower + XLM-R-large text tower, through transformers' AltCLIPModel.
- TinyCLIP ViT-8M/16 + Text-3M (open_clip's config): a 10-layer, 256-wide ViT at patch 16 and a 3-layer,
  256-wide text transformer over CLIP's 49,408-token BPE vocabulary, 77 tokens.
- MobileCLIP-S0 (Apple, "MobileCLIP: Fast Image-Text Models through Multi-Modal Reinforced Training", CVPR
  2024; apple/ml-mobileclip): the MCi0 image encoder and the S0 text encoder, in the inference form the paper
  times, after structural reparameterization (each MobileOne / RepMixer / RepLKNet / RepCPE branch set folded
  into one conv with a bias; see MobileCLIPImage and MobileCLIPText for the dimensions and their sources).
  Parameters: MCi0 11,348,032 (published 11.4M), S0 text 42,433,024 (published 42.4M); the figures the
  repository's README table gives as "# Params (M) (img + txt)" for MobileCLIP-S0: 11.4 + 42.4.

The transformer towers use plain matmul + softmax attention, the form that lowers best (docs/design.md); the same
weights written with nn.MultiheadAttention lower to about twice the latency. They are otherwise written as their
authors wrote them, not reshaped for XNNPACK as the student is, so the XNNPACK graph splits where theirs would:
at each 4-D attention matmul (expand), fused qkv split (squeeze) and LayerNorm, and around the text embedding
and pooling sum. MobileCLIP-S0 at full size: 7 partitions (image: only its two attention blocks split it, every
conv, squeeze-excite, GELU and mean is delegated) and 23 (text); its fp32 .pte matches eager (max abs diff 9e-8
image, 1.5e-6 text).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _Block(nn.Module):
    """Pre-norm transformer layer. masked=False drops the additive mask (and its add) altogether: TinyCLIP's
    towers keep theirs (a zero mask on the image side), as they were first timed."""

    def __init__(self, width: int, heads: int, causal: bool, context: int, ffn: int | None = None,
                 masked: bool = True):
        super().__init__()
        ffn = ffn or 4 * width
        self.heads, self.head_dim = heads, width // heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, ffn), nn.GELU(), nn.Linear(ffn, width))
        self.masked = masked or causal
        mask = torch.full((context, context), -1e4).triu(1) if causal else torch.zeros(context, context)
        self.register_buffer("mask", mask if self.masked else None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) * self.head_dim ** -0.5
        att = torch.softmax(scores + self.mask if self.masked else scores, dim=-1)
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


# ---------------------------------------------------------------------------------------------- MobileCLIP-S0
# Inference form: every train-time branch set (MobileOne's conv + scale + skip branches with their BatchNorms,
# RepLKNet's 7x7 + 3x3 pair, RepMixer's x + scale * (mixer - norm), RepCPE's x + conv) is one conv with a bias,
# as the paper reparameterizes before timing. Eval-mode BatchNorms that stay separate in the released code (in
# the conv FFN after its depthwise conv, before each attention) and the layer scales are affine maps next to a
# conv or linear and are folded into it here; random weights make the folding a matter of shapes only.


def _conv(cin: int, cout: int, kernel, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A conv with a bias and 'same' padding (odd kernels), the shape every folded branch set takes."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return nn.Conv2d(cin, cout, (kh, kw), stride, (kh // 2, kw // 2), groups=groups)


class _SqueezeExcite(nn.Module):
    """Channel gates from the global mean: 1x1 reduce, ReLU, 1x1 expand, sigmoid."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, hidden, 1), nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class _ConvGELU(nn.Sequential):
    """A folded MobileOne or RepLKNet unit: conv, squeeze-excite when se_hidden, GELU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, groups: int = 1, se_hidden: int = 0):
        parts = [_conv(cin, cout, kernel, stride, groups)]
        if se_hidden:
            parts.append(_SqueezeExcite(cout, se_hidden))
        super().__init__(*parts, nn.GELU())


class _ConvFFN(nn.Module):
    """FastViT's conv FFN: depthwise 7x7 (BatchNorm folded in), 1x1 up by `ratio`, GELU, 1x1 down (the block's
    layer scale folded in)."""

    def __init__(self, width: int, ratio: int, kernel: int = 7):
        super().__init__()
        self.dw = _conv(width, width, kernel, groups=width)
        self.up, self.down = nn.Conv2d(width, ratio * width, 1), nn.Conv2d(ratio * width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(self.dw(x))))


class _RepMixerBlock(nn.Module):
    """The token mixer folds to one depthwise 3x3 conv (no residual left: the identity is inside its kernel),
    then a residual conv FFN."""

    def __init__(self, width: int, ratio: int):
        super().__init__()
        self.mixer, self.ffn = _conv(width, width, 3, groups=width), _ConvFFN(width, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mixer(x)
        return x + self.ffn(x)


class _ConvAttentionBlock(nn.Module):
    """MCi's last-stage block: residual multi-head self-attention over the H*W positions (the BatchNorm before
    it folded into qkv, which so has a bias), then a residual conv FFN."""

    def __init__(self, width: int, ratio: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = width // head_dim, head_dim
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.ffn = _ConvFFN(width, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).reshape(b, h * w, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1)
        t = self.out((att @ v).transpose(1, 2).reshape(b, h * w, c))
        x = x + t.transpose(1, 2).reshape(b, c, h, w)
        return x + self.ffn(x)


class MobileCLIPImage(nn.Module):
    """MCi0, MobileCLIP-S0's image encoder (a FastViT variant), reparameterized; 11,348,032 parameters at full
    size (published: 11.4M). Dimensions and where they come from:

    - 256 px input: mobileclip_s0.json, image_cfg.image_size.
    - Stem (MCi's convolutional stem): 3x3 stride-2 conv to widths[0], depthwise 3x3 stride 2, 1x1; each
      conv + GELU (the MobileOne default activation), so 1/4 resolution.
    - Four stages, widths 64 / 128 / 256 / 512, depths 2 / 6 / 10 / 2, FFN ratio 3: the mci0 definition
      (models/mci.py). Stages 1-3 mix tokens with RepMixer (depthwise 3x3); stage 4 with attention, head
      dim 32 (16 heads at 512), after a conditional positional encoding (RepCPE: depthwise 7x7).
    - Between stages, a downsampling patch embedding: depthwise-grouped 7x7 stride 2 (groups = input width,
      RepLKNet with a 3x3 small kernel before folding), then 1x1, each + GELU; squeeze-excite (ratio 1/4)
      on the 7x7 into stages 3 and 4 (mci0's se_downsamples).
    - Head (FastViT's conv_exp): 3x3 conv grouped by 512 to 1024 channels (cls_ratio 2) with squeeze-excite
      (ratio 1/16), GELU; global mean; projection 1024 -> 512 without bias (GlobalPool2D to the S0 config's
      embed_dim 512).
    """

    def __init__(self, image_size: int = 256, widths=(64, 128, 256, 512), depths=(2, 6, 10, 2),
                 mlp_ratio: int = 3, head_dim: int = 32, embed_dim: int = 512, se_from_stage: int = 2):
        super().__init__()
        self.image_size = image_size
        w0 = widths[0]
        body = [_ConvGELU(3, w0, 3, 2), _ConvGELU(w0, w0, 3, 2, groups=w0), _ConvGELU(w0, w0, 1)]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            if i:
                prev = widths[i - 1]
                body += [_ConvGELU(prev, width, 7, 2, groups=prev, se_hidden=width // 4 if i >= se_from_stage else 0),
                         _ConvGELU(width, width, 1)]
            if i == len(widths) - 1:
                body.append(_conv(width, width, 7, groups=width))  # RepCPE
                body += [_ConvAttentionBlock(width, mlp_ratio, head_dim) for _ in range(depth)]
            else:
                body += [_RepMixerBlock(width, mlp_ratio) for _ in range(depth)]
        self.body = nn.Sequential(*body)
        last = widths[-1]
        self.head = _ConvGELU(last, 2 * last, 3, groups=last, se_hidden=2 * last // 16)
        self.proj = nn.Linear(2 * last, embed_dim, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.head(self.body(pixel_values))
        return self.proj(x.mean((2, 3), keepdim=True).flatten(1))  # XNNPACK's mean wants keepdim


class _TextRepMixerBlock(nn.Module):
    """MobileCLIP's text RepMixer block, reparameterized: a depthwise conv `kernel` tokens wide along the sequence
    (1 x kernel over [B, D, 1, L], the layout the original uses), then the conv FFN: depthwise 1 x kernel
    (BatchNorm folded), 1x1 up, GELU, 1x1 down (layer scale folded). The 1x1 convs are written as linears
    over [B, L, D], the same product, so that the text int8 recipe (linears only) quantizes them as it would
    the original's pointwise convs."""

    def __init__(self, width: int, ratio: int, kernel: int):
        super().__init__()
        self.mixer = _conv(width, width, (1, kernel), groups=width)
        self.dw = _conv(width, width, (1, kernel), groups=width)
        self.up, self.down = nn.Linear(width, ratio * width), nn.Linear(ratio * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape  # reshapes, not (un)squeeze: XNNPACK leaves squeeze_copy outside, splitting the graph
        y = self.mixer(x.transpose(1, 2).reshape(b, w, 1, n))
        z = self.dw(y)
        y, z = y.reshape(b, w, n).transpose(1, 2), z.reshape(b, w, n).transpose(1, 2)
        return y + self.down(F.gelu(self.up(z)))


class MobileCLIPText(nn.Module):
    """MobileCLIP-S0's text encoder ("mct"), reparameterized; 42,433,024 parameters at full size (published:
    42.4M). Dimensions and where they come from:

    - Vocabulary 49,408 (CLIP's BPE), 77 tokens, width 512, 4 transformer layers of 8 heads with FFN 2048
      (ffn_multiplier_per_layer 4.0, rounded up to a multiple of 16), layer norms, no causal mask
      (causal_masking false): mobileclip_s0.json, text_cfg. MobileCLIP passes no padding mask either, so every
      token attends to all 77.
    - "mct" wraps the transformer layers in one text RepMixer block before and one after (text_encoder.py):
      depthwise token mixer of width 11 and a conv FFN of ratio 4 (the text RepMixer block's defaults).
    - Learned positional embedding, final layer norm, projection 512 -> 512 (embed_dim 512) without bias,
      pooled at the end-of-text token (argmax of the ids in the original; a one-hot made on the host here, as
      for TinyCLIP).
    """

    def __init__(self, vocab: int = 49408, context: int = 77, width: int = 512, layers: int = 4, heads: int = 8,
                 ffn_multiplier: float = 4.0, mixer_kernel: int = 11, mixer_ratio: int = 4, embed_dim: int = 512):
        super().__init__()
        ffn = int(math.ceil(width * ffn_multiplier / 16) * 16)
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(context, width) * width ** -0.5)
        self.blocks = nn.Sequential(
            _TextRepMixerBlock(width, mixer_ratio, mixer_kernel),
            *[_Block(width, heads, False, context, ffn=ffn, masked=False) for _ in range(layers)],
            _TextRepMixerBlock(width, mixer_ratio, mixer_kernel))
        self.ln = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, input_ids: torch.Tensor, eos_onehot: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.blocks(self.tok(input_ids) + self.pos))
        return self.proj((eos_onehot[:, :, None] * x).sum(1))


def mobileclip_inputs(batch: int = 1, image_size: int = 256) -> dict[str, tuple]:
    """MobileCLIP-S0's inputs: 256 px images; text as TinyCLIP's (the same 77-token CLIP BPE ids)."""
    return {"image": (torch.randn(batch, 3, image_size, image_size),), "text": tinyclip_inputs(batch)["text"]}


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
