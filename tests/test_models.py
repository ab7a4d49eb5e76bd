import pytest
import torch

from dcclip_mobile.config import ConfigError, load_config, load_preset, preset_names
from dcclip_mobile.models import DCCLIPStudent, count_parameters


def dummy_inputs(cfg, batch=2):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, cfg.image.image_size, cfg.image.image_size, generator=g)
    ids = torch.randint(4, cfg.text.vocab_size, (batch, cfg.text.context_length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, cfg.text.context_length // 2:] = 0
    return pixels, ids, mask


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_forward_shapes_for_every_preset(name):
    cfg = load_preset(name)
    model = DCCLIPStudent(cfg).eval()
    pixels, ids, mask = dummy_inputs(cfg, batch=1 if name != "tiny" else 2)
    b = pixels.shape[0]
    with torch.no_grad():
        fmap, img_emb = model.image(pixels)
        pooled, txt_emb = model.text(ids, mask)
        i, t, scale = model(pixels, ids, mask)
    s = cfg.image.feature_size
    assert fmap.shape == (b, cfg.image.feature_channels, s, s)
    assert img_emb.shape == (b, cfg.embed_dim) and txt_emb.shape == (b, cfg.embed_dim)
    assert pooled.shape == (b, cfg.text.width)
    assert torch.allclose(i.norm(dim=-1), torch.ones(b), atol=1e-5)
    assert torch.allclose(t.norm(dim=-1), torch.ones(b), atol=1e-5)
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-3)


def test_preset_sizes_match_their_purpose():
    sizes = {n: DCCLIPStudent(load_preset(n)) for n in ("tiny", "small", "base")}
    assert count_parameters(sizes["tiny"]) < 1_000_000
    assert 2e6 <= count_parameters(sizes["small"].image) <= 5e6
    # the text tower's 12,000-piece table (3.1M of its 4.7M) is the smallest that meets the tokenizer's pieces-per-
    # character and per-word targets (README, "The tokenizer"); the transformer itself is 1.7M, its MLP at ratio 2
    # (docs/design.md, "Export choices": the 64-token run against TinyCLIP Text-3M)
    text = sizes["small"].text
    assert 1.2e6 <= count_parameters(text) - text.token_embedding.weight.numel() <= 2e6
    assert count_parameters(text) <= 5e6
    assert 8e6 <= count_parameters(sizes["base"].image) <= 14e6
    assert 30e6 <= count_parameters(sizes["base"].text) <= 50e6


def test_padding_does_not_change_text_embedding():
    torch.manual_seed(0)
    cfg = load_preset("tiny")
    model = DCCLIPStudent(cfg).eval()
    _, ids, mask = dummy_inputs(cfg)
    ids2 = ids.clone()
    ids2[0, cfg.text.context_length // 2:] = 0  # different content under the mask
    with torch.no_grad():
        a = model.encode_text(ids, mask)[0]
        b = model.encode_text(ids2, mask)[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_trimmed_text_forward_matches_the_full_length_one():
    torch.manual_seed(0)
    cfg = load_preset("tiny")
    model = DCCLIPStudent(cfg)
    _, ids, mask = dummy_inputs(cfg, batch=3)
    mask[:, 5:] = 0  # every row padded from column 5 on: training drops those columns
    mask[1, 2:] = 0
    full = model.text(ids, mask)
    trimmed = model.text.forward_trimmed(ids, mask)
    for a, b in zip(full, trimmed):
        assert torch.allclose(a, b, atol=1e-5)
    trimmed[1].sum().backward()  # and it trains: the used positions get gradients, the dropped ones none
    grad = model.text.position_embedding.grad
    assert grad[:5].abs().sum() > 0 and grad[5:].abs().sum() == 0


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_torch_export_of_both_encoders(name):
    cfg = load_preset(name)
    model = DCCLIPStudent(cfg).eval()
    pixels, ids, mask = dummy_inputs(cfg, batch=1)
    for tower, args in ((model.image, (pixels,)), (model.text, (ids, mask))):
        exported = torch.export.export(tower, args)
        with torch.no_grad():
            want = tower(*args)
            got = exported.module()(*args)
        for w, g in zip(want, got):
            assert torch.allclose(w, g, atol=1e-5)
    # no data-dependent control flow: nothing in the graph may branch on values
    graph_ops = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert not any("cond" in op or "argmax" in op for op in graph_ops)


def test_unknown_preset_names_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"'huge'.*base, small, small-lite, tiny"):
        load_preset("huge")
    assert preset_names() == ["base", "small", "small-lite", "tiny"]


def test_bad_config_values(tmp_path):
    cfg = load_preset("tiny").to_dict()
    cfg["text"]["heads"] = 3
    p = tmp_path / "c.json"
    import json
    p.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"divisible by text.heads \(3\)"):
        load_config(p)
    cfg["text"]["heads"] = 2
    cfg["text"]["norm"] = "batch"
    p.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="'batch'.*'rms', 'layer'"):
        load_config(p)


@pytest.mark.parametrize("bad,match", [
    (torch.randn(3, 64, 64), r"shape \(3, 64, 64\).*\[batch, 3, 64, 64\]"),
    (torch.randn(1, 1, 64, 64), r"shape \(1, 1, 64, 64\)"),
    (torch.randn(1, 3, 32, 32), r"shape \(1, 3, 32, 32\)"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "dtype torch.uint8"),
    ([[1.0]], "got list"),
])
def test_wrong_image_input_is_a_clear_error(bad, match):
    model = DCCLIPStudent(load_preset("tiny"))
    with pytest.raises((ValueError, TypeError), match=match):
        model.encode_image(bad)


def test_wrong_text_input_is_a_clear_error():
    model = DCCLIPStudent(load_preset("tiny"))
    with pytest.raises(ValueError, match=r"shape \(1, 7\).*\[batch, 16\]"):
        model.encode_text(torch.zeros(1, 7, dtype=torch.long), torch.ones(1, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="dtype torch.float32"):
        model.encode_text(torch.zeros(1, 16), torch.ones(1, 16, dtype=torch.long))
