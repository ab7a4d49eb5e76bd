"""Export a student checkpoint to phone bundles, refusing any artifact that fails the parity gate.

    python -m lowering.export --target android|ios|torchscript|all [--checkpoint DIR]
        [--precision P[,P...]|all] [--labels FILE --labels-zh FILE] [--out DIR]
        [--images SOURCE [--split S]] [--allow-parity-failure] [--no-latency] [--eval-images N]

Precisions: android fp32, int8 (default), int8-dynamic, 8da4w; ios fp16 (default), int8, palettize4
(each also ships an ExecuTorch .pte with the Core ML delegate, fp16); torchscript fp32.

An Android text .pte holds one method per length bucket (16, 32 and the context length; encoders.text_lengths),
sharing one copy of the weights, each quantized on the calibration texts that fit it; the manifest's
`length_buckets` names them, the apps run a text in the shortest bucket that holds it, and the parity gate runs
every parity text that way. Core ML and TorchScript artifacts take the full context.
With --target all, --precision applies where a target accepts it (`all` means every one).

--images SOURCE (what the training runners' --images accepts: 'fashion-mnist', an ELEVATER folder, a pairs
file) chooses the int8 calibration and parity-gate images, and the label set where SOURCE has one (--labels
overrides it); a pairs file without --labels ships no class embeddings. The manifest's "calibration" says
which source was used. Without --images: Fashion-MNIST's test split, as always.

Library use (what tests, the report and the demo call):
    from lowering.export import export_bundles
    result = export_bundles(model, tokenizer, ["android"], out_dir, precisions={"android": ["int8"]})
    result = export_bundles(..., images=ElevaterFolder("data/cifar-10"))   # calibrate on your own images
    result.manifests["android"]  -> the manifest dict (schema: dcclip_mobile/bundle_manifest.py)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.atomic import atomic_directory, check_writable_dir
from dcclip_mobile.checkpoint import CHECKPOINT_FILES, CheckpointError, load_student
from dcclip_mobile.data.sources import IMAGE_SOURCES, open_image_source
from dcclip_mobile.errors import DCClipError, run_main
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.prompt_tuning.prompts import PromptError
from dcclip_mobile.timing import median_ms, threads
from dcclip_mobile.tokenizer import BilingualTokenizer

from . import bundle as bundle_parts
from .coreml_backend import (COREML_PRECISIONS, check_coreml_structure, convert_coreml, coreml_delegate_compile_specs,
                             describe_precision)
from .encoders import (TOWERS, example_inputs, input_specs, make_encoder, output_spec, text_lengths, text_method,
                       used_length)
from .executorch_backend import LengthBucketRunner, PteRunner, lower_methods_to_pte, lower_to_pte
from .inputs import (LENGTH_CALIBRATION, LENGTH_PARITY, EvalSet, InputsError, default_eval_set, default_length_pool,
                     eval_set_from_source, image_inputs, length_texts, read_labels, text_bucket, text_inputs)
from .parity import THRESHOLDS, Parity, measure, structure_gate, top1_agreement
from .quantize import XNNPACK_PRECISIONS, QuantizationError, describe_recipe, quantize_encoder, recipe_for
from .scoring import prototypes
from .torchscript_backend import TorchScriptRunner, trace_encoder

TARGETS = ("android", "ios", "torchscript")
PRECISIONS = {"android": XNNPACK_PRECISIONS, "ios": COREML_PRECISIONS, "torchscript": ("fp32",)}
# accuracy first: int8 static keeps mean cosine >= 0.998 on both towers and is 2-4x smaller and faster
# than fp32; 8da4w misses the gate's 0.99 on the text tower (bench/bench_lowering.py)
DEFAULT_PRECISION = {"android": "int8", "ios": "fp16", "torchscript": "fp32"}
DEFAULT_CHECKPOINT = "runs/demo/stage2/checkpoint"  # what `python -m train.demo` leaves
LATENCY_RUNS = 50
LATENCY_THREADS = 2


class ExportError(DCClipError, ValueError):
    """Bad arguments or inputs to an export (unknown target or precision, missing data)."""


class ParityGateError(DCClipError, RuntimeError):
    """At least one artifact failed the parity gate; nothing was written."""

    def __init__(self, failures: list[str], manifests: dict[str, dict]):
        super().__init__("parity gate failed:\n  " + "\n  ".join(failures))
        self.failures = failures
        self.manifests = manifests


@dataclass
class ExportResult:
    bundles: dict[str, Path] = field(default_factory=dict)
    manifests: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    gate_passed: bool = True


def resolve_targets(target: str) -> list[str]:
    if target == "all":
        return list(TARGETS)
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; accepted: {', '.join(TARGETS + ('all',))}")
    return [target]


def resolve_precisions(targets: list[str], precision: str | None) -> dict[str, list[str]]:
    """--precision value -> {target: [precisions]}; None -> each target's default."""
    if precision is None:
        return {t: [DEFAULT_PRECISION[t]] for t in targets}
    asked = [p.strip() for p in precision.split(",") if p.strip()]
    if asked == ["all"]:
        return {t: list(PRECISIONS[t]) for t in targets}
    accepted = sorted({p for t in targets for p in PRECISIONS[t]})
    unknown = [p for p in asked if p not in accepted]
    if unknown or not asked:
        per_target = "; ".join(f"{t}: {', '.join(PRECISIONS[t])}" for t in targets)
        raise ExportError(f"unknown precision {', '.join(unknown) or repr(precision)}; accepted: {per_target}; or all")
    out = {}
    for t in targets:
        mine = [p for p in asked if p in PRECISIONS[t]]
        out[t] = mine or [DEFAULT_PRECISION[t]]
    return out


# --- references -------------------------------------------------------------------------------

@dataclass
class References:
    """The eager student's answers on the parity inputs, computed once per export."""

    image_inputs: list[tuple]
    image_calibration: list[tuple]
    text_inputs: list[tuple]
    text_calibration: list[tuple]
    text_languages: list[str]
    text_buckets: list[str]  # per parity text: its language and length bucket ("zh 50-64")
    image: torch.Tensor  # [N,D]
    text: torch.Tensor  # [T,D]
    # per language: where its decision prompts sit in `text` (group-major), and the prompts per group
    decisions: dict[str, tuple[slice, int]]
    length_texts: dict = field(default_factory=dict)  # what filled the length buckets: the manifest's record


def _decision_slices(eval_set: EvalSet) -> dict[str, tuple[slice, int]]:
    """parity_texts() starts with the decision groups, language after language: their rows in `text`."""
    out, start = {}, 0
    for lang, groups in eval_set.decision_groups().items():
        n = sum(len(g) for g in groups)
        out[lang], start = (slice(start, start + n), len(groups[0])), start + n
    return out


def length_sets(tokenizer: BilingualTokenizer, eval_set: EvalSet) -> tuple[list, list, str]:
    """(parity texts, calibration texts, where from): each length bucket up to the context filled per language,
    LENGTH_PARITY texts for the gate and LENGTH_CALIBRATION other ones for calibration."""
    if eval_set.length_pool is not None:
        pool_p = pool_c = eval_set.length_pool
        source = "given"
    else:
        pool_p, source = default_length_pool(seed=1)
        pool_c, _ = default_length_pool(seed=2)
    parity = length_texts(tokenizer, pool_p, LENGTH_PARITY)
    calibration = length_texts(tokenizer, pool_c, LENGTH_CALIBRATION, exclude={t for _, t in parity})
    return parity, calibration, source


def _interleave(a: list, b: list) -> list:
    """a and b alternately (the longer one's rest at the end), so a prefix of the calibration holds both."""
    out = []
    for i in range(max(len(a), len(b))):
        out += ([a[i]] if i < len(a) else []) + ([b[i]] if i < len(b) else [])
    return out


@torch.no_grad()
def make_references(model: DCCLIPStudent, tokenizer: BilingualTokenizer, eval_set: EvalSet) -> References:
    cfg = model.cfg
    long_parity, long_calibration, source = length_sets(tokenizer, eval_set)
    parity_texts = eval_set.parity_texts() + long_parity
    imgs = image_inputs(eval_set.parity_images, cfg)
    txts = text_inputs([t for _, t in parity_texts], tokenizer)
    calib_texts = _interleave(eval_set.calibration_texts or eval_set.parity_texts(), long_calibration)
    image_enc, text_enc = make_encoder(model, "image"), make_encoder(model, "text")
    return References(
        image_inputs=imgs, image_calibration=image_inputs(eval_set.calibration_images, cfg),
        text_inputs=txts, text_calibration=text_inputs([t for _, t in calib_texts], tokenizer),
        text_languages=[lang for lang, _ in parity_texts],
        text_buckets=[text_bucket(lang, int(mask.sum())) for (lang, _), (_, mask) in zip(parity_texts, txts)],
        image=torch.cat([image_enc(*a) for a in imgs]), text=torch.cat([text_enc(*a) for a in txts]),
        decisions=_decision_slices(eval_set),
        length_texts={"source": source, "parity": len(long_parity), "calibration": len(long_calibration),
                      "per_bucket": {"parity": LENGTH_PARITY, "calibration": LENGTH_CALIBRATION}})


def artifact_parity(tower: str, got: torch.Tensor, refs: References, quantized: bool) -> Parity:
    """Cosine figures and zero-shot top-1 agreement (English and Chinese class sets pooled), classes
    built by the bundle's scoring rule (the mean over a class's templates)."""
    agree, n = 0.0, 0
    for sl, k in refs.decisions.values():
        classes = prototypes(refs.text[sl], k)
        if tower == "image":
            a, m = top1_agreement(refs.image, got, classes, classes)
        else:
            a, m = top1_agreement(refs.image, refs.image, classes, prototypes(got[sl], k))
        agree, n = agree + a * m, n + m
    reference = refs.image if tower == "image" else refs.text
    return measure(reference, got, quantized, (agree / n, n) if n else None,
                   buckets=refs.text_buckets if tower == "text" else None)


# --- one target -------------------------------------------------------------------------------

def _text_bucket_inputs(inputs: list[tuple], length: int) -> list[tuple]:
    """The texts that fit a length bucket, cut to it: what that bucket's method will see on a phone."""
    return [(ids[:, :length], mask[:, :length]) for ids, mask in inputs if used_length(mask) <= length]


def _lower_android(model, tower: str, recipe: str, calibration: list[tuple]):
    """(lowered program, {length: method} for a text tower's length buckets, else None). Each bucket is
    quantized on the calibration texts it will see (those that fit it)."""
    cfg = model.cfg
    if tower == "image":
        example = example_inputs(cfg, tower)
        q = quantize_encoder(make_encoder(model, tower), tower, recipe, example, calibration)
        return lower_to_pte(q, example, "xnnpack"), None
    methods, buckets = {}, {}
    for length in text_lengths(cfg):
        example = example_inputs(cfg, tower, length)
        calib = _text_bucket_inputs(calibration, length)
        if recipe == "int8" and not calib:
            raise ExportError(f"no calibration text fits the {length}-token bucket; give texts of every length")
        methods[text_method(cfg, length)] = (
            quantize_encoder(make_encoder(model, tower, length), tower, recipe, example, calib), example)
        buckets[length] = text_method(cfg, length)
    return lower_methods_to_pte(methods, "xnnpack"), buckets


def _build_android(model, refs, precisions, directory, log, latency) -> list[dict]:
    cfg = model.cfg
    artifacts, built = [], {}
    for tower in TOWERS:
        calibration = refs.image_calibration if tower == "image" else refs.text_calibration
        inputs = refs.image_inputs if tower == "image" else refs.text_inputs
        for precision in precisions:
            recipe = recipe_for(tower, precision)
            file = f"{tower}_encoder_xnnpack_{recipe}.pte"
            if file in built:
                continue
            t0 = time.perf_counter()
            lowered, buckets = _lower_android(model, tower, recipe, calibration)
            (directory / file).write_bytes(lowered.buffer)
            seconds = time.perf_counter() - t0
            runner = PteRunner(directory / file) if buckets is None else LengthBucketRunner(directory / file, buckets)
            got = runner.run_batch(inputs)  # a text through the bucket the app would pick
            parity = artifact_parity(tower, got, refs, quantized=recipe != "fp32")
            full = runner if buckets is None else runner.runners[cfg.text.context_length]
            built[file] = {
                "tower": tower, "backend": "xnnpack", "format": "pte", "precision": recipe, "file": file,
                "size_bytes": len(lowered.buffer), "inputs": [s.to_dict() for s in input_specs(cfg, tower)],
                "output": output_spec(cfg).to_dict(), "quantization": describe_recipe(tower, recipe),
                "delegate_partitions": lowered.partitions, "ops_outside_delegate": lowered.ops_outside,
                "latency_ms_host": full.latency_ms(example_inputs(cfg, tower), LATENCY_RUNS) if latency else None,
                "export_seconds": round(seconds, 2), "parity": parity.to_dict(), "default": False}
            if buckets is not None:
                built[file]["length_buckets"] = [
                    {"length": L, "method": method, "delegate_partitions": lowered.methods[method]["partitions"],
                     "latency_ms_host": (runner.runners[L].latency_ms(example_inputs(cfg, tower, L), LATENCY_RUNS)
                                         if latency else None)} for L, method in buckets.items()]
            by_length = "" if buckets is None else " ms, ".join(
                f"{b['length']}: {b['latency_ms_host']:.2f}" for b in built[file]["length_buckets"]
                if b["latency_ms_host"] is not None)
            log(f"  {file}: {len(lowered.buffer) / 1e6:.2f} MB, {lowered.partitions} XNNPACK partition(s)"
                f"{' per method' if buckets else ''}, outside {lowered.ops_outside or 'none'}"
                f"{f'; host ms by length {by_length} ms' if by_length else ''}; {parity.summary()}")
            artifacts.append(built[file])
    return artifacts


def _build_ios(model, refs, precisions, directory, log, latency) -> list[dict]:
    cfg = model.cfg
    artifacts = []
    for tower in TOWERS:
        encoder = make_encoder(model, tower)
        example = example_inputs(cfg, tower)
        ins = input_specs(cfg, tower, id_dtype="int32")
        out = output_spec(cfg)
        for precision in precisions:
            t0 = time.perf_counter()
            file = f"{tower}_encoder_coreml_{precision}.mlpackage"
            mlmodel = convert_coreml(encoder, example, ins, out, precision)
            mlmodel.save(str(directory / file))
            seconds = time.perf_counter() - t0
            parity = structure_gate(check_coreml_structure(directory / file, [s.to_dict() for s in ins], [out.to_dict()]))
            size = sum(p.stat().st_size for p in (directory / file).rglob("*") if p.is_file())
            artifacts.append({
                "tower": tower, "backend": "coreml", "format": "mlpackage", "precision": precision, "file": file,
                "size_bytes": size, "inputs": [s.to_dict() for s in ins], "output": out.to_dict(),
                "quantization": describe_precision(precision), "delegate_partitions": None,
                "ops_outside_delegate": None, "latency_ms_host": None, "export_seconds": round(seconds, 2),
                "parity": parity.to_dict(), "default": False})
            log(f"  {file}: {size / 1e6:.2f} MB; {parity.summary()} (predict: macOS only, lowering.verify_coreml)")
        # the ExecuTorch Core ML delegate: same graph, for apps on the ExecuTorch iOS runtime
        t0 = time.perf_counter()
        file = f"{tower}_encoder_coreml_fp16.pte"
        lowered = lower_to_pte(encoder, example, "coreml", coreml_compile_specs=coreml_delegate_compile_specs())
        (directory / file).write_bytes(lowered.buffer)
        problems = _check_pte_structure(directory / file, input_specs(cfg, tower), out)
        if lowered.partitions != 1 or lowered.ops_outside:
            problems.append(f"expected the whole graph in one Core ML partition, got {lowered.partitions} "
                            f"partition(s) and outside ops {lowered.ops_outside}")
        parity = structure_gate(problems)
        artifacts.append({
            "tower": tower, "backend": "coreml", "format": "pte", "precision": "fp16", "file": file,
            "size_bytes": len(lowered.buffer), "inputs": [s.to_dict() for s in input_specs(cfg, tower)],
            "output": out.to_dict(), "quantization": describe_precision("fp16"),
            "delegate_partitions": lowered.partitions, "ops_outside_delegate": lowered.ops_outside,
            "latency_ms_host": None, "export_seconds": round(time.perf_counter() - t0, 2),
            "parity": parity.to_dict(), "default": False})
        log(f"  {file}: {len(lowered.buffer) / 1e6:.2f} MB, {lowered.partitions} Core ML partition(s); {parity.summary()}")
    return artifacts


def _check_pte_structure(path: Path, ins, out) -> list[str]:
    """A .pte whose delegate this runtime lacks (Core ML) still has its method's I/O metadata."""
    from executorch.runtime import Runtime

    meta = Runtime.get().load_program(str(path)).metadata("forward")
    got_in = [(list(meta.input_tensor_meta(i).sizes()), int(meta.input_tensor_meta(i).dtype()))
              for i in range(meta.num_inputs())]
    got_out = [(list(meta.output_tensor_meta(i).sizes()), int(meta.output_tensor_meta(i).dtype()))
               for i in range(meta.num_outputs())]
    codes = {"float32": 6, "int64": 4, "int32": 3}
    want_in = [(list(s.shape), codes[s.dtype]) for s in ins]
    want_out = [(list(out.shape), codes[out.dtype])]
    problems = []
    if got_in != want_in:
        problems.append(f"{path.name}: inputs {got_in} != expected {want_in}")
    if got_out != want_out:
        problems.append(f"{path.name}: outputs {got_out} != expected {want_out}")
    return problems


def _build_torchscript(model, refs, precisions, directory, log, latency) -> list[dict]:
    cfg = model.cfg
    artifacts = []
    for tower in TOWERS:
        t0 = time.perf_counter()
        encoder = make_encoder(model, tower)
        example = example_inputs(cfg, tower)
        file = f"{tower}_encoder_torchscript_fp32.pt"
        data = trace_encoder(encoder, example)
        (directory / file).write_bytes(data)
        seconds = time.perf_counter() - t0
        runner = TorchScriptRunner(str(directory / file))
        got = runner.run_batch(refs.image_inputs if tower == "image" else refs.text_inputs)
        parity = artifact_parity(tower, got, refs, quantized=False)
        lat = median_ms(runner, example, LATENCY_RUNS) if latency else None
        artifacts.append({
            "tower": tower, "backend": "torchscript", "format": "torchscript", "precision": "fp32", "file": file,
            "size_bytes": len(data), "inputs": [s.to_dict() for s in input_specs(cfg, tower)],
            "output": output_spec(cfg).to_dict(), "quantization": {"scheme": "none"}, "delegate_partitions": None,
            "ops_outside_delegate": None, "latency_ms_host": lat, "export_seconds": round(seconds, 2),
            "parity": parity.to_dict(), "default": False})
        log(f"  {file}: {len(data) / 1e6:.2f} MB; {parity.summary()}")
    return artifacts


BUILDERS = {"android": _build_android, "ios": _build_ios, "torchscript": _build_torchscript}


def _mark_defaults(artifacts: list[dict], target: str, precisions: list[str]) -> str:
    """The default precision if it was built, else the first asked; per tower, the artifact an app loads."""
    default = DEFAULT_PRECISION[target] if DEFAULT_PRECISION[target] in precisions else precisions[0]
    for tower in TOWERS:
        wanted = recipe_for(tower, default) if target == "android" else default
        fmt = "mlpackage" if target == "ios" else None
        for a in artifacts:
            if a["tower"] == tower and a["precision"] == wanted and fmt in (None, a["format"]):
                a["default"] = True
                break
    return default


def _checkpoint_hashes(checkpoint: str | Path | None) -> dict[str, str]:
    if checkpoint is None:
        return {}
    return {f: bm.file_sha256(Path(checkpoint) / f) for f in CHECKPOINT_FILES if (Path(checkpoint) / f).is_file()}


def _checkpoint_from_bundle(checkpoint: str | Path | None, bundle: Path) -> str | None:
    """The checkpoint's path relative to the bundle directory (POSIX), so the report finds it from anywhere
    the two are moved together; None without a checkpoint."""
    if checkpoint is None:
        return None
    return Path(os.path.relpath(Path(checkpoint).resolve(), bundle.resolve())).as_posix()


def export_bundles(model: DCCLIPStudent, tokenizer: BilingualTokenizer, targets: list[str], out: str | Path,
                   precisions: dict[str, list[str]] | None = None, eval_set: EvalSet | None = None,
                   allow_parity_failure: bool = False, checkpoint: str | Path | None = None,
                   measure_latency: bool = True, log=print, images=None, prompt=None) -> ExportResult:
    """Write OUT/<target>/ for each target, atomically and all together: if any artifact fails the gate
    (and allow_parity_failure is False), ParityGateError is raised and no bundle is written or replaced.

    Calibration and parity inputs: `eval_set`, or `images` (an image source object: FashionMNIST,
    ElevaterFolder, PairsFile; see inputs.eval_set_from_source), or by default Fashion-MNIST's test split.

    `prompt` (lowering.prompts.FoldedPrompt, from a tuned prompt): its student is exported (a visual prompt is
    in its image graph) and its class embeddings ship; the label set must be the one it was tuned for."""
    t_start = time.perf_counter()
    for t in targets:
        resolve_targets(t)
    precisions = precisions or {t: [DEFAULT_PRECISION[t]] for t in targets}
    for t in targets:
        for p in precisions.get(t) or [DEFAULT_PRECISION[t]]:
            if p not in PRECISIONS[t]:
                raise ExportError(f"unknown precision {p!r} for target {t!r}; accepted: {', '.join(PRECISIONS[t])}")
    if eval_set is not None and images is not None:
        raise ExportError("give export_bundles an eval_set or an image source (images=), not both")
    eval_set = eval_set or (eval_set_from_source(images) if images is not None else default_eval_set())
    if prompt is not None:
        prompt.check_labels(eval_set.labels)
        model = prompt.model
    model = model.eval()
    with threads(LATENCY_THREADS if measure_latency else 0, executorch=True):  # the caller's setting comes back after
        return _export(model, tokenizer, targets, Path(out), precisions, eval_set, log, measure_latency,
                       checkpoint, allow_parity_failure, prompt, t_start)


def _export(model, tokenizer, targets, out: Path, precisions, eval_set, log, measure_latency, checkpoint,
            allow_parity_failure, prompt, t_start: float) -> ExportResult:
    refs = make_references(model, tokenizer, eval_set)
    result = ExportResult()
    failures: list[str] = []
    with contextlib.ExitStack() as stack:
        staged = {}
        for target in targets:
            directory = stack.enter_context(atomic_directory(out / target))
            log(f"[{target}] -> {out / target}")
            ps = precisions.get(target) or [DEFAULT_PRECISION[target]]
            artifacts = BUILDERS[target](model, refs, ps, directory, log, measure_latency)
            manifest = bundle_parts.base_manifest(target, model, tokenizer, None if checkpoint is None else str(checkpoint),
                                                  _checkpoint_hashes(checkpoint),
                                                  _checkpoint_from_bundle(checkpoint, out / target))
            manifest["default_precision"] = _mark_defaults(artifacts, target, ps)
            manifest["artifacts"] = artifacts
            tokenizer.save(directory)
            bundle_parts.write_golden(directory, model, tokenizer, eval_set)
            manifest["class_embeddings"] = bundle_parts.write_class_embeddings(directory, model, tokenizer, eval_set)
            if prompt is not None:  # the tuned prompt's class embeddings replace the templates'
                manifest["class_embeddings"] = prompt.write_class_embeddings(directory, manifest["class_embeddings"])
            manifest["calibration"] = bundle_parts.calibration_entry(eval_set)
            mine = [f"{target}/{a['file']}: {'; '.join(a['parity']['failures'])}"
                    for a in artifacts if not a["parity"]["passed"]]
            failures += mine
            manifest["parity_gate"] = {"thresholds": THRESHOLDS, "passed": not mine,
                                       "overridden": bool(mine) and allow_parity_failure, "failures": mine,
                                       "length_texts": refs.length_texts}
            manifest["files"] = bm.file_table(directory)
            (directory / bm.MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")
            staged[target] = manifest
        result.manifests = staged
        if failures and not allow_parity_failure:
            raise ParityGateError(failures, staged)
    # leaving the stack renamed every staged directory into place
    result.bundles = {t: out / t for t in targets}
    result.gate_passed = not failures
    result.seconds = time.perf_counter() - t_start
    return result


# --- command line -----------------------------------------------------------------------------

def open_source(spec: str, split: str):
    """--images SOURCE opened as the training runners open it; every way it can be wrong is an InputsError."""
    try:
        return open_image_source(spec, split)
    except (ValueError, OSError) as e:  # unknown name, missing folder/labels/split, bad pairs file, no dataset
        raise InputsError(f"--images {spec!r}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lowering.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help=f"{', '.join(TARGETS)} or all")
    ap.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="student checkpoint directory")
    ap.add_argument("--precision", default=None,
                    help="comma-separated, or all; default: " + ", ".join(f"{t} {p}" for t, p in DEFAULT_PRECISION.items()))
    ap.add_argument("--labels", default=None, help="English labels, one per line (default: Fashion-MNIST's)")
    ap.add_argument("--labels-zh", default=None, help="Chinese labels, one per line, same order as --labels")
    ap.add_argument("--out", default="bundles", help="output directory; bundles go to OUT/<target>/")
    ap.add_argument("--allow-parity-failure", action="store_true",
                    help="write bundles even when artifacts fail the parity gate (recorded in the manifest)")
    ap.add_argument("--no-latency", action="store_true", help="skip the host latency measurement")
    ap.add_argument("--images", default=None,
                    help=f"calibration and parity images: {IMAGE_SOURCES} (default: Fashion-MNIST's test split)")
    ap.add_argument("--split", default="test", help="the split of an ELEVATER folder or Fashion-MNIST --images uses")
    ap.add_argument("--eval-images", type=int, default=256,
                    help="images for parity (half as many, others, calibrate static int8)")
    ap.add_argument("--prompts", default=None, metavar="DIR",
                    help="a tuned prompt (train.prompt_tune --save): its class embeddings ship for the label set it "
                         "was tuned for, a visual prompt goes into the image graph (lowering/prompts.py)")
    return run_main(ap, _run, argv)


def _run(args: argparse.Namespace) -> int:
    targets = resolve_targets(args.target)
    precisions = resolve_precisions(targets, args.precision)
    # None: the source's own label set (--images), else Fashion-MNIST's (the default images)
    given = args.labels is not None or args.labels_zh is not None
    labels = read_labels(args.labels, args.labels_zh) if given else None
    if args.eval_images < 2:
        raise ExportError(f"--eval-images must be >= 2, got {args.eval_images}")
    source = open_source(args.images, args.split) if args.images is not None else None
    check_writable_dir(args.out, "--out", ExportError)  # said now, not after the export
    for t in targets:
        if (Path(args.out) / t).exists() and not (Path(args.out) / t).is_dir():
            raise ExportError(f"--out {args.out!r}: {str(Path(args.out) / t)!r} is a file; the {t} bundle is a "
                              "directory there. Move the file or give another --out")
    if not Path(args.checkpoint).is_dir() and args.checkpoint == DEFAULT_CHECKPOINT:
        raise CheckpointError(f"no checkpoint at the default {DEFAULT_CHECKPOINT!r}: run `python -m train.demo` "
                              "to make one, or pass --checkpoint DIR (a directory written by save_student)")
    model, tokenizer = load_student(args.checkpoint)
    folded = None
    if args.prompts is not None:
        from .prompts import fold_prompt

        folded = fold_prompt(args.prompts, model, tokenizer)
        labels = folded.classes if labels is None else labels
    n_cal, n_par = max(1, args.eval_images // 2), args.eval_images
    eval_set = (default_eval_set(labels, n_calibration=n_cal, n_parity=n_par) if source is None else
                eval_set_from_source(source, labels, n_calibration=n_cal, n_parity=n_par, name=args.images))
    try:
        result = export_bundles(model, tokenizer, targets, args.out, precisions, eval_set,
                                allow_parity_failure=args.allow_parity_failure, checkpoint=args.checkpoint,
                                measure_latency=not args.no_latency, prompt=folded)
    except ParityGateError as e:  # exit 1, not 2: the inputs were fine, the artifacts are not
        print(f"error: {e}\nNo bundle was written. Re-run with --allow-parity-failure to write it anyway "
              "(the manifest will record the failure).", file=sys.stderr)
        return 1
    if not result.gate_passed:
        print("WARNING: artifacts FAILED the parity gate and were written anyway (--allow-parity-failure); "
              "the manifests record parity_gate.overridden = true. Do not ship these bundles.", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in result.bundles.values())} in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
