"""Weight inheritance from EfficientNet-Lite0 and the anchor head: what is copied, what is refused, and that an
anchor-head student still lowers to a .pte that the ExecuTorch runtime runs like PyTorch."""
import pytest
import torch

from dcclip_mobile import assets
from dcclip_mobile.config import load_preset
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.models.inherit import (HEAD_TEMPERATURE, InheritError, check_prunable, frozen_prefix_layers,
                                          identity_adapter_init, inherit_efficientnet_lite0, inherit_imagenet_head,
                                          load_efficientnet_lite0)

needs_assets = pytest.mark.needs(assets.assets_present("efficientnet-lite0-weights", "efficientnet-lite-code"),
                                 "the EfficientNet-Lite0 assets: python -m dcclip_mobile.assets fetch")


def test_only_a_pruned_lite0_can_inherit():
    check_prunable(load_preset("small-lite").image)
    with pytest.raises(InheritError, match="stem_channels"):
        check_prunable(load_preset("small").image)
    cfg = load_preset("small-lite").image
    cfg.stages[3][2] = 4  # Lite0's stage 3 has 3 blocks
    with pytest.raises(InheritError, match="stage 3 blocks 4"):
        check_prunable(cfg)


def test_frozen_prefix_is_the_layers_above_one_sixteenth():
    # stem + stages 0-2 (1 + 2 + 2 blocks) run at 1/2 .. 1/8
    assert frozen_prefix_layers(load_preset("small-lite").image) == 6


@needs_assets
def test_inherited_tower_carries_lite0_weights_and_head():
    torch.manual_seed(0)
    cfg = load_preset("small-lite")
    cfg.image.feature_channels = 640  # pruned head: the most important half
    student = DCCLIPStudent(cfg)
    lite0 = load_efficientnet_lite0()
    kept = inherit_efficientnet_lite0(student.image.features, cfg.image, lite0)["head_channels"]
    assert len(kept) == 640 and kept.unique().numel() == 640
    assert torch.equal(student.image.features[0][0].weight, lite0._conv_stem.weight)
    bn = student.image.features[0][1]
    assert torch.allclose(bn.running_var + bn.eps, lite0._bn0.running_var + lite0._bn0.eps)  # same normalization
    # stage 3 keeps the first 2 of Lite0's 3 blocks: student layer 6 is Lite0 block 5
    assert torch.equal(student.image.features[6].block[-1][0].weight, lite0._blocks[5]._project_conv.weight)
    assert torch.equal(student.image.features[-1][0].weight, lite0._conv_head.weight[kept])
    bank = torch.nn.functional.normalize(torch.randn(1000, cfg.embed_dim), dim=-1)
    inherit_imagenet_head(student.image, lite0, kept, bank)
    assert torch.allclose(student.image.anchor_logits.weight * HEAD_TEMPERATURE, lite0._fc.weight[:, kept])
    adapter = torch.nn.Conv2d(640, 1280, 1)
    identity_adapter_init(adapter, kept)
    x = torch.rand(1, 640, 2, 2)
    assert torch.equal(adapter(x)[0, kept], x[0])
    with pytest.raises(InheritError, match="class bank"):
        inherit_imagenet_head(student.image, lite0, kept, bank[:10])


def test_anchor_head_student_lowers_and_runs_in_executorch(tiny_tokenizer, tmp_path):
    from lowering.encoders import make_encoder, example_inputs
    from lowering.executorch_backend import PteRunner, lower_to_pte

    torch.manual_seed(0)
    cfg = load_preset("tiny")
    cfg.image.head_anchors = 32
    cfg.text.vocab_size = tiny_tokenizer.vocab_size
    model = DCCLIPStudent(cfg).eval()
    x = torch.randn(1, 3, cfg.image.image_size, cfg.image.image_size)
    _, emb = model.image(x)
    assert emb.shape == (1, cfg.embed_dim)
    encoder = make_encoder(model, "image")
    program = lower_to_pte(encoder, example_inputs(cfg, "image"), "xnnpack")
    assert program.partitions == 1  # softmax and the two linears stay inside XNNPACK's one partition
    out = PteRunner(program.buffer)(x)
    assert torch.nn.functional.cosine_similarity(out, encoder(x), dim=-1).item() > 0.9999
