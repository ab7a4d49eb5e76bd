"""Check an iOS bundle's Core ML packages on macOS: predict on golden.json's inputs, compare embeddings.

    python -m lowering.verify_coreml BUNDLE [--min-cosine 0.999]

Core ML's predict exists only on macOS; on other systems this checks what it can (files against the
manifest, each package's inputs/outputs/shapes/dtypes) and says that predict was skipped.
Exit 0 when every package passes, 1 when one fails, 2 on a bad bundle.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

from dcclip_mobile import bundle_manifest as bm

# fp16 compute on the golden inputs; int8 and 4-bit palettized weights lose more
MIN_COSINE = {"fp16": 0.999, "int8": 0.99, "palettize4": 0.95}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def verify(bundle: Path, min_cosine: float | None = None, log=print) -> bool:
    from PIL import Image

    from dcclip_mobile.data.preprocess import ImagePreprocess, preprocess_image
    from lowering.coreml_backend import check_coreml_structure

    manifest = bm.load_manifest(bundle)
    golden = bm.load_golden(bundle)
    ok = True
    for problem in bm.verify_files(bundle, manifest):
        log(f"FAIL {problem}")
        ok = False
    pre = manifest["image"]["preprocess"]
    preprocess = ImagePreprocess(pre["size"], tuple(pre["mean"]), tuple(pre["std"]), pre["resize"])
    can_predict = platform.system() == "Darwin"
    if not can_predict:
        log("note: Core ML predict runs only on macOS; checking structure only")
    for a in manifest["artifacts"]:
        if a["format"] != "mlpackage":
            continue
        problems = check_coreml_structure(bundle / a["file"], a["inputs"], [a["output"]])
        if problems:
            ok = False
            log(f"FAIL {a['file']}: " + "; ".join(problems))
            continue
        if not can_predict:
            log(f"ok   {a['file']}: structure")
            continue
        import coremltools as ct

        model = ct.models.MLModel(str(bundle / a["file"]))
        threshold = min_cosine if min_cosine is not None else MIN_COSINE.get(a["precision"], 0.99)
        cosines = []
        if a["tower"] == "image":
            for g in golden["images"]:
                x = preprocess_image(Image.open(bundle / g["file"]), preprocess).unsqueeze(0).numpy()
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
    args = ap.parse_args(argv)
    try:
        return 0 if verify(Path(args.bundle), args.min_cosine) else 1
    except bm.BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
