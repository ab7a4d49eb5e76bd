"""AltCLIP (BAAI/AltCLIP: ViT-L/14 + XLM-R-large) as a teacher, through transformers.

`AltCLIPTeacher("BAAI/AltCLIP")` takes the hub id path; `AltCLIPTeacher("/models/altclip")` a local
directory holding what `save_pretrained` writes (config, weights, tokenizer, preprocessor config). Both go
through the same `from_pretrained` calls. The image feature map is the vision tower's patch tokens
(CLS dropped) on their grid; text features are the text tower's pooled output; the embeddings are the
model's own projections. Preprocessing is dcclip-mobile's (shorter side bicubic + center crop, CLIP's rule)
with the size, mean and std the checkpoint's preprocessor config states; no torchvision.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import CLIP_MEAN, CLIP_STD
from ..data.preprocess import ImagePreprocess
from .base import ImageFeatures, TextFeatures


def _fingerprint(name_or_path: str, model) -> str:
    """Names the weights for cache keys without hashing gigabytes: the config, plus the hub revision or, for
    a local directory, each weight file's name, size and mtime (a changed file gives a new id, never a stale hit)."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    local = Path(name_or_path)
    if local.is_dir():
        for f in sorted([*local.glob("*.safetensors"), *local.glob("*.bin")]):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    else:
        h.update(str(getattr(model.config, "_commit_hash", None)).encode())
    return h.hexdigest()[:12]


class AltCLIPTeacher:
    def __init__(self, name_or_path: str, max_text_length: int = 64, device: str = "cpu"):
        from transformers import AltCLIPModel, AutoTokenizer

        if str(name_or_path).startswith(("/", ".", "~")) and not Path(name_or_path).expanduser().is_dir():
            raise FileNotFoundError(f"AltCLIP directory {str(name_or_path)!r} does not exist; give a directory "
                                    "written by save_pretrained, or a hub id such as 'BAAI/AltCLIP'")
        name_or_path = str(Path(name_or_path).expanduser()) if str(name_or_path).startswith("~") else name_or_path
        try:
            self.model = AltCLIPModel.from_pretrained(name_or_path).to(device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        except OSError as e:
            raise FileNotFoundError(
                f"AltCLIP {name_or_path!r} could not be loaded ({str(e).splitlines()[0]}). Give a hub id such as "
                "'BAAI/AltCLIP' (needs the hub, or a filled Hugging Face cache) or a directory holding what "
                "AltCLIPModel.save_pretrained and the tokenizer's save_pretrained write; without either, use "
                "--teacher offline") from None
        self.device, self.dtype, self.max_text_length = torch.device(device), torch.float32, max_text_length
        vc, cfg = self.model.config.vision_config, self.model.config
        self.preprocess = self._preprocess(name_or_path, vc.image_size)
        self.feature_channels = vc.hidden_size
        self.feature_size = self.preprocess.size // vc.patch_size
        self.text_feature_dim = cfg.text_config.project_dim
        self.embed_dim = cfg.projection_dim
        self.teacher_id = f"altclip-{Path(str(name_or_path)).name}-{_fingerprint(name_or_path, self.model)}-t{max_text_length}"

    @staticmethod
    def _preprocess(name_or_path: str, image_size: int) -> ImagePreprocess:
        """Size, mean and std from the checkpoint's preprocessor_config.json (the same lookup for a hub id and
        a local directory), CLIP's defaults where it has none; the resize rule is always ours."""
        from transformers.utils import cached_file

        mean, std, size = CLIP_MEAN, CLIP_STD, image_size
        try:
            path = cached_file(str(name_or_path), "preprocessor_config.json",
                               _raise_exceptions_for_missing_entries=False)
        except OSError:
            path = None
        if path:
            info = json.loads(Path(path).read_text(encoding="utf-8"))
            mean, std = tuple(info.get("image_mean", mean)), tuple(info.get("image_std", std))
            crop = info.get("crop_size", size)
            size = crop.get("height", size) if isinstance(crop, dict) else int(crop)
        return ImagePreprocess(int(size), mean, std)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "AltCLIPTeacher":
        """Move the model (and, with dtype, cast it: a frozen teacher runs in bf16 outright on a GPU)."""
        self.device, self.dtype = torch.device(device), dtype or self.dtype
        self.model.to(device=self.device, dtype=self.dtype)
        return self

    @torch.inference_mode()
    def encode_image(self, pixel_values: torch.Tensor) -> ImageFeatures:
        """Features on the teacher's device, float32."""
        out = self.model.vision_model(pixel_values=pixel_values.to(self.device, self.dtype))
        patches = out.last_hidden_state[:, 1:]  # drop CLS
        b, n, c = patches.shape
        g = int(round(n ** 0.5))
        fmap = patches.transpose(1, 2).reshape(b, c, g, g)
        emb = self.model.visual_projection(out.pooler_output)
        return ImageFeatures(fmap.float(), F.normalize(emb.float(), dim=-1))

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> TextFeatures:
        t = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_length,
                           return_tensors="pt").to(self.device)
        out = self.model.text_model(input_ids=t["input_ids"], attention_mask=t["attention_mask"])
        pooled = out.pooler_output
        emb = self.model.text_projection(pooled)
        return TextFeatures(pooled.float(), F.normalize(emb.float(), dim=-1))
