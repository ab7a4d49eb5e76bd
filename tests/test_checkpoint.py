import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from dcclip_mobile.checkpoint import CheckpointError, load_student, save_student


def outputs(model, tokenizer):
    torch.manual_seed(1)
    s = model.cfg.image.image_size
    pixels = torch.randn(2, 3, s, s)
    text = tokenizer(["a photo of a bag.", "一张包的照片。"])
    with torch.no_grad():
        return model.encode_image(pixels), model.encode_text(text["input_ids"], text["attention_mask"])


@pytest.fixture()
def saved(tiny_student, tiny_tokenizer, tmp_path):
    with torch.no_grad():
        tiny_student.logit_scale.fill_(3.0)  # a non-default value must survive too
    return save_student(tiny_student, tiny_tokenizer, tmp_path / "ckpt")


def test_round_trip_gives_identical_outputs(tiny_student, tiny_tokenizer, saved):
    model, tokenizer = load_student(saved)
    assert model.logit_scale.item() == 3.0
    assert tokenizer.encode("一张包的照片。") == tiny_tokenizer.encode("一张包的照片。")
    for want, got in zip(outputs(tiny_student, tiny_tokenizer), outputs(model, tokenizer)):
        assert torch.equal(want, got)
    assert sorted(p.name for p in saved.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer.model"]
    assert json.loads((saved / "config.json").read_text())["format_version"] == 1


def test_overwrite_is_atomic_and_leaves_no_temporaries(tiny_student, tiny_tokenizer, saved):
    class Boom(RuntimeError):
        pass

    before = (saved / "model.safetensors").read_bytes()
    bad_tokenizer = tiny_tokenizer
    original_save = bad_tokenizer.save

    def failing_save(directory):
        original_save(directory)
        raise Boom("disk full")

    bad_tokenizer.save = failing_save
    try:
        with torch.no_grad():
            tiny_student.logit_scale.fill_(1.0)
        with pytest.raises(Boom):
            save_student(tiny_student, bad_tokenizer, saved)
    finally:
        del bad_tokenizer.save
    assert (saved / "model.safetensors").read_bytes() == before  # the old checkpoint is intact
    assert [p.name for p in saved.parent.iterdir()] == ["ckpt"]   # no half-written directory left


def test_missing_directory_and_file(saved, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*train.demo"):
        load_student(tmp_path / "nope")
    (saved / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="missing tokenizer.model"):
        load_student(saved)


def test_wrong_format_version(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["format_version"] = 99
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="format_version is 99"):
        load_student(saved)


def test_missing_and_unexpected_keys(saved):
    state = load_file(str(saved / "model.safetensors"))
    state.pop("logit_scale")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(saved / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys logit_scale, unexpected keys extra.weight"):
        load_student(saved)


def test_wrong_shapes(saved):
    state = load_file(str(saved / "model.safetensors"))
    state["image.proj.weight"] = torch.zeros(5, 5)
    save_file(state, str(saved / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"image.proj.weight: file \(5, 5\)"):
        load_student(saved)


def test_truncated_weights(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_student(saved)


def test_pickle_is_never_read(saved):
    # a pickle bomb in place of the weights must be rejected as unreadable, not executed
    import pickle

    class Bomb:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle executed')",))

    (saved / "model.safetensors").write_bytes(pickle.dumps(Bomb()))
    with pytest.raises(CheckpointError, match="cannot be read as safetensors"):
        load_student(saved)
