"""Shared fixtures: a tiny bilingual tokenizer and a tiny student, built once per session; drawn test images.
And the one rule
for tests that need something outside the repo (a registry asset, Debian's Fashion-MNIST, a JDK):

    @pytest.mark.needs(present: bool, reason: str)

skips with `reason` on a developer's machine that lacks it, and fails where CI=true (or
DCCLIP_REQUIRE_ALL_TESTS=1): there setup.sh installs everything, so an absence is a broken setup that a skip
would hide."""
from __future__ import annotations

import os

import pytest
import torch

from dcclip_mobile.config import load_preset
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.tokenizer import BilingualTokenizer, train_tokenizer

SAMPLE_TEXTS = [
    "a photo of a t-shirt.", "a photo of a trouser.", "a photo of a pullover.", "a photo of a dress.",
    "a photo of a coat.", "a photo of a sandal.", "a photo of a shirt.", "a photo of a sneaker.",
    "a photo of a bag.", "a photo of an ankle boot.", "a blurry photo of the dog.", "a good photo of a cat.",
    "一张T恤的照片。", "一张裤子的照片。", "一张套头衫的照片。", "一张连衣裙的照片。", "一张外套的照片。",
    "一张凉鞋的照片。", "一张衬衫的照片。", "一张运动鞋的照片。", "一张包的照片。", "一张短靴的照片。",
    "一张模糊的狗的照片。", "一张好看的猫的照片，很可爱！", "mixed 中英文 text, 混合的句子.",
]


def drawn_images(n: int, seed: int):
    """n small RGB pictures (a coloured ellipse on a coloured ground), the same for a seed: real images for
    export and report tests that must not depend on a downloaded data set."""
    from PIL import Image, ImageDraw

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        r = lambda k: int(torch.randint(0, k, (1,), generator=g))  # noqa: E731
        img = Image.new("RGB", (40, 36), (r(256), r(256), r(256)))
        ImageDraw.Draw(img).ellipse((r(16), r(16), 20 + r(20), 20 + r(16)), fill=(r(256), r(256), r(256)))
        out.append(img)
    return out


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    return list(SAMPLE_TEXTS)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> BilingualTokenizer:
    cfg = load_preset("tiny")
    return train_tokenizer(SAMPLE_TEXTS * 8, vocab_size=cfg.text.vocab_size, context_length=cfg.text.context_length)


@pytest.fixture()
def tiny_student(tiny_tokenizer) -> DCCLIPStudent:
    torch.manual_seed(0)
    cfg = load_preset("tiny")
    cfg.text.vocab_size = tiny_tokenizer.vocab_size
    return DCCLIPStudent(cfg).eval()


@pytest.fixture(scope="session")
def tiny_altclip_dir(tmp_path_factory, sample_texts):
    """A tiny AltCLIP saved with save_pretrained: loads through the same path as a hub id."""
    from dcclip_mobile.teachers.altclip_random import write_random_altclip

    return write_random_altclip(tmp_path_factory.mktemp("altclip"), "tiny", sample_texts)


def require(present: bool, reason: str) -> None:
    """The needs rule at run time, for what a test only finds out inside itself: skip on a developer's
    machine that lacks it, fail where CI=true (or DCCLIP_REQUIRE_ALL_TESTS=1)."""
    if present:
        return
    if os.environ.get("CI") == "true" or os.environ.get("DCCLIP_REQUIRE_ALL_TESTS") == "1":
        pytest.fail(f"{reason} (required here: setup.sh provides it)")
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        require(*mark.args)
