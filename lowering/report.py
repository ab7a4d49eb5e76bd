"""What the device will see: accuracy (English and Chinese), latency, size and memory of every artifact
in a bundle, next to the eager PyTorch student it came from.

    python -m lowering.report --bundle runs/demo/bundles/android [--images fashion-mnist --limit 500]
        [--checkpoint DIR] [--templates N] [--device-json FILE] [--heldout FILE] [--out DIR]

Each runnable artifact (.pte through the ExecuTorch runtime, TorchScript) is paired with the other tower's
artifact of the same backend and precision (else that backend's default, as in a bundle whose towers ship in
different precisions) for zero-shot top-1/top-5 (class names x templates per language). Scoring: by default exactly the bundle's rule (lowering.scoring: the manifest's
class_embeddings.templates), which the phone apps use too, so host rows and --device-json rows are measured
the same way; --templates N scores the host rows with the first N CLIP templates instead, and every row's
"scoring" field (a column in report.md) says which rule it used. Latency: batch 1, median and p90 of
--runs after warm-up, threads stated. Peak memory: the growth of the process's peak RSS while loading and
running the artifact (Linux VmHWM, reset before each). Core ML packages cannot run on Linux: their rows
carry size and parity only. A bundle whose files do not match the manifest's sha256 table is refused, and so
is any path it names outside the bundle (the path rule: dcclip_mobile/bundle_manifest.py). --device-json
merges figures the demo apps measured on a phone (same entry schema). Writes report.json, report.md and PNG
plots (accuracy vs latency, vs size).

The eager row: --checkpoint DIR, or the checkpoint the manifest names (student.checkpoint_from_bundle,
relative to the bundle; for older bundles student.checkpoint) used only when every file's sha256 matches the
manifest's student.checkpoint_sha256; otherwise there is no eager row and a note says how to pass --checkpoint.
Bad arguments and bundles end in one line on stderr and exit code 2, before anything is computed.

Held-out fidelity: --heldout FILE, a train.demo summary.json or a `python -m train.heldout_eval --checkpoint C
--json F` file, adds what the held-out protocol (dcclip_mobile/heldout.py: classes no stage saw) measured for the
students it names: teacher and student zero-shot top-1 per language (mean over sets), chance, retention above
chance with its 90% interval where the file has one, top-1 agreement with the teacher (report.json's
"heldout_fidelity", a section of report.md). Each row names its checkpoint and says whether it is this bundle's
(the checkpoint's files against the manifest's student.checkpoint_sha256): a row of another checkpoint is not this
bundle's fidelity. The file is read as JSON, its numbers only.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.atomic import check_writable_dir
from dcclip_mobile.checkpoint import CHECKPOINT_FILES, load_student
from dcclip_mobile.assets import assets_present
from dcclip_mobile.data.labels import templates as clip_templates
from dcclip_mobile.data.preprocess import ImagePreprocess, preprocess_image
from dcclip_mobile.data.sources import open_image_source
from dcclip_mobile.errors import DCClipError, run_main
from dcclip_mobile.heldout import retention
from dcclip_mobile.tokenizer import BilingualTokenizer
from dcclip_mobile.timing import percentile, run_times_ms
from dcclip_mobile.timing import threads as thread_setting
from dcclip_mobile.zeroshot import topk_accuracy

from . import scoring
from .executorch_backend import LengthBucketRunner, PteRunner
from .torchscript_backend import TorchScriptRunner

REPORT_FORMAT_VERSION = 1
ENTRY_FIELDS = ("name", "tower", "backend", "precision", "size_bytes", "latency_ms_median", "latency_ms_p90",
                "peak_memory_bytes", "accuracy", "parity", "source", "scoring", "latency_ms_by_length")
Runner = Callable[..., torch.Tensor]


class ReportError(DCClipError, ValueError):
    pass


# ------------------------------------------------------------------------------------------- measuring
def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def timed(run: Runner, args: tuple, runs: int, warmup: int = 5) -> tuple[float, float]:
    """(median, p90) milliseconds of one batch-1 call."""
    times = run_times_ms(run, args, runs, warmup)
    return statistics.median(times), percentile(times, 0.9)


def embed_images(run: Runner, pixels: torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.cat([run(pixels[i:i + 1]) for i in range(len(pixels))]).float(), dim=-1)


def class_prototypes(run: Runner, tokenizer: BilingualTokenizer, classnames: list[str], lang: str,
                     templates: list[str], id_dtype: torch.dtype) -> torch.Tensor:
    """[C, D] by the bundle's scoring rule (lowering.scoring), one prompt at a time (batch-1 artifacts)."""
    t = tokenizer(scoring.prompts(classnames, templates))
    ids, mask = t["input_ids"].to(id_dtype), t["attention_mask"].to(id_dtype)
    return scoring.prototypes(torch.cat([run(ids[i:i + 1], mask[i:i + 1]) for i in range(len(ids))]), len(templates))


# ---------------------------------------------------------------------------------------------- report
def load_eval(images: str, limit: int, size_cfg) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[str]], str]:
    source = open_image_source(images, "test", limit)
    pre = ImagePreprocess.from_dict(size_cfg)
    pixels = torch.stack([preprocess_image(source.image(i), pre) for i in range(len(source))])
    return pixels, torch.as_tensor(source.labels), source.classes, source.dataset_id


def runner_for(bundle: Path, artifact: dict, manifest: dict | None = None) -> Runner | None:
    """The artifact's runner here (None where it cannot run on this host); its path by the path rule."""
    manifest = manifest if manifest is not None else bm.load_manifest(bundle)
    fmt = artifact["format"]
    if fmt not in ("pte", "torchscript") or (fmt == "pte" and artifact["backend"] != "xnnpack"):
        return None  # Core ML packages and the Core ML delegate run only on Apple devices
    path = bm.bundle_path(bundle, manifest, artifact["file"], f"artifact {artifact['file']!r}")
    runtime = "the ExecuTorch runtime" if fmt == "pte" else "TorchScript"
    if fmt == "pte":
        with open(path, "rb") as f:
            head = f.read(8)
        if head[4:6] != b"ET":  # the flatbuffer file identifier of every ExecuTorch program ("ET12")
            raise ReportError(f"{str(path)!r} cannot be loaded by {runtime}: it is not an ExecuTorch program (no "
                              "\"ET\" identifier in its header). Re-export the bundle with `python -m lowering.export`")
    try:
        if fmt == "pte" and artifact.get("length_buckets"):  # a text through the bucket the app would pick
            return LengthBucketRunner(path, {b["length"]: b["method"] for b in artifact["length_buckets"]})
        return PteRunner(path) if fmt == "pte" else TorchScriptRunner(str(path))
    except Exception as e:  # noqa: BLE001 - any loader failure is a bad artifact, said in one line
        detail = str(e).strip().splitlines()[0] if str(e).strip() else "no detail"
        raise ReportError(f"{str(path)!r} cannot be loaded by {runtime} ({type(e).__name__}: {detail}). Re-export the "
                          "bundle with the dcclip-mobile and ExecuTorch this report runs with") from None


# ------------------------------------------------------------------------------------------ the eager row
def _checkpoint_mismatch(directory: Path, recorded: dict) -> str | None:
    """Why `directory` is not the checkpoint whose sha256s the manifest recorded (None: it is)."""
    if not directory.is_dir():
        return f"{str(directory)!r} does not exist"
    for f in CHECKPOINT_FILES:
        if not (directory / f).is_file():
            return f"{str(directory / f)!r} is missing"
        if bm.file_sha256(directory / f) != recorded.get(f):
            return f"{str(directory / f)!r} differs from the sha256 the manifest recorded"
    return None


def manifest_checkpoint(bundle: Path, manifest: dict) -> tuple[Path | None, str]:
    """(the checkpoint the manifest names, verified) or (None, why not): resolved relative to the bundle
    (student.checkpoint_from_bundle, then student.checkpoint), or as given where a bundle from before
    checkpoint_from_bundle stored a path relative to the directory export ran in; used only when every
    checkpoint file's sha256 matches student.checkpoint_sha256."""
    student = manifest.get("student") if isinstance(manifest.get("student"), dict) else {}
    recorded = student.get("checkpoint_sha256")
    names = [n for n in (student.get("checkpoint_from_bundle"), student.get("checkpoint")) if isinstance(n, str) and n]
    if not names:
        return None, "the manifest names no checkpoint"
    if not isinstance(recorded, dict) or set(recorded) != set(CHECKPOINT_FILES):
        return None, "the manifest records no sha256 for every checkpoint file, so no checkpoint can be trusted"
    candidates: list[Path] = []
    for n in names:
        for c in (bundle / n, Path(n)):
            if c not in candidates:
                candidates.append(c)
    reasons = []
    for c in candidates:
        why = _checkpoint_mismatch(c, recorded)
        if why is None:
            return c, "its sha256 matches the manifest"
        reasons.append(why)
    return None, "; ".join(dict.fromkeys(reasons))


def eager_checkpoint(bundle: Path, manifest: dict, checkpoint: str | None, log=print) -> str | Path | None:
    """Which checkpoint gives the eager row, saying so: --checkpoint as given (noting when it is not the one the
    bundle was exported from), else the manifest's when its sha256 matches, else None with how to pass one."""
    student = manifest.get("student") if isinstance(manifest.get("student"), dict) else {}
    recorded = student.get("checkpoint_sha256")
    if checkpoint is not None:
        if isinstance(recorded, dict) and set(recorded) == set(CHECKPOINT_FILES):
            why = _checkpoint_mismatch(Path(checkpoint), recorded)
            if why is not None:
                log(f"note: the eager row is --checkpoint {checkpoint!r}, which is not the checkpoint this bundle was "
                    f"exported from ({why})")
        return checkpoint
    found, why = manifest_checkpoint(bundle, manifest)
    if found is None:
        log(f"note: no eager row: {why}. Pass --checkpoint DIR (the checkpoint the bundle was exported from) to "
            "compare the artifacts with the eager student")
    return found


def shipped_class_embeddings(bundle: Path, manifest: dict, classnames: dict[str, list[str]],
                             error: type[Exception] = ValueError) -> dict[str, torch.Tensor]:
    """{lang: [classes, D]}: the class embeddings a bundle ships (what the apps classify with), refused with
    `error` when the evaluation set names other classes."""
    entry = manifest.get("class_embeddings")
    if not entry:
        raise error(f"bundle {str(bundle)!r} ships no class embeddings")
    data = json.loads(bm.bundle_path(bundle, manifest, entry["file"], "class_embeddings.file").read_text(encoding="utf-8"))
    for lang in ("en", "zh"):
        if list(classnames[lang]) != data[f"labels_{lang}"]:
            raise error(f"the bundle ships class embeddings for its own label set ({lang}: "
                        f"{data[f'labels_{lang}'][:3]}...), not the evaluation set's; pass --images with the task "
                        "its prompt was tuned on, or --templates N to score by templates")
    return {lang: torch.tensor(data[f"embeddings_{lang}"]) for lang in ("en", "zh")}


def shipped_tuned_embeddings(bundle: Path, manifest: dict, classnames: dict[str, list[str]]) -> dict | None:
    """shipped_class_embeddings plus "rule", the scoring rule's name, for a bundle whose class embeddings come
    from a tuned prompt (lowering/prompts.py); None for a bundle whose classes its templates rebuild."""
    prompt = (manifest.get("class_embeddings") or {}).get("prompt")
    if not prompt:
        return None
    out: dict = shipped_class_embeddings(bundle, manifest, classnames, ReportError)
    out["rule"] = f"shipped class embeddings (tuned {prompt.get('method', '?')} prompt, {prompt.get('shots', '?')} shots)"
    return out


def first_clip_templates(n: int) -> dict[str, list[str]]:
    """{lang: the first n of the 80 CLIP templates}, as train.evaluate uses (the bilingual-labels asset)."""
    if n < 1:
        raise ReportError(f"--templates must be >= 1, got {n}")
    if not assets_present("bilingual-labels"):
        raise ReportError("--templates N needs the CLIP templates (the bilingual-labels asset): run "
                          "`python -m dcclip_mobile.assets fetch`, or leave --templates out to score with the bundle's")
    return {lang: clip_templates(lang)[:n] for lang in scoring.LANGS}


def scoring_rule(manifest: dict, templates: dict[str, list[str]] | None,
                 rule: str | None = None) -> tuple[dict[str, list[str]], str]:
    """(templates, the rule's name as rows state it). None: the manifest's templates, what the phone apps
    score with; a bundle without class embeddings states none, so the exporter's default templates stand in."""
    if templates is not None:
        templates = scoring.check_templates(templates)
        return templates, rule or f"given templates ({scoring.describe(templates)})"
    shipped = scoring.manifest_templates(manifest)
    if shipped is None:
        return (dict(scoring.BUNDLE_TEMPLATES),
                f"exporter default templates ({scoring.describe(scoring.BUNDLE_TEMPLATES)}; no class embeddings)")
    return shipped, f"manifest templates ({scoring.describe(shipped)})"


def partner_artifact(manifest: dict, a: dict, tower: str) -> dict | None:
    """The `tower` artifact scored with artifact `a`: the one of the same backend and precision, else (a bundle
    whose towers ship in different precisions) that backend's default, the pair the app runs."""
    same = [b for b in manifest["artifacts"] if b["tower"] == tower and b["backend"] == a["backend"]]
    return (next((b for b in same if b["precision"] == a["precision"]), None)
            or next((b for b in same if b.get("default")), None))


def build_report(bundle: str | Path, images: str = "fashion-mnist", limit: int = 500, runs: int = 50,
                 threads: int = 2, checkpoint: str | None = None, templates: dict[str, list[str]] | None = None,
                 device_json: str | None = None, templates_rule: str | None = None,
                 heldout: str | Path | None = None) -> dict:
    """The report's figures for `bundle` (see _build_report), timed on `threads` threads; the caller's thread
    setting is put back afterwards."""
    with thread_setting(threads, executorch=True):
        return _build_report(bundle, images, limit, runs, threads, checkpoint, templates, device_json, templates_rule,
                             heldout)


def _build_report(bundle: str | Path, images: str = "fashion-mnist", limit: int = 500, runs: int = 50,
                 threads: int = 2, checkpoint: str | None = None, templates: dict[str, list[str]] | None = None,
                 device_json: str | None = None, templates_rule: str | None = None,
                 heldout: str | Path | None = None) -> dict:
    """`templates` None scores every row by the bundle's own rule (the manifest's templates); a dict
    ({lang: [".. {c} .."]}) overrides it for the host rows, named by `templates_rule` in each row. `heldout`: a
    held-out result file (read_heldout), carried as "heldout_fidelity" (None: not given)."""
    bundle = Path(bundle)
    manifest = bm.load_manifest(bundle)
    problems = bm.verify_files(bundle, manifest)
    if problems:
        raise ReportError(f"bundle {str(bundle)!r} does not match its manifest; refusing to report on it: "
                          + "; ".join(problems[:5]))
    heldout_read = read_heldout(heldout) if heldout is not None else None  # a bad file is said before measuring
    tokenizer = BilingualTokenizer.load(bundle)
    pixels, labels, classnames, dataset_id = load_eval(images, limit, manifest["image"]["preprocess"])
    tuned = shipped_tuned_embeddings(bundle, manifest, classnames) if templates is None else None
    templates, rule = scoring_rule(manifest, templates, templates_rule)
    device_rule = scoring_rule(manifest, None)[1]  # the apps build classes from the manifest's templates
    if tuned is not None:  # a tuned prompt's classes cannot be rebuilt from templates: score what ships
        rule = device_rule = tuned.pop("rule")

    def accuracy(image_run: Runner, text_run: Runner, id_dtype: torch.dtype) -> dict:
        emb = embed_images(image_run, pixels)
        return {lang: topk_accuracy(emb, tuned[lang] if tuned is not None else class_prototypes(
            text_run, tokenizer, classnames[lang], lang, templates[lang], id_dtype), labels) for lang in ("en", "zh")}

    entries = []
    example = {"image": (pixels[:1],), "text": tuple(tokenizer(["a photo of a bag."]).values())}

    # the eager student the bundle came from: verified by sha256, or the one --checkpoint names
    ckpt = eager_checkpoint(bundle, manifest, checkpoint, log=lambda m: print(m, file=sys.stderr))
    model = None
    if ckpt is not None:
        try:
            model, _ = load_student(ckpt)
        except Exception as e:  # noqa: BLE001 - the eager row is a comparison, not the report's subject
            print(f"note: no eager row ({e})", file=sys.stderr)
    if model is not None:
        runners = {"image": lambda x: model.encode_image(x), "text": lambda i, m: model.encode_text(i, m)}
        with torch.inference_mode():
            acc = accuracy(runners["image"], runners["text"], torch.long)
            for tower in ("image", "text"):
                med, p90 = timed(runners[tower], example[tower], runs)
                entries.append(_entry(f"{tower}_encoder_eager_fp32", tower, "pytorch-eager", "fp32", None, med, p90,
                                      None, acc, None, "host", rule, None))

    # accuracy belongs to an (image, text) pair: computed once per pair
    pair_accuracy: dict[tuple, dict | None] = {}
    for a in manifest["artifacts"]:
        id_dtype = torch.int32 if a["backend"] == "coreml" else torch.long
        _reset_peak_rss()
        base = _rss_kb("VmRSS")
        run = runner_for(bundle, a, manifest)
        med = p90 = peak = by_length = None
        pair = {a["tower"]: a, **{t: partner_artifact(manifest, a, t) for t in ("image", "text") if t != a["tower"]}}
        key = (a["backend"], *(None if pair[t] is None else pair[t]["precision"] for t in ("image", "text")))
        if run is not None:
            args = example["image"] if a["tower"] == "image" else tuple(x.to(id_dtype) for x in example["text"])
            try:
                med, p90 = timed(run, args, runs)
            except Exception as e:  # noqa: BLE001 - an artifact that loads but cannot run: one line
                raise ReportError(f"artifact {a['file']!r} loads but fails on the manifest's inputs ("
                                  f"{type(e).__name__}); re-export the bundle") from None
            peak = max(0, _rss_kb("VmHWM") - base) * 1024
            if isinstance(run, LengthBucketRunner):  # each bucket, with a text that fills it
                by_length = {L: timed(run, _text_of_length(tokenizer, L), runs)[0] for L in sorted(run.runners)}
            if key not in pair_accuracy:
                runs_ = {t: (run if pair[t] is a else runner_for(bundle, pair[t], manifest) if pair[t] else None)
                         for t in pair}
                pair_accuracy[key] = (accuracy(runs_["image"], runs_["text"], id_dtype)
                                      if None not in runs_.values() else None)
        acc = pair_accuracy.get(key)
        entries.append(_entry(Path(a["file"]).stem, a["tower"], a["backend"], a["precision"], a["size_bytes"],
                              med, p90, peak, acc, a.get("parity"), "host", rule if acc else None, by_length))

    if device_json:
        entries += read_device_entries(device_json, device_rule)
    return {"format_version": REPORT_FORMAT_VERSION, "bundle": str(bundle), "target": manifest["target"],
            "eager_checkpoint": None if model is None else str(ckpt),
            "eval": {"dataset": dataset_id, "images": len(labels), "templates": templates, "scoring": rule},
            "host": {"threads": threads, "runs": runs, "batch": 1, "warmup": 5}, "artifacts": entries,
            "heldout_fidelity": None if heldout_read is None else heldout_fidelity(
                heldout_read, bundle, manifest, None if ckpt is None else str(ckpt))}


def _entry(name, tower, backend, precision, size, med, p90, peak, acc, parity, source, rule, by_length=None) -> dict:
    return dict(zip(ENTRY_FIELDS, (name, tower, backend, precision, size, med, p90, peak, acc, parity, source, rule,
                                   by_length)))


def _text_of_length(tokenizer: BilingualTokenizer, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs whose tokens fill exactly `length` positions (a text's cost depends on its length only)."""
    t = tokenizer(["a photo of a bag, " * 40])
    ids, mask = t["input_ids"], t["attention_mask"].clone()
    mask[:, length:] = 0
    return ids, mask


def read_device_entries(path: str, rule: str | None = None) -> list[dict]:
    """A phone's rows; their accuracy was scored by the manifest's templates (`rule`) unless a row says otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ReportError(f"--device-json {path!r} is {'a directory' if p.is_dir() else 'not there'}; give the JSON "
                          "file the demo app's benchmark wrote (device_report.json)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"--device-json {path!r} is not JSON ({type(e).__name__} at "
                          f"{getattr(e, 'pos', getattr(e, 'start', '?'))})") from None
    entries = data.get("artifacts") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ReportError(f"--device-json {path!r} must hold a list of entries (or {{\"artifacts\": [...]}})")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ReportError(f"{path}: entry {i} is not an object; the schema is {', '.join(ENTRY_FIELDS)}")
        missing = [f for f in ("name", "backend", "precision", "latency_ms_median") if f not in e]
        if missing:
            raise ReportError(f"{path}: entry {i} lacks {', '.join(missing)}; the schema is {', '.join(ENTRY_FIELDS)}")
        row = {**{f: None for f in ENTRY_FIELDS}, **e, "source": e.get("source") or "device"}
        row["scoring"] = e.get("scoring") or (rule if row["accuracy"] else None)
        out.append(row)
    return out


# ------------------------------------------------------------------------------------- held-out fidelity
HELDOUT_HOW = ("`python -m train.heldout_eval --checkpoint C --json F` (C: the checkpoint this bundle was exported "
               "from), then `--heldout F` (a train.demo summary.json works too)")
HELDOUT_EXPECTED = ("a train.demo summary.json ({\"teacher\": ..., \"stages\": {\"distill\": {\"heldout\": ...}, "
                    "...}}) or a `python -m train.heldout_eval --json` file ({\"teacher\": ..., \"students\": "
                    "{checkpoint: ...}})")
STAGE_NAMES = {"distill": "stage 1", "align": "stage 2"}


def read_heldout(path: str | Path) -> dict:
    """The numbers the report carries from a held-out result file, checked: {"source", "format", "teacher_id",
    "sets", "chance", "teacher": {"zero_shot": {lang}}, "students": [{"name", "checkpoint", "zero_shot",
    "retention", "retention_interval_90", "agreement"}]} (each {lang: value}; retention, its interval and
    agreement may be None). JSON only, and only the numeric fields named here are read; anything else in the
    file is ignored. A missing file, non-JSON, or neither shape is a ReportError naming the path."""
    p = Path(path)
    what = f"--heldout {str(path)!r}"
    if not p.is_file():
        raise ReportError(f"{what} is {'a directory' if p.is_dir() else 'not there'}; expected {HELDOUT_EXPECTED}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ReportError(f"{what} is not JSON ({type(e).__name__}"
                          f"{' at ' + str(e.pos) if isinstance(e, json.JSONDecodeError) else ''}); expected "
                          f"{HELDOUT_EXPECTED}") from None
    if not isinstance(data, dict) or not isinstance(data.get("teacher"), dict) or not (
            isinstance(data.get("stages"), dict) or isinstance(data.get("students"), dict)):
        raise ReportError(f"{what} is neither held-out shape: expected {HELDOUT_EXPECTED}")
    teacher = data["teacher"]
    chance = _number(teacher, ("mean", "chance"), what, "teacher", prob=True)
    t_zs = {lang: _number(teacher, ("mean", lang, "zero_shot"), what, "teacher", prob=True) for lang in scoring.LANGS}
    if "students" in data and isinstance(data["students"], dict):
        fmt = "train.heldout_eval --json"
        named = [(Path(c).parent.name or c, c, r) for c, r in data["students"].items()]
        if not named:
            raise ReportError(f"{what} holds no student's result (heldout_eval ran without --checkpoint): run "
                              "`python -m train.heldout_eval --checkpoint C --json F` with the bundle's checkpoint")
    else:
        fmt = "train.demo summary.json"
        named = [(STAGE_NAMES.get(k, str(k)), v.get("checkpoint"), v["heldout"]) for k, v in data["stages"].items()
                 if isinstance(v, dict) and "heldout" in v]
        if not named:
            raise ReportError(f"{what} is a summary.json with no stage's held-out result (\"stages\": {{...: "
                              f"{{\"heldout\": ...}}}}): the demo did not finish a stage, or predates the held-out "
                              f"protocol; run {HELDOUT_HOW}")
    students = []
    for name, ckpt, r in named:
        where = f"student {name!r}"
        if not isinstance(r, dict):
            raise ReportError(f"{what}: the result of {where} is not an object; expected {HELDOUT_EXPECTED}")
        if ckpt is not None and not isinstance(ckpt, str):
            raise ReportError(f"{what}: the \"checkpoint\" of {where} is not a path string")
        zs = {lang: _number(r, ("mean", lang, "zero_shot"), what, where, prob=True) for lang in scoring.LANGS}
        stated = {lang: _number(r, ("retention_of_means", lang), what, where, required=False) for lang in scoring.LANGS}
        interval = {lang: _interval(r, lang, what, where) for lang in scoring.LANGS}
        # the file's retention of the means, else the same formula on them (dcclip_mobile.heldout.retention)
        computed = {lang: retention(zs[lang], t_zs[lang], chance) for lang in scoring.LANGS}
        students.append({
            "name": name, "checkpoint": ckpt, "zero_shot": zs,
            "retention": {lang: stated[lang] if stated[lang] is not None else computed[lang] for lang in scoring.LANGS},
            "retention_interval_90": interval,
            "agreement": {lang: _number(r, ("fidelity_mean", lang, "agreement"), what, where, required=False, prob=True)
                          for lang in scoring.LANGS}})
    sets = teacher.get("sets")
    teacher_id = teacher.get("teacher_id")
    return {"source": str(path), "format": fmt, "teacher_id": teacher_id if isinstance(teacher_id, str) else None,
            "sets": len(sets) if isinstance(sets, dict) else None, "chance": chance,
            "teacher": {"zero_shot": t_zs}, "students": students}


def _number(d: dict, keys: tuple[str, ...], what: str, whose: str, required: bool = True,
            prob: bool = False) -> float | None:
    """d[keys[0]][keys[1]]... as a finite float (in [0, 1] where `prob`); None where absent and not required."""
    v = d
    for k in keys:
        v = v.get(k) if isinstance(v, dict) else None
    if v is None and not required:
        return None
    field = ".".join(keys)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (prob and not 0 <= v <= 1):
        raise ReportError(f"{what}: {field} of {whose} is {'missing' if v is None else repr(v)[:40]}; expected a "
                          f"{'fraction in [0, 1]' if prob else 'finite number'} in {HELDOUT_EXPECTED}")
    return float(v)


def _interval(r: dict, lang: str, what: str, whose: str) -> list[float] | None:
    """retention_interval_90[lang]: [lo, hi], or None (absent: a file from before the interval; null: the teacher
    at chance in every resample)."""
    v = r.get("retention_interval_90")
    v = v.get(lang) if isinstance(v, dict) else None
    if v is None:
        return None
    if (not isinstance(v, list) or len(v) != 2 or any(isinstance(x, bool) or not isinstance(x, (int, float))
                                                      or not math.isfinite(x) for x in v) or v[0] > v[1]):
        raise ReportError(f"{what}: retention_interval_90.{lang} of {whose} is {repr(v)[:40]}; "
                          "expected [lo, hi] or null")
    return [float(v[0]), float(v[1])]


def _checkpoint_candidates(name: str, base: Path) -> list[Path]:
    p = Path(name)
    return [p] if p.is_absolute() else list(dict.fromkeys([p, base / p]))


def _same_checkpoint(name: str | None, base: Path, bundle: Path, manifest: dict,
                     eager: str | None) -> tuple[bool | None, str]:
    """Whether a held-out row's checkpoint is this bundle's: by the manifest's sha256 where the row's checkpoint
    files are here (True / False), else unknown (None) with whether its path is the one the bundle names."""
    if name is None:
        return None, "the file does not say which checkpoint this is"
    student = manifest.get("student") if isinstance(manifest.get("student"), dict) else {}
    recorded = student.get("checkpoint_sha256")
    found = [c for c in _checkpoint_candidates(name, base) if all((c / f).is_file() for f in CHECKPOINT_FILES)]
    if isinstance(recorded, dict) and set(recorded) == set(CHECKPOINT_FILES) and found:
        if any(_checkpoint_mismatch(c, recorded) is None for c in found):
            return True, "sha256 matches the manifest"
        return False, "sha256 differs from the manifest's"
    ours = [bundle / n for n in (student.get("checkpoint_from_bundle"),) if isinstance(n, str) and n]
    ours += [Path(n) for n in (student.get("checkpoint"), eager) if isinstance(n, str) and n]
    same_path = {os.path.realpath(c) for c in _checkpoint_candidates(name, base)} & {os.path.realpath(c) for c in ours}
    why = ("the manifest records no sha256 to check it by" if not isinstance(recorded, dict)
           else "its files are not here to check")
    return None, (f"the path this bundle's checkpoint has, unverified ({why})" if same_path
                  else f"unverified ({why})")


def heldout_fidelity(read: dict, bundle: Path, manifest: dict, eager: str | None) -> dict:
    """read_heldout's numbers, each student marked with whether it is this bundle's checkpoint
    ("is_bundle_checkpoint": True / False / None: unknown, "checkpoint_check": how that was decided), the
    checkpoint the manifest names ("bundle_checkpoint") and the note the report prints about them."""
    base = Path(read["source"]).resolve().parent
    students = []
    for s in read["students"]:
        ours, how = _same_checkpoint(s["checkpoint"], base, bundle, manifest, eager)
        students.append({**s, "is_bundle_checkpoint": ours, "checkpoint_check": how})
    mine = [s["name"] for s in students if s["is_bundle_checkpoint"]]
    student = manifest.get("student") if isinstance(manifest.get("student"), dict) else {}
    named = student.get("checkpoint_from_bundle") or student.get("checkpoint") or "(the manifest names none)"
    if mine:
        note = (f"This bundle's checkpoint ({named}) is {' and '.join(mine)} (its files' sha256 match the manifest's): "
                "read only that row as this bundle's fidelity.")
    else:
        unknown = [s["name"] for s in students if s["is_bundle_checkpoint"] is None]
        note = (f"None of these rows is shown to be this bundle's checkpoint ({named})"
                + (f"; {', '.join(unknown)} could not be checked against the manifest's sha256" if unknown else "")
                + f": do not read them as this bundle's fidelity. To measure it, run {HELDOUT_HOW}.")
    return {**read, "students": students, "bundle_checkpoint": named, "note": note}


# ---------------------------------------------------------------------------------------------- output
def to_markdown(report: dict) -> str:
    h = report["host"]
    lines = [f"# dcclip-mobile report: {report['target']} bundle", "",
             f"Eval: {report['eval']['dataset']} ({report['eval']['images']} images). Host latency: batch 1, "
             f"{h['threads']} threads, median and p90 of {h['runs']} runs after {h['warmup']} warm-up.", "",
             f"Zero-shot scoring of the host rows: {report['eval'].get('scoring')}: "
             + "; ".join(f"{lang} {_templates_md(ts)}" for lang, ts in report["eval"]["templates"].items()) + ".", ""]
    rules = {e.get("scoring") for e in report["artifacts"] if e.get("scoring")}
    if len(rules) > 1:
        lines += [f"Rows were scored by different rules ({', '.join(sorted(rules))}): compare accuracy only "
                  "between rows of the same scoring.", ""]
    if "eager_checkpoint" in report:
        lines += [f"Eager rows: {('checkpoint `' + report['eager_checkpoint'] + '`') if report['eager_checkpoint'] else 'none'}"
                  " (the manifest's checkpoint is used only when its sha256 matches; else pass --checkpoint).", ""]
    lines += ["| artifact | backend | precision | size MB | median ms | p90 ms | peak MB | EN top-1 | EN top-5 "
              "| ZH top-1 | ZH top-5 | parity mean cos | source | scoring |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in report["artifacts"]:
        acc = e.get("accuracy") or {}
        par = e.get("parity") or {}
        lines.append("| " + " | ".join([
            e["name"], e["backend"], e["precision"], _num(e["size_bytes"], 1e6, 2), _num(e["latency_ms_median"], 1, 2),
            _num(e["latency_ms_p90"], 1, 2), _num(e["peak_memory_bytes"], 1e6, 1),
            *[_pct(acc.get(lang, {}).get(k)) for lang in ("en", "zh") for k in ("top1", "top5")],
            _num(par.get("mean_cosine"), 1, 5), e.get("source") or "", e.get("scoring") or ""]) + " |")
    bucketed = [e for e in report["artifacts"] if e.get("latency_ms_by_length")]
    if bucketed:
        lines += ["", "Text artifacts with length buckets run each text through the shortest bucket that holds it "
                  "(the median above: the query `a photo of a bag.`); by bucket, a text that fills it:", ""]
        lines += [f"- {e['name']}: " + ", ".join(f"{L} tokens {ms:.2f} ms" for L, ms in e["latency_ms_by_length"].items())
                  for e in bucketed]
    lines += ["", "Core ML rows have no host figures: Core ML runs only on Apple platforms "
              "(`python -m lowering.verify_coreml BUNDLE` on macOS).", ""]
    lines += heldout_markdown(report.get("heldout_fidelity"))
    return "\n".join(lines) + "\n"


def heldout_markdown(h: dict | None) -> list[str]:
    """The report's held-out fidelity section (one line saying how to get it when not given)."""
    if not h:
        return [f"Held-out fidelity (teacher and student zero-shot on classes no stage saw, retention above chance, "
                f"agreement) was not given: run {HELDOUT_HOW}."]
    sets = f"mean over {h['sets']} sets" if h.get("sets") else "mean over the sets"
    lines = ["## Held-out fidelity", "",
             f"From `{_md(h['source'])}` ({h['format']}; teacher {_md(h.get('teacher_id') or 'unnamed')}): zero-shot "
             f"top-1 on classes no stage saw, {sets}. Retention: the student's share of the "
             "teacher's accuracy above chance, (student - chance) / (teacher - chance), with its 90% paired-bootstrap "
             "interval where the file has one. Agreement: how often the student's top-1 is the teacher's.", "",
             "| model | checkpoint | this bundle's? | EN zero-shot | ZH zero-shot | chance | EN retention "
             "| ZH retention | EN agreement | ZH agreement |", "|---|---|---|---|---|---|---|---|---|---|",
             "| teacher | | | " + " | ".join(_pct(h["teacher"]["zero_shot"][lang]) for lang in scoring.LANGS)
             + f" | {_pct(h['chance'])} | | | | |"]
    for s in h["students"]:
        ours = {True: "yes", False: "no"}.get(s["is_bundle_checkpoint"], "unknown")
        lines.append("| " + " | ".join([
            _md(s["name"]), f"`{_md(s['checkpoint'])}`" if s["checkpoint"] else "not stated",
            f"{ours}: {_md(s['checkpoint_check'])}",
            *[_pct(s["zero_shot"][lang]) for lang in scoring.LANGS], _pct(h["chance"]),
            *[_retention(s["retention"][lang], s["retention_interval_90"][lang]) for lang in scoring.LANGS],
            *[_pct(s["agreement"][lang]) for lang in scoring.LANGS]]) + " |")
    return lines + ["", _md(h["note"])]


def _retention(r: float | None, interval: list[float] | None) -> str:
    if r is None:
        return "- (teacher at chance)"
    return f"{r:.0%}" + (f" ({interval[0]:.0%} to {interval[1]:.0%})" if interval else "")


def _md(text: str) -> str:
    """A string from a file, safe inside a markdown table cell or code span: one line, no pipes or backticks."""
    text = " ".join(str(text).split()).replace("|", "/").replace("`", "'")
    return text if len(text) <= 160 else text[:157] + "..."


def _templates_md(templates: list[str]) -> str:
    return ", ".join(f"`{t}`" for t in templates) if len(templates) <= 3 else f"{len(templates)} templates"


def _num(v, scale, digits) -> str:
    return "" if v is None else f"{v / scale:.{digits}f}"


def _pct(v) -> str:
    return "" if v is None else f"{v:.1%}"


def plot(report: dict, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e for e in report["artifacts"] if e.get("accuracy") and e["latency_ms_median"] is not None]
    written = []
    for x_key, x_label, fname in (("latency_ms_median", "median latency, ms (batch 1)", "accuracy_vs_latency.png"),
                                  ("size_bytes", "size, MB", "accuracy_vs_size.png")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for ax, lang in zip(axes, ("en", "zh")):
            for e in rows:
                x = e[x_key]
                if x is None:
                    continue
                x = x / 1e6 if x_key == "size_bytes" else x
                ax.scatter(x, e["accuracy"][lang]["top1"] * 100, marker="o" if e["tower"] == "image" else "s")
                ax.annotate(f"{e['tower']} {e['backend']} {e['precision']}", (x, e["accuracy"][lang]["top1"] * 100),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_title({"en": "English", "zh": "Chinese"}[lang] + " zero-shot")
            ax.set_xlabel(x_label)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("top-1 accuracy, %")
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        written.append(out / fname)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lowering.report", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, help="a bundle directory (OUT/android, OUT/torchscript, OUT/ios)")
    ap.add_argument("--images", default="fashion-mnist", help="eval images: 'fashion-mnist' or an ELEVATER folder")
    ap.add_argument("--limit", type=int, default=500, help="class-balanced eval subset size")
    ap.add_argument("--checkpoint", help="the eager student (default: the one the manifest names)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--templates", type=int, default=None,
                    help="score the host rows with the first N CLIP templates per language instead of the bundle's "
                         "own (the manifest's, which the phone apps use); each row says which it used")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device-json", help="figures measured on a phone by the demo apps (same schema)")
    ap.add_argument("--heldout", metavar="FILE",
                    help="held-out fidelity to carry: a train.demo summary.json or a `python -m train.heldout_eval "
                         "--checkpoint C --json FILE` file (each row says whether it is this bundle's checkpoint)")
    ap.add_argument("--out", help="output directory (default: BUNDLE/../report-<target>)")
    return run_main(ap, _run, argv)


def _run(args: argparse.Namespace) -> int:
    for flag, value in (("--limit", args.limit), ("--runs", args.runs), ("--threads", args.threads)):
        if value < 1:
            raise ReportError(f"{flag} {value}: must be >= 1")
    if args.device_json is not None:
        read_device_entries(args.device_json)  # a bad file is said now, not after the measurements
    if args.heldout is not None:
        read_heldout(args.heldout)  # likewise
    manifest = bm.load_manifest(args.bundle)
    out = Path(args.out) if args.out else Path(args.bundle).resolve().parent / f"report-{manifest['target']}"
    check_writable_dir(out, "--out", ReportError)
    templates = None if args.templates is None else first_clip_templates(args.templates)
    report = build_report(args.bundle, args.images, args.limit, args.runs, args.threads, args.checkpoint,
                          templates=templates, device_json=args.device_json, heldout=args.heldout,
                          templates_rule=None if templates is None else f"first {len(templates['en'])} CLIP templates")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(to_markdown(report))
    plot(report, out)
    print(to_markdown(report))
    print(f"wrote {out}/report.json, report.md, accuracy_vs_latency.png, accuracy_vs_size.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
