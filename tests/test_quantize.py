"""Quantization recipes (lowering/quantize.py): static int8 calibrates in batches with min/max observers, which
gives the very model that one-at-a-time calibration gives, in a few forwards; what each recipe needs. Every
model here is the tiny preset, quantized by torchao's PT2E and lowered and run by ExecuTorch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dcclip_mobile.config import load_preset
from dcclip_mobile.models import DCCLIPStudent
from lowering import quantize
from lowering.encoders import example_inputs, make_encoder
from lowering.executorch_backend import PteRunner, lower_to_pte
from lowering.quantize import QuantizationError, batches, describe_recipe, quantize_encoder, spread

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def student() -> DCCLIPStudent:
    """The tiny student with BatchNorm statistics from its own calibration images (else activations vanish)."""
    torch.manual_seed(0)
    cfg = load_preset("tiny")
    model = DCCLIPStudent(cfg).train()
    with torch.no_grad():
        model.image(_images(cfg, 32, seed=3))
    return model.eval()


def _images(cfg, n: int, seed: int) -> torch.Tensor:
    """Smooth random pictures (blurred noise plus a bright square), normalized like the student's inputs."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.image.image_size
    x = nn.functional.avg_pool2d(torch.randn(n, 3, s, s, generator=g), 5, 1, 2) * 3
    for i in range(n):
        r, c = torch.randint(0, s // 2, (2,), generator=g).tolist()
        x[i, :, r:r + s // 3, c:c + s // 3] += 2.0
    return x


def _texts(cfg, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Token ids of every length up to the context (BOS 2 ... EOS 3, then padding), batch 1 each."""
    g = torch.Generator().manual_seed(seed)
    L = cfg.text.context_length
    out = []
    for i in range(n):
        k = 2 + i % (L - 1)
        ids = torch.zeros(1, L, dtype=torch.long)
        ids[0, :k] = torch.randint(4, cfg.text.vocab_size, (k,), generator=g)
        ids[0, 0], ids[0, k - 1] = 2, 3
        mask = (torch.arange(L) < k).long()[None]
        out.append((ids, mask))
    return out


def _calibration(student, tower: str, n: int, seed: int) -> list[tuple]:
    if tower == "image":
        return [(x[None],) for x in _images(student.cfg, n, seed)]
    return _texts(student.cfg, n, seed)


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a, b, dim=-1)


def test_spread_takes_evenly_spaced_items_and_batches_group_inputs_of_one_shape():
    assert spread(range(10), None) == list(range(10)) and spread(range(3), 5) == [0, 1, 2]
    assert spread(range(128), 32) == list(range(0, 128, 4))
    assert spread(range(10), 4) == [0, 2, 5, 7]
    a = [(torch.full((1, 2), float(i)),) for i in range(5)]
    b = [(torch.zeros(1, 3),)]  # another shape starts a new batch
    got = list(batches(a + b + a[:1], 2))
    assert [t[0].shape[0] for t in got] == [2, 2, 1, 1, 1]
    assert torch.equal(got[1][0][:, 0], torch.tensor([2.0, 3.0])) and got[3][0].shape == (1, 3)


@pytest.mark.parametrize("tower", ["image", "text"])
def test_batched_calibration_gives_the_model_one_at_a_time_calibration_gives(student, tower, monkeypatch):
    """Min/max ranges do not depend on how the inputs are grouped: calibrating 32 at a time (the graph exported
    with a dynamic batch) and one at a time give the same quantized model (up to float rounding: a convolution
    sums in another order at another batch size, so a range may differ in its last bits)."""
    example = example_inputs(student.cfg, tower)
    encoder = make_encoder(student, tower)
    calibration = _calibration(student, tower, 24, seed=1)
    batched = quantize_encoder(encoder, tower, "int8", example, calibration)
    monkeypatch.setattr(quantize, "CALIBRATION_BATCH", 1)
    one_by_one = quantize_encoder(encoder, tower, "int8", example, calibration)
    qparams = lambda m: [n.args[1:3] for n in m.graph.nodes if "quantize_per_tensor" in str(n.target)]  # noqa: E731
    got, want = qparams(batched), qparams(one_by_one)
    assert len(got) == len(want) and len(got) > 4
    for (scale, zero), (scale_1, zero_1) in zip(got, want):
        assert zero == zero_1 and scale == pytest.approx(scale_1, rel=1e-5)
    with torch.no_grad():
        for args in _calibration(student, tower, 6, seed=2):
            assert _cosines(batched(*args), one_by_one(*args)).min() > 0.99999


@pytest.mark.parametrize("tower", ["image", "text"])
def test_static_int8_lowers_to_a_batch_1_program_that_matches_the_eager_encoder(student, tower):
    """The quantized graph comes from a dynamic-batch export; the .pte is exported again at batch 1 and must be
    the usual program: one XNNPACK partition (only the text embedding lookup outside), eager-close outputs."""
    example = example_inputs(student.cfg, tower)
    encoder = make_encoder(student, tower)
    q = quantize_encoder(encoder, tower, "int8", example, _calibration(student, tower, 40, seed=1))
    lowered = lower_to_pte(q, example, "xnnpack")
    assert lowered.partitions == 1
    outside = set(lowered.ops_outside) - {"dim_order_ops._to_dim_order_copy"}
    assert outside == (set() if tower == "image" else {"quantized_decomposed.embedding_byte"})
    runner = PteRunner(lowered.buffer)
    assert runner.input_meta[0]["shape"][0] == 1
    parity = _calibration(student, tower, 16, seed=2)
    with torch.no_grad():
        ref = torch.cat([encoder(*a) for a in parity])
    got = runner.run_batch(parity)
    assert _cosines(ref, got).min() > 0.99


def test_image_calibration_uses_at_most_the_limit_spread_over_the_given_images(student, monkeypatch):
    """CALIBRATION_LIMIT["image"] images, evenly spaced: the same model as calibrating on that subset alone."""
    example = example_inputs(student.cfg, "image")
    encoder = make_encoder(student, "image")
    monkeypatch.setitem(quantize.CALIBRATION_LIMIT, "image", 4)
    calibration = _calibration(student, "image", 16, seed=1)
    calibration[1] = (calibration[1][0] * 50,)  # not among the 4 used (0, 4, 8, 12): must not widen any range
    limited = quantize_encoder(encoder, "image", "int8", example, calibration)
    subset = quantize_encoder(encoder, "image", "int8", example, calibration[::4])
    x = _images(student.cfg, 2, seed=5)
    with torch.no_grad():
        assert torch.equal(limited(x[:1]), subset(x[:1]))
    assert "up to 4 calibration inputs" in describe_recipe("image", "int8")["activations"]
    assert "every calibration input" in describe_recipe("text", "int8")["activations"]


def test_static_int8_refuses_to_run_without_calibration_inputs(student):
    example = example_inputs(student.cfg, "text")
    with pytest.raises(QuantizationError, match="calibration"):
        quantize_encoder(make_encoder(student, "text"), "text", "int8", example, [])


class _FixedBatch(nn.Module):
    """A module whose graph ties the batch to 1 (a reshape to a literal shape): no dynamic-batch export."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.lin = nn.Linear(8 * 8 * 8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.relu(self.conv(x)).reshape(1, 8 * 8 * 8))


def test_a_module_that_only_exports_at_batch_1_is_calibrated_one_input_at_a_time():
    torch.manual_seed(0)
    module = _FixedBatch().eval()
    example = (torch.zeros(1, 3, 8, 8),)
    calibration = [(torch.randn(1, 3, 8, 8),) for _ in range(6)]
    q = quantize_encoder(module, "image", "int8", example, calibration)
    assert any("quantize_per_tensor" in str(n.target) for n in q.graph.nodes)
    lowered = lower_to_pte(q, example, "xnnpack")
    with torch.no_grad():
        ref = torch.cat([module(*a) for a in calibration])
    assert _cosines(ref, PteRunner(lowered.buffer).run_batch(calibration)).min() > 0.99


def test_dynamic_recipes_need_no_calibration_and_int8_dynamic_emb4_is_a_4_bit_table_beside_them(student):
    """int8-dynamic and int8-dynamic-emb4 quantize with no calibration input (weights are observed on the
    example); emb4 lowers to embedding_4bit (outside the delegate), a smaller .pte than int8-dynamic's; its image
    tower is the int8-dynamic recipe."""
    from lowering.quantize import EMB4_GROUP_SIZE, XNNPACK_PRECISIONS, recipe_for

    assert "int8-dynamic-emb4" in XNNPACK_PRECISIONS
    assert recipe_for("image", "int8-dynamic-emb4") == "int8-dynamic"
    assert recipe_for("text", "int8-dynamic-emb4") == "int8-dynamic-emb4"
    assert f"groups of {EMB4_GROUP_SIZE}" in describe_recipe("text", "int8-dynamic-emb4")["embedding"]
    with pytest.raises(QuantizationError, match="text tower"):
        quantize_encoder(make_encoder(student, "image"), "image", "int8-dynamic-emb4",
                         example_inputs(student.cfg, "image"), [])
    example = example_inputs(student.cfg, "text")
    encoder = make_encoder(student, "text")
    texts = _texts(student.cfg, 8, seed=4)
    with torch.no_grad():
        ref = torch.cat([encoder(*a) for a in texts])
    lowered, cosine = {}, {}
    for recipe in ("int8-dynamic", "int8-dynamic-emb4"):
        lowered[recipe] = lower_to_pte(quantize_encoder(encoder, "text", recipe, example, []), example, "xnnpack")
        cosine[recipe] = float(_cosines(ref, PteRunner(lowered[recipe].buffer).run_batch(texts)).min())
    assert "quantized_decomposed.embedding_byte" in lowered["int8-dynamic"].ops_outside
    assert "quantized_decomposed.embedding_4bit" in lowered["int8-dynamic-emb4"].ops_outside
    assert len(lowered["int8-dynamic-emb4"].buffer) < len(lowered["int8-dynamic"].buffer)
    assert cosine["int8-dynamic"] > 0.99 and cosine["int8-dynamic-emb4"] > 0.95, cosine
