"""The stage-1/2 levers: the affinity term, a fixed image prefix, a fixed (or slower) image tower."""
import pytest
import torch

from train.loop import TrainConfig, read_metrics, train
from train.stages import AlignStage, DistillStage, DistillWeights


def distill_items(student, n=8, m=2, teacher_dim=None):
    cfg = student.cfg
    g = torch.Generator().manual_seed(0)
    s = cfg.image.image_size
    d = teacher_dim or cfg.embed_dim
    items = []
    for i in range(n):
        ids = torch.randint(4, cfg.text.vocab_size, (m, cfg.text.context_length), generator=g)
        items.append({"pixel_values": torch.randn(3, s, s, generator=g), "teacher_map": torch.randn(12, 2, 2, generator=g),
                      "teacher_image_embedding": torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0),
                      "input_ids": ids, "attention_mask": torch.ones_like(ids),
                      "teacher_text_features": torch.randn(m, 20, generator=g),
                      "teacher_text_embedding": torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=1)})
    return items


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_fixed_prefix_and_fixed_image_tower_do_not_move(tiny_student, tiny_tokenizer, tmp_path):
    tiny_student.train()
    stage = DistillStage(tiny_student, 12, 20, tiny_student.cfg.embed_dim, DistillWeights(), frozen_image_layers=2)
    before = snapshot(tiny_student.image)
    cfg = TrainConfig(steps=3, batch_size=4, warmup_steps=1, lr=1e-2)
    train(stage, distill_items(tiny_student), torch.utils.data.default_collate, tiny_tokenizer, cfg, tmp_path / "a")
    after = snapshot(tiny_student.image)
    prefix = [k for k in before if k.startswith("features.0.") or k.startswith("features.1.")]
    assert prefix and all(torch.equal(before[k], after[k]) for k in prefix)  # weights and BN statistics
    assert not torch.equal(before["features.3.block.0.0.weight"], after["features.3.block.0.0.weight"])
    assert "affinity" in read_metrics(tmp_path / "a")[-1]


def test_image_lr_scale_zero_keeps_the_tower_as_it_was(tiny_student, tiny_tokenizer, tmp_path):
    stage = DistillStage(tiny_student, 12, 20, tiny_student.cfg.embed_dim, DistillWeights(), image_lr_scale=0.0)
    image_before, text_before = snapshot(tiny_student.image), snapshot(tiny_student.text)
    cfg = TrainConfig(steps=2, batch_size=4, warmup_steps=1, lr=1e-2)
    train(stage, distill_items(tiny_student), torch.utils.data.default_collate, tiny_tokenizer, cfg, tmp_path / "b")
    assert all(torch.equal(v, tiny_student.image.state_dict()[k]) for k, v in image_before.items())
    assert any(not torch.equal(v, tiny_student.text.state_dict()[k]) for k, v in text_before.items())


def test_align_affinity_term(tiny_student):
    cfg = tiny_student.cfg
    b = 6
    ids = torch.randint(4, cfg.text.vocab_size, (b, cfg.text.context_length))
    batch = {"pixel_values": torch.randn(b, 3, cfg.image.image_size, cfg.image.image_size), "input_ids": ids,
             "attention_mask": torch.ones_like(ids), "labels": torch.arange(b),
             "teacher_image_embedding": torch.randn(b, cfg.embed_dim), "teacher_text_embedding": torch.randn(b, cfg.embed_dim)}
    loss, metrics = AlignStage(tiny_student, distill_weight=1.0, affinity_weight=1.0)(batch)
    assert torch.isfinite(loss) and metrics["affinity"] > 0 and "image_cos" in metrics
    plain, _ = AlignStage(tiny_student)(batch)
    assert loss > plain


def test_align_text_distill_term(tiny_student):
    cfg = tiny_student.cfg
    ids = torch.randint(4, cfg.text.vocab_size, (4, cfg.text.context_length))
    batch = {"pixel_values": torch.randn(4, 3, cfg.image.image_size, cfg.image.image_size), "input_ids": ids,
             "attention_mask": torch.ones_like(ids), "teacher_image_embedding": torch.randn(4, cfg.embed_dim),
             "teacher_text_embedding": torch.randn(4, cfg.embed_dim)}
    _, metrics = AlignStage(tiny_student, text_distill_weight=1.0)(batch)
    assert -1 <= metrics["text_cos"] <= 1 and "affinity" not in metrics


def replay_bank(tokenizer, dim, per_step=4, seed=0):
    from train.replay import TextReplay

    texts = [f"a photo of a thing number {i}." for i in range(10)] + [f"第{i}个东西的照片。" for i in range(10)]
    tokens = tokenizer(texts)
    target = torch.nn.functional.normalize(torch.randn(len(texts), dim, generator=torch.Generator().manual_seed(2)), dim=1)
    return TextReplay(tokens["input_ids"], tokens["attention_mask"], target, per_step, seed=seed)


def test_text_replay_draws_are_seeded_by_the_draw_count_and_never_repeat_in_a_step(tiny_tokenizer):
    from train.replay import TextReplay

    a, b = replay_bank(tiny_tokenizer, 8), replay_bank(tiny_tokenizer, 8)
    first = a.draw()
    assert len(set(map(tuple, first["teacher_embedding"].tolist()))) == 4  # 4 distinct rows of the 20
    second = a.draw()
    assert not torch.equal(first["teacher_embedding"], second["teacher_embedding"])
    b.load_state_dict(replay_bank(tiny_tokenizer, 8).state_dict() | {"draws": torch.tensor(1)})
    assert torch.equal(b.draw()["teacher_embedding"], second["teacher_embedding"])  # a restored count: what came next
    ids = first["input_ids"]
    with pytest.raises(ValueError, match="3 teacher embeddings"):
        TextReplay(ids, torch.ones_like(ids), torch.zeros(3, 8), 2)
    with pytest.raises(ValueError, match="empty"):
        TextReplay(ids[:0], ids[:0], torch.zeros(0, 8), 2)
    with pytest.raises(ValueError, match="per step must be >= 1, got 0"):
        TextReplay(ids, torch.ones_like(ids), torch.zeros(4, 8), 0)


def test_align_replay_term_pulls_the_text_tower_toward_the_teacher_on_the_bank(tiny_student, tiny_tokenizer, tmp_path):
    """Stage 2 with only the replay term on (no pairs' gradient): the replayed texts' cosine to their teacher
    embeddings rises; the term is added to the InfoNCE loss and logged as replay_cos."""
    cfg = tiny_student.cfg
    b = 6
    ids = torch.randint(4, cfg.text.vocab_size, (b, cfg.text.context_length))
    batch = {"pixel_values": torch.randn(b, 3, cfg.image.image_size, cfg.image.image_size), "input_ids": ids,
             "attention_mask": torch.ones_like(ids), "labels": torch.arange(b)}
    stage = AlignStage(tiny_student, replay=replay_bank(tiny_tokenizer, cfg.embed_dim, per_step=20), replay_weight=1.0)
    loss, metrics = stage(dict(batch))
    plain, _ = AlignStage(tiny_student)(dict(batch))
    assert loss.item() == pytest.approx(plain.item() + 1 - metrics["replay_cos"], rel=1e-5)
    opt = torch.optim.Adam(tiny_student.text.parameters(), lr=3e-3)
    cosines = []
    for _ in range(15):
        r = stage.replay.draw()  # the whole bank each draw (20 of 20)
        _, emb = tiny_student.text.forward_trimmed(r["input_ids"], r["attention_mask"])
        cos = torch.nn.functional.cosine_similarity(emb, r["teacher_embedding"], dim=-1).mean()
        opt.zero_grad()
        (1 - cos).backward()
        opt.step()
        cosines.append(cos.item())
    assert cosines[-1] > cosines[0] + 0.3
