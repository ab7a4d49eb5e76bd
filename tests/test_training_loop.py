"""The shared training loop: loss goes down, resume is exact, bad options are clear errors."""
import json

import pytest
import torch

from dcclip_mobile.checkpoint import load_student
from train.loop import TrainConfig, TrainConfigError, lr_at, read_metrics, train
from train.stages import AlignStage


class PairSet(torch.utils.data.Dataset):
    """Images whose content depends on the label, captioned in English or Chinese."""

    def __init__(self, tokenizer, n=32, size=64):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % 4
        self.images = torch.randn(n, 3, size, size, generator=g) * 0.3 + self.labels[:, None, None, None] - 1.5
        names = [("a photo of a bag.", "一张包的照片。"), ("a photo of a coat.", "一张外套的照片。"),
                 ("a photo of a dress.", "一张连衣裙的照片。"), ("a photo of a sneaker.", "一张运动鞋的照片。")]
        texts = [names[int(l)][i % 2] for i, l in enumerate(self.labels)]
        self.tokens = tokenizer(texts)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.images[i], "input_ids": self.tokens["input_ids"][i],
                "attention_mask": self.tokens["attention_mask"][i], "labels": self.labels[i]}


def run(student, tokenizer, out, cfg, **kw):
    return train(AlignStage(student), PairSet(tokenizer), torch.utils.data.default_collate, tokenizer, cfg, out, **kw)


def test_loss_goes_down_and_checkpoint_loads(tiny_student, tiny_tokenizer, tmp_path):
    cfg = TrainConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=3, checkpoint_every=10)
    ckpt = run(tiny_student, tiny_tokenizer, tmp_path, cfg)
    losses = [m["loss"] for m in read_metrics(tmp_path)]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    model, _ = load_student(ckpt)  # the training checkpoint is a student checkpoint
    assert torch.equal(model.image.proj.weight, tiny_student.image.proj.weight)


def fresh_student(tokenizer):
    from dcclip_mobile.config import load_preset
    from dcclip_mobile.models import DCCLIPStudent

    torch.manual_seed(0)
    cfg = load_preset("tiny")
    cfg.text.vocab_size = tokenizer.vocab_size
    return DCCLIPStudent(cfg)


def test_resume_reproduces_the_uninterrupted_run(tiny_tokenizer, tmp_path):
    def fresh():
        return fresh_student(tiny_tokenizer)

    cfg = TrainConfig(steps=8, batch_size=8, grad_accum=2, lr=3e-3, warmup_steps=2, checkpoint_every=100)
    run(fresh(), tiny_tokenizer, tmp_path / "whole", cfg)
    run(fresh(), tiny_tokenizer, tmp_path / "split", cfg, stop_after=3)   # "interrupted" after step 3
    assert [m["step"] for m in read_metrics(tmp_path / "split")] == [1, 2, 3]
    # a resumed run starts from a fresh process's model: everything must come from the checkpoint
    run(fresh(), tiny_tokenizer, tmp_path / "split", cfg, resume=True)
    whole, split = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "split")
    assert [m["step"] for m in split] == list(range(1, 9))
    for a, b in zip(whole, split):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["lr"] == b["lr"]


def test_resume_with_text_replay_draws_what_the_uninterrupted_run_drew(tiny_tokenizer, tmp_path):
    """Stage 2's replay bank (train/replay.py) counts its draws in the checkpoint: a resumed run replays the
    same texts, so its losses are the uninterrupted run's."""
    from train.replay import TextReplay

    texts = [f"a photo of a thing number {i}." for i in range(12)] + [f"第{i}个东西的照片。" for i in range(12)]
    tokens = tiny_tokenizer(texts)

    def run_replay(out, **kw):
        student = fresh_student(tiny_tokenizer)
        target = torch.randn(len(texts), student.cfg.embed_dim, generator=torch.Generator().manual_seed(1))
        replay = TextReplay(tokens["input_ids"], tokens["attention_mask"], target, 6, seed=3)
        return train(AlignStage(student, replay=replay, replay_weight=2.0), PairSet(tiny_tokenizer),
                     torch.utils.data.default_collate, tiny_tokenizer, cfg, out, **kw)

    cfg = TrainConfig(steps=6, batch_size=8, lr=3e-3, warmup_steps=1, checkpoint_every=100)
    run_replay(tmp_path / "whole")
    run_replay(tmp_path / "split", stop_after=2)
    run_replay(tmp_path / "split", resume=True)
    whole, split = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "split")
    assert [m["step"] for m in split] == list(range(1, 7))
    for a, b in zip(whole, split):
        assert a["replay_cos"] == pytest.approx(b["replay_cos"], rel=1e-5, abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)


def test_resume_with_other_options_is_refused(tiny_student, tiny_tokenizer, tmp_path):
    cfg = TrainConfig(steps=4, batch_size=8, warmup_steps=1)
    run(tiny_student, tiny_tokenizer, tmp_path, cfg, stop_after=2)
    cfg.lr = 0.5
    with pytest.raises(TrainConfigError, match=r"different options \{'lr'"):
        run(tiny_student, tiny_tokenizer, tmp_path, cfg, resume=True)


def test_resume_without_checkpoint_is_a_clear_error(tiny_student, tiny_tokenizer, tmp_path):
    with pytest.raises(TrainConfigError, match="cannot resume.*missing"):
        run(tiny_student, tiny_tokenizer, tmp_path, TrainConfig(steps=2, batch_size=8, warmup_steps=0), resume=True)


@pytest.mark.parametrize("field,value,match", [
    ("lr", -1e-3, "lr must be a positive number, got -0.001"),
    ("steps", 0, "steps must be > 0, got 0"),
    ("warmup_steps", 50, r"warmup_steps must be in \[0, steps=10\], got 50"),
    ("batch_size", 0, "batch_size must be > 0"),
])
def test_bad_options_are_clear_errors(field, value, match):
    cfg = TrainConfig(steps=10, warmup_steps=1)
    setattr(cfg, field, value)
    with pytest.raises(TrainConfigError, match=match):
        cfg.validate()


def test_batch_larger_than_data_is_a_clear_error(tiny_student, tiny_tokenizer, tmp_path):
    with pytest.raises(TrainConfigError, match="32 samples, fewer than one batch"):
        run(tiny_student, tiny_tokenizer, tmp_path, TrainConfig(steps=2, batch_size=64, warmup_steps=0))


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.0)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] < 0.01


def test_resume_finds_a_checkpoint_whose_swap_was_interrupted(tiny_student, tiny_tokenizer, tmp_path):
    """A kill between atomic_directory's two renames leaves the previous checkpoint as .checkpoint.old-*;
    --resume must find it, not tell the user to start over."""
    cfg = TrainConfig(steps=4, batch_size=4, warmup_steps=0, checkpoint_every=2)
    run(tiny_student, tiny_tokenizer, tmp_path, cfg, stop_after=2)
    ckpt = tmp_path / "checkpoint"
    ckpt.rename(tmp_path / ".checkpoint.old-12345")  # the state between the two renames
    run(tiny_student, tiny_tokenizer, tmp_path, cfg, resume=True)
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3, 4]


@pytest.mark.parametrize("shape,size", [((4, 32, 7, 7), (16, 16)), ((2, 8, 5, 9), (3, 4)), ((2, 8, 16, 16), (7, 7))])
def test_the_adapters_resize_is_bilinear_interpolation_forward_and_backward(shape, size):
    """bilinear_resize (two matmuls, fast on a GPU) is F.interpolate's bilinear, up- and downsampling."""
    import torch.nn.functional as F
    from dcclip_mobile.losses import bilinear_resize
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    want = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    got = bilinear_resize(x, size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    g_want, = torch.autograd.grad(want.square().sum(), x)
    g_got, = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(g_got, g_want, atol=1e-4, rtol=1e-4)
