"""Quantization recipes for the XNNPACK (Android) artifacts, all through torchao.

    fp32          no quantization
    int8          PT2E + XNNPACKQuantizer, static, per-channel int8 weights, per-tensor int8 activations
                  whose ranges are the min/max seen on real inputs, run in batches; the text embedding
                  table int8 per row (torchao)
    int8-dynamic  PT2E + XNNPACKQuantizer, dynamic per-token activations, per-channel int8 weights;
                  the text embedding table int8 per row
    8da4w         text: int8 dynamic activations x int4 weights in groups of 32 (torchao
                  Int8DynamicActivationIntxWeightConfig) and a 4-bit embedding table (groups of 32);
                  image: the int8 recipe (XNNPACK has no 4-bit convolutions)
    int8-dynamic-emb4  text: the int8-dynamic linears and a 4-bit embedding table, symmetric in groups
                  of EMB4_GROUP_SIZE; image: the int8-dynamic recipe (it has no embedding)

The 4-bit text towers against the gate (python -m lowering.export --target android --precision ...; 256
Fashion-MNIST images = 512 top-1 decisions, 154 texts of every length through the length-bucket methods):
  * 8da4w (int4 linears) misses the gate's 0.99 mean cosine: 0.978 on a fresh `small` student, 0.943 on the
    demo's stage-1 student, 0.994 with top-1 agreement 0.920 on its stage-2 student. The int4 linears carry most
    of the error (an int8 table with int4 linears, on the [1, 64] graph: top-1 0.936 on stage 2).
  * int8-dynamic-emb4 (int8 linears, 4-bit table) keeps the mean cosine at 0.9967-0.9987, 14% smaller than
    int8-dynamic (demo: 3.98 -> 3.43 MB). It passes on a fresh `small` student (3.11 MB) and on the demo's stage-1
    student (top-1 0.977), and fails on the stage-2 student (top-1 0.908): 10% of that student's decisions have a
    top-1 margin under 0.003 while a 4-bit table moves class scores by about 0.006 (an int8 table: 0.0013).
    Groups of 64: on the [1, 64] graph (before length buckets), 16, 32 and 64 kept the cosine within 0.0005 of
    each other and 64 alone passed on 2048 decisions of the stage-1 student (0.970; 16: 0.965, 32: 0.959); 128
    failed the length buckets' 0.99 minimum on `small` (0.989).

What stays fp32, and why (measured, see docs/design.md and bench/bench_lowering.py):
  * The image stem (the first conv, 3 -> 16 channels): int8 pixels cost the most accuracy, the conv the
    least time.
  * L2 normalization at the end of both encoders: its input is a squared norm, not an activation.
  * RMSNorm's mean of squares (a linear with a constant 1/d row, the form XNNPACK takes): int8 of squared
    activations lost the small ones. Keeping it fp32 took the demo's stage-2 student's static int8 text from
    top-1 agreement 0.959 (a gate failure; worst bucket min cosine 0.9957) to 0.984 (0.9989), at the same speed
    (16 and 64 tokens, interleaved); int8-dynamic, per token, did not move.
  * In the text tower, static int8 covers only the linears: an observer on `scores + mask` wrecked a
    text tower before (cosine 0.16), and quantizing the RMSNorm products cost accuracy for no speed.
PT2E does not quantize nn.Embedding (a third to a half of the text weights: small-lite's 4,779 x 256 table
beside 2.5 M weights in linears), so it is quantized separately with torchao's weight-only config;
`do_quant_fusion_and_const_prop` at lowering turns it into quantized_decomposed.embedding_byte /
embedding_4bit (see executorch_backend.py).

Calibration, and why it takes seconds (bench/bench_calibration.py: before = the recipe at c8341f8, histogram
observers and every input at batch 1; medians of 3 interleaved runs on the project's 2-core machine, idle):
`small` at 224 px, image 10.8 s -> 2.5 s, text (3 length buckets) 12.9 s -> 4.4 s; the demo's small-lite at
160 px, image 8.3 s -> 1.7 s, text 13.9 s -> 3.1 s. With other jobs on the machine `small`'s image tower took
86-100 s before and 3-8 s after.
  * Min/max observers, not the XNNPACK default's histograms: int8 text top-1 agreement 0.957 -> 0.963 (demo stage
    2) and 0.842 -> 0.869 (stage 1) at the same mean cosine (+-0.0001); a fresh `small` text tower's worst length
    bucket 0.9859 -> 0.9885; its image tower 0.99986 -> 0.99988. Histograms were also a third of the time of
    every calibration forward (torch.histc), besides the per-call overhead at batch 1.
  * Batches: the calibration graph is exported with a dynamic batch dimension and runs CALIBRATION_BATCH inputs at
    a time; min/max ranges do not depend on the grouping (tests/test_quantize.py). The lowering exports the
    converted graph again at the caller's batch-1 shapes: the same program as before.
  * At most CALIBRATION_LIMIT["image"] images, evenly spread over those given: on the demo's image tower (whose
    static int8 fails the gate either way, see docs/design.md) 4 disjoint sets of 32 gave mean cosine 0.931-0.944
    and all 128 gave 0.937 (converted graph in PyTorch); the .pte from these 32: 0.932, top-1 0.645, against
    0.936 and 0.627 from histograms of all 128. At 224 px 128 images took 4.2 s idle and 7-19 s with other jobs
    running, 32 took 2.3 s and 3-8 s. Texts are all used: they are cheap and fill every length bucket.
  * prepare_pt2e without the XNNPACK quantizer's conv+BatchNorm patterns: they are for QAT (prepare_pt2e folds
    BatchNorm into the convs before annotating), and tracing them was 3.7 s of every prepare.
  * Dynamic recipes need no calibration: one forward at the example observes the weights (the same .pte).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

XNNPACK_PRECISIONS = ("fp32", "int8", "int8-dynamic", "8da4w", "int8-dynamic-emb4")
GROUP_SIZE = 32  # 8da4w's int4 linears and 4-bit table
EMB4_GROUP_SIZE = 64  # int8-dynamic-emb4's 4-bit table
CALIBRATION_BATCH = 32  # calibration inputs per forward
CALIBRATION_LIMIT = {"image": 32}  # per tower, the most calibration inputs used (evenly spread); others: all


class QuantizationError(ValueError):
    """A precision is unknown or a model cannot be quantized with the asked recipe."""


def check_precision(precision: str, accepted: Sequence[str], target: str) -> None:
    if precision not in accepted:
        raise QuantizationError(f"unknown precision {precision!r} for target {target!r}; accepted: {', '.join(accepted)}")


def recipe_for(tower: str, precision: str) -> str:
    """The recipe an artifact is built with; 8da4w's image tower is the int8 recipe (no int4 convs), and
    int8-dynamic-emb4's the int8-dynamic one (an image tower has no embedding table)."""
    check_precision(precision, XNNPACK_PRECISIONS, "android")
    if tower == "image" and precision == "8da4w":
        return "int8"
    if tower == "image" and precision == "int8-dynamic-emb4":
        return "int8-dynamic"
    return precision


def describe_recipe(tower: str, recipe: str) -> dict:
    """What the manifest says about how an artifact was quantized."""
    if recipe == "fp32":
        return {"scheme": "none"}
    emb = {"embedding": "int8 per row (torchao IntxWeightOnlyConfig)"} if tower == "text" else {}
    if recipe == "int8":
        what = "linear layers" if tower == "text" else "conv, linear and add (the stem conv stays fp32)"
        limit = CALIBRATION_LIMIT.get(tower)
        used = (f"up to {limit} calibration inputs, evenly spread over those given" if limit
                else "every calibration input")
        return {"scheme": "pt2e-static", "weights": "int8 symmetric per output channel",
                "activations": f"int8 per tensor, min/max ranges over {used}", "quantized_ops": what, **emb}
    if recipe == "int8-dynamic":
        return {"scheme": "pt2e-dynamic", "weights": "int8 symmetric per output channel",
                "activations": "int8 dynamic per token", "quantized_ops": "conv and linear", **emb}
    if recipe == "8da4w":
        return {"scheme": "torchao-8da4w", "weights": f"int4 symmetric, groups of {GROUP_SIZE}",
                "activations": "int8 dynamic per token", "quantized_ops": "linear layers",
                "embedding": f"int4 groups of {GROUP_SIZE} (torchao IntxWeightOnlyConfig)"}
    if recipe == "int8-dynamic-emb4" and tower == "text":
        return {"scheme": "pt2e-dynamic", "weights": "int8 symmetric per output channel",
                "activations": "int8 dynamic per token", "quantized_ops": "linear layers",
                "embedding": f"int4 symmetric, groups of {EMB4_GROUP_SIZE} (torchao IntxWeightOnlyConfig)"}
    raise QuantizationError(f"unknown recipe {recipe!r}")


def _module_types(node: torch.fx.Node) -> list[str]:
    return [str(t) for _, t in node.meta.get("nn_module_stack", {}).values()]


def _in_image_stem(node: torch.fx.Node) -> bool:
    """ImageStudent.features[0], the conv that reads the pixels. Per-tensor int8 of the normalized pixels
    was the image tower's largest error: on a stage-2 student (512 test images), keeping the stem fp32
    took int8 mean cosine 0.99912 -> 0.99952 and zero-shot top-1 agreement 97.9% -> 98.3% (EN/ZH)."""
    return any(str(path).split(".")[-2:] == ["features", "0"]
               for path, _ in node.meta.get("nn_module_stack", {}).values())


def _may_quantize(tower: str, recipe: str) -> Callable[[torch.fx.Node], bool]:
    """The quantizer's filter: True for the nodes it may annotate (L2 normalization, RMSNorm's mean of squares,
    the image stem and, for int8 text, everything but the linears stay fp32)."""

    def may_quantize(node: torch.fx.Node) -> bool:
        types = _module_types(node)
        if any("L2Normalize" in t or "RMSNorm" in t for t in types):
            return False
        if tower == "image" and _in_image_stem(node):
            return False
        if tower == "text" and recipe == "int8":
            return node.target == torch.ops.aten.linear.default
        return True

    return may_quantize


def _quantize_embedding(module: nn.Module, bits: int, group: int = GROUP_SIZE) -> None:
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import IntxWeightOnlyConfig, quantize_

    granularity = PerAxis(0) if bits == 8 else PerGroup(group)
    config = IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"), granularity=granularity)
    quantize_(module, config, filter_fn=lambda m, fqn: isinstance(m, nn.Embedding)
              and (bits == 8 or m.embedding_dim % group == 0))


def _quantize_8da4w_linears(module: nn.Module) -> None:
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig, quantize_

    config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(GROUP_SIZE))
    # a linear whose input width is not a multiple of the group stays fp32 (none in the presets)
    quantize_(module, config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and m.in_features % GROUP_SIZE == 0)


def _ptq_quantizer(dynamic: bool, may_quantize: Callable[[torch.fx.Node], bool]):
    """XNNPACKQuantizer with per-channel int8 weights; static activations observed by min/max."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e import MinMaxObserver

    class PTQQuantizer(XNNPACKQuantizer):
        # conv+BatchNorm patterns are for QAT: prepare_pt2e folds BatchNorm into the conv before annotating
        SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if "_bn" not in p.name]

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    if not dynamic:
        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    quantizer = PTQQuantizer().set_global(config)
    quantizer.set_filter_function(may_quantize)
    return quantizer


def spread(items: Sequence, limit: int | None) -> list:
    """At most `limit` of items, evenly spaced (all of them when limit is None or not smaller)."""
    items = list(items)
    if limit is None or len(items) <= limit:
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def batches(inputs: Sequence[tuple], size: int) -> Iterable[tuple]:
    """Consecutive input tuples of one shape concatenated along the batch dimension, at most `size` each."""
    group: list[tuple] = []
    for args in inputs:
        if group and (len(group) == size or [a.shape[1:] for a in args] != [a.shape[1:] for a in group[0]]):
            yield tuple(torch.cat(parts) for parts in zip(*group))
            group = []
        group.append(args)
    if group:
        yield tuple(torch.cat(parts) for parts in zip(*group))


def _export_batched(module: nn.Module, example: tuple) -> tuple[torch.fx.GraphModule, bool]:
    """(graph, batched): `module` exported with a dynamic batch dimension on every input, so calibration runs
    many inputs per forward; a module that will not export so (a shape tied to the batch) comes back
    exported at the example's shapes, to calibrate one input at a time."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    two = tuple(torch.cat([x, x]) for x in example)  # a batch of 1 would be specialized
    try:
        return torch.export.export(module, two, dynamic_shapes=tuple({0: batch} for _ in example)).module(), True
    except Exception:  # noqa: BLE001 - torch.export's several failures on dynamic shapes; the static graph works
        return torch.export.export(module, example).module(), False


def _pt2e(module: nn.Module, example: tuple, calibration: Sequence[tuple], dynamic: bool,
          may_quantize: Callable[[torch.fx.Node], bool], limit: int | None = None) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    calibration = spread(calibration, limit)
    if not dynamic and not calibration:
        raise QuantizationError("static int8 needs calibration inputs; none were given")
    # dynamic recipes quantize activations at run time: one forward at the example observes the weights
    if dynamic:
        graph, batched = torch.export.export(module, example).module(), False
    else:
        graph, batched = _export_batched(module, example)
    prepared = prepare_pt2e(graph, _ptq_quantizer(dynamic, may_quantize))
    with torch.no_grad():
        if dynamic:
            prepared(*example)
        else:
            for args in batches(calibration, CALIBRATION_BATCH) if batched else calibration:
                prepared(*args)
    return convert_pt2e(prepared)


def quantize_encoder(encoder: nn.Module, tower: str, recipe: str, example: tuple,
                     calibration: Sequence[tuple] = ()) -> nn.Module:
    """A quantized copy of `encoder` (the original is untouched), ready for torch.export.

    calibration: inputs of the exported shape (batch 1), real data: eval images, English and Chinese
    texts. Static int8 observes activation ranges on them, so random inputs give a wrong model; they run
    CALIBRATION_BATCH at a time, at most CALIBRATION_LIMIT[tower] of them (evenly spread).
    """
    if recipe == "fp32":
        return encoder
    encoder = copy.deepcopy(encoder).eval()
    with torch.no_grad():
        if recipe in ("int8", "int8-dynamic"):
            if tower == "text":
                _quantize_embedding(encoder, 8)
            return _pt2e(encoder, example, calibration, dynamic=recipe == "int8-dynamic",
                         may_quantize=_may_quantize(tower, recipe), limit=CALIBRATION_LIMIT.get(tower))
        if recipe == "8da4w":
            if tower != "text":
                raise QuantizationError("8da4w applies to the text tower; the image tower uses the int8 recipe")
            _quantize_embedding(encoder, 4)
            _quantize_8da4w_linears(encoder)
            return encoder
        if recipe == "int8-dynamic-emb4":
            if tower != "text":
                raise QuantizationError("int8-dynamic-emb4 applies to the text tower; the image tower uses the "
                                        "int8-dynamic recipe")
            _quantize_embedding(encoder, 4, EMB4_GROUP_SIZE)
            return _pt2e(encoder, example, calibration, dynamic=True, may_quantize=_may_quantize(tower, "int8-dynamic"))
    raise QuantizationError(f"unknown recipe {recipe!r}; accepted: {', '.join(XNNPACK_PRECISIONS)}")
