"""Student configurations: dataclasses with JSON presets.

A config is the whole description of a student's architecture; a checkpoint's config.json is
this dataclass plus a format version, so a checkpoint can be rebuilt without any code from its author.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import DCClipError

CONFIG_FORMAT_VERSION = 1

# CLIP's normalization: the students are trained from scratch, so any fixed choice works, and this one
# is what every bundle consumer (the apps) already knows.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ConfigError(DCClipError, ValueError):
    """A config value is missing, unknown or out of range."""


@dataclass
class ImageStudentConfig:
    """A MobileNetV2-style convolutional tower: conv + BatchNorm + ReLU6 only, so BatchNorm folds
    into the convs at export and the whole tower is one XNNPACK partition."""

    image_size: int = 224
    stem_channels: int = 16
    # one entry per stage: [expand_ratio, out_channels, num_blocks, first_stride(, depthwise kernel: 3 if absent)];
    # expand_ratio may be fractional (a pruned network's hidden width is cin * ratio, rounded)
    stages: list[list[float]] = field(default_factory=lambda: [
        [1, 16, 1, 1], [4, 24, 2, 2], [4, 32, 3, 2], [4, 64, 3, 2], [4, 96, 2, 1], [4, 160, 2, 2]])
    feature_channels: int = 512  # the last 1x1 conv: the feature map the adapter maps to the teacher's
    head_anchors: int = 0  # 0: a linear projection to the joint space; K: softmax over K anchor embeddings
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    @property
    def stride(self) -> int:
        s = 2  # stem
        for _, _, _, first_stride, *_ in self.stages:
            s *= first_stride
        return s

    @property
    def feature_size(self) -> int:
        return -(-self.image_size // self.stride)


@dataclass
class TextStudentConfig:
    """A small pre-norm transformer over SentencePiece ids."""

    vocab_size: int = 12000
    context_length: int = 64
    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    # "rms": RMSNorm written as mul/mean/rsqrt, which XNNPACK takes; "layer": nn.LayerNorm, which the
    # executorch 1.5.1 XNNPACK partitioner leaves out (one graph split per norm). Measured in bench/.
    norm: str = "rms"


@dataclass
class StudentConfig:
    name: str
    embed_dim: int
    image: ImageStudentConfig
    text: TextStudentConfig
    logit_scale_init: float = 2.6592  # log(1 / 0.07), as CLIP
    logit_scale_max: float = 4.6052  # log(100): the clamp CLIP uses

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["format_version"] = CONFIG_FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StudentConfig":
        d = dict(d)
        version = d.pop("format_version", None)
        if version != CONFIG_FORMAT_VERSION:
            raise ConfigError(
                f"student config format_version is {version!r}; this dcclip-mobile reads version "
                f"{CONFIG_FORMAT_VERSION}. Re-export the checkpoint with a matching dcclip-mobile version.")
        _check_types(cls, d, "")
        image = ImageStudentConfig(**_tuples(d.pop("image")))
        text = TextStudentConfig(**d.pop("text"))
        cfg = cls(image=image, text=text, **d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        t = self.text
        checks = [
            (self.embed_dim > 0, f"embed_dim must be > 0, got {self.embed_dim}"),
            (self.image.image_size >= 32, f"image.image_size must be >= 32, got {self.image.image_size}"),
            (len(self.image.stages) > 0, "image.stages must not be empty"),
            (self.image.head_anchors >= 0, f"image.head_anchors must be >= 0, got {self.image.head_anchors}"),
            (all(len(st) in (4, 5) for st in self.image.stages),
             f"image.stages entries are [expand, out, blocks, stride(, kernel)]; got {self.image.stages}"),
            (all(len(st) == 4 or st[4] in (3, 5, 7) for st in self.image.stages),
             f"image.stages kernels must be 3, 5 or 7; got {self.image.stages}"),
            (t.vocab_size >= 260, f"text.vocab_size must be >= 260 (256 byte pieces + specials), got {t.vocab_size}"),
            (t.context_length >= 2, f"text.context_length must be >= 2 (BOS + EOS), got {t.context_length}"),
            (t.width % t.heads == 0, f"text.width ({t.width}) must be divisible by text.heads ({t.heads})"),
            (t.norm in ("rms", "layer"), f"text.norm is {t.norm!r}; accepted: 'rms', 'layer'"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


# what each annotation of the config dataclasses accepts from JSON (bool is never a number here)
def _is_number(v: object) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


_KINDS = {
    "int": ("an integer", lambda v: type(v) is int),
    "float": ("a finite number", _is_number),
    "str": ("a string", lambda v: isinstance(v, str)),
    "list[list[float]]": ("a list of lists of numbers",
                          lambda v: isinstance(v, list) and all(isinstance(r, list) and all(map(_is_number, r))
                                                                for r in v)),
    "tuple[float, float, float]": ("a list of 3 numbers",
                                   lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(map(_is_number, v))),
}
_NESTED = {"ImageStudentConfig": ImageStudentConfig, "TextStudentConfig": TextStudentConfig}


def _check_types(cls, d: object, prefix: str) -> None:
    """Every key known, every required key present, every value of its field's type: a ConfigError naming
    the key otherwise (never a coercion: "64" is not 64, null is not a default)."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(d, dict):
        raise ConfigError(f"student config {where} must be a JSON object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"student config has unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"{where} accepts {', '.join(fields)}")
    for name, f in fields.items():
        key = prefix + name
        if name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"student config lacks {key!r}")
            continue
        value, kind = d[name], str(f.type)
        if kind in _NESTED:
            _check_types(_NESTED[kind], value, key + ".")
            continue
        described, ok = _KINDS[kind]
        if not ok(value):
            shown = json.dumps(value, default=repr)[:80]
            raise ConfigError(f"student config key {key!r} must be {described}, got {shown} ({type(value).__name__}); "
                              "fix config.json or re-export the checkpoint")


def _tuples(image: dict) -> dict:
    image = dict(image)
    for k in ("image_mean", "image_std"):
        if k in image:
            image[k] = tuple(image[k])
    return image


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("dcclip_mobile.presets").iterdir()
                  if p.name.endswith(".json"))


def load_preset(name: str) -> StudentConfig:
    names = preset_names()
    if not isinstance(name, str) or name not in names:
        raise ConfigError(f"unknown student preset {name!r}; accepted: {', '.join(names)}")
    d = json.loads(resources.files("dcclip_mobile.presets").joinpath(f"{name}.json").read_text())
    d["format_version"] = CONFIG_FORMAT_VERSION
    return StudentConfig.from_dict(d)


def load_config(path_or_preset: str | Path) -> StudentConfig:
    """A preset name, or a path to a config JSON (a checkpoint's config.json works)."""
    p = Path(path_or_preset)
    if p.suffix == ".json" or p.is_file():
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {str(p)!r} is not valid JSON: {e}") from None
        return StudentConfig.from_dict(d)
    return load_preset(str(path_or_preset))
