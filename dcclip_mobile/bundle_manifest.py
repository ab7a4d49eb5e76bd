"""The bundle manifest: what `python -m lowering.export` writes and the apps and the report read.

A bundle is one directory per target (OUT/android, OUT/ios, OUT/torchscript):

    manifest.json            this schema
    golden.json              texts with their ids and embeddings, images with their preprocessed-tensor
                             checksums and embeddings: the apps' test vectors
    golden/*.png             the golden images themselves (the apps preprocess them)
    tokenizer.model/.json    the bilingual SentencePiece tokenizer (tokenizer.json: for the Kotlin/Swift ports)
    class_embeddings.json    optional: unit-length text embeddings of a label set, English and Chinese
    <tower>_encoder_<backend>_<precision>.pte | .mlpackage | .pt

manifest.json (format_version 1), every key always present:
    format_version, target ("android" | "ios" | "torchscript"), created_by, created_at
    student:        {name, embed_dim, checkpoint (path as given), checkpoint_sha256 {file: sha256}}
    embed_dim:      int; every encoder outputs "embedding" float32 [1, embed_dim], already unit length
    logit_scale:    float, exp() of the learned temperature, clamped: logits = logit_scale * cos
    image:          {inputs: [{name, shape, dtype}], output: {name, shape, dtype}, preprocess: {size, resize
                      ("shorter_side_bicubic_then_center_crop"), interpolation, crop, scale, mean, std,
                      channel_order, layout, dtype}}  (dcclip_mobile.data.preprocess.ImagePreprocess.to_dict)
    text:           {inputs, output, context_length, special_ids {pad, unk, bos, eos}, vocab_size,
                     tokenizer {model, json}, normalization}
    artifacts:      list of {tower, backend ("xnnpack" | "coreml" | "torchscript"), format ("pte" |
                     "mlpackage" | "torchscript"), precision, file, size_bytes, inputs, output,
                     quantization {...}, delegate_partitions (int | null), ops_outside_delegate {op: count}
                     | null, latency_ms_host (median, batch 1 | null), export_seconds, parity {...},
                     default (bool: the one the app loads for its tower)}
                     Core ML artifacts take int32 ids (Core ML has no int64 inputs); the others int64.
    default_precision: the precision of the default artifacts
    parity_gate:    {thresholds {...}, passed (bool), overridden (bool), failures [..]}
    class_embeddings: null | {file, labels_en [..], labels_zh [..], templates {"en": [..], "zh": [..]}}: each
                     class is the normalized mean of its prompts' embeddings, a prompt being a template with
                     "{c}" replaced by the class name; the report and the apps score with exactly these
    calibration:    {source, kind, dataset_id, selection, labels_from, texts_from, skipped, images,
                     parity_images, texts}: where the int8 calibration and parity-gate inputs came from
    golden:         "golden.json"
    files:          {relative path: {sha256, size_bytes}} for every file in the bundle but manifest.json
                    (a .mlpackage is a directory: each file in it is listed)

golden.json (format_version 1):
    texts:  [{text, language, input_ids [L], attention_mask [L], embedding [D]}]
    images: [{file ("golden/0.png"), preprocessed {shape, sha256 (float32 little-endian bytes), sum,
              mean, first [8]}, embedding [D]}]
    The embeddings are the eager PyTorch student's (fp32); compare an artifact's with cosine.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .versioned_json import read_versioned_json

BUNDLE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
GOLDEN_FILE = "golden.json"
GOLDEN_FORMAT_VERSION = 1
CLASS_EMBEDDINGS_FILE = "class_embeddings.json"
TARGETS = ("android", "ios", "torchscript")
REQUIRED_KEYS = ("format_version", "target", "student", "embed_dim", "logit_scale", "image", "text",
                 "artifacts", "default_precision", "parity_gate", "class_embeddings", "golden", "files")


class BundleError(ValueError):
    """A bundle directory is missing, incomplete, or does not match its manifest."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_files(directory: str | Path) -> dict[str, Path]:
    """Every regular file under `directory` but the manifest, by its relative POSIX path."""
    directory = Path(directory)
    return {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*"))
            if p.is_file() and p.relative_to(directory).as_posix() != MANIFEST_FILE}


def file_table(directory: str | Path) -> dict[str, dict]:
    return {rel: {"sha256": file_sha256(p), "size_bytes": p.stat().st_size} for rel, p in list_files(directory).items()}


def load_manifest(bundle: str | Path) -> dict:
    """Read and check a bundle's manifest.json (format version, required keys); files are not hashed."""
    path = Path(bundle) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{str(path)!r} does not exist; a bundle is a directory written by "
                          "`python -m lowering.export` (e.g. OUT/android)")
    manifest = read_versioned_json(path, BUNDLE_FORMAT_VERSION, BundleError, ". Re-export the bundle.")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{str(path)!r} lacks {', '.join(missing)}")
    return manifest


def verify_files(bundle: str | Path, manifest: dict | None = None) -> list[str]:
    """Problems between the files on disk and the manifest's table (empty when none): missing,
    unlisted, wrong size, wrong sha256, and artifacts whose file is not in the table."""
    bundle = Path(bundle)
    manifest = manifest if manifest is not None else load_manifest(bundle)
    listed: dict[str, dict] = manifest["files"]
    on_disk = list_files(bundle)
    problems = [f"{rel}: listed in the manifest but missing" for rel in listed if rel not in on_disk]
    problems += [f"{rel}: in the bundle but not in the manifest" for rel in on_disk if rel not in listed]
    for rel, entry in listed.items():
        if rel not in on_disk:
            continue
        size = on_disk[rel].stat().st_size
        if size != entry["size_bytes"]:
            problems.append(f"{rel}: {size} bytes, the manifest says {entry['size_bytes']}")
        elif file_sha256(on_disk[rel]) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest (the file was changed or corrupted)")
    for a in manifest["artifacts"]:
        f = a["file"]
        if f not in listed and not any(rel.startswith(f + "/") for rel in listed):
            problems.append(f"artifact {f}: not in the manifest's file table")
    return problems


def default_artifacts(manifest: dict) -> dict[str, dict]:
    """{"image": artifact, "text": artifact}: what an app loads."""
    found = {a["tower"]: a for a in manifest["artifacts"] if a.get("default")}
    missing = [t for t in ("image", "text") if t not in found]
    if missing:
        raise BundleError(f"the manifest marks no default artifact for {', '.join(missing)}")
    return found


def find_artifact(manifest: dict, tower: str, precision: str | None = None, backend: str | None = None) -> dict:
    for a in manifest["artifacts"]:
        if a["tower"] == tower and precision in (None, a["precision"]) and backend in (None, a["backend"]):
            return a
    have = sorted({(a['tower'], a['backend'], a['precision']) for a in manifest["artifacts"]})
    raise BundleError(f"no {tower} artifact with precision={precision!r} backend={backend!r}; the bundle has {have}")


def load_golden(bundle: str | Path) -> dict:
    path = Path(bundle) / GOLDEN_FILE
    if not path.is_file():
        raise BundleError(f"{str(path)!r} does not exist")
    return read_versioned_json(path, GOLDEN_FORMAT_VERSION, BundleError, ". Re-export the bundle.")
