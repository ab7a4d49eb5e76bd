"""Hostile and unusual data: decompression bombs, pairs files every valid writer produces and every malformed
row, lone surrogates, non-finite weights, config values of the wrong type. Each test is named after its case."""
from __future__ import annotations

import json
import struct
import zlib

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from dcclip_mobile.checkpoint import CheckpointError, load_student, save_student
from dcclip_mobile.config import ConfigError, StudentConfig, load_config, load_preset
from dcclip_mobile.data.pairs import PairsFile
from dcclip_mobile.data.preprocess import MAX_IMAGE_PIXELS, ImageLoadError, load_image
from dcclip_mobile.tokenizer import normalize


def png_header(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims width x height (no pixel data: nothing to decode)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------- decompression bombs
def test_decompression_bomb_50000x50000_png_is_an_image_load_error_naming_the_file(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(50000, 50000))  # Pillow's own limit raises DecompressionBombError here
    with pytest.raises(ImageLoadError, match=r"bomb\.png.*refused undecoded"):
        load_image(bomb)


def test_image_over_max_image_pixels_where_pillow_only_warns_is_refused(tmp_path, recwarn):
    big = tmp_path / "big.png"
    big.write_bytes(png_header(12000, 9000))  # 108 MP: above MAX_IMAGE_PIXELS, below Pillow's error threshold
    assert 12000 * 9000 > MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError, match=r"big\.png.*12000 x 9000.*MAX_IMAGE_PIXELS"):
        load_image(big)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_decompression_bomb_in_a_pairs_file_raises_image_load_error(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header(50000, 50000))
    (tmp_path / "p.jsonl").write_text(json.dumps({"filepath": "bomb.png", "caption": "boom"}) + "\n")
    with pytest.raises(ImageLoadError, match="bomb.png"):
        PairsFile(tmp_path / "p.jsonl").image(0)


def test_image_with_garbage_after_a_valid_header_is_an_image_load_error(tmp_path):
    bad = tmp_path / "garbage.png"
    bad.write_bytes(png_header(64, 64)[:-12] + b"\x00" * 40)
    with pytest.raises(ImageLoadError, match="garbage.png"):
        load_image(bad)


# ---------------------------------------------------------------------------------------------- pairs files
@pytest.fixture()
def img(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    return "a.png"


def test_jsonl_caption_with_u2028_and_u0085_is_one_row(tmp_path, img):
    captions = ["line\u2028separator", "next\x85line", "para\u2029graph", "form\x0cfeed", "vt\x0bx", "fs\x1cgs\x1d"]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"filepath": img, "caption": c}, ensure_ascii=False) + "\n"
                                              for c in captions), encoding="utf-8")
    pairs = PairsFile(tmp_path / "p.jsonl")
    assert [pairs.caption(i)[0] for i in range(len(pairs))] == captions


def test_jsonl_and_csv_with_a_utf8_bom_and_crlf_are_read(tmp_path, img):
    row = json.dumps({"filepath": img, "caption": "a cat", "lang": "en"})
    (tmp_path / "p.jsonl").write_bytes(b"\xef\xbb\xbf" + (row + "\r\n" + row + "\r\n").encode())
    (tmp_path / "p.csv").write_bytes(b"\xef\xbb\xbf" + "filepath,caption,lang\r\na.png,一只猫,zh\r\n".encode())
    (tmp_path / "p.tsv").write_bytes(b"\xef\xbb\xbf" + "filepath\tcaption\na.png\ta dog\n".encode())
    assert [PairsFile(tmp_path / "p.jsonl").caption(i) for i in range(2)] == [("a cat", "en")] * 2
    assert PairsFile(tmp_path / "p.csv").caption(0) == ("一只猫", "zh")
    assert PairsFile(tmp_path / "p.tsv").caption(0) == ("a dog", "en")


@pytest.mark.parametrize("row, match", [
    ({"filepath": "a.png", "caption": None}, "line 2: caption is null; it must be a string"),
    ({"filepath": "a.png", "caption": 5}, "line 2: caption is a number"),
    ({"filepath": "a.png", "caption": ["x"]}, "line 2: caption is a list"),
    ({"filepath": None, "caption": "x"}, "line 2: filepath is null"),
    ({"filepath": "", "caption": "x"}, "line 2: filepath is empty"),
    ({"filepath": 7, "caption": "x"}, "line 2: filepath is a number"),
    ({"filepath": "a.png", "caption": "x", "lang": None}, "line 2: lang is null"),
    ({"filepath": "a.png", "caption": "x", "lang": "fr"}, "line 2: lang 'fr'"),
    (5, "line 2 is a number, not an object"),
    (None, "line 2 is null, not an object"),
    (["a.png", "x"], "line 2 is a list, not an object"),
    ("a.png", "line 2 is a string, not an object"),
])
def test_jsonl_malformed_row_is_refused_with_its_line_number(tmp_path, img, row, match):
    good = json.dumps({"filepath": img, "caption": "fine"})
    (tmp_path / "p.jsonl").write_text(good + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=match):
        PairsFile(tmp_path / "p.jsonl")


def test_jsonl_line_that_is_not_json_names_the_line_and_not_its_text(tmp_path, img):
    (tmp_path / "p.jsonl").write_text(json.dumps({"filepath": img, "caption": "ok"}) + "\n\n{secret-stuff\n")
    with pytest.raises(ValueError, match="line 3 is not JSON") as e:
        PairsFile(tmp_path / "p.jsonl")
    assert "secret" not in str(e.value)


def test_csv_short_row_is_refused_with_its_row_number(tmp_path, img):
    (tmp_path / "p.csv").write_text("filepath,caption,lang\na.png,ok,en\na.png\n")
    with pytest.raises(ValueError, match="row 2: caption is missing"):
        PairsFile(tmp_path / "p.csv")


def test_pairs_file_that_is_not_utf8_is_refused_naming_it(tmp_path):
    (tmp_path / "p.csv").write_bytes("filepath,caption\na.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="p.csv.*not UTF-8"):
        PairsFile(tmp_path / "p.csv")


# ------------------------------------------------------------------------------------------- lone surrogates
def test_tokenizer_lone_surrogate_becomes_u_fffd_as_in_java(tiny_tokenizer):
    assert normalize("a\ud800B\udfff") == "a\ufffdb\ufffd"
    assert tiny_tokenizer.encode("x\ud800y") == tiny_tokenizer.encode("x\ufffdy")
    batch = tiny_tokenizer(["\ud83d", "ok"])  # no pybind RuntimeError
    assert batch["input_ids"].shape[0] == 2
    assert tiny_tokenizer.to_json()["lone_surrogates"] == "each lone surrogate becomes U+FFFD before normalization"


def test_tokenizer_lone_surrogate_from_a_jsonl_caption_encodes(tmp_path, img, tiny_tokenizer):
    (tmp_path / "p.jsonl").write_text('{"filepath": "a.png", "caption": "bad \\ud800 text"}\n')
    caption, _ = PairsFile(tmp_path / "p.jsonl").caption(0)
    assert tiny_tokenizer.encode(caption) == tiny_tokenizer.encode("bad \ufffd text")


# ------------------------------------------------------------------------------------- weights and configs
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_load_student_refuses_non_finite_weights_naming_the_tensor(tiny_student, tiny_tokenizer, tmp_path, value):
    d = save_student(tiny_student, tiny_tokenizer, tmp_path / "ckpt")
    state = load_file(str(d / "model.safetensors"))
    name = sorted(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)[0]
    state[name].view(-1)[0] = value
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"non-finite weights.*{name.replace('.', '[.]')} \(1 "):
        load_student(d)


def test_load_student_refuses_all_nan_weights(tiny_student, tiny_tokenizer, tmp_path):
    d = save_student(tiny_student, tiny_tokenizer, tmp_path / "ckpt")
    state = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
             for k, v in load_file(str(d / "model.safetensors")).items()}
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match="non-finite weights .* more"):
        load_student(d)


@pytest.mark.parametrize("path, value, match", [
    (("embed_dim",), "64", "'embed_dim' must be an integer, got \"64\""),
    (("embed_dim",), 64.0, "'embed_dim' must be an integer, got 64.0"),
    (("embed_dim",), True, "'embed_dim' must be an integer, got true"),
    (("name",), None, "'name' must be a string, got null"),
    (("logit_scale_init",), "2.6", "'logit_scale_init' must be a finite number"),
    (("image", "image_size"), None, "'image.image_size' must be an integer"),
    (("image", "stages"), [[1, 16, "1", 1]], "'image.stages' must be a list of lists of numbers"),
    (("image", "image_mean"), [0.5, 0.5], "'image.image_mean' must be a list of 3 numbers"),
    (("text", "norm"), 1, "'text.norm' must be a string"),
    (("text",), "tiny", "config text must be a JSON object"),
    (("text", "bogus"), 1, "unknown key.*text.bogus"),
])
def test_config_value_of_the_wrong_type_names_the_key(tmp_path, path, value, match):
    d = load_preset("tiny").to_dict()
    target = d
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    with pytest.raises(ConfigError, match=match):
        StudentConfig.from_dict(json.loads(json.dumps(d)))
    p = tmp_path / "config.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_checkpoint_config_of_the_wrong_type_is_a_checkpoint_error_naming_the_key(tiny_student, tiny_tokenizer,
                                                                                   tmp_path):
    d = save_student(tiny_student, tiny_tokenizer, tmp_path / "ckpt")
    cfg = json.loads((d / "config.json").read_text())
    cfg["embed_dim"] = "64"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json.*'embed_dim' must be an integer"):
        load_student(d)


def test_config_file_that_is_not_json_is_a_config_error(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="c.json.*not valid JSON"):
        load_config(p)


@pytest.mark.parametrize("content, match", [(b"", "tokenizer.model' is empty"),
                                            (b"garbage" * 10, "tokenizer.model' is not a SentencePiece model")])
def test_tokenizer_model_empty_or_not_a_model_names_the_file(tiny_tokenizer, tmp_path, content, match):
    from dcclip_mobile.tokenizer import BilingualTokenizer, TokenizerError

    tiny_tokenizer.save(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(content)
    with pytest.raises(TokenizerError, match=match):
        BilingualTokenizer.load(tmp_path)
