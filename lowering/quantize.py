"""Quantization recipes for the XNNPACK (Android) artifacts, all through torchao.

    fp32          no quantization
    int8          PT2E + XNNPACKQuantizer, static, per-channel int8 weights, per-tensor int8 activations
                  calibrated on real inputs; the text embedding table int8 per row (torchao)
    int8-dynamic  PT2E + XNNPACKQuantizer, dynamic per-token activations, per-channel int8 weights;
                  the text embedding table int8 per row
    8da4w         text: int8 dynamic activations x int4 weights in groups of 32 (torchao
                  Int8DynamicActivationIntxWeightConfig) and a 4-bit embedding table (groups of 32);
                  image: the int8 recipe (XNNPACK has no 4-bit convolutions)

What stays fp32, and why (measured, see docs/design.md and bench/bench_lowering.py):
  * The image stem (the first conv, 3 -> 16 channels): int8 pixels cost the most accuracy, the conv the
    least time.
  * L2 normalization at the end of both encoders: its input is a squared norm, not an activation.
  * In the text tower, static int8 covers only the linears: an observer on `scores + mask` wrecked a
    text tower before (cosine 0.16), and quantizing the RMSNorm products cost accuracy for no speed.
PT2E does not quantize nn.Embedding, and the text .pte is dominated by that table, so it is quantized
separately with torchao's weight-only config; `do_quant_fusion_and_const_prop` at lowering turns it
into quantized_decomposed.embedding_byte / embedding_4bit (see executorch_backend.py).
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

XNNPACK_PRECISIONS = ("fp32", "int8", "int8-dynamic", "8da4w")
GROUP_SIZE = 32


class QuantizationError(ValueError):
    """A precision is unknown or a model cannot be quantized with the asked recipe."""


def check_precision(precision: str, accepted: Sequence[str], target: str) -> None:
    if precision not in accepted:
        raise QuantizationError(f"unknown precision {precision!r} for target {target!r}; accepted: {', '.join(accepted)}")


def recipe_for(tower: str, precision: str) -> str:
    """The recipe an artifact is built with; 8da4w's image tower is the int8 recipe (no int4 convs)."""
    check_precision(precision, XNNPACK_PRECISIONS, "android")
    if tower == "image" and precision == "8da4w":
        return "int8"
    return precision


def describe_recipe(tower: str, recipe: str) -> dict:
    """What the manifest says about how an artifact was quantized."""
    if recipe == "fp32":
        return {"scheme": "none"}
    emb = {"embedding": "int8 per row (torchao IntxWeightOnlyConfig)"} if tower == "text" else {}
    if recipe == "int8":
        what = "linear layers" if tower == "text" else "conv, linear and add (the stem conv stays fp32)"
        return {"scheme": "pt2e-static", "weights": "int8 symmetric per output channel",
                "activations": "int8 per tensor, calibrated", "quantized_ops": what, **emb}
    if recipe == "int8-dynamic":
        return {"scheme": "pt2e-dynamic", "weights": "int8 symmetric per output channel",
                "activations": "int8 dynamic per token", "quantized_ops": "conv and linear", **emb}
    if recipe == "8da4w":
        return {"scheme": "torchao-8da4w", "weights": f"int4 symmetric, groups of {GROUP_SIZE}",
                "activations": "int8 dynamic per token", "quantized_ops": "linear layers",
                "embedding": f"int4 groups of {GROUP_SIZE} (torchao IntxWeightOnlyConfig)"}
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
    """The quantizer's filter: True for the nodes it may annotate (L2 normalization, the image stem and, for
    int8 text, everything but the linears stay fp32)."""

    def may_quantize(node: torch.fx.Node) -> bool:
        types = _module_types(node)
        if any("L2Normalize" in t for t in types):
            return False
        if tower == "image" and _in_image_stem(node):
            return False
        if tower == "text" and recipe == "int8":
            return node.target == torch.ops.aten.linear.default
        return True

    return may_quantize


def _quantize_embedding(module: nn.Module, bits: int) -> None:
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import IntxWeightOnlyConfig, quantize_

    granularity = PerAxis(0) if bits == 8 else PerGroup(GROUP_SIZE)
    config = IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"), granularity=granularity)
    quantize_(module, config, filter_fn=lambda m, fqn: isinstance(m, nn.Embedding)
              and (bits == 8 or m.embedding_dim % GROUP_SIZE == 0))


def _quantize_8da4w_linears(module: nn.Module) -> None:
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig, quantize_

    config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(GROUP_SIZE))
    # a linear whose input width is not a multiple of the group stays fp32 (none in the presets)
    quantize_(module, config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and m.in_features % GROUP_SIZE == 0)


def _pt2e(module: nn.Module, example: tuple, calibration: Iterable[tuple], dynamic: bool,
          may_quantize: Callable[[torch.fx.Node], bool]) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
    quantizer.set_filter_function(may_quantize)
    graph = torch.export.export(module, example).module()
    prepared = prepare_pt2e(graph, quantizer)
    n = 0
    with torch.no_grad():
        for args in calibration:
            prepared(*args)
            n += 1
    if not dynamic and n == 0:
        raise QuantizationError("static int8 needs calibration inputs; none were given")
    return convert_pt2e(prepared)


def quantize_encoder(encoder: nn.Module, tower: str, recipe: str, example: tuple,
                     calibration: Sequence[tuple] = ()) -> nn.Module:
    """A quantized copy of `encoder` (the original is untouched), ready for torch.export.

    calibration: inputs of the exported shape (batch 1), real data: eval images, English and Chinese
    texts. Static int8 observes activation ranges on them, so random inputs give a wrong model.
    """
    if recipe == "fp32":
        return encoder
    encoder = copy.deepcopy(encoder).eval()
    with torch.no_grad():
        if recipe in ("int8", "int8-dynamic"):
            if tower == "text":
                _quantize_embedding(encoder, 8)
            return _pt2e(encoder, example, calibration, dynamic=recipe == "int8-dynamic",
                         may_quantize=_may_quantize(tower, recipe))
        if recipe == "8da4w":
            if tower != "text":
                raise QuantizationError("8da4w applies to the text tower; the image tower uses the int8 recipe")
            _quantize_embedding(encoder, 4)
            _quantize_8da4w_linears(encoder)
            return encoder
    raise QuantizationError(f"unknown recipe {recipe!r}; accepted: {', '.join(XNNPACK_PRECISIONS)}")
