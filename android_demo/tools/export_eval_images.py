"""Labeled images for the apps' benchmark accuracy: Fashion-MNIST test images as <class index>_<n>.png.

    python android_demo/tools/export_eval_images.py --out eval --limit 200
    adb push eval /sdcard/Android/data/org.dcclip.demo/files/eval        (Android)
    (iOS: copy the folder into the app's Documents/eval with Finder or Xcode's device window)

The class index is the position in the bundle's label list (class_embeddings.json), which for a bundle
exported with the default labels is Fashion-MNIST's order. The subset is the same seeded, class-stratified
one `python -m lowering.report --images fashion-mnist --limit N` uses.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dcclip_mobile.data.fashion_mnist import FashionMNIST  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="eval")
    ap.add_argument("--limit", type=int, default=200)
    args = ap.parse_args(argv)
    test = FashionMNIST("test", limit=args.limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(len(test)):
        img, label = test[i]
        img.save(out / f"{label}_{i:05d}.png")
    print(f"wrote {len(test)} images to {out} ({test.dataset_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
