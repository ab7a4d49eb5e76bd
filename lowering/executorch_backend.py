"""ExecuTorch lowering (XNNPACK for Android, the Core ML delegate for iOS) and running a .pte here.

Every .pte this project writes is loaded and run with the real ExecuTorch runtime
(executorch.runtime) before it is trusted; `PteRunner` is that runtime, with the quantized
kernels registered.
"""
from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from dcclip_mobile.timing import median_ms


@dataclass
class LoweredProgram:
    buffer: bytes
    backend: str  # "xnnpack" or "coreml"
    partitions: int  # delegate calls in the program
    ops_outside: dict[str, int] = field(default_factory=dict)  # ops the portable/quantized kernels run


def _register_quantized_kernels() -> None:
    # Registers quantized_decomposed::embedding_byte/embedding_4bit with torch, so the quant fusion
    # pass can rewrite torchao's dequantize + embedding into them at lowering time.
    import executorch.kernels.quantized  # noqa: F401


def _op_name(target) -> str:
    name = getattr(target, "__name__", str(target))
    if isinstance(target, torch._ops.OpOverload):
        name = f"{target.namespace}.{target._schema.name.split('::')[-1]}"
        overload = target._overloadname
        if overload and overload not in ("default", "out"):
            name += f".{overload}"
    return name


def delegation_summary(program) -> tuple[int, dict[str, int]]:
    """(delegate calls, ops left outside the delegate) of an ExecutorchProgramManager's final graph.

    Memory-planning nodes (executorch.exir.memory.*) and tuple getitems are bookkeeping, not ops.
    """
    partitions = 0
    outside: collections.Counter[str] = collections.Counter()
    for node in program.exported_program().graph.nodes:
        if node.op != "call_function":
            continue
        module = getattr(node.target, "__module__", "") or ""
        name = getattr(node.target, "__name__", "")
        if name == "getitem" or module.startswith("executorch.exir.memory"):
            continue
        if name == "executorch_call_delegate" or "call_delegate" in str(node.target):
            partitions += 1
            continue
        outside[_op_name(node.target)] += 1
    return partitions, dict(sorted(outside.items()))


def lower_to_pte(module: nn.Module, example: tuple, backend: str, coreml_compile_specs=None) -> LoweredProgram:
    """torch.export -> to_edge_transform_and_lower(partitioner) -> to_executorch, at the example's shapes."""
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    _register_quantized_kernels()
    if backend == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioner = XnnpackPartitioner()
    elif backend == "coreml":
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        partitioner = CoreMLPartitioner(compile_specs=coreml_compile_specs)
    else:
        raise ValueError(f"unknown ExecuTorch backend {backend!r}; accepted: xnnpack, coreml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(module, example)
        edge = to_edge_transform_and_lower(exported, partitioner=[partitioner])
        program = edge.to_executorch(ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True))
    partitions, outside = delegation_summary(program)
    return LoweredProgram(buffer=bytes(program.buffer), backend=backend, partitions=partitions, ops_outside=outside)


class PteRunner:
    """One .pte's `forward`, loaded with the ExecuTorch runtime."""

    def __init__(self, pte: str | Path | bytes):
        from executorch.runtime import Runtime

        _register_quantized_kernels()
        runtime = Runtime.get()
        self.program = runtime.load_program(pte if isinstance(pte, bytes) else str(pte))
        self.method = self.program.load_method("forward")
        if self.method is None:
            raise RuntimeError("the .pte has no `forward` method")

    @property
    def input_meta(self) -> list[dict]:
        meta = self.method.metadata
        return [_tensor_info(meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]

    @property
    def output_meta(self) -> list[dict]:
        meta = self.method.metadata
        return [_tensor_info(meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.method.execute([x.contiguous() for x in inputs])
        return out[0].clone()

    def run_batch(self, inputs: Sequence[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """Run each batch-1 input tuple; concatenate the outputs."""
        return torch.cat([self(*args) for args in inputs])

    def latency_ms(self, args: tuple[torch.Tensor, ...], runs: int = 50, warmup: int = 5) -> float:
        """Median wall time of one forward, in milliseconds (threads: whatever torch/XNNPACK use)."""
        return median_ms(self, args, runs, warmup)


# c10::ScalarType codes, as TensorInfo.dtype() returns them
_SCALAR_TYPES = {3: "int32", 4: "int64", 5: "float16", 6: "float32", 11: "bool"}


def _tensor_info(info) -> dict:
    code = int(info.dtype())
    return {"shape": list(info.sizes()), "dtype": _SCALAR_TYPES.get(code, f"scalar_type_{code}")}
