"""Core ML (.mlpackage) for iOS through coremltools from torch.export, and the compile specs of the
ExecuTorch Core ML delegate.

    fp16        ML Program, fp16 compute, fp32 inputs and outputs
    int8        fp16 + int8 symmetric per-channel weights (compression::linear_quantize_weights)
    palettize4  fp16 + 4-bit k-means palettized weights, one table per tensor (iOS 17 allows no finer)

Core ML cannot run on Linux: here a package's structure is checked against the manifest
(`coreml_structure`); `python -m lowering.verify_coreml BUNDLE` runs predict on macOS.

Reading a package never writes it: coremltools' ModelPackage (behind ct.utils.load_spec and MLModel) rewrites
the package's Manifest.json each time it opens one, and follows whatever paths that file names. So the spec is
found here from Manifest.json read as plain JSON, its path held inside the package (`package_root_spec`), and
anything that needs coremltools' loader gets a private copy (`private_copy`).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from dcclip_mobile.errors import DCClipError

from .encoders import TensorSpec

COREML_PRECISIONS = ("fp16", "int8", "palettize4")
MINIMUM_DEPLOYMENT_TARGET = "iOS17"
# coremltools 9.0's fuse_linear_bias crashes (IndexError in _try_to_transform) on a linear followed by
# a scalar add, which RMSNorm's `mean_square + eps` is; without the pass nothing is lost for these graphs.
SKIPPED_PASSES = ("common::fuse_linear_bias",)

_NP_DTYPES = {"float32": np.float32, "int32": np.int32, "float16": np.float16}
_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32", 131080: "int8"}  # ArrayDataType codes


def _coremltools():
    """coremltools, imported where it is used: the package is optional for everything but iOS bundles."""
    import coremltools as ct

    return ct


def pass_pipeline(precision: str):
    """The default pipeline without the crashing pass, with the precision's weight compression appended."""
    ct = _coremltools()
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OpPalettizerConfig, OptimizationConfig

    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(list(SKIPPED_PASSES))
    if precision == "int8":
        name, op_config = "compression::linear_quantize_weights", OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel")
    elif precision == "palettize4":
        name, op_config = "compression::palettize_weights", OpPalettizerConfig(
            nbits=4, mode="kmeans", granularity="per_tensor")
    elif precision == "fp16":
        return pipeline
    else:
        raise ValueError(f"unknown Core ML precision {precision!r}; accepted: {', '.join(COREML_PRECISIONS)}")
    pipeline.append_pass(name)
    pipeline.set_options(name, {"config": OptimizationConfig(global_config=op_config)})
    return pipeline


def describe_precision(precision: str) -> dict:
    return {
        "fp16": {"scheme": "none", "compute_precision": "float16"},
        "int8": {"scheme": "coreml-linear-quantize-weights", "weights": "int8 symmetric per output channel",
                 "compute_precision": "float16"},
        "palettize4": {"scheme": "coreml-palettize-weights", "weights": "4-bit k-means lookup table per tensor",
                       "compute_precision": "float16"},
    }[precision]


def convert_coreml(encoder: nn.Module, example: tuple, inputs: list[TensorSpec], output: TensorSpec,
                   precision: str):
    """encoder -> torch.export -> ct.convert (mlprogram). Returns the MLModel (not loaded: no predict here)."""
    ct = _coremltools()
    if precision not in COREML_PRECISIONS:
        raise ValueError(f"unknown Core ML precision {precision!r}; accepted: {', '.join(COREML_PRECISIONS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(encoder, example).run_decompositions({})
        return ct.convert(
            exported,
            inputs=[ct.TensorType(name=s.name, shape=s.shape, dtype=_NP_DTYPES[s.dtype]) for s in inputs],
            outputs=[ct.TensorType(name=output.name, dtype=_NP_DTYPES[output.dtype])],
            convert_to="mlprogram",
            pass_pipeline=pass_pipeline(precision),
            compute_precision=ct.precision.FLOAT16,
            minimum_deployment_target=getattr(ct.target, MINIMUM_DEPLOYMENT_TARGET),
            skip_model_load=True,
        )


def coreml_delegate_compile_specs():
    """Compile specs of the ExecuTorch Core ML delegate: fp16, iOS 17, the same pass pipeline as above."""
    ct = _coremltools()
    from executorch.backends.apple.coreml.compiler import CoreMLBackend

    passes = [p for p in ct.PassPipeline.DEFAULT.passes if p not in SKIPPED_PASSES]
    return CoreMLBackend.generate_compile_specs(
        compute_precision=ct.precision.FLOAT16,
        minimum_deployment_target=getattr(ct.target, MINIMUM_DEPLOYMENT_TARGET),
        pass_names=passes,
    )


class CoreMLPackageError(DCClipError, ValueError):
    """An .mlpackage's Manifest.json is missing, malformed, or names a specification outside the package."""


def package_root_spec(package: str | Path) -> str:
    """The package-relative path ("Data/com.apple.CoreML/model.mlmodel") of an .mlpackage's root model
    specification, from its Manifest.json read as plain JSON; a path that is not plainly inside the package
    (absolute, "..", a symbolic link out) is refused."""
    package = Path(package)
    manifest = package / "Manifest.json"
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CoreMLPackageError(f"{str(manifest)!r} cannot be read as JSON ({type(e).__name__}); "
                                 "re-export the bundle") from None
    entries = info.get("itemInfoEntries") if isinstance(info, dict) else None
    root = info.get("rootModelIdentifier") if isinstance(info, dict) else None
    entry = entries.get(root) if isinstance(entries, dict) and isinstance(root, str) else None
    rel = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\0" in rel or any(
            seg in ("", ".", "..") for seg in rel.split("/")):
        raise CoreMLPackageError(f"{str(manifest)!r} names its root model as {str(rel)[:120]!r}, which is not a "
                                 "relative path inside the package; refusing to open it")
    path = package / "Data" / rel
    real, real_package = path.resolve(), package.resolve()
    if real_package not in real.parents or not path.is_file():
        raise CoreMLPackageError(f"{str(manifest)!r} names its root model {rel!r}, which is not a file inside the "
                                 "package; re-export the bundle")
    return f"Data/{rel}"


@contextlib.contextmanager
def private_copy(package: str | Path) -> Iterator[Path]:
    """A copy of the package in a temporary directory (symbolic links copied as links, never followed), for
    coremltools' loaders, which rewrite what they open; deleted afterwards."""
    package = Path(package)
    with tempfile.TemporaryDirectory(prefix="dcclip-coreml-") as d:
        copy = Path(d) / package.name
        shutil.copytree(package, copy, symlinks=True)
        yield copy


def coreml_structure(package: str | Path) -> dict:
    """Inputs and outputs (name, shape, dtype) of a saved .mlpackage, read from its spec (no predict), without
    writing anything in the package (module docstring)."""
    _coremltools()
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString((Path(package) / package_root_spec(package)).read_bytes())

    def feature(f) -> dict:
        arr = f.type.multiArrayType
        return {"name": f.name, "shape": [int(d) for d in arr.shape],
                "dtype": _ARRAY_DTYPES.get(int(arr.dataType), f"array_type_{int(arr.dataType)}")}

    ops = []
    if spec.WhichOneof("Type") == "mlProgram":
        for fn in spec.mlProgram.functions.values():
            for block in fn.block_specializations.values():
                ops += [op.type for op in block.operations]
    return {"inputs": [feature(f) for f in spec.description.input],
            "outputs": [feature(f) for f in spec.description.output],
            "specification_version": int(spec.specificationVersion),
            "ops": ops}


def package_size(package: str | Path) -> int:
    """Bytes of the files in an .mlpackage (a directory)."""
    return sum(p.stat().st_size for p in Path(package).rglob("*") if p.is_file())


def check_coreml_structure(package: str | Path, inputs: list[dict], outputs: list[dict]) -> list[str]:
    """Problems (empty when none) between a package and the manifest's inputs/outputs."""
    found = coreml_structure(package)
    problems = []
    for kind, want, got in (("input", inputs, found["inputs"]), ("output", outputs, found["outputs"])):
        want_s = [(d["name"], list(d["shape"]), d["dtype"]) for d in want]
        got_s = [(d["name"], list(d["shape"]), d["dtype"]) for d in got]
        if want_s != got_s:
            problems.append(f"{Path(package).name}: {kind}s are {got_s}, the manifest says {want_s}")
    return problems
