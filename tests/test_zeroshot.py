"""Zero-shot evaluation: one function for teachers and students, given an image and a text encoder."""
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dcclip_mobile.assets import assets_present
from dcclip_mobile.data.elevater import ElevaterFolder
from dcclip_mobile.data.preprocess import ImagePreprocess
from dcclip_mobile.zeroshot import class_prototypes, evaluate_zero_shot, parse_langs, topk_accuracy

COLORS = {"red": ((230, 20, 20), "红"), "green": ((20, 230, 20), "绿"), "blue": ((20, 20, 230), "蓝")}


@pytest.fixture()
def color_set(tmp_path):
    """An ELEVATER folder of solid-color images: red, green, blue, two images each."""
    names = list(COLORS)
    (tmp_path / "label.txt").write_text("\n".join(names) + "\n")
    (tmp_path / "label_cn.txt").write_text("\n".join(COLORS[n][1] for n in names) + "\n", encoding="utf-8")
    for cid, name in enumerate(names):
        d = tmp_path / "test" / f"{cid:03d}"
        d.mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (12 + k * 5, 9), COLORS[name][0]).save(d / f"{k}.png")
    return ElevaterFolder(tmp_path)


def encode_color(pixels: torch.Tensor) -> torch.Tensor:
    """An image encoder whose answer is known: the mean color."""
    return pixels.mean((2, 3))


def encode_color_words(texts: list[str]) -> torch.Tensor:
    """A text encoder whose answer is known: which color word (English or Chinese) the text holds."""
    rows = [[float(name in t or zh in t) for name, (_, zh) in COLORS.items()] for t in texts]
    return torch.tensor(rows)


def test_topk_accuracy_counts_hits():
    protos = torch.eye(6)
    emb = torch.tensor([[1.0, 0.5, 0, 0, 0, 0], [0.9, 1.0, 0, 0, 0, 0], [0, 0, 0, 0, -1.0, 1.0]])
    acc = topk_accuracy(emb, protos, torch.tensor([0, 0, 4]))
    assert acc == pytest.approx({"top1": 1 / 3, "top5": 2 / 3})
    assert topk_accuracy(emb[:, :3], protos[:3, :3], torch.tensor([0, 0, 1])) == pytest.approx({"top1": 1 / 3})
    with pytest.raises(ValueError, match="3 image embeddings but 2 labels"):
        topk_accuracy(emb, protos, torch.tensor([0, 1]))


def test_class_prototypes_average_normalized_templates():
    templates = ["a {c} thing", "{c}!"]
    p = class_prototypes(encode_color_words, ["red", "blue"], "en", templates=templates)
    assert torch.allclose(p, F.normalize(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]), dim=-1))
    with pytest.raises(ValueError, match="each hold '\\{c\\}'"):
        class_prototypes(encode_color_words, ["red"], "en", templates=["no placeholder"])


def test_evaluate_zero_shot_with_an_encoder_pair(color_set):
    pre = ImagePreprocess(8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    templates = {"en": ["a photo of {c}.", "{c}"], "zh": ["一张{c}色的照片。"]}
    r = evaluate_zero_shot(encode_color_words, color_set, ["en", "zh"], encode_images=encode_color, pre=pre,
                           templates=templates, batch_size=4)
    assert r == {"en": {"top1": 1.0}, "zh": {"top1": 1.0}, "n": 6}  # 3 classes: no top-5
    emb = torch.eye(3)[[1, 1, 2, 2, 0, 0]]  # precomputed embeddings, every one wrong
    r = evaluate_zero_shot(encode_color_words, color_set, "zh", image_embeddings=emb, templates=templates)
    assert r == {"zh": {"top1": 0.0}, "n": 6}
    with pytest.raises(ValueError, match="needs encode_images and pre"):
        evaluate_zero_shot(encode_color_words, color_set, "en", templates=templates)


def test_parse_langs_names_the_bad_one():
    assert parse_langs("en,zh") == ["en", "zh"] and parse_langs(" zh ") == ["zh"]
    with pytest.raises(ValueError, match=r"\['fr'\]; accepted: en, zh"):
        parse_langs("en,fr")


@pytest.mark.needs(assets_present("bilingual-labels"),
                   "the 80 CLIP templates are an asset: python -m dcclip_mobile.assets fetch")
def test_evaluate_cli_on_a_teacher(tiny_altclip_dir, color_set, tmp_path, capsys):
    from train.evaluate import main

    out = tmp_path / "out.json"
    rc = main(["--teacher", f"altclip:{tiny_altclip_dir}", "--dataset", str(color_set.files[0].parents[2]),
               "--langs", "en,zh", "--templates", "2", "--cache", str(tmp_path / "cache"), "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["n"] == 6 and set(r["en"]) == {"top1"} and 0 <= r["zh"]["top1"] <= 1
    assert r["teacher_id"].startswith("altclip-")
    assert main(["--teacher", "clip", "--dataset", str(color_set.files[0].parents[2])]) == 2
    assert "unknown teacher 'clip'" in capsys.readouterr().err
