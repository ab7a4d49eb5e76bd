"""Data readers and the one image preprocessing, on fixtures the tests make."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dcclip_mobile.data.elevater import ElevaterFolder
from dcclip_mobile.assets import assets_present
from dcclip_mobile.data.fashion_mnist import FashionMNIST, fashion_mnist_present
from dcclip_mobile.data.pairs import PairsFile
from dcclip_mobile.data.preprocess import ImageLoadError, ImagePreprocess, load_image, preprocess_image

PRE = ImagePreprocess(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_every_mode_becomes_rgb(tmp_path):
    cases = {
        "gray.png": Image.new("L", (20, 10), 128),
        "palette.png": Image.new("P", (20, 10), 3),
        "rgba.png": Image.new("RGBA", (20, 10), (255, 0, 0, 0)),        # fully transparent: white
        "sixteen.png": Image.fromarray(np.full((10, 20), 65535, np.uint16)),
        "cmyk.jpg": Image.new("CMYK", (20, 10), (0, 0, 0, 0)),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        rgb = load_image(tmp_path / name)
        assert rgb.mode == "RGB" and rgb.size == (20, 10), name
    assert load_image(tmp_path / "rgba.png").getpixel((0, 0)) == (255, 255, 255)
    assert load_image(tmp_path / "sixteen.png").getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (30, 10), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "rot.jpg").size == (10, 30)


def test_resize_crop_normalize_rule():
    img = Image.new("RGB", (40, 20), (255, 0, 128))
    x = preprocess_image(img, PRE)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    want = (np.float32(128) / np.float32(255) - np.float32(0.5)) / np.float32(0.25)
    assert x[0, 0, 0] == pytest.approx(2.0) and x[1, 0, 0] == pytest.approx(-2.0)
    assert x[2, 5, 5].item() == want  # bit-exact float32 rule the apps reproduce
    same = Image.new("RGB", (16, 16), (255, 0, 128))
    assert torch.equal(preprocess_image(same, PRE), x)  # an image already at size is not resampled


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b"this is not an image at all", "not an image"),
])
def test_bad_files_name_the_file(tmp_path, content, match):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageLoadError, match=f"bad.png.*{match}|{match}.*bad.png"):
        load_image(p)


def test_truncated_and_missing_files(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:200])
    with pytest.raises(ImageLoadError, match="cut.jpg.*truncated"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageLoadError, match="nope.png.*does not exist"):
        load_image(tmp_path / "nope.png")


def test_pairs_jsonl_and_csv(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "p.jsonl").write_text(json.dumps({"filepath": "a.png", "caption": "a cat", "lang": "en"}) + "\n"
                                      + json.dumps({"filepath": "a.png", "caption": "一只猫", "lang": "zh"}) + "\n")
    (tmp_path / "p.csv").write_text("filepath,caption,lang\na.png,a cat,en\na.png,一只猫,zh\n", encoding="utf-8")
    for f in ("p.jsonl", "p.csv"):
        pairs = PairsFile(tmp_path / f)
        assert len(pairs) == 2 and pairs.caption(1) == ("一只猫", "zh")
        assert pairs.image(0).size == (8, 8)
    (tmp_path / "bad.csv").write_text("path,text\nx,y\n")
    with pytest.raises(ValueError, match="needs 'filepath' and 'caption'"):
        PairsFile(tmp_path / "bad.csv")
    (tmp_path / "lang.jsonl").write_text(json.dumps({"filepath": "a.png", "caption": "x", "lang": "fr"}) + "\n")
    with pytest.raises(ValueError, match="lang 'fr'; accepted: 'en', 'zh'"):
        PairsFile(tmp_path / "lang.jsonl")


def test_elevater_layout(tmp_path):
    (tmp_path / "label.txt").write_text("cat\ndog\n")
    (tmp_path / "label_cn.txt").write_text("猫\n狗\n", encoding="utf-8")
    for cid in ("000", "001"):
        (tmp_path / "test" / cid).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "test" / cid / "x.png")
    ds = ElevaterFolder(tmp_path)
    assert len(ds) == 2 and ds.labels == [0, 1] and ds.classes["zh"] == ["猫", "狗"]
    (tmp_path / "test" / "007").mkdir()
    with pytest.raises(ValueError, match="007.*not a class id"):
        ElevaterFolder(tmp_path)


@pytest.mark.needs(fashion_mnist_present(),
                   "Fashion-MNIST absent: apt-get install dataset-fashion-mnist (setup.sh does)")
def test_fashion_mnist_stratified_subset():
    ds = FashionMNIST("test", limit=50, seed=1)
    assert len(ds) == 50 and np.bincount(ds.labels).tolist() == [5] * 10
    img, label = ds[0]
    assert img.mode == "RGB" and img.size == (28, 28) and 0 <= label < 10
    assert ds.classes["zh"][9] == "短靴"
    with pytest.raises(ValueError, match="split 'val'"):
        FashionMNIST("val")


def test_resized_shape_rule_is_exact():
    from dcclip_mobile.data.preprocess import resized_shape

    assert resized_shape(40, 20, 16) == (32, 16) and resized_shape(20, 40, 16) == (16, 32)
    assert resized_shape(6, 4, 3) == (4, 3)    # 4.5 rounds half to even, as the Android port does
    assert resized_shape(10, 4, 3) == (8, 3)   # 7.5 -> 8
    assert resized_shape(1000, 999, 224) == (224, 224)
    assert preprocess_image(Image.new("RGB", (7, 300), (9, 9, 9)), PRE).shape == (3, 16, 16)


def test_preprocess_describes_itself_for_the_manifest():
    d = PRE.to_dict()
    assert d["size"] == 16 and d["resize"] == "shorter_side_bicubic_then_center_crop" and d["channel_order"] == "RGB"
    assert json.loads(json.dumps(d))["mean"] == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="unknown resize rule 'squash'"):
        ImagePreprocess(16, (0.5,) * 3, (0.5,) * 3, "squash")
    with pytest.raises(ValueError, match="std > 0"):
        ImagePreprocess(16, (0.5,) * 3, (0.5, 0.0, 0.5))


def test_elevater_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no label.txt"):
        ElevaterFolder(tmp_path)
    (tmp_path / "label.txt").write_text("cat\ndog\n")
    (tmp_path / "label_cn.txt").write_text("猫\n", encoding="utf-8")
    with pytest.raises(ValueError, match="label.txt has 2 classes, label_cn.txt 1"):
        ElevaterFolder(tmp_path)
    (tmp_path / "label_cn.txt").write_text("猫\n狗\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="has no split 'test'"):
        ElevaterFolder(tmp_path)


def test_open_image_source_by_name(tmp_path):
    from dcclip_mobile.data.sources import open_image_source

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "p.csv").write_text("filepath,caption\na.png,a cat\n")
    assert len(open_image_source(str(tmp_path / "p.csv"), "train")) == 1
    with pytest.raises(ValueError, match="'nowhere' is neither 'fashion-mnist' nor"):
        open_image_source("nowhere", "test")


@pytest.mark.offline_assets
@pytest.mark.needs(assets_present("bilingual-labels"), "bilingual labels absent: python -m dcclip_mobile.assets fetch")
def test_bilingual_labels_and_corpus():
    from dcclip_mobile.data.labels import bilingual_corpus, imagenet_classnames, templates

    assert len(imagenet_classnames("en")) == len(imagenet_classnames("zh")) == 1000
    assert len(templates("zh")) == 80 and all("{c}" in t for t in templates("zh"))
    corpus = bilingual_corpus(600, seed=3)
    assert len(corpus) == 600 and corpus == bilingual_corpus(600, seed=3)
    langs = [lang for _, lang in corpus]
    assert 250 < langs.count("zh") < 350
    assert any("短靴" in t for t, _ in corpus) and any("ankle boot" in t for t, _ in corpus)
    with pytest.raises(ValueError, match="language 'fr'; accepted: en, zh"):
        templates("fr")
