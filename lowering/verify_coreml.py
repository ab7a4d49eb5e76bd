"""Check an iOS bundle's Core ML packages on macOS: predict on golden.json's inputs, compare embeddings.

    python -m lowering.verify_coreml BUNDLE [--min-cosine 0.999]

Core ML's predict exists only on macOS; on other systems this checks what it can (files against the
manifest, each package's inputs/outputs/shapes/dtypes) and says that predict was skipped.
Exit 0 when every package passes, 1 when one fails, 2 on a bad bundle.

It never opens a file outside the bundle and never writes in it: every path it opens passes the bundle's path
rule (dcclip_mobile/bundle_manifest.py), a bundle whose files do not match the manifest is failed before any
package or image is opened, a package's spec is read without coremltools' loader (which rewrites
Manifest.json), and predict runs on a private copy of each package.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.errors import run_main

# fp16 compute on the golden inputs; int8 and 4-bit palettized weights lose more
MIN_COSINE = {"fp16": 0.999, "int8": 0.99, "palettize4": 0.95}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def verify(bundle: Path, min_cosine: float | None = None, log=print) -> bool:
    from dcclip_mobile.data.preprocess import ImagePreprocess, load_image, preprocess_image
    from lowering.coreml_backend import CoreMLPackageError, check_coreml_structure, package_root_spec, private_copy

    manifest = bm.load_manifest(bundle)  # refuses any path it names outside the bundle, before opening it
    problems = bm.verify_files(bundle, manifest)
    for problem in problems:
        log(f"FAIL {problem}")
    if problems:
        log("FAIL the bundle does not match its manifest: nothing in it was opened")
        return False
    golden = bm.load_golden(bundle, manifest)
    ok = True
    pre = manifest["image"]["preprocess"]
    preprocess = ImagePreprocess.from_dict(pre)
    can_predict = platform.system() == "Darwin"
    if not can_predict:
        log("note: Core ML predict runs only on macOS; checking structure only")
    for a in manifest["artifacts"]:
        if a["format"] != "mlpackage":
            continue
        package = bm.bundle_path(bundle, manifest, a["file"], f"artifact {a['file']!r}", directory_ok=True)
        try:
            # the spec the package's Manifest.json names: inside the package and in the bundle's file table
            bm.bundle_path(bundle, manifest, f"{a['file']}/{package_root_spec(package)}", f"{a['file']} root model")
            problems = check_coreml_structure(package, a["inputs"], [a["output"]])
        except (CoreMLPackageError, bm.BundleError) as e:
            problems = [str(e)]
        if problems:
            ok = False
            log(f"FAIL {a['file']}: " + "; ".join(problems))
            continue
        if not can_predict:
            log(f"ok   {a['file']}: structure")
            continue
        import coremltools as ct

        threshold = min_cosine if min_cosine is not None else MIN_COSINE.get(a["precision"], 0.99)
        cosines = []
        with private_copy(package) as copy:  # coremltools' loader rewrites the package it opens
            model = ct.models.MLModel(str(copy))
            if a["tower"] == "image":
                for k, g in enumerate(golden["images"]):
                    image = load_image(bm.golden_image_path(bundle, manifest, g, k))
                    x = preprocess_image(image, preprocess).unsqueeze(0).numpy()
                    out = model.predict({"pixel_values": x})[a["output"]["name"]]
                    cosines.append(_cosine(out, np.asarray(g["embedding"])))
            else:
                for g in golden["texts"]:
                    feed = {"input_ids": np.asarray([g["input_ids"]], np.int32),
                            "attention_mask": np.asarray([g["attention_mask"]], np.int32)}
                    out = model.predict(feed)[a["output"]["name"]]
                    cosines.append(_cosine(out, np.asarray(g["embedding"])))
        worst = min(cosines)
        passed = worst >= threshold
        ok &= passed
        log(f"{'ok  ' if passed else 'FAIL'} {a['file']}: min cosine to golden {worst:.5f} (>= {threshold})")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lowering.verify_coreml", description=__doc__.splitlines()[0])
    ap.add_argument("bundle", help="an iOS bundle directory (OUT/ios)")
    ap.add_argument("--min-cosine", type=float, default=None, help="one threshold for every precision")
    return run_main(ap, lambda args: 0 if verify(Path(args.bundle), args.min_cosine) else 1, argv)


if __name__ == "__main__":
    sys.exit(main())
