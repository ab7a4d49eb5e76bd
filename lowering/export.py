"""Export a student checkpoint to phone bundles, refusing any artifact that fails the parity gate.

    python -m lowering.export --target android|ios|torchscript|all [--checkpoint DIR]
        [--precision P[,P...]|all] [--labels FILE --labels-zh FILE] [--out DIR]
        [--images SOURCE [--split S]] [--allow-parity-failure] [--no-latency] [--eval-images N]

Precisions: android fp32, int8 (default), int8-dynamic, 8da4w; ios fp16 (default), int8, palettize4
(each also ships an ExecuTorch .pte with the Core ML delegate, fp16); torchscript fp32.

An Android text .pte holds one method per length bucket (12, 16, 32 and the context length; encoders.text_lengths),
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
    result.artifacts["android"]  -> its artifacts as bundle_manifest.Artifact records

Export is a loop over towers (lowering/towers.py: each tower's encoder, example inputs, specs and parity inputs)
and precisions; `artifact_plan` says what a target ships per tower, BUILDERS how each kind is built and checked.
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

from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.atomic import atomic_directory, check_writable_dir
from dcclip_mobile.checkpoint import CHECKPOINT_FILES, CheckpointError, load_student
from dcclip_mobile.data.sources import IMAGE_SOURCES, open_image_source
from dcclip_mobile.errors import DCClipError, run_main
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.timing import median_ms, threads
from dcclip_mobile.tokenizer import BilingualTokenizer

from . import bundle as bundle_parts
from .coreml_backend import (COREML_PRECISIONS, check_coreml_structure, convert_coreml, coreml_delegate_compile_specs,
                             describe_precision, package_size)
from .encoders import TOWERS, spec_dicts
from .executorch_backend import LengthBucketRunner, PteRunner, check_pte_structure, lower_methods_to_pte, lower_to_pte
from .inputs import EvalSet, InputsError, default_eval_set, eval_set_from_source, read_labels
from .parity import THRESHOLDS, structure_gate
from .quantize import XNNPACK_PRECISIONS, describe_recipe, quantize_encoder, recipe_for
from .torchscript_backend import TorchScriptRunner, trace_encoder
from .towers import References, Tower, artifact_parity, make_references, make_towers

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
    artifacts: dict[str, list[bm.Artifact]] = field(default_factory=dict)  # the records of manifests' artifacts
    seconds: float = 0.0
    gate_passed: bool = True


def resolve_targets(target: str) -> list[str]:
    if target == "all":
        return list(TARGETS)
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; accepted: {', '.join(TARGETS + ('all',))}")
    return [target]


def resolve_precisions(targets: list[str], precision: str | None) -> dict[str, list[str]]:
    """--precision value -> {target: [items]}; None -> each target's default. An item is a precision for both
    towers or TOWER:PRECISION for one (e.g. 'fp32,text:int8-dynamic': the image tower in fp32 and the text tower
    in fp32 and int8-dynamic, int8-dynamic its default), so a bundle can ship each tower in the smallest
    precision that passes the gate."""
    if precision is None:
        return {t: [DEFAULT_PRECISION[t]] for t in targets}
    asked = [p.strip() for p in precision.split(",") if p.strip()]
    if asked == ["all"]:
        return {t: list(PRECISIONS[t]) for t in targets}
    accepted = sorted({p for t in targets for p in PRECISIONS[t]})
    bad_tower = [p for p in asked if ":" in p and p.split(":", 1)[0] not in TOWERS]
    if bad_tower:
        raise ExportError(f"--precision {', '.join(bad_tower)}: a tower-specific precision is image:P or text:P")
    unknown = [p for p in asked if _split_item(p)[1] not in accepted]
    if unknown or not asked:
        per_target = "; ".join(f"{t}: {', '.join(PRECISIONS[t])}" for t in targets)
        raise ExportError(f"unknown precision {', '.join(unknown) or repr(precision)}; accepted: {per_target}; "
                          "or all; or TOWER:PRECISION for one tower")
    out = {}
    for t in targets:
        mine = [p for p in asked if _split_item(p)[1] in PRECISIONS[t]]
        out[t] = mine or [DEFAULT_PRECISION[t]]
    return out


def _split_item(item: str) -> tuple[str | None, str]:
    """'text:int8' -> ('text', 'int8'); 'int8' -> (None, 'int8')."""
    tower, _, precision = item.rpartition(":")
    return tower or None, precision


def tower_precisions(target: str, tower: str, items: list[str]) -> list[str]:
    """The precisions `items` asks of one tower, in order (the target's default where it asks none)."""
    mine = [p for t, p in map(_split_item, items) if t in (None, tower)]
    return list(dict.fromkeys(mine)) or [DEFAULT_PRECISION[target]]


def tower_default(target: str, tower: str, items: list[str]) -> str:
    """The precision an app loads for a tower: the first asked for that tower alone; else the target's default
    if asked; else the first asked."""
    specific = [p for t, p in map(_split_item, items) if t == tower]
    if specific:
        return specific[0]
    ps = tower_precisions(target, tower, items)
    return DEFAULT_PRECISION[target] if DEFAULT_PRECISION[target] in ps else ps[0]


# --- the artifacts ----------------------------------------------------------------------------

def artifact_plan(target: str, tower: str, items: list[str]) -> list[tuple[str, str, str]]:
    """(backend, format, precision) of each artifact a target ships for a tower, in manifest order, each once
    (8da4w's image tower is the int8 recipe); `items` as resolve_precisions gives them."""
    precisions = tower_precisions(target, tower, items)
    if target == "android":
        plan = [("xnnpack", "pte", recipe_for(tower, p)) for p in precisions]
    elif target == "ios":  # and the ExecuTorch Core ML delegate: same graph, for apps on the ExecuTorch iOS runtime
        plan = [("coreml", "mlpackage", p) for p in precisions] + [("coreml", "pte", "fp16")]
    else:
        plan = [("torchscript", "torchscript", p) for p in precisions]
    return list(dict.fromkeys(plan))


def _xnnpack_pte(tower: Tower, recipe: str, path: Path, refs: References, latency: bool, log) -> bm.Artifact:
    """An Android .pte: a method per length bucket of the tower (one without), each quantized on the calibration
    inputs it will see; the gate runs each parity input through the method the app would pick."""
    t0 = time.perf_counter()
    lengths = tower.lengths or (None,)
    methods = {}
    for length in lengths:
        example, calibration = tower.example_inputs(length), tower.calibration(length)
        if recipe == "int8" and length is not None and not calibration:
            raise ExportError(f"no calibration text fits the {length}-token bucket; give texts of every length")
        methods[tower.method(length)] = (
            quantize_encoder(tower.encoder(length), tower.name, recipe, example, calibration), example)
    lowered = lower_methods_to_pte(methods, "xnnpack")
    path.write_bytes(lowered.buffer)
    seconds = time.perf_counter() - t0
    buckets = {L: tower.method(L) for L in tower.lengths}
    runner = LengthBucketRunner(path, buckets) if buckets else PteRunner(path)
    parity = artifact_parity(tower, runner.run_batch(tower.parity_inputs), refs, quantized=recipe != "fp32")
    per_method = runner.runners if buckets else {None: runner}
    ms = {L: median_ms(per_method[L], tower.example_inputs(L), LATENCY_RUNS) if latency else None for L in lengths}
    by_length = " ms, ".join(f"{L}: {ms[L]:.2f}" for L in tower.lengths if ms[L] is not None)
    log(f"  {path.name}: {len(lowered.buffer) / 1e6:.2f} MB, {lowered.partitions} XNNPACK partition(s)"
        f"{' per method' if buckets else ''}, outside {lowered.ops_outside or 'none'}"
        f"{f'; host ms by length {by_length} ms' if by_length else ''}; {parity.summary()}")
    return bm.Artifact(
        tower=tower.name, backend="xnnpack", format="pte", precision=recipe, file=path.name,
        size_bytes=len(lowered.buffer), inputs=spec_dicts(tower.input_specs()), output=tower.output_spec().to_dict(),
        quantization=describe_recipe(tower.name, recipe), delegate_partitions=lowered.partitions,
        ops_outside_delegate=lowered.ops_outside, latency_ms_host=ms[lengths[-1]], export_seconds=round(seconds, 2),
        parity=parity.to_dict(),
        length_buckets=[{"length": L, "method": m, "delegate_partitions": lowered.methods[m]["partitions"],
                         "latency_ms_host": ms[L]} for L, m in buckets.items()] or None)


def _coreml_package(tower: Tower, precision: str, path: Path, refs: References, latency: bool, log) -> bm.Artifact:
    """An iOS .mlpackage; it cannot run here, so it passes a structure gate (predict: lowering.verify_coreml)."""
    t0 = time.perf_counter()
    ins, out = tower.input_specs(id_dtype="int32"), tower.output_spec()
    convert_coreml(tower.encoder(), tower.example_inputs(), ins, out, precision).save(str(path))
    seconds = time.perf_counter() - t0
    parity = structure_gate(check_coreml_structure(path, spec_dicts(ins), [out.to_dict()]))
    size = package_size(path)
    log(f"  {path.name}: {size / 1e6:.2f} MB; {parity.summary()} (predict: macOS only, lowering.verify_coreml)")
    return bm.Artifact(
        tower=tower.name, backend="coreml", format="mlpackage", precision=precision, file=path.name, size_bytes=size,
        inputs=spec_dicts(ins), output=out.to_dict(), quantization=describe_precision(precision),
        delegate_partitions=None, ops_outside_delegate=None, latency_ms_host=None, export_seconds=round(seconds, 2),
        parity=parity.to_dict())


def _coreml_pte(tower: Tower, precision: str, path: Path, refs: References, latency: bool, log) -> bm.Artifact:
    """The same graph through the ExecuTorch Core ML delegate: whole in one partition, its I/O as the manifest's."""
    t0 = time.perf_counter()
    lowered = lower_to_pte(tower.encoder(), tower.example_inputs(), "coreml",
                           coreml_compile_specs=coreml_delegate_compile_specs())
    path.write_bytes(lowered.buffer)
    ins, out = spec_dicts(tower.input_specs()), tower.output_spec().to_dict()
    parity = structure_gate(check_pte_structure(path, ins, [out]) + lowered.whole_graph_problems())
    log(f"  {path.name}: {len(lowered.buffer) / 1e6:.2f} MB, {lowered.partitions} Core ML partition(s); "
        f"{parity.summary()}")
    return bm.Artifact(
        tower=tower.name, backend="coreml", format="pte", precision=precision, file=path.name,
        size_bytes=len(lowered.buffer), inputs=ins, output=out, quantization=describe_precision(precision),
        delegate_partitions=lowered.partitions, ops_outside_delegate=lowered.ops_outside, latency_ms_host=None,
        export_seconds=round(time.perf_counter() - t0, 2), parity=parity.to_dict())


def _torchscript(tower: Tower, precision: str, path: Path, refs: References, latency: bool, log) -> bm.Artifact:
    t0 = time.perf_counter()
    data = trace_encoder(tower.encoder(), tower.example_inputs())
    path.write_bytes(data)
    seconds = time.perf_counter() - t0
    runner = TorchScriptRunner(str(path))
    parity = artifact_parity(tower, runner.run_batch(tower.parity_inputs), refs, quantized=False)
    log(f"  {path.name}: {len(data) / 1e6:.2f} MB; {parity.summary()}")
    return bm.Artifact(
        tower=tower.name, backend="torchscript", format="torchscript", precision=precision, file=path.name,
        size_bytes=len(data), inputs=spec_dicts(tower.input_specs()), output=tower.output_spec().to_dict(),
        quantization={"scheme": "none"}, delegate_partitions=None, ops_outside_delegate=None,
        latency_ms_host=median_ms(runner, tower.example_inputs(), LATENCY_RUNS) if latency else None,
        export_seconds=round(seconds, 2), parity=parity.to_dict())


BUILDERS = {("xnnpack", "pte"): _xnnpack_pte, ("coreml", "mlpackage"): _coreml_package,
            ("coreml", "pte"): _coreml_pte, ("torchscript", "torchscript"): _torchscript}


def build_artifacts(target: str, towers: tuple[Tower, ...], refs: References, precisions: list[str],
                    directory: Path, log, latency: bool) -> list[bm.Artifact]:
    """Write a target's artifacts into `directory`, tower by tower, precision by precision."""
    artifacts = []
    for tower in towers:
        for backend, fmt, precision in artifact_plan(target, tower.name, precisions):
            path = directory / bm.artifact_file_name(tower.name, backend, fmt, precision)
            artifacts.append(BUILDERS[backend, fmt](tower, precision, path, refs, latency, log))
    return artifacts


def _mark_defaults(artifacts: list[bm.Artifact], target: str, items: list[str]) -> str:
    """Per tower, the artifact an app loads (tower_default's precision, the first artifact it plans); returns
    the manifest's default_precision: that precision, or 'image:P,text:Q' where the towers differ."""
    defaults = {tower: tower_default(target, tower, items) for tower in TOWERS}
    for tower, default in defaults.items():
        file = bm.artifact_file_name(tower, *artifact_plan(target, tower, [default])[0])
        next(a for a in artifacts if a.file == file).default = True
    if len(set(defaults.values())) == 1:
        return defaults[TOWERS[0]]
    return ",".join(f"{tower}:{p}" for tower, p in defaults.items())


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
            tower, precision = _split_item(p)
            if precision not in PRECISIONS[t] or tower not in (None, *TOWERS):
                raise ExportError(f"unknown precision {p!r} for target {t!r}; accepted: {', '.join(PRECISIONS[t])}, "
                                  "each alone or as TOWER:PRECISION (image or text)")
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
    towers = make_towers(model, refs)
    result = ExportResult()
    failures: list[str] = []
    with contextlib.ExitStack() as stack:
        staged = {}
        for target in targets:
            directory = stack.enter_context(atomic_directory(out / target))
            log(f"[{target}] -> {out / target}")
            ps = precisions.get(target) or [DEFAULT_PRECISION[target]]
            artifacts = build_artifacts(target, towers, refs, ps, directory, log, measure_latency)
            manifest = bundle_parts.base_manifest(target, model, tokenizer, None if checkpoint is None else str(checkpoint),
                                                  _checkpoint_hashes(checkpoint),
                                                  _checkpoint_from_bundle(checkpoint, out / target))
            manifest["default_precision"] = _mark_defaults(artifacts, target, ps)
            manifest["artifacts"] = [a.to_dict() for a in artifacts]
            tokenizer.save(directory)
            bundle_parts.write_golden(directory, model, tokenizer, eval_set)
            manifest["class_embeddings"] = bundle_parts.write_class_embeddings(directory, model, tokenizer, eval_set)
            if prompt is not None:  # the tuned prompt's class embeddings replace the templates'
                manifest["class_embeddings"] = prompt.write_class_embeddings(directory, manifest["class_embeddings"])
            manifest["calibration"] = bundle_parts.calibration_entry(eval_set)
            mine = [f"{target}/{a.file}: {'; '.join(a.parity['failures'])}"
                    for a in artifacts if not a.parity["passed"]]
            failures += mine
            manifest["parity_gate"] = {"thresholds": THRESHOLDS, "passed": not mine,
                                       "overridden": bool(mine) and allow_parity_failure, "failures": mine,
                                       "length_texts": refs.length_texts}
            manifest["files"] = bm.file_table(directory)
            (directory / bm.MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")
            staged[target] = manifest
            result.artifacts[target] = artifacts
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
                    help="comma-separated, or all; TOWER:P for one tower (e.g. fp32,text:int8-dynamic ships the text "
                         "tower in int8-dynamic by default); default: "
                         + ", ".join(f"{t} {p}" for t, p in DEFAULT_PRECISION.items()))
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
