"""The bundle manifest: what `python -m lowering.export` writes and the apps and the report read.

A bundle is one directory per target (OUT/android, OUT/ios, OUT/torchscript):

    manifest.json            this schema
    golden.json              texts with their ids and embeddings, images with their preprocessed-tensor
                             checksums and embeddings: the apps' test vectors
    golden/*.png             the golden images themselves (the apps preprocess them)
    tokenizer.model/.json    the bilingual SentencePiece tokenizer (tokenizer.json: for the Kotlin/Swift ports)
    class_embeddings.json    optional: unit-length text embeddings of a label set, English and Chinese
    <tower>_encoder_<backend>_<precision>.pte | .mlpackage | .pt   (artifact_file_name)

manifest.json (format_version 1), every key always present:
    format_version, target ("android" | "ios" | "torchscript"), created_by, created_at
    student:        {name, embed_dim, checkpoint (path as given), checkpoint_from_bundle (the same checkpoint
                     relative to the bundle directory), checkpoint_sha256 {file: sha256}}: lowering.report uses it
                     only when every sha256 matches
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
                     default (bool: the one the app loads for its tower),
                     length_buckets (XNNPACK text artifacts only): [{length, method, delegate_partitions,
                     latency_ms_host}] shortest first, the last at the context length with method "forward".
                     The app runs a text through the shortest bucket that holds its tokens (up to the last
                     attention-mask 1), its input_ids and attention_mask cut to that length [1, length];
                     an artifact without the key takes [1, context_length] in "forward"}
                     Core ML artifacts take int32 ids (Core ML has no int64 inputs); the others int64.
                     Each entry is an `Artifact` record's to_dict() (below), key for key.
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

The path rule (every reader: this module, lowering.report, lowering.verify_coreml, the Java and Swift cores):
every path the manifest or golden.json names (text.tokenizer.model/json, class_embeddings.file, golden,
golden.json's images[].file, each artifact's file) must be a relative POSIX path whose segments are neither
empty, "." nor ".." (no leading "/", no "\\", no NUL), must be listed in the file table with its sha256 (an
.mlpackage directory: the files under it), and must not resolve outside the bundle through a symbolic link.
It is checked before the file is opened; a bundle holds regular files only (no symbolic links). Error
messages name the manifest's value, never a file's contents.

golden.json (format_version 1):
    texts:  [{text, language, input_ids [L], attention_mask [L], embedding [D]}]
    images: [{file ("golden/0.png"), preprocessed {shape, sha256 (float32 little-endian bytes), sum,
              mean, first [8]}, embedding [D]}]
    The embeddings are the eager PyTorch student's (fp32); compare an artifact's with cosine.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from .errors import DCClipError
from .versioned_json import read_versioned_json

BUNDLE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
GOLDEN_FILE = "golden.json"
GOLDEN_FORMAT_VERSION = 1
CLASS_EMBEDDINGS_FILE = "class_embeddings.json"
TARGETS = ("android", "ios", "torchscript")
REQUIRED_KEYS = ("format_version", "target", "student", "embed_dim", "logit_scale", "image", "text",
                 "artifacts", "default_precision", "parity_gate", "class_embeddings", "golden", "files")


class BundleError(DCClipError, ValueError):
    """A bundle directory is missing, incomplete, or does not match its manifest."""


FILE_SUFFIXES = {"pte": ".pte", "mlpackage": ".mlpackage", "torchscript": ".pt"}  # by artifact format


def artifact_file_name(tower: str, backend: str, fmt: str, precision: str) -> str:
    """The file an artifact is written to: one name per (tower, backend, format, precision)."""
    return f"{tower}_encoder_{backend}_{precision}{FILE_SUFFIXES[fmt]}"


@dataclasses.dataclass
class Artifact:
    """One entry of the manifest's "artifacts" (the schema above); `to_dict()` is that entry, key for key, in
    the order written. `length_buckets` is None for every artifact but an XNNPACK text one, and then absent
    from the entry."""

    tower: str
    backend: str
    format: str
    precision: str
    file: str
    size_bytes: int
    inputs: list[dict]
    output: dict
    quantization: dict
    delegate_partitions: int | None
    ops_outside_delegate: dict[str, int] | None
    latency_ms_host: float | None
    export_seconds: float
    parity: dict
    default: bool = False
    length_buckets: list[dict] | None = None

    def to_dict(self) -> dict:
        entry = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.length_buckets is None:
            del entry["length_buckets"]
        return entry

    @classmethod
    def from_dict(cls, entry: dict) -> "Artifact":
        """The record of a manifest's artifact entry; BundleError naming the keys it lacks or does not know."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in names if k != "length_buckets" and k not in entry]
        unknown = sorted(set(entry) - set(names))
        problems = ([f"lacks {', '.join(missing)}"] if missing else []) + (
            [f"has unknown keys {', '.join(unknown)}"] if unknown else [])
        if problems:
            raise BundleError(f"artifact {_show(entry.get('file'))} {' and '.join(problems)}; re-export the bundle")
        return cls(**entry)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_files(directory: str | Path) -> dict[str, Path]:
    """Every file under `directory` but the manifest, by its relative POSIX path (symbolic links included,
    not followed: verify_files refuses them without reading them)."""
    directory = Path(directory)
    return {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*"))
            if (p.is_symlink() or p.is_file()) and p.relative_to(directory).as_posix() != MANIFEST_FILE}


# ----------------------------------------------------------------------------------------- the path rule
_SHA256_HEX = frozenset("0123456789abcdef")


def _show(value: object, limit: int = 120) -> str:
    """A manifest value for an error message, cut short (never a file's contents)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def check_relative_path(rel: object, what: str) -> str:
    """The lexical half of the path rule: `rel` is a relative POSIX path inside the bundle."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{what} must be a non-empty relative path inside the bundle, got {_show(rel)}")
    if (rel.startswith("/") or "\\" in rel or "\0" in rel
            or any(seg in ("", ".", "..") for seg in rel.split("/"))):
        raise BundleError(f"{what} is {_show(rel)}, which is not a relative path inside the bundle; refusing to "
                          "open it. A bundle names its files as plain relative paths (e.g. \"golden/0.png\")")
    return rel


def _listed(manifest: dict, rel: str, directory_ok: bool) -> bool:
    files = manifest["files"]
    return rel in files or (directory_ok and any(k.startswith(rel + "/") for k in files))


def bundle_path(bundle: str | Path, manifest: dict, rel: object, what: str, directory_ok: bool = False) -> Path:
    """The one way a reader turns a path the manifest or golden.json names into a file to open: relative,
    inside the bundle, listed in the file table with its sha256 (a directory, with `directory_ok`: files
    under it), and not a symbolic link out of the bundle. BundleError otherwise, before anything is opened."""
    rel = check_relative_path(rel, what)
    if not _listed(manifest, rel, directory_ok):
        raise BundleError(f"{what} is {_show(rel)}, which the manifest's file table does not list with a sha256; "
                          "refusing to open it. Re-export the bundle with `python -m lowering.export`")
    root = Path(bundle)
    path = root / rel
    real, real_root = path.resolve(), root.resolve()
    if real != real_root and real_root not in real.parents:
        raise BundleError(f"{what} is {_show(rel)}, which resolves outside the bundle (a symbolic link); "
                          "refusing to open it")
    return path


def named_paths(manifest: dict) -> list[tuple[str, object, bool]]:
    """(what, path, may be a directory) for every path manifest.json names."""
    out: list[tuple[str, object, bool]] = []
    tok = manifest.get("text", {}).get("tokenizer") if isinstance(manifest.get("text"), dict) else None
    if isinstance(tok, dict):
        out += [(f"manifest text.tokenizer.{k}", tok[k], False) for k in ("model", "json") if k in tok]
    ce = manifest.get("class_embeddings")
    if ce is not None:
        out.append(("manifest class_embeddings.file", ce.get("file") if isinstance(ce, dict) else ce, False))
    out.append(("manifest golden", manifest.get("golden"), False))
    for k, a in enumerate(manifest.get("artifacts") or []):
        out.append((f"manifest artifacts[{k}].file", a.get("file") if isinstance(a, dict) else None, True))
    return out


def _check_structure(manifest: dict, where: str) -> None:
    """Types of what every reader relies on: the file table's entries and each artifact's fields."""
    files = manifest["files"]
    if not isinstance(files, dict):
        raise BundleError(f"{where} files must be an object {{relative path: {{sha256, size_bytes}}}}, "
                          f"got {type(files).__name__}. Re-export the bundle")
    for rel, entry in files.items():
        check_relative_path(rel, f"{where} files key")
        ok = (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64
              and set(entry["sha256"]) <= _SHA256_HEX and type(entry.get("size_bytes")) is int
              and entry["size_bytes"] >= 0)
        if not ok:
            raise BundleError(f"{where} files[{_show(rel)}] must be {{\"sha256\": 64 lowercase hex digits, "
                              f"\"size_bytes\": an integer >= 0}}, got {_show(entry)}. Re-export the bundle")
    artifacts = manifest["artifacts"]
    if not isinstance(artifacts, list):
        raise BundleError(f"{where} artifacts must be a list, got {type(artifacts).__name__}. Re-export the bundle")
    for k, a in enumerate(artifacts):
        if not isinstance(a, dict):
            raise BundleError(f"{where} artifacts[{k}] must be an object, got {type(a).__name__}")
        for key in ("tower", "backend", "format", "precision", "file"):
            if not isinstance(a.get(key), str):
                state = "lacks" if key not in a else f"has a {type(a[key]).__name__} for"
                raise BundleError(f"{where} artifacts[{k}] {state} \"{key}\" (a string); re-export the bundle")
        if type(a.get("size_bytes")) is not int:
            raise BundleError(f"{where} artifacts[{k}] size_bytes must be an integer, got {_show(a.get('size_bytes'))}")
        if "length_buckets" in a:
            _check_length_buckets(a["length_buckets"], manifest, f"{where} artifacts[{k}] length_buckets")
    for what, rel, directory_ok in named_paths(manifest):
        rel = check_relative_path(rel, what)
        if not _listed(manifest, rel, directory_ok):
            raise BundleError(f"{what} is {_show(rel)}, which the manifest's file table does not list with a "
                              "sha256; refusing to open it. Re-export the bundle with `python -m lowering.export`")


def _check_length_buckets(buckets: object, manifest: dict, where: str) -> None:
    """Lengths rising within 1..context, distinct method names, the context's bucket last and in "forward"."""
    context = (manifest.get("text") or {}).get("context_length") if isinstance(manifest.get("text"), dict) else None
    expected = ('a list of {"length": int, "method": "forward" or "forward_<length>"}, lengths rising, the last '
                f'equal to text.context_length ({_show(context)}) with method "forward"')
    ok = isinstance(buckets, list) and buckets and type(context) is int
    lengths, methods = [], []
    for b in buckets if ok else ():
        L, m = (b.get("length"), b.get("method")) if isinstance(b, dict) else (None, None)
        if type(L) is not int or not 1 <= L <= context or not isinstance(m, str) \
                or m != ("forward" if L == context else f"forward_{L}"):
            ok = False
            break
        lengths.append(L)
        methods.append(m)
    if not ok or lengths != sorted(set(lengths)) or lengths[-1] != context:
        raise BundleError(f"{where} must be {expected}; got {_show(buckets)}. Re-export the bundle")


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
    _check_structure(manifest, repr(str(path)))
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
        if on_disk[rel].is_symlink():  # never followed: it could point anywhere
            problems.append(f"{rel}: a symbolic link; a bundle holds regular files only")
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


def load_golden(bundle: str | Path, manifest: dict | None = None) -> dict:
    """golden.json, by the path the manifest names (the path rule), with every images[].file checked by the
    same rule before anyone opens it: use `golden_image_path` to open one."""
    manifest = manifest if manifest is not None else load_manifest(bundle)
    path = bundle_path(bundle, manifest, manifest["golden"], "manifest golden")
    if not path.is_file():
        raise BundleError(f"{str(path)!r} does not exist")
    golden = read_versioned_json(path, GOLDEN_FORMAT_VERSION, BundleError, ". Re-export the bundle.")
    images = golden.get("images", [])
    if not isinstance(images, list) or not all(isinstance(g, dict) for g in images):
        raise BundleError(f"{str(path)!r} images must be a list of objects; re-export the bundle")
    for k, g in enumerate(images):
        bundle_path(bundle, manifest, g.get("file"), f"golden.json images[{k}].file")
    return golden


def golden_image_path(bundle: str | Path, manifest: dict, image: dict, k: int) -> Path:
    return bundle_path(bundle, manifest, image.get("file"), f"golden.json images[{k}].file")
