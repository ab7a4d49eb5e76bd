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

from dcclip_mobile.timing import executorch_pool_resizes

BACKEND_NAMES = {"xnnpack": "XNNPACK", "coreml": "Core ML"}


@dataclass
class LoweredProgram:
    buffer: bytes
    backend: str  # "xnnpack" or "coreml"
    partitions: int  # delegate calls in a method (the most of any method)
    ops_outside: dict[str, int] = field(default_factory=dict)  # ops the portable/quantized kernels run, all methods
    methods: dict[str, dict] = field(default_factory=dict)  # per method: {"partitions", "ops_outside"}

    def whole_graph_problems(self) -> list[str]:
        """Why the graph is not one delegate partition with nothing outside it (empty when it is)."""
        if self.partitions == 1 and not self.ops_outside:
            return []
        return [f"expected the whole graph in one {BACKEND_NAMES[self.backend]} partition, got {self.partitions} "
                f"partition(s) and outside ops {self.ops_outside}"]


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


def delegation_summary(program, method: str = "forward") -> tuple[int, dict[str, int]]:
    """(delegate calls, ops left outside the delegate) of one method of an ExecutorchProgramManager's final graph.

    Memory-planning nodes (executorch.exir.memory.*) and tuple getitems are bookkeeping, not ops.
    """
    partitions = 0
    outside: collections.Counter[str] = collections.Counter()
    for node in program.exported_program(method).graph.nodes:
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
    return lower_methods_to_pte({"forward": (module, example)}, backend, coreml_compile_specs)


def lower_methods_to_pte(methods: dict[str, tuple[nn.Module, tuple]], backend: str,
                         coreml_compile_specs=None) -> LoweredProgram:
    """One program with a method per (module, example) (a text tower's length buckets): weights the methods
    share are stored once (three buckets of the demo's text tower: 15.04 MB vs 14.99 MB for one)."""
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
        exported = {name: torch.export.export(module, example) for name, (module, example) in methods.items()}
        edge = to_edge_transform_and_lower(exported, partitioner=[partitioner])
        program = edge.to_executorch(ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True))
    per_method = {}
    for name in methods:
        partitions, outside = delegation_summary(program, name)
        per_method[name] = {"partitions": partitions, "ops_outside": outside}
    everything: collections.Counter[str] = collections.Counter()
    for m in per_method.values():
        everything.update(m["ops_outside"])
    return LoweredProgram(buffer=bytes(program.buffer), backend=backend,
                          partitions=max(m["partitions"] for m in per_method.values()),
                          ops_outside=dict(sorted(everything.items())), methods=per_method)


class PteRunner:
    """One method of a .pte (`forward` unless named), loaded with the ExecuTorch runtime."""

    def __init__(self, pte: str | Path | bytes, method: str = "forward"):
        _register_quantized_kernels()
        self.source = pte if isinstance(pte, bytes) else str(pte)
        self.method_name = method
        self._load()

    def _load(self) -> None:
        """The program and its method; again after timing.threads resized ExecuTorch's pool: XNNPACK delegates keep
        the pool they were made with (running on the freed one crashed), and a second load_method of the same
        program read freed weights (wrong outputs), so the program is loaded anew too."""
        from executorch.runtime import Runtime

        self.loaded_at_pool = executorch_pool_resizes()
        self.program = Runtime.get().load_program(self.source)
        if self.method_name not in self.program.method_names:
            raise RuntimeError(f"the .pte has no {self.method_name!r} method (it has "
                               f"{sorted(self.program.method_names)})")
        self.method = self.program.load_method(self.method_name)
        if self.method is None:
            raise RuntimeError(f"the .pte's {self.method_name!r} method did not load")

    @property
    def input_meta(self) -> list[dict]:
        return method_io(self.method.metadata)[0]

    @property
    def output_meta(self) -> list[dict]:
        return method_io(self.method.metadata)[1]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if executorch_pool_resizes() != self.loaded_at_pool:  # its pool was freed: running it would crash
            self._load()
        out = self.method.execute([x.contiguous() for x in inputs])
        return out[0].clone()

    def run_batch(self, inputs: Sequence[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """Run each batch-1 input tuple; concatenate the outputs."""
        return torch.cat([self(*args) for args in inputs])


# c10::ScalarType codes, as TensorInfo.dtype() returns them
_SCALAR_TYPES = {3: "int32", 4: "int64", 5: "float16", 6: "float32", 11: "bool"}


def _tensor_info(info) -> dict:
    code = int(info.dtype())
    return {"shape": list(info.sizes()), "dtype": _SCALAR_TYPES.get(code, f"scalar_type_{code}")}


def method_io(meta) -> tuple[list[dict], list[dict]]:
    """([{shape, dtype}] of the inputs, the same of the outputs) of a method's MethodMeta."""
    return ([_tensor_info(meta.input_tensor_meta(i)) for i in range(meta.num_inputs())],
            [_tensor_info(meta.output_tensor_meta(i)) for i in range(meta.num_outputs())])


def check_pte_structure(path: str | Path, inputs: list[dict], outputs: list[dict],
                        method: str = "forward") -> list[str]:
    """Problems (empty when none) between a .pte method's inputs/outputs and the manifest's. Reads the program's
    metadata only, so a .pte whose delegate this runtime lacks (Core ML) is checked too."""
    from executorch.runtime import Runtime

    got_in, got_out = method_io(Runtime.get().load_program(str(path)).metadata(method))
    problems = []
    for kind, want, got in (("input", inputs, got_in), ("output", outputs, got_out)):
        want = [{"shape": list(s["shape"]), "dtype": s["dtype"]} for s in want]
        if got != want:
            problems.append(f"{Path(path).name}: {kind}s are {got}, the manifest says {want}")
    return problems


class LengthBucketRunner:
    """A text .pte with length buckets, run as the apps run it: each batch-1 text through the shortest bucket that
    holds its tokens, its inputs cut to that length. `buckets`: {length: method name}."""

    def __init__(self, pte: str | Path | bytes, buckets: dict[int, str]):
        data = pte if isinstance(pte, bytes) else Path(pte).read_bytes()
        self.runners = {int(L): PteRunner(data, method) for L, method in buckets.items()}

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from .encoders import shortest_bucket, used_length

        L = shortest_bucket(self.runners, used_length(attention_mask))
        return self.runners[L](input_ids[:, :L], attention_mask[:, :L])

    def run_batch(self, inputs: Sequence[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        return torch.cat([self(*args) for args in inputs])
