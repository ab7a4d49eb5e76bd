"""Rendered emoji with human-written English and Chinese names: offline pictures of many kinds of things,
a seeded split of classes that no stage ever sees, and the held-out evaluation sets built on it.

Sources (Debian packages, installed by setup.sh): `fonts-noto-color-emoji` (the pictures), `unicode-data`
(`emoji-test.txt`: which sequences are emoji, their group and subgroup) and `unicode-cldr-core` (CLDR
annotations: a short name and keywords per emoji, written by people, in English and Chinese).

Classes are the fully-qualified emoji of the concrete groups (CLASS_GROUPS) named in both languages. The
split is by *family* (the first code point of the sequence), decided by a hash of the family and the seed:
a held-out family takes every emoji built on it (skin tones, genders, "black cat" with "cat"), so no
near-duplicate picture of an unseen class reaches a stage through a variant.

A view is a deterministic function of (emoji, view number, salt): the emoji on a random background at a
random size, position and rotation, flipped and colour-jittered, sometimes mixed with a second emoji. Teacher
and student are given the same view (function matching), and test views use another salt than training.
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from ..bundle_manifest import file_sha256
from ..errors import DCClipError, UsageError, run_main

EMOJI_FONT = Path(os.environ.get("DCCLIP_EMOJI_FONT", "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"))
EMOJI_TEST = Path(os.environ.get("DCCLIP_EMOJI_TEST", "/usr/share/unicode/emoji/emoji-test.txt"))
CLDR_DIR = Path(os.environ.get("DCCLIP_CLDR_DIR", "/usr/share/unicode/cldr/common"))
CLASS_GROUPS = ("Animals & Nature", "Food & Drink", "Travel & Places", "Activities", "Objects")
GROUP_SLUGS = {g: re.sub(r"[^a-z]+", "-", g.lower()).strip("-") for g in CLASS_GROUPS}
UNSEEN_FRACTION = 0.5
GLYPH_SIZE = 109  # the only size Noto Color Emoji's bitmaps come in
SKIN_TONES = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF}
APT_PACKAGES = "fonts-noto-color-emoji unicode-data unicode-cldr-core"


# What the project's figures were measured with (Debian 12: fonts-noto-color-emoji 2.042-0+deb12u1, unicode-data
# 15.0.0-1, unicode-cldr-core 41-0.1). Another version still works; it is named in a warning, and its data
# fingerprint goes into every data set id, so teacher caches of two versions never mix.
PINNED_SHA256 = {
    EMOJI_FONT: "e5899ed38b8ed83e08bd3ac5de09791e9d19d288333a796de1d35ad17396f1ec",
    EMOJI_TEST: "8445f23ac8388e096be19d0262e14fceff856ff52093f2356dc89485f1a853db",
    CLDR_DIR / "annotations" / "en.xml": "170a989b9aff71fd06b9f7bbd70aa3b4a3d228e15fa734692d4fc80206e536e1",
    CLDR_DIR / "annotations" / "zh.xml": "f7394e7e65751ea4ea2eff00ae542f25d413fa7628b3e4cad4f734db9c27d75f",
    CLDR_DIR / "annotationsDerived" / "en.xml": "0fab943b22dd1197b6d6fe6ce6aec7968e925d547283484bddcf96b14daf657f",
    CLDR_DIR / "annotationsDerived" / "zh.xml": "0fc36f3e153fbbf341d77ec1dfb4304271299dd9fd4d293522bd0d89c7392871",
}


class EmojiDataMissingError(DCClipError, FileNotFoundError):
    pass


@lru_cache(maxsize=1)
def data_fingerprint() -> str:
    """A short hash of the emoji data files; warns once, naming each file that differs from the pinned one."""
    _require()
    digests = []
    for path, pinned in PINNED_SHA256.items():
        digest = file_sha256(path) if path.is_file() else "missing"
        if digest != pinned:
            warnings.warn(f"{path} has sha256 {digest}, not the {pinned} this project's figures were measured "
                          f"with; results will differ from the README's", stacklevel=2)
        digests.append(digest)
    return hashlib.sha256("".join(digests).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Emoji:
    text: str            # the fully-qualified sequence
    group: str
    subgroup: str
    name: dict           # {"en": ..., "zh": ...} CLDR short names ("" where CLDR has none)
    keywords: dict       # {"en": [...], "zh": [...]}

    @property
    def family(self) -> str:
        return self.text[0]


def emoji_present() -> bool:
    return EMOJI_FONT.is_file() and EMOJI_TEST.is_file() and (CLDR_DIR / "annotations" / "zh.xml").is_file()


def _require() -> None:
    if not emoji_present():
        raise EmojiDataMissingError(
            f"the emoji data ({EMOJI_FONT}, {EMOJI_TEST}, {CLDR_DIR}/annotations) is missing; install it with "
            f"`apt-get install {APT_PACKAGES}` (setup.sh does)")


def _key(text: str) -> str:
    """CLDR writes sequences without the emoji presentation selector; emoji-test.txt with it."""
    return text.replace("\ufe0f", "")


def _annotations(lang: str) -> dict[str, tuple[str, list[str]]]:
    out: dict[str, tuple[str, list[str]]] = {}
    for sub in ("annotations", "annotationsDerived"):
        path = CLDR_DIR / sub / f"{lang}.xml"
        if not path.is_file():
            continue
        for node in ET.parse(path).getroot().iter("annotation"):
            cp, text = _key(node.get("cp", "")), (node.text or "").strip()
            name, kws = out.get(cp, ("", []))
            if node.get("type") == "tts":
                name = text
            else:
                kws = [k.strip() for k in text.split("|") if k.strip()]
            out[cp] = (name, kws)
    return out


@lru_cache(maxsize=1)
def emoji_catalog() -> tuple[Emoji, ...]:
    """Every fully-qualified emoji of emoji-test.txt, in file order, with its CLDR names."""
    _require()
    ann = {lang: _annotations(lang) for lang in ("en", "zh")}
    out, group, subgroup = [], "", ""
    for line in EMOJI_TEST.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line:
            text = "".join(chr(int(cp, 16)) for cp in line.split(";")[0].split())
            names = {lang: ann[lang].get(_key(text), ("", []))[0] for lang in ann}
            kws = {lang: ann[lang].get(_key(text), ("", []))[1] for lang in ann}
            out.append(Emoji(text, group, subgroup, names, kws))
    return tuple(out)


def is_unseen_family(family: str, seed: int = 0, fraction: float = UNSEEN_FRACTION) -> bool:
    """The held-out rule: a stable hash of (family, seed), independent of catalog order or version."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{ord(family):x}".encode()).digest()[:8], "big")
    return h / 2 ** 64 < fraction


def class_emoji(group: str, split: str = "all", seed: int = 0) -> list[Emoji]:
    """The classes of one group: named in both languages, no skin-tone variants, one class per English and
    per Chinese name; split 'seen', 'unseen' or 'all'."""
    if group not in CLASS_GROUPS:
        raise ValueError(f"emoji group {group!r}; accepted: {', '.join(CLASS_GROUPS)}")
    if split not in ("seen", "unseen", "all"):
        raise ValueError(f"emoji split {split!r}; accepted: seen, unseen, all")
    out, names_seen = [], set()
    for e in emoji_catalog():
        if e.group != group or not e.name["en"] or not e.name["zh"] or any(ord(c) in SKIN_TONES for c in e.text):
            continue
        if e.name["en"] in names_seen or e.name["zh"] in names_seen:
            continue
        names_seen.update((e.name["en"], e.name["zh"]))
        unseen = is_unseen_family(e.family, seed)
        if split == "all" or unseen == (split == "unseen"):
            out.append(e)
    return out


def training_emoji(seed: int = 0) -> list[Emoji]:
    """Every emoji picture a stage may train on: all groups (faces, people, symbols and flags too: more kinds
    of pictures), except the held-out families of the class groups, and without skin-tone variants (a third
    of the catalog, near-duplicates of their default)."""
    return [e for e in emoji_catalog()
            if e.group != "Component" and not any(ord(c) in SKIN_TONES for c in e.text)
            and not (e.group in CLASS_GROUPS and is_unseen_family(e.family, seed))]


# ------------------------------------------------------------------------------------------- pictures
@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont:
    _require()
    return ImageFont.truetype(str(EMOJI_FONT), GLYPH_SIZE)


@lru_cache(maxsize=4096)
def render(text: str) -> Image.Image:
    """The emoji's glyph, cropped to its ink, RGBA (transparent background)."""
    font = _font()
    img = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(img).text((8, 8), text, font=font, embedded_color=True)
    box = img.getbbox()
    if box is None:
        raise ValueError(f"the emoji font has no picture for {text!r} ({' '.join(f'{ord(c):X}' for c in text)})")
    return img.crop(box)


def plain_picture(text: str, size: int = 224) -> Image.Image:
    """The emoji centred on white, 80% of the canvas: the canonical test picture."""
    return _place(render(text), size, 0.8, (0.5, 0.5), 0.0, _solid((255, 255, 255), size))


def _solid(rgb, size) -> Image.Image:
    return Image.new("RGB", (size, size), tuple(rgb))


def _background(rng: random.Random, size: int) -> Image.Image:
    kind = rng.random()
    if kind < 0.3:
        return _solid((255, 255, 255), size)
    a = [rng.randrange(256) for _ in range(3)]
    if kind < 0.7:
        return _solid(a, size)
    b = [rng.randrange(256) for _ in range(3)]  # a linear gradient between two colours
    ramp = Image.linear_gradient("L").resize((size, size)).rotate(rng.uniform(0, 360))
    return Image.composite(_solid(a, size), _solid(b, size), ramp)


def _place(glyph: Image.Image, size: int, scale: float, centre: tuple[float, float], angle: float,
           canvas: Image.Image) -> Image.Image:
    g = glyph.rotate(angle, resample=Image.BICUBIC, expand=True) if angle else glyph
    side = max(4, int(size * scale))
    f = side / max(g.size)
    g = g.resize((max(1, round(g.width * f)), max(1, round(g.height * f))), Image.BICUBIC)
    x, y = int(centre[0] * size - g.width / 2), int(centre[1] * size - g.height / 2)
    canvas = canvas.copy()
    canvas.paste(g, (x, y), g)
    return canvas


@dataclass(frozen=True)
class ViewRecipe:
    """How far a view may stray from the plain picture. `mix` is the chance of a second emoji: pasted beside
    the first (a scene) or blended over the whole view (mixup)."""

    size: int = 224
    scale: tuple[float, float] = (0.45, 1.0)
    max_rotation: float = 25.0
    jitter: float = 0.3
    mix: float = 0.4

    def key(self) -> str:
        return f"{self.size}-{self.scale[0]:g}-{self.scale[1]:g}-{self.max_rotation:g}-{self.jitter:g}-{self.mix:g}"


TEST_RECIPE = ViewRecipe(scale=(0.6, 0.9), max_rotation=10.0, jitter=0.15, mix=0.0)


def make_view(text: str, rng: random.Random, recipe: ViewRecipe, other: str | None = None) -> Image.Image:
    size = recipe.size
    scale = rng.uniform(*recipe.scale)
    centre = tuple(0.5 + rng.uniform(-1, 1) * (1 - scale) / 2 for _ in range(2))
    angle = rng.uniform(-recipe.max_rotation, recipe.max_rotation)
    img = _place(render(text), size, scale, centre, angle, _background(rng, size))
    if other is not None:
        if rng.random() < 0.5:  # a scene: a second, smaller emoji somewhere
            s2 = rng.uniform(0.25, 0.5)
            img = _place(render(other), size, s2, (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)),
                         rng.uniform(-recipe.max_rotation, recipe.max_rotation), img)
        else:  # mixup of two views
            img = Image.blend(img, _place(render(other), size, scale, (0.5, 0.5), 0.0, _background(rng, size)),
                              rng.uniform(0.2, 0.5))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(1 + rng.uniform(-recipe.jitter, recipe.jitter))
    return img


def _rng(*parts) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big"))


class EmojiViews:
    """An unlabeled image source for stage 1: `views` augmented views of each training emoji, item i is view
    i // n of emoji i % n, fixed by (seed, i), so a teacher cache of the views stays valid."""

    def __init__(self, views: int = 4, seed: int = 0, recipe: ViewRecipe = ViewRecipe(), limit: int | None = None):
        if views < 1:
            raise ValueError(f"views per emoji must be >= 1, got {views}")
        self.emoji = [e.text for e in training_emoji(seed)]
        self.views, self.seed, self.recipe = views, seed, recipe
        self.size = len(self.emoji) * views if limit is None else min(limit, len(self.emoji) * views)
        content = hashlib.sha256("".join(self.emoji).encode()).hexdigest()[:10]
        self.dataset_id = f"emoji-views-{data_fingerprint()}-{content}-v{views}-s{seed}-{recipe.key()}-n{self.size}"

    def __len__(self) -> int:
        return self.size

    def image(self, i: int) -> Image.Image:
        if not 0 <= i < self.size:
            raise IndexError(f"view {i} out of range for {self.size} views")
        n = len(self.emoji)
        rng = _rng("train", self.seed, i)
        other = self.emoji[rng.randrange(n)] if rng.random() < self.recipe.mix else None
        return make_view(self.emoji[i % n], rng, self.recipe, other)


class EmojiClasses:
    """A labeled emoji set (the LabeledImages protocol of dcclip_mobile.zeroshot): the classes of `groups`
    in `split`, `views` test views per class (salted apart from training views). `unseen[c]` says whether
    class c is held out, for the seen / unseen / generalized protocol."""

    def __init__(self, groups=CLASS_GROUPS, split: str = "all", views: int = 3, seed: int = 0,
                 recipe: ViewRecipe = TEST_RECIPE, salt: str = "test"):
        groups = (groups,) if isinstance(groups, str) else tuple(groups)
        self.class_list = [e for g in groups for e in class_emoji(g, split, seed)]
        if not self.class_list:
            raise ValueError(f"no emoji classes in groups {groups} split {split!r}")
        self.views, self.seed, self.recipe, self.salt = views, seed, recipe, salt
        self.classes = {lang: [e.name[lang] for e in self.class_list] for lang in ("en", "zh")}
        self.unseen = [is_unseen_family(e.family, seed) for e in self.class_list]
        self.labels = [c for c in range(len(self.class_list)) for _ in range(views)]
        slug = "+".join(GROUP_SLUGS[g] for g in groups)
        content = hashlib.sha256("".join(e.text for e in self.class_list).encode()).hexdigest()[:10]
        self.dataset_id = f"emoji-{slug}-{split}-{data_fingerprint()}-{content}-v{views}-s{seed}-{salt}-{recipe.key()}"

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        c, v = divmod(i, self.views)
        text = self.class_list[c].text
        if v == 0 and self.salt == "test":  # training views never include the plain test picture
            return plain_picture(text, self.recipe.size)
        return make_view(text, _rng(self.salt, self.seed, text, v), self.recipe)

    def captions(self, lang: str, c: int) -> list[str]:
        """Human-written words for class c: its name and CLDR keywords."""
        e = self.class_list[c]
        return [e.name[lang]] + [k for k in e.keywords[lang] if k != e.name[lang]]


def write_elevater(out: str | Path, groups=CLASS_GROUPS, split: str = "unseen", views: int = 3,
                   seed: int = 0) -> list[Path]:
    """Write one ELEVATER-layout folder per group (label.txt, label_cn.txt, test/<id>/<v>.png), so
    `train.evaluate --elevater-root` and any ELEVATER tool can read the held-out sets."""
    written = []
    for g in ((groups,) if isinstance(groups, str) else groups):
        ds = EmojiClasses(g, split, views, seed)
        root = Path(out) / f"emoji-{GROUP_SLUGS[g]}-{split}"
        root.mkdir(parents=True, exist_ok=True)
        for lang, fname in (("en", "label.txt"), ("zh", "label_cn.txt")):
            (root / fname).write_text("".join(n + "\n" for n in ds.classes[lang]), encoding="utf-8")
        width = max(3, math.ceil(math.log10(len(ds.class_list) + 1)))
        for i in range(len(ds)):
            c, v = divmod(i, views)
            d = root / "test" / f"{c:0{width}d}"
            d.mkdir(parents=True, exist_ok=True)
            ds.image(i).save(d / f"{v}.png")
        written.append(root)
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m dcclip_mobile.data.emoji",
                                 description="write the held-out emoji sets as ELEVATER folders")
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", default="unseen", choices=["seen", "unseen", "all"])
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)

    def run(args) -> None:
        if args.views < 1:  # refused before any folder is written
            raise UsageError(f"--views {args.views}: give a number of views per class >= 1")
        for root in write_elevater(args.out, CLASS_GROUPS, args.split, args.views, args.seed):
            print(root)
    return run_main(ap, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
