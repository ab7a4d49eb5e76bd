"""Bad input to the training runners (issue 15's train/ cases): one line naming the value, exit 2, no traceback,
nothing computed first; and the damaged states an interrupted run leaves, resumed or refused clearly."""
from __future__ import annotations

import json

import pytest
import torch

from train import align, evaluate
from train.loop import TrainConfig, read_metrics, train
from train.stages import AlignStage


def bad(main, argv, capsys, expect: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_threads_minus_one_is_refused(tmp_path, capsys):
    bad(align.main, ["--init", str(tmp_path), "--threads", "-1", "--out", str(tmp_path / "o")], capsys, "--threads -1")
    bad(evaluate.main, ["--teacher", "offline", "--threads", "-1"], capsys, "--threads -1")


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    bad(align.main, ["--init", str(tmp_path / "missing"), "--out", str(f)], capsys, "is a file")


def test_negative_and_zero_limits_are_refused(tmp_path, tiny_student, tiny_tokenizer, capsys):
    from dcclip_mobile.checkpoint import save_student
    save_student(tiny_student, tiny_tokenizer, tmp_path / "ckpt")
    bad(align.main, ["--init", str(tmp_path / "ckpt"), "--limit", "-5", "--out", str(tmp_path / "o")], capsys,
        "--limit -5")
    bad(evaluate.main, ["--checkpoint", str(tmp_path / "ckpt"), "--limit", "0"], capsys, "--limit 0")


def test_evaluate_json_that_is_a_directory_is_refused_before_any_work(tmp_path, capsys):
    bad(evaluate.main, ["--teacher", "offline", "--json", str(tmp_path)], capsys, "is a directory")


class Pairs(torch.utils.data.Dataset):
    def __init__(self, tokenizer):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(16, 3, 64, 64, generator=g)
        self.tokens = tokenizer([f"a photo of thing {i}" for i in range(16)])

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return {"pixel_values": self.images[i], "input_ids": self.tokens["input_ids"][i],
                "attention_mask": self.tokens["attention_mask"][i]}


def run(student, tokenizer, out, **kw):
    cfg = TrainConfig(steps=4, batch_size=4, warmup_steps=0, checkpoint_every=2)
    return train(AlignStage(student), Pairs(tokenizer), torch.utils.data.default_collate, tokenizer, cfg, out, **kw)


def test_truncated_training_state_on_resume_is_a_clear_error(tiny_student, tiny_tokenizer, tmp_path):
    run(tiny_student, tiny_tokenizer, tmp_path, stop_after=2)
    state = tmp_path / "checkpoint" / "training_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match="training state .* is damaged"):
        run(tiny_student, tiny_tokenizer, tmp_path, resume=True)


def test_torn_last_line_of_metrics_on_resume_is_dropped(tiny_student, tiny_tokenizer, tmp_path):
    run(tiny_student, tiny_tokenizer, tmp_path, stop_after=2)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')  # a kill mid-write
    run(tiny_student, tiny_tokenizer, tmp_path, resume=True)
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())
