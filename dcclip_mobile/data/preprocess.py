"""The one image preprocessing used by training, evaluation, export and (ported) the phone apps.

The rule, exactly (the bundle manifest states it and the apps reimplement it):
  1. decode, apply the EXIF orientation, convert any mode (L, I;16, P, RGBA, CMYK...) to 8-bit RGB;
     transparency is composited on white;
  2. resize to (max(size, rint(w * scale)), max(size, rint(h * scale))) with scale = size / min(w, h) in
     double precision and rint rounding half to even (Python's round, Java's Math.rint), so the shorter side
     becomes `size`; bicubic as Pillow does it (Keys a = -0.5, the kernel widened by the scale factor when
     shrinking); skipped when the image is already size x size;
  3. center crop size x size: left = (width - size) // 2, top = (height - size) // 2;
  4. float32 CHW in RGB order: (pixel / 255 - mean[c]) / std[c], computed in float32 in that order.
"""
from __future__ import annotations

import dataclasses
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DCClipError

RESIZE_RULE = "shorter_side_bicubic_then_center_crop"
# The most pixels (width x height, as the file's header states them) an image may have: 100 megapixels, about
# 300 MB once decoded to RGB. Larger ones are refused before any pixel is decoded (a 50000 x 50000 PNG of a few
# bytes would take 7.5 GB): decompression bombs. Pillow's own check (Image.MAX_IMAGE_PIXELS, 89.5 MP: a
# warning, an error above twice that) is replaced by this one for the files load_image reads.
MAX_IMAGE_PIXELS = 100_000_000


class ImageLoadError(DCClipError, ValueError):
    """A file is not a readable image (missing, empty, truncated, another format, or one that must not be
    decoded: more than MAX_IMAGE_PIXELS pixels)."""


@dataclass(frozen=True)
class ImagePreprocess:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = RESIZE_RULE

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"preprocess size must be >= 1, got {self.size}")
        if self.resize != RESIZE_RULE:
            raise ValueError(f"unknown resize rule {self.resize!r}; accepted: {RESIZE_RULE!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got mean={self.mean} std={self.std}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(channel_order="RGB", layout="NCHW", dtype="float32",
                 resize_rule="scale = size / min(w, h) (double); new w, h = max(size, rint(w*scale)), "
                             "max(size, rint(h*scale)) (rint: half to even); none when already size x size",
                 interpolation="bicubic (Pillow: Keys a=-0.5, antialiased when shrinking)",
                 crop="center, left=(w-size)//2, top=(h-size)//2", scale="pixel/255",
                 normalize="(pixel/255 - mean[c]) / std[c] in float32",
                 decode="EXIF orientation applied; any mode to 8-bit RGB; alpha composited on white; "
                        "16-bit by /257")
        return d

    @classmethod
    def for_student(cls, cfg) -> "ImagePreprocess":
        """What a student was built for: its StudentConfig (or ImageStudentConfig) states size, mean and std."""
        image = getattr(cfg, "image", cfg)
        return cls(image.image_size, tuple(image.image_mean), tuple(image.image_std))

    @classmethod
    def from_dict(cls, d: dict) -> "ImagePreprocess":
        """The inverse of to_dict() (what a manifest's image.preprocess holds); the descriptive keys are ignored."""
        try:
            return cls(int(d["size"]), tuple(d["mean"]), tuple(d["std"]), d.get("resize", RESIZE_RULE))
        except (KeyError, TypeError) as e:
            raise ValueError(f"image preprocessing {d!r} lacks or mistypes {e}; it needs size, mean, std") from None

    def key(self) -> str:
        """A short string naming this preprocessing, for cache keys."""
        return f"{self.size}-{self.resize}-" + "-".join(f"{v:.6g}" for v in (*self.mean, *self.std))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16-bit by /257 (65535 -> 255); 32-bit int and float images, whose
    range no format fixes, by their own min..max."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            a = a / 257.0
        else:
            lo, hi = float(a.min()), float(a.max())
            a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        img = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Decode a file to an RGB image with its EXIF orientation applied; ImageLoadError names the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"image file {str(path)!r} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # between Pillow's limit and twice it Pillow only warns: the size check below decides instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img_file = Image.open(path)
        with img_file as img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ImageLoadError(f"image file {str(path)!r} states {w} x {h} = {w * h:,} pixels, more than "
                                     f"MAX_IMAGE_PIXELS ({MAX_IMAGE_PIXELS:,}): refused undecoded (a "
                                     "decompression bomb, or an image to downscale first)")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"image file {str(path)!r} is refused undecoded: more pixels than Pillow allows "
                             f"({e}); MAX_IMAGE_PIXELS is {MAX_IMAGE_PIXELS:,}") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{str(path)!r} is not an image Pillow can read") from None
    except (OSError, SyntaxError, EOFError) as e:
        raise ImageLoadError(f"image file {str(path)!r} is truncated or corrupt: {e}") from None
    except (ValueError, TypeError, IndexError, KeyError, MemoryError, struct.error, zlib.error) as e:
        # what Pillow's decoders raise on malformed data
        raise ImageLoadError(f"image file {str(path)!r} cannot be decoded ({type(e).__name__}: {e})") from None


def resized_shape(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after step 2 of the rule: the shorter side becomes `size`, the longer one keeps the
    aspect ratio (double precision, rounded half to even: the Android port does the same)."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def resize_and_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if (w, h) != (size, size):
        nw, nh = resized_shape(w, h, size)
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def normalize_pixels(rgb: np.ndarray, pre: ImagePreprocess) -> torch.Tensor:
    """uint8 HWC RGB -> float32 CHW, (x / 255 - mean) / std in float32."""
    x = rgb.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def preprocess_image(img: Image.Image, pre: ImagePreprocess) -> torch.Tensor:
    """An RGB (or any-mode) PIL image -> float32 [3, size, size]."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"preprocess_image takes a PIL image, got {type(img).__name__}")
    return normalize_pixels(np.asarray(resize_and_crop(to_rgb(img), pre.size)), pre)


def preprocess_batch(images: list[Image.Image], pre: ImagePreprocess) -> torch.Tensor:
    return torch.stack([preprocess_image(img, pre) for img in images])
