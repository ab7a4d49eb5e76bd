"""bench/peers.py's MobileCLIP-S0 towers: the full-size constructors against the published parameter counts
(counted, never lowered), and towers built small through the constructors' arguments: their shapes, and their
fp32 .pte run with the ExecuTorch runtime against eager, with nothing outside XNNPACK but what TinyCLIP's
towers leave there too."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from peers import MobileCLIPImage, MobileCLIPText, mobileclip_inputs  # noqa: E402

PUBLISHED = {MobileCLIPImage: 11.4e6, MobileCLIPText: 42.4e6}  # ml-mobileclip README, MobileCLIP-S0: 11.4 + 42.4 M


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_image() -> MobileCLIPImage:
    torch.manual_seed(0)
    return MobileCLIPImage(image_size=64, widths=(16, 32, 64, 128), depths=(1, 1, 2, 1), embed_dim=32).eval()


def small_text() -> MobileCLIPText:
    torch.manual_seed(0)
    return MobileCLIPText(vocab=300, context=16, width=64, layers=1, heads=4, mixer_kernel=5, embed_dim=32).eval()


def text_inputs(batch: int, context: int = 16, vocab: int = 300) -> tuple:
    ids = torch.randint(1, vocab, (batch, context))
    onehot = torch.zeros(batch, context)
    onehot[:, context // 2] = 1.0
    return ids, onehot


@pytest.mark.parametrize("cls", [MobileCLIPImage, MobileCLIPText], ids=lambda c: c.__name__)
def test_full_size_parameters_within_5_percent_of_published(cls):
    n = _parameters(cls())
    assert abs(n / PUBLISHED[cls] - 1) < 0.05, f"{cls.__name__}: {n:,} parameters, published {PUBLISHED[cls]:,.0f}"


def test_full_size_inputs_are_the_s0_shapes():
    inputs = mobileclip_inputs(2)
    assert inputs["image"][0].shape == (2, 3, 256, 256)
    ids, onehot = inputs["text"]
    assert ids.shape == onehot.shape == (2, 77) and int(ids.max()) < 49408


def test_small_towers_shapes():
    with torch.no_grad():
        assert small_image()(torch.randn(2, 3, 64, 64)).shape == (2, 32)
        assert small_text()(*text_inputs(2)).shape == (2, 32)


@pytest.mark.slow
@pytest.mark.parametrize("tower", ["image", "text"])
def test_small_tower_fp32_pte_matches_eager(tower):
    from lowering.executorch_backend import PteRunner, lower_to_pte

    module, example = ((small_image(), (torch.randn(1, 3, 64, 64),)) if tower == "image"
                       else (small_text(), text_inputs(1)))
    lowered = lower_to_pte(module, example, "xnnpack")
    # what the peers' plain form leaves outside XNNPACK, as TinyCLIP's towers do: the 4-D attention matmuls'
    # expand, the fused qkv's unbind (squeeze), and on the text side the embedding, LayerNorm and the one-hot
    # pooling's sum; every conv, squeeze-excite, GELU and mean of MCi is delegated
    outside = {"aten.expand_copy", "aten.squeeze_copy.dims_out"}
    if tower == "text":
        outside |= {"aten.embedding", "aten.native_layer_norm", "aten.sum.IntList_out"}
    assert set(lowered.ops_outside) <= outside, lowered.ops_outside
    runner = PteRunner(lowered.buffer)
    fresh = (torch.randn(1, 3, 64, 64),) if tower == "image" else text_inputs(1)
    with torch.no_grad():
        want = module(*fresh)
    got = runner(*fresh)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
