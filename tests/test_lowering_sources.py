"""`python -m lowering.export --images SOURCE`: the int8 calibration and parity-gate images (and the label set,
where the source has one) come from the user's data, and the manifest says which. Tiny generated data: an
ELEVATER-layout folder of PNGs and a pairs .jsonl over the same files; real torch.export / ExecuTorch runs."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image, ImageDraw

from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.checkpoint import save_student
from dcclip_mobile.config import load_preset
from dcclip_mobile.data.elevater import ElevaterFolder
from dcclip_mobile.data.pairs import PairsFile
from dcclip_mobile.models import DCCLIPStudent
from lowering.export import ExportError, export_bundles, main
from lowering.inputs import InputsError, eval_set_from_source, image_inputs

pytestmark = pytest.mark.slow
LABELS = {"en": ["cat", "dog", "bird"], "zh": ["猫", "狗", "鸟"]}
CAPTIONS = [("en", "a photo of a cat."), ("en", "a dog on the grass"), ("zh", "一只鸟"), ("zh", "一张猫的照片。")]


def _png(path, c: int, k: int) -> None:
    img = Image.new("RGB", (40, 32), (70 * c, 200 - 45 * k, 90))
    ImageDraw.Draw(img).ellipse((5 * c, 4 * k, 20 + 5 * c, 26), fill=(255, 30 * k, 40 * c))
    img.save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """root/elevater: label.txt, label_cn.txt, test/<class id>/<k>.png (3 classes x 4); root/pairs.jsonl: 8 rows
    over the same files, English and Chinese captions."""
    root = tmp_path_factory.mktemp("sources")
    folder = root / "elevater"
    folder.mkdir()
    (folder / "label.txt").write_text("\n".join(LABELS["en"]) + "\n")
    (folder / "label_cn.txt").write_text("\n".join(LABELS["zh"]) + "\n", encoding="utf-8")
    for c in range(3):
        (folder / "test" / str(c)).mkdir(parents=True)
        for k in range(4):
            _png(folder / "test" / str(c) / f"{k}.png", c, k)
    rows = [{"filepath": f"elevater/test/{i % 3}/{i // 3}.png", "caption": CAPTIONS[i % 4][1], "lang": CAPTIONS[i % 4][0]}
            for i in range(8)]
    (root / "pairs.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def student(tiny_tokenizer, data) -> DCCLIPStudent:
    """conftest's tiny student, with BatchNorm statistics from the folder's images (an untrained student's
    make the image embeddings vanish, and parity figures meaningless)."""
    torch.manual_seed(0)
    cfg = load_preset("tiny")
    cfg.text.vocab_size = tiny_tokenizer.vocab_size
    model = DCCLIPStudent(cfg)
    src = ElevaterFolder(data / "elevater")
    model.train()
    with torch.no_grad():
        model.image(torch.cat([x for (x,) in image_inputs([src.image(i) for i in range(len(src))], cfg)]))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(student, tiny_tokenizer, data):
    return save_student(student, tiny_tokenizer, data / "ckpt")


@pytest.fixture(scope="module")
def elevater_bundle(student, tiny_tokenizer, data, checkpoint):
    """The library path: export_bundles given the image source object."""
    result = export_bundles(student, tiny_tokenizer, ["android"], data / "out-elevater", {"android": ["int8"]},
                            images=ElevaterFolder(data / "elevater"), allow_parity_failure=True,
                            checkpoint=checkpoint, measure_latency=False, log=lambda *_: None)
    return result.bundles["android"]


def _class_of(data) -> dict[bytes, int]:
    src = ElevaterFolder(data / "elevater")
    return {src.image(i).tobytes(): src.labels[i] for i in range(len(src))}


def test_elevater_folder_gives_calibration_parity_and_the_label_set(elevater_bundle, data):
    m = bm.load_manifest(elevater_bundle)
    src = ElevaterFolder(data / "elevater")
    cal = m["calibration"]
    assert cal["kind"] == "elevater" and cal["dataset_id"] == src.dataset_id and cal["labels_from"] == "source"
    assert cal["images"] >= 1 and cal["parity_images"] >= 1 and cal["images"] + cal["parity_images"] == len(src)
    assert cal["texts_from"] == "labels in calibration templates" and cal["skipped"] == 0
    assert (m["class_embeddings"]["labels_en"], m["class_embeddings"]["labels_zh"]) == (LABELS["en"], LABELS["zh"])
    # the parity images (golden.json's are the first of them) are the folder's own
    classes = _class_of(data)
    for g in bm.load_golden(elevater_bundle)["images"]:
        assert Image.open(elevater_bundle / g["file"]).convert("RGB").tobytes() in classes
    by = {a["tower"]: a["parity"] for a in m["artifacts"]}
    assert by["image"]["n"] == cal["parity_images"] and by["image"]["top1_agreement"] is not None
    assert bm.verify_files(elevater_bundle) == []


def test_selection_is_disjoint_class_balanced_and_sized_to_the_source(data):
    src = ElevaterFolder(data / "elevater")
    classes = _class_of(data)
    es = eval_set_from_source(src, n_calibration=3, n_parity=6)
    parity = [classes[im.tobytes()] for im in es.parity_images]
    calibration = [classes[im.tobytes()] for im in es.calibration_images]
    assert sorted(parity) == [0, 0, 1, 1, 2, 2] and sorted(calibration) == [0, 1, 2]
    assert not {im.tobytes() for im in es.parity_images} & {im.tobytes() for im in es.calibration_images}
    # a source smaller than asked keeps the ratio (1 calibration : 2 parity), at least one of each
    small = eval_set_from_source(src, n_calibration=128, n_parity=256)
    assert (len(small.calibration_images), len(small.parity_images)) == (4, 8)
    given = eval_set_from_source(src, labels={"en": ["a", "b", "c"], "zh": ["甲", "乙", "丙"]})
    assert given.provenance["labels_from"] == "given" and given.labels["zh"] == ["甲", "乙", "丙"]
    with pytest.raises(ExportError, match="not both"):
        export_bundles(None, None, ["android"], data / "never", eval_set=small, images=src)


def test_pairs_file_calibrates_on_its_captions_and_skips_unreadable_images(data):
    es = eval_set_from_source(PairsFile(data / "pairs.jsonl"), n_calibration=3, n_parity=5)
    assert es.labels is None and es.provenance["texts_from"] == "captions" and es.provenance["kind"] == "pairs"
    assert set(es.calibration_texts) | set(es.captions) <= set(CAPTIONS) and len(es.calibration_texts) == 3
    groups = es.decision_groups()  # without labels, each parity caption is a class of its own
    for lang in ("en", "zh"):
        mine = [t for lg, t in es.captions if lg == lang]
        assert groups.get(lang, []) == ([[t] for t in mine] if len(mine) >= 2 else [])
    assert groups, "the parity captions decide top-1 agreement in at least one language"
    # --labels with a pairs file: class prompts from the labels, captions still calibrate the text tower
    labeled = eval_set_from_source(PairsFile(data / "pairs.jsonl"), LABELS, n_calibration=3, n_parity=5)
    assert labeled.class_prompts("zh") == ["一张猫的照片。", "一张狗的照片。", "一张鸟的照片。"]
    assert labeled.provenance["texts_from"] == "captions"
    broken = data / "broken.jsonl"
    broken.write_text('{"filepath": "missing.png", "caption": "gone"}\n'
                      + (data / "pairs.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    assert eval_set_from_source(PairsFile(broken)).provenance["skipped"] == 1


def test_cli_pairs_file_ships_no_class_embeddings(data, checkpoint, capsys):
    out = data / "out-pairs"  # torchscript: the CLI's wiring, at a third of an XNNPACK export's time
    assert main(["--target", "torchscript", "--checkpoint", str(checkpoint), "--images", str(data / "pairs.jsonl"),
                 "--out", str(out), "--no-latency", "--eval-images", "6"]) == 0
    m = bm.load_manifest(out / "torchscript")
    assert m["class_embeddings"] is None and not (out / "torchscript" / bm.CLASS_EMBEDDINGS_FILE).exists()
    cal = m["calibration"]
    assert cal["source"] == str(data / "pairs.jsonl") and cal["kind"] == "pairs" and cal["labels_from"] is None
    # 8 rows, fewer than the 3 + 6 asked: split in the asked ratio
    assert (cal["images"], cal["parity_images"], cal["texts"]) == (3, 5, 3) and cal["texts_from"] == "captions"
    for a in m["artifacts"]:  # the captions are what top-1 agreement decides among
        assert a["parity"]["top1_agreement"] is not None, a["file"]
    assert m["parity_gate"]["passed"] and bm.verify_files(out / "torchscript") == []
    assert {t["text"] for t in bm.load_golden(out / "torchscript")["texts"]} & {t for _, t in CAPTIONS}


@pytest.mark.parametrize("make, expect", [
    (lambda d: str(d / "nope"), "neither 'fashion-mnist' nor an existing file or folder"),
    (lambda d: str(d / "elevater" / "test"), "has no label.txt"),
    (lambda d: (d / "bad.jsonl").write_text("{not json\n") and str(d / "bad.jsonl"), "line 1 is not JSON"),
    (lambda d: (d / "nocap.csv").write_text("filepath,text\na.png,x\n") and str(d / "nocap.csv"),
     "'filepath' and 'caption'"),
    (lambda d: (d / "gone.jsonl").write_text('{"filepath": "a.png", "caption": "x"}\n{"filepath": "b.png", '
                                             '"caption": "y"}\n') and str(d / "gone.jsonl"), "could be read"),
])
def test_cli_bad_source_is_one_line_and_exit_2(data, checkpoint, capsys, make, expect):
    spec = make(data)
    assert main(["--target", "android", "--checkpoint", str(checkpoint), "--images", spec,
                 "--out", str(data / "never")]) == 2
    err = capsys.readouterr().err
    assert expect in err and err.count("\n") == 1 and err.startswith("error: ") and spec in err, err
    assert not (data / "never").exists()


def test_cli_bad_split_names_the_split(data, checkpoint, capsys):
    assert main(["--target", "android", "--checkpoint", str(checkpoint), "--images", str(data / "elevater"),
                 "--split", "val", "--out", str(data / "never")]) == 2
    assert "no split 'val'" in capsys.readouterr().err
