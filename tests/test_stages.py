"""Stage runners end to end on a few samples: a real (tiny, saved-locally) AltCLIP teacher, real images."""
import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image, ImageDraw

from dcclip_mobile.checkpoint import load_student
from train import align, distill
from train.loop import read_metrics

CLASSES = [("bag", "包"), ("coat", "外套"), ("dress", "连衣裙"), ("sneaker", "运动鞋")]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """32 drawn images, a shape per class, captioned in English and Chinese alternately."""
    d = tmp_path_factory.mktemp("pairs")
    rows = []
    for i in range(32):
        c = i % 4
        img = Image.new("RGB", (40, 40), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        box = (5 + i % 3, 5, 35 - i % 5, 35)
        [draw.ellipse, draw.rectangle, draw.polygon, draw.line][c](
            box if c < 2 else [(5, 35), (20, 5), (35, 35)] if c == 2 else [(5, 5), (35, 35)], fill=(40 * c, 0, 200))
        img.save(d / f"{i}.png")
        en, zh = CLASSES[c]
        rows.append({"filepath": f"{i}.png", "caption": f"a photo of a {en}." if i % 2 == 0 else f"一张{zh}的照片。",
                     "lang": "en" if i % 2 == 0 else "zh"})
    (d / "pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (d / "texts.txt").write_text("\n".join(r["caption"] for r in rows) + "\n", encoding="utf-8")
    return d


def distill_args(pairs_file, tiny_altclip_dir, out, *extra):
    return distill.build_parser().parse_args([
        "--teacher", f"altclip:{tiny_altclip_dir}", "--images", str(pairs_file / "pairs.jsonl"),
        "--corpus-size", "0", "--texts", str(pairs_file / "texts.txt"), "--preset", "tiny", "--vocab-size", "400",
        "--cache", str(out / "cache"), "--out", str(out / "s1"), "--batch-size", "8", "--warmup-steps", "2",
        "--lr", "3e-3", *extra])


def test_distill_lowers_its_loss_and_writes_a_student(pairs_file, tiny_altclip_dir, tmp_path):
    ckpt = distill.run(distill_args(pairs_file, tiny_altclip_dir, tmp_path, "--steps", "20"))
    losses = [m["loss"] for m in read_metrics(tmp_path / "s1")]
    assert len(losses) == 20 and sum(losses[-4:]) < 0.8 * sum(losses[:4])
    model, tok = load_student(ckpt)
    assert model.cfg.embed_dim == 16  # took the teacher's joint-space dimension
    assert "image_cos" in read_metrics(tmp_path / "s1")[-1]  # the embedding terms were on


def test_align_lowers_its_loss(pairs_file, tiny_altclip_dir, tmp_path):
    s1 = distill.run(distill_args(pairs_file, tiny_altclip_dir, tmp_path, "--steps", "2"))
    args = align.build_parser().parse_args([
        "--init", str(s1), "--images", str(pairs_file / "pairs.jsonl"), "--out", str(tmp_path / "s2"),
        "--steps", "25", "--batch-size", "8", "--warmup-steps", "2", "--lr", "3e-3"])
    align.run(args)
    m = read_metrics(tmp_path / "s2")
    assert sum(x["loss"] for x in m[-4:]) < 0.85 * sum(x["loss"] for x in m[:4])
    assert all(x["skipped_images"] == 0 for x in m)


def test_align_resume_matches_uninterrupted(pairs_file, tiny_altclip_dir, tmp_path):
    s1 = distill.run(distill_args(pairs_file, tiny_altclip_dir, tmp_path, "--steps", "2"))

    def args(out, *extra):
        return align.build_parser().parse_args([
            "--init", str(s1), "--images", str(pairs_file / "pairs.jsonl"), "--out", str(out),
            "--steps", "6", "--batch-size", "8", "--warmup-steps", "1", "--checkpoint-every", "3", *extra])

    align.run(args(tmp_path / "whole"))
    # an interruption at step 3 = a process that stopped after its step-3 checkpoint
    from train import loop
    original = loop.train

    def stop_at_3(*a, **k):
        return original(*a, **{**k, "stop_after": 3})

    align.train = stop_at_3
    try:
        align.run(args(tmp_path / "split"))
    finally:
        align.train = original
    assert len(read_metrics(tmp_path / "split")) == 3
    align.run(args(tmp_path / "split", "--resume"))
    whole = [m["loss"] for m in read_metrics(tmp_path / "whole")]
    split = [m["loss"] for m in read_metrics(tmp_path / "split")]
    assert split == pytest.approx(whole, rel=1e-5)


@pytest.mark.parametrize("argv,match", [
    (["--lr", "-0.1"], "lr must be a positive number, got -0.1"),
    (["--teacher", "clip"], "unknown teacher 'clip'"),
    (["--texts-per-image", "0"], "texts_per_image must be >= 1, got 0"),
])
def test_bad_distill_options_are_clear_errors(pairs_file, tiny_altclip_dir, tmp_path, capsys, argv, match):
    base = ["--images", str(pairs_file / "pairs.jsonl"), "--corpus-size", "0", "--texts",
            str(pairs_file / "texts.txt"), "--preset", "tiny", "--out", str(tmp_path / "x"),
            "--teacher", f"altclip:{tiny_altclip_dir}"]
    assert distill.main(base + argv) == 2
    assert match in capsys.readouterr().err


def test_missing_stage1_checkpoint_and_missing_images_are_clear(tmp_path, capsys):
    assert align.main(["--init", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert distill.main(["--images", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "neither 'fashion-mnist' nor an existing file" in capsys.readouterr().err


def test_two_process_torchrun(pairs_file, tiny_altclip_dir, tmp_path):
    s1 = distill.run(distill_args(pairs_file, tiny_altclip_dir, tmp_path, "--steps", "2"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train.align", "--init", str(s1), "--images", str(pairs_file / "pairs.jsonl"),
           "--out", str(tmp_path / "ddp"), "--steps", "4", "--batch-size", "4", "--warmup-steps", "1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_metrics(tmp_path / "ddp")
    assert [x["step"] for x in m] == [1, 2, 3, 4]  # one log, written by rank 0
    assert {"loss", "lr", "infonce", "logit_scale"} <= set(m[0])
    load_student(tmp_path / "ddp" / "checkpoint")


def test_distill_set_gives_each_image_its_own_run_of_texts():
    import torch
    from PIL import Image as PILImage

    from dcclip_mobile.data.preprocess import ImagePreprocess
    from train.datasets import DistillSet

    class Images:
        dataset_id = "three"

        def __len__(self):
            return 3

        def image(self, i):
            return PILImage.new("RGB", (8, 8), (i, 0, 0))

    n_texts = 10
    tokens = {"input_ids": torch.arange(n_texts)[:, None].repeat(1, 4), "attention_mask": torch.ones(n_texts, 4)}
    texts = {"pooled": torch.arange(n_texts, dtype=torch.float)[:, None], "embedding": torch.zeros(n_texts, 2)}
    images = {"feature_map": torch.zeros(3, 1, 1, 1), "embedding": torch.zeros(3, 2)}
    data = DistillSet(Images(), ImagePreprocess(8, (0.5,) * 3, (0.5,) * 3), images, tokens, texts, texts_per_image=4)
    assert len(data) == 3  # max(3 images, ceil(10 texts / 4))
    item = data[2]
    assert item["input_ids"][:, 0].tolist() == [8, 9, 0, 1]  # texts 8..11, wrapping around the corpus
    assert item["teacher_text_features"][:, 0].tolist() == [8.0, 9.0, 0.0, 1.0]
    assert item["input_ids"].shape == (4, 4) and item["pixel_values"].shape == (3, 8, 8)


def test_text_by_length_groups_equals_the_whole_batch(tiny_student, tiny_tokenizer):
    """The text tower runs a training batch in length groups (a 64-token sentence would otherwise make every
    prompt of the batch run at 64): the outputs and gradients must be the whole batch's, row for row."""
    texts = ["a photo of a cat.", "一张猫的照片。", "a long sentence " * 12, "很长的句子" * 10, "dog", "狗"] * 3
    t = tiny_tokenizer(texts)
    tower = tiny_student.text.train()
    whole = tower.forward_trimmed(t["input_ids"], t["attention_mask"], groups=1)
    grouped = tower.forward_trimmed(t["input_ids"], t["attention_mask"], groups=3)
    for a, b in zip(whole, grouped):
        assert torch.allclose(a, b, atol=1e-5)
    g_whole = torch.autograd.grad(whole[1].sum(), tower.token_embedding.weight)[0]
    g_grouped = torch.autograd.grad(grouped[1].sum(), tower.token_embedding.weight)[0]
    assert torch.allclose(g_whole, g_grouped, rtol=1e-5, atol=1e-3)  # gradients reach ~500: float summation order
