"""ELEVATER in full: every data set under a root, both languages, the paper's table, through the library and
through `python -m train.evaluate --elevater-root`."""
import json

import pytest
import torch
from PIL import Image

from dcclip_mobile import elevater_suite as suite
from dcclip_mobile.checkpoint import save_student
from dcclip_mobile.data.preprocess import ImagePreprocess
from dcclip_mobile.zeroshot import student_text_encoder
from train.evaluate import main

TEMPLATES = {"en": ["a photo of a {c}."], "zh": ["一张{c}的照片。"]}
# name -> [(English, Chinese, RGB)]: a 3-class set (no top-5) and two sets with >= 5 classes
SETS = {
    "colors": [("red", "红", (230, 20, 20)), ("green", "绿", (20, 230, 20)), ("blue", "蓝", (20, 20, 230))],
    "grays": [(f"gray {k}", f"灰{k}", (40 * k,) * 3) for k in range(5)],
    "mixed": [("cat", "猫", (200, 120, 40)), ("dog", "狗", (90, 60, 30)), ("bird", "鸟", (30, 140, 200)),
              ("fish", "鱼", (10, 90, 160)), ("car", "汽车", (160, 160, 170)), ("tree", "树", (30, 120, 30))],
}


def write_set(root, classes, per_class=2):
    root.mkdir(parents=True)
    (root / "label.txt").write_text("\n".join(en for en, _, _ in classes) + "\n", encoding="utf-8")
    (root / "label_cn.txt").write_text("\n".join(zh for _, zh, _ in classes) + "\n", encoding="utf-8")
    for cid, (_, _, rgb) in enumerate(classes):
        d = root / "test" / f"{cid:03d}"
        d.mkdir(parents=True)
        for k in range(per_class):
            Image.new("RGB", (10 + 3 * k, 8), rgb).save(d / f"{k}.png")


@pytest.fixture()
def elevater_root(tmp_path):
    """Three sets plus a folder that is not one (it must be skipped, not fail the run)."""
    root = tmp_path / "elevater"
    for name, classes in SETS.items():
        write_set(root / name, classes)
    (root / "notes").mkdir()
    (root / "notes" / "README.txt").write_text("downloaded 2024\n")
    (root / "index.txt").write_text("a file, not a folder: ignored\n")
    return root


@pytest.fixture()
def templates_file(tmp_path):
    p = tmp_path / "templates.json"
    p.write_text(json.dumps(TEMPLATES, ensure_ascii=False), encoding="utf-8")
    return p


@pytest.fixture()
def checkpoint(tmp_path, tiny_student, tiny_tokenizer):
    return save_student(tiny_student, tiny_tokenizer, tmp_path / "ckpt")


def check_table(result, langs=("en", "zh")):
    """Every set and language in [0, 1], top-5 exactly where a set has >= 5 classes, means = mean of rows."""
    rows = result["datasets"]
    assert list(rows) == sorted(SETS) and result["langs"] == list(langs)
    for name, r in rows.items():
        assert r["classes"] == len(SETS[name]) and r["n"] == 2 * len(SETS[name])
        for lang in langs:
            assert set(r[lang]) == ({"top1", "top5"} if r["classes"] >= 5 else {"top1"})
            assert all(0.0 <= v <= 1.0 for v in r[lang].values())
    for lang in langs:
        assert result["mean"][lang]["top1"] == pytest.approx(sum(r[lang]["top1"] for r in rows.values()) / 3)
        five = [r[lang]["top5"] for r in rows.values() if "top5" in r[lang]]
        assert result["mean"][lang]["top5"] == pytest.approx(sum(five) / len(five))
    assert result["mean_over"] == {"top1": 3, "top5": 2}


def test_find_datasets_skips_what_is_not_a_set(elevater_root):
    layout = suite.find_datasets(elevater_root)
    assert list(layout.datasets) == ["colors", "grays", "mixed"]
    assert list(layout.skipped) == ["notes"] and "no label.txt, label_cn.txt, test/" in layout.skipped["notes"]


def test_suite_on_the_tiny_student(elevater_root, tiny_student, tiny_tokenizer):
    sources = suite.open_datasets(suite.find_datasets(elevater_root))
    result = suite.evaluate_suite(sources, student_text_encoder(tiny_student, tiny_tokenizer), "en,zh",
                                  encode_images=tiny_student.encode_image, pre=ImagePreprocess.for_student(tiny_student.cfg),
                                  templates=TEMPLATES, progress=False)
    check_table(result)
    table = suite.markdown_table(result)
    assert "| data set | images | classes | EN top-1 | EN top-5 | ZH top-1 | ZH top-5 |" in table
    assert all(f"| {name} | " in table for name in SETS) and "**mean (3 sets)**" in table
    assert "mean over the 2 sets with at least 5 classes" in table


def test_evaluate_dataset_scores_any_encoder_pair(elevater_root):
    """Encoders whose answers are known (mean color; which color word a prompt holds) score exactly 1."""
    colors = {en: (zh, rgb) for en, zh, rgb in SETS["colors"]}

    def encode_images(pixels):
        return pixels.mean((2, 3))

    def encode_texts(texts):
        return torch.tensor([[float(en in t or zh in t) for en, (zh, _) in colors.items()] for t in texts])

    source = suite.open_datasets(suite.find_datasets(elevater_root))["colors"]
    row = suite.evaluate_dataset(source, encode_texts, ["en", "zh"], encode_images=encode_images,
                                 pre=ImagePreprocess(8, (0.0,) * 3, (1.0,) * 3), templates=TEMPLATES)
    assert {k: row[k] for k in ("en", "zh", "n", "classes")} == {"en": {"top1": 1.0}, "zh": {"top1": 1.0},
                                                                  "n": 6, "classes": 3}


def test_cli_writes_json_and_markdown(elevater_root, checkpoint, templates_file, tmp_path, capsys):
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    rc = main(["--checkpoint", str(checkpoint), "--elevater-root", str(elevater_root), "--templates",
               str(templates_file), "--json", str(out_json), "--markdown", str(out_md), "--threads", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(out_json.read_text(encoding="utf-8"))
    check_table(result)
    assert result["checkpoint"] == str(checkpoint) and result["root"] == str(elevater_root.resolve())
    assert result["templates"] == TEMPLATES and "notes" in result["skipped"]
    assert f"warning: skipping {str(elevater_root / 'notes')!r}" in captured.err
    table = out_md.read_text(encoding="utf-8")
    assert table in captured.out and all(f"| {name} | " in table for name in SETS)
    assert f"{100 * result['mean']['zh']['top1']:.1f}" in table.splitlines()[-3]  # the mean row


def test_cli_respects_langs(elevater_root, checkpoint, templates_file, tmp_path):
    out = tmp_path / "zh.json"
    assert main(["--checkpoint", str(checkpoint), "--elevater-root", str(elevater_root), "--langs", "zh",
                 "--templates", str(templates_file), "--json", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    check_table(result, langs=("zh",))
    assert all("en" not in r for r in result["datasets"].values()) and list(result["templates"]) == ["zh"]


def test_single_folder_still_works(elevater_root, checkpoint, templates_file, tmp_path):
    out = tmp_path / "one.json"
    assert main(["--checkpoint", str(checkpoint), "--images", str(elevater_root / "mixed"), "--templates",
                 str(templates_file), "--json", str(out)]) == 0
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["n"] == 12 and set(r["en"]) == {"top1", "top5"} and 0 <= r["zh"]["top1"] <= 1


def test_empty_root_is_one_clear_error(tmp_path, checkpoint, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--checkpoint", str(checkpoint), "--elevater-root", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(empty) in err and "label.txt, label_cn.txt and test/<class id>" in err
    (empty / "notes").mkdir()  # only folders that are not sets: the same error, naming them
    assert main(["--checkpoint", str(checkpoint), "--elevater-root", str(empty)]) == 2
    assert "only other folders: notes" in capsys.readouterr().err
    assert main(["--checkpoint", str(checkpoint), "--elevater-root", str(tmp_path / "absent")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_bad_roots_and_options_are_refused(elevater_root, checkpoint, capsys):
    ck = ["--checkpoint", str(checkpoint)]
    assert main(ck + ["--elevater-root", str(elevater_root / "colors")]) == 2
    assert "is itself one ELEVATER data set" in capsys.readouterr().err
    assert main(ck + ["--elevater-root", str(elevater_root), "--images", "fashion-mnist"]) == 2
    assert "does not combine with --elevater-root" in capsys.readouterr().err
    assert main(ck + ["--markdown", "t.md"]) == 2
    assert "give --elevater-root DIR" in capsys.readouterr().err
    (elevater_root / "grays" / "label_cn.txt").unlink()  # part of the layout: a broken set, not a skip
    assert main(ck + ["--elevater-root", str(elevater_root)]) == 2
    assert "grays' is incomplete: no label_cn.txt" in capsys.readouterr().err


def test_templates_are_checked_up_front(tmp_path):
    assert suite.resolve_templates(["zh"], templates=TEMPLATES) == {"zh": TEMPLATES["zh"]}
    with pytest.raises(ValueError, match="no templates for language 'zh'"):
        suite.resolve_templates(["en", "zh"], templates={"en": TEMPLATES["en"]})
    with pytest.raises(ValueError, match="each hold '\\{c\\}'"):
        suite.resolve_templates(["en"], templates={"en": ["a photo"]})
    bad = tmp_path / "bad.json"
    bad.write_text('{"en": "a photo of a {c}."}')
    with pytest.raises(ValueError, match="not an object of string lists"):
        suite.read_templates(bad)


def test_teacher_suite_goes_through_the_cache(tiny_altclip_dir, elevater_root, templates_file, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "t.json"
    args = ["--teacher", f"altclip:{tiny_altclip_dir}", "--elevater-root", str(elevater_root), "--templates",
            str(templates_file), "--cache", str(cache), "--json", str(out)]
    assert main(args) == 0
    first = json.loads(out.read_text(encoding="utf-8"))
    check_table(first)
    assert first["teacher_id"].startswith("altclip-")
    assert len(list(cache.glob("image-*/meta.json"))) == len(SETS)  # one image cache per set
    assert main(args) == 0  # the second run reads the cache: the same numbers
    second = json.loads(out.read_text(encoding="utf-8"))
    assert second["mean"] == first["mean"]
