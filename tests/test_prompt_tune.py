"""Prompt tuning (MVLPT) on a tiny student: the prompts, the few-shot protocol, the runner, saving and folding
into a bundle. Real components throughout (a tiny student, its SentencePiece tokenizer, ELEVATER folders)."""
from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from dcclip_mobile.checkpoint import save_student
from dcclip_mobile.data.fashion_mnist import fashion_mnist_present
from dcclip_mobile.data.tasks import ensure_tasks, open_task, sample_shots, write_task
from dcclip_mobile.prompt_tuning import Prompt, PromptedImageStudent, PromptError, PromptSpec
from dcclip_mobile.prompt_tuning.engine import FitConfig, Shots, evaluate, fit, load_task_data, zero_shot
from dcclip_mobile.prompt_tuning.prompts import border_index, padding_image
from dcclip_mobile.prompt_tuning.store import PROMPT_JSON, PROMPT_TENSORS, load_prompt, save_prompt

torch.set_num_threads(1)

COLORS = {"red": ((220, 30, 30), "红色"), "green": ((30, 200, 40), "绿色"), "blue": ((30, 40, 220), "蓝色"),
          "yellow": ((230, 220, 30), "黄色")}
SHAPES = {"circle": "圆形", "square": "方形", "triangle": "三角形"}
TEMPLATES = {"en": "a photo of a {c}.", "zh": "一张{c}的照片。"}


def _picture(rng: random.Random, color, shape: str | None = None) -> Image.Image:
    img = Image.new("RGB", (48, 40), tuple(rng.randrange(200, 256) for _ in range(3)))
    d = ImageDraw.Draw(img)
    x, y, r = rng.randrange(12, 36), rng.randrange(12, 28), rng.randrange(8, 12)
    fill = tuple(max(0, min(255, c + rng.randrange(-20, 21))) for c in color)
    if shape in (None, "circle"):
        d.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape == "square":
        d.rectangle((x - r, y - r, x + r, y + r), fill=fill)
    else:
        d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    return img


def make_task(root, names: dict[str, str], draw, train: int = 6, test: int = 3, seed: int = 0):
    """An ELEVATER task folder: label.txt, label_cn.txt, train/<id>/, test/<id>/."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / "label.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    (root / "label_cn.txt").write_text("".join(z + "\n" for z in names.values()), encoding="utf-8")
    for split, n in (("train", train), ("test", test)):
        for c, name in enumerate(names):
            d = root / split / f"{c:03d}"
            d.mkdir(parents=True)
            for k in range(n):
                draw(rng, name).save(d / f"{k}.png")
    return root


@pytest.fixture()
def tasks(tmp_path):
    colors = make_task(tmp_path / "colors", {n: z for n, (_, z) in COLORS.items()},
                       lambda rng, n: _picture(rng, COLORS[n][0]))
    shapes = make_task(tmp_path / "shapes", SHAPES, lambda rng, n: _picture(rng, (40, 40, 40), n), seed=1)
    return {"colors": colors, "shapes": shapes}


@pytest.fixture()
def checkpoint(tmp_path, tiny_student, tiny_tokenizer):
    return save_student(tiny_student, tiny_tokenizer, tmp_path / "ckpt")


def recalibrate(model, root):
    """BatchNorm statistics of the tiny (untrained) image tower re-estimated on the task's pictures, so its
    embeddings tell the pictures apart (an untrained tower's are all within cosine 0.94 of each other)."""
    from dcclip_mobile.data.preprocess import ImagePreprocess, preprocess_batch

    task = open_task(root.name, root)
    x = preprocess_batch([task.train.image(i) for i in range(len(task.train))], ImagePreprocess.for_student(model.cfg))
    for m in model.image.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.image.train()
    with torch.no_grad():
        model.image(x)
    model.eval()
    return model


@torch.no_grad()
def shot_accuracy(prompt, model, tokenizer, shots, lang):
    tokens = prompt.class_tokens(model.text, tokenizer, shots.data.task.classes[lang], lang)
    emb = prompt.class_embeddings(model.text, tokens, lang)
    return float(((shots.features @ emb.T).argmax(1) == shots.labels).float().mean())


def _data(model, root, tmp_path, keep_pixels=False):
    return load_task_data(model, open_task(root.name, root), tmp_path / "features", log=lambda s: None,
                          keep_pixels=keep_pixels)


# ------------------------------------------------------------------------------------------ the text side
def test_forward_embeddings_is_forward_from_token_embeddings(tiny_student, tiny_tokenizer):
    text = tiny_student.text
    enc = tiny_tokenizer(["a photo of a dress.", "一张外套的照片。"])
    want = text(enc["input_ids"], enc["attention_mask"])[1]
    got = text.forward_embeddings(text.token_embedding(enc["input_ids"]), enc["attention_mask"])[1]
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="token_embeddings has shape"):
        text.forward_embeddings(torch.zeros(1, 3, 5), torch.ones(1, 3))


@pytest.mark.parametrize("context", ["per-lang", "shared"])
def test_template_context_starts_exactly_at_the_hand_written_prompt(tiny_student, tiny_tokenizer, context):
    """A template-initialized prompt's class embeddings are the hand-written template's, in both languages,
    also for names that SentencePiece merges with the template's words."""
    names = {"en": ["t-shirt", "ankle boot", "coat", "bag"], "zh": ["T恤", "短靴", "外套", "包"]}
    prompt = Prompt(PromptSpec(context=context), tiny_student.text, tiny_tokenizer)
    for lang in ("en", "zh"):
        template = TEMPLATES["en" if context == "shared" else lang]
        tokens = prompt.class_tokens(tiny_student.text, tiny_tokenizer, names[lang], lang)
        got = prompt.class_embeddings(tiny_student.text, tokens, lang)
        enc = tiny_tokenizer([template.replace("{c}", n) for n in names[lang]])
        want = tiny_student.encode_text(enc["input_ids"], enc["attention_mask"])
        assert torch.allclose(got, want, atol=1e-5), lang
    # a random context is n_ctx vectors before the name, per language or one shared
    rnd = Prompt(PromptSpec(context=context, init="random", n_ctx=3), tiny_student.text, tiny_tokenizer)
    assert {k: tuple(v.shape) for k, v in rnd.context.prefix.items()} == {
        g: (3, tiny_student.cfg.text.width) for g in (("shared",) if context == "shared" else ("en", "zh"))}


def test_prompt_spec_rejects_bad_values():
    with pytest.raises(PromptError, match="method"):
        PromptSpec(method="lora").validate()
    with pytest.raises(PromptError, match="exactly one"):
        PromptSpec(templates={"en": "no placeholder", "zh": "一张{c}的照片。"}).validate()
    with pytest.raises(PromptError, match="pad"):
        PromptSpec(method="visual", image_size=16, pad=9).validate()


# ------------------------------------------------------------------------------------------ tasks and shots
def test_sample_shots_k_per_class_seeded(tmp_path):
    labels = [c for c in range(3) for _ in range(5)]
    a = sample_shots(labels, 2, seed=0)
    assert sorted(labels[i] for i in a) == [0, 0, 1, 1, 2, 2]
    assert a == sample_shots(labels, 2, seed=0)
    assert any(sample_shots(labels, 2, seed=s) != a for s in range(1, 5))
    with pytest.raises(ValueError, match="class 1 has 0 training examples"):
        sample_shots([0, 0, 2, 2], 1, seed=0, n_classes=3)
    with pytest.raises(ValueError, match="class 0 has 5 training examples; 6 shots need 6"):
        sample_shots(labels, 6, seed=0)


def test_tasks_are_elevater_folders_with_two_splits(tasks, tmp_path):
    paths = ensure_tasks([str(tasks["colors"])], tmp_path / "root")
    task = open_task("colors", paths["colors"])
    assert task.n_classes == 4 and task.classes["zh"][0] == "红色"
    assert len(task.train) == 24 and len(task.test) == 12
    with pytest.raises(ValueError, match="neither a built-in task"):
        ensure_tasks(["no-such-task"], tmp_path / "root")
    (tasks["shapes"] / "test").rename(tasks["shapes"] / "val")
    with pytest.raises(FileNotFoundError, match="lacks test/"):
        open_task("shapes", tasks["shapes"])


@pytest.mark.needs(fashion_mnist_present("train") and fashion_mnist_present("test"),
                   "Fashion-MNIST (apt-get install dataset-fashion-mnist; setup.sh does)")
def test_builtin_fashion_mnist_task(tmp_path):
    root = write_task("fashion-mnist", tmp_path)
    task = open_task("fashion-mnist", root)
    assert task.n_classes == 10 and task.classes["en"][0] == "t-shirt" and task.classes["zh"][9] == "短靴"
    assert len(task.train) == 640 and len(task.test) == 1000
    assert json.loads((root / "task.json").read_text())["train_images"] == 640


# ------------------------------------------------------------------------------------------ fitting
def test_text_prompt_tuning_fits_the_shots_and_caches_features(tiny_student, tiny_tokenizer, tasks, tmp_path):
    model = recalibrate(tiny_student, tasks["colors"])
    data = _data(model, tasks["colors"], tmp_path)
    assert len(list((tmp_path / "features").rglob("*.safetensors"))) == 2  # train pool and test split, cached
    again = _data(model, tasks["colors"], tmp_path)
    assert torch.equal(again.test_features, data.test_features)
    shots = Shots.draw(data, 4, seed=0)
    prompt = Prompt(PromptSpec(), model.text, tiny_tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # step 0 is the hand-written template's zero-shot, in both languages
    assert evaluate(prompt, model, tiny_tokenizer, data) == zero_shot(model, tiny_tokenizer, data,
                                                                     {k: [v] for k, v in TEMPLATES.items()})
    start = {lang: shot_accuracy(prompt, model, tiny_tokenizer, shots, lang) for lang in ("en", "zh")}
    r = fit(prompt, model, tiny_tokenizer, [shots], FitConfig(steps=40, lr=2e-2, logit_scale=30.0))
    assert r["loss"][-1] < 0.6 * r["loss"][0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the towers stay frozen
    end = {lang: shot_accuracy(prompt, model, tiny_tokenizer, shots, lang) for lang in ("en", "zh")}
    assert all(end[lang] >= start[lang] + 0.25 for lang in end), (start, end)  # chance is 0.25


def test_visual_prompt_is_a_border_added_to_the_input(tiny_student):
    s, pad = tiny_student.cfg.image.image_size, 3
    idx = border_index(s, pad)
    img = padding_image(torch.arange(1, idx.numel() + 1, dtype=torch.float32), idx, s)
    assert (img[..., pad:s - pad, pad:s - pad] == 0).all() and (img[..., :pad, :] != 0).all()
    assert (img[..., :, -pad:] != 0).all() and img.count_nonzero() == idx.numel()
    tower = PromptedImageStudent(tiny_student.image, img * 0.01).eval()
    x = torch.randn(2, 3, s, s)
    assert torch.allclose(tower(x)[1], tiny_student.image(x + img * 0.01)[1], atol=1e-6)
    assert not torch.allclose(tower(x)[1], tiny_student.image(x)[1], atol=1e-4)


@pytest.mark.parametrize("method", ["visual", "unified"])
def test_visual_and_unified_prompts_train(tiny_student, tiny_tokenizer, tasks, tmp_path, method):
    data = _data(tiny_student, tasks["colors"], tmp_path, keep_pixels=True)
    spec = PromptSpec(method=method, pad=4, image_size=tiny_student.cfg.image.image_size)
    prompt = Prompt(spec, tiny_student.text, tiny_tokenizer)
    assert prompt.image_prompt().abs().sum() == 0  # starts at the hand-written template, no pixel changed
    r = fit(prompt, tiny_student, tiny_tokenizer, [Shots.draw(data, 2, 0)],
            FitConfig(steps=8, lr=1e-2, visual_lr=0.1, logit_scale=30.0, batch=8))
    assert r["loss"][-1] < r["loss"][0]
    img = prompt.image_prompt()
    assert img.abs().sum() > 0 and (img[..., 4:-4, 4:-4] == 0).all()
    if method == "unified":  # one shared network moved both prompts
        tokens = prompt.class_tokens(tiny_student.text, tiny_tokenizer, data.task.classes["en"], "en")
        fresh = Prompt(spec, tiny_student.text, tiny_tokenizer)
        assert not torch.allclose(prompt.class_embeddings(tiny_student.text, tokens, "en"),
                                  fresh.class_embeddings(tiny_student.text, tokens, "en"), atol=1e-5)


# ------------------------------------------------------------------------------------------ saving
def test_save_and_load_prompt_round_trip(tiny_student, tiny_tokenizer, tmp_path):
    prompt = Prompt(PromptSpec(init="random", n_ctx=2), tiny_student.text, tiny_tokenizer, seed=3)
    classes = {"en": ["coat", "bag"], "zh": ["外套", "包"]}
    d = save_prompt(prompt, tiny_student, tmp_path / "p", classes, {"task": "t"})
    assert sorted(p.name for p in d.iterdir()) == [PROMPT_JSON, PROMPT_TENSORS]
    loaded, meta = load_prompt(d, tiny_student, tiny_tokenizer)
    assert meta["classes"] == classes and meta["task"] == "t"
    tok = prompt.class_tokens(tiny_student.text, tiny_tokenizer, classes["zh"], "zh")
    assert torch.equal(loaded.class_embeddings(tiny_student.text, tok, "zh"),
                       prompt.class_embeddings(tiny_student.text, tok, "zh"))
    other = type(tiny_student)(tiny_student.cfg)
    with pytest.raises(PromptError, match="tuned on another student"):
        load_prompt(d, other, tiny_tokenizer)
    (d / PROMPT_TENSORS).write_bytes(b"not safetensors")
    with pytest.raises(PromptError, match="not a readable safetensors"):
        load_prompt(d, tiny_student, tiny_tokenizer)
    with pytest.raises(PromptError, match="has no prompt.json"):
        load_prompt(tmp_path, tiny_student, tiny_tokenizer)


# ------------------------------------------------------------------------------------------ the runner
def test_runner_multitask_table(checkpoint, tasks, tmp_path):
    from train.prompt_tune import main

    out = tmp_path / "r.json"
    rc = main(["--init", str(checkpoint), "--tasks", f"{tasks['colors']},{tasks['shapes']}", "--shots", "1,2",
               "--seeds", "0,1", "--steps", "4", "--source-shots", "2", "--logit-scale", "30",
               "--modes", "zero-shot,linear-probe,single,mt-source,mt-init,mt-joint",
               "--feature-cache", str(tmp_path / "f"), "--json", str(out), "--markdown", str(tmp_path / "t.md"),
               "--save", str(tmp_path / "prompts")])
    assert rc == 0
    r = json.loads(out.read_text())
    rows = r["rows"]
    count = {m: sum(1 for x in rows if x["mode"] == m) for m in {x["mode"] for x in rows}}
    # 2 tasks; K in {1, 2}; seeds {0, 1}; zero-shot once per task (8 CLIP templates only with the asset)
    assert count["zero-shot"] == 2 and count["single"] == count["mt-init"] == count["mt-joint"] == 8
    assert count["mt-source"] == 4 and count["linear-probe"] == 8
    assert all(0.0 <= x[lang] <= 1.0 for x in rows for lang in ("en", "zh"))
    src = [x for x in rows if x["mode"] == "mt-init" and x["task"] == "colors"]
    assert all(x["source_tasks"] == ["shapes"] for x in src)  # leave-one-out: never its own images
    s = r["summary"]["per_task"]["colors"]["single"]["2"]["en"]
    assert s["n"] == 2 and s["mean"] == pytest.approx(sum(x["en"] for x in rows if x["mode"] == "single"
                                                         and x["task"] == "colors" and x["shots"] == 2) / 2)
    table = (tmp_path / "t.md").read_text()
    assert "| colors | single-task prompt |" in table and "1-shot ZH" in table and "mean (2 tasks)" in table
    saved = tmp_path / "prompts" / "shapes" / "mt-init-2shot-seed1"
    assert json.loads((saved / PROMPT_JSON).read_text())["classes"]["zh"] == list(SHAPES.values())
    assert main(["--init", str(checkpoint), "--tasks", str(tasks["colors"]), "--modes", "mt-init"]) == 2


# ------------------------------------------------------------------------------------------ into a bundle
def test_export_folds_a_tuned_prompt_into_the_bundle(tiny_student, tiny_tokenizer, tasks, tmp_path):
    """A unified prompt: its class embeddings ship, its padding prompt is inside the image .pte (still one XNNPACK
    partition), the gate passes, the bundle's files check out, and the shipped embeddings score the task."""
    from dcclip_mobile import bundle_manifest as bm
    from dcclip_mobile.data.elevater import ElevaterFolder
    from lowering.executorch_backend import PteRunner
    from lowering.export import export_bundles
    from lowering.inputs import eval_set_from_source, image_inputs
    from lowering.prompts import fold_prompt, score_bundle

    model = recalibrate(tiny_student, tasks["colors"])
    data = _data(model, tasks["colors"], tmp_path, keep_pixels=True)
    spec = PromptSpec(method="unified", pad=4, image_size=model.cfg.image.image_size)
    prompt = Prompt(spec, model.text, tiny_tokenizer)
    fit(prompt, model, tiny_tokenizer, [Shots.draw(data, 2, 0)], FitConfig(steps=6, lr=2e-2, visual_lr=0.1,
                                                                           logit_scale=30.0, batch=8))
    classes = {lang: list(data.task.classes[lang]) for lang in ("en", "zh")}
    pdir = save_prompt(prompt, model, tmp_path / "prompt", classes, {"task": "colors", "shots": 2, "seed": 0})
    folded = fold_prompt(pdir, model, tiny_tokenizer)
    assert isinstance(folded.model.image, PromptedImageStudent) and folded.model is not model

    eval_set = eval_set_from_source(ElevaterFolder(tasks["colors"], "test"), n_calibration=4, n_parity=8)
    with pytest.raises(PromptError, match="must ship exactly that label set"):
        export_bundles(model, tiny_tokenizer, ["android"], tmp_path / "x", {"android": ["fp32"]},
                       eval_set_from_source(ElevaterFolder(tasks["shapes"], "test"), n_calibration=4, n_parity=8),
                       measure_latency=False, log=lambda *_: None, prompt=folded)
    result = export_bundles(model, tiny_tokenizer, ["android"], tmp_path / "out", {"android": ["fp32"]}, eval_set,
                            measure_latency=False, log=lambda *_: None, prompt=folded)
    bundle = result.bundles["android"]
    manifest = bm.load_manifest(bundle)
    assert result.gate_passed and bm.verify_files(bundle, manifest) == []
    entry = manifest["class_embeddings"]
    assert entry["prompt"]["method"] == "unified" and entry["prompt"]["shots"] == 2
    shipped = json.loads((bundle / entry["file"]).read_text())
    for lang in ("en", "zh"):
        got = torch.tensor(shipped[f"embeddings_{lang}"])
        assert torch.allclose(got, folded.embeddings[lang], atol=1e-6)
        plain = F.normalize(model.encode_text(**{k: v for k, v in tiny_tokenizer(
            [TEMPLATES[lang].replace("{c}", n) for n in classes[lang]]).items()}), dim=-1)
        assert not torch.allclose(got, plain, atol=1e-4)  # the tuned context, not the templates
    image = next(a for a in manifest["artifacts"] if a["tower"] == "image")
    assert image["delegate_partitions"] == 1 and not image["ops_outside_delegate"]
    x = image_inputs(eval_set.parity_images[:2], model.cfg)
    runner = PteRunner(bundle / image["file"])
    for (px,) in x:
        want = F.normalize(folded.model.image(px)[1], dim=-1)[0]
        assert torch.allclose(runner(px)[0], want, atol=1e-4)
        assert not torch.allclose(runner(px)[0], F.normalize(model.image(px)[1], dim=-1)[0], atol=1e-4)
    row = score_bundle(bundle, str(tasks["colors"]))
    with torch.no_grad():
        want = evaluate(prompt, model, tiny_tokenizer, data)
    assert row["top1"] == pytest.approx(want, abs=1 / 12 + 1e-6)  # at most one of 12 test pictures flips
    # the report scores what the bundle ships, not the templates (a tuned class cannot be rebuilt from them)
    from lowering.report import build_report
    rep = build_report(bundle, str(tasks["colors"]), runs=1)
    assert rep["eval"]["scoring"].startswith("shipped class embeddings (tuned unified prompt, 2 shots)")
    (pte_row,) = [e for e in rep["artifacts"] if e["tower"] == "image"]
    assert pte_row["accuracy"]["en"]["top1"] == pytest.approx(row["top1"]["en"], abs=1e-6)


def _emoji_present() -> bool:
    from dcclip_mobile.data.emoji import emoji_present

    return emoji_present()


@pytest.mark.needs(_emoji_present(), "the emoji data (apt-get install fonts-noto-color-emoji unicode-data "
                                     "unicode-cldr-core; setup.sh does)")
def test_builtin_emoji_task_is_the_held_out_classes(tmp_path, monkeypatch):
    import dcclip_mobile.data.tasks as tasks_mod
    from dcclip_mobile.data.emoji import class_emoji, plain_picture

    monkeypatch.setattr(tasks_mod, "EMOJI_TRAIN_VIEWS", 2)  # a small pool, so the test renders ~120 pictures
    monkeypatch.setattr(tasks_mod, "EMOJI_TEST_VIEWS", 1)
    task = open_task("emoji-activities", write_task("emoji-activities", tmp_path))
    unseen = class_emoji("Activities", "unseen")
    assert task.classes["en"] == [e.name["en"] for e in unseen] and task.classes["zh"] == [e.name["zh"] for e in unseen]
    assert not {e.name["en"] for e in class_emoji("Activities", "seen")} & set(task.classes["en"])
    assert len(task.train) == 2 * task.n_classes and len(task.test) == task.n_classes
    # the test split is the plain picture; no train view is
    plain = plain_picture(unseen[0].text).tobytes()
    assert task.test.image(0).tobytes() == plain
    assert all(task.train.image(i).tobytes() != plain for i in range(2))
