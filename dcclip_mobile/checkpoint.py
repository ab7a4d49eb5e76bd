"""Student checkpoints: a directory a stranger can hand you without being able to run code on your machine.

    config.json         the StudentConfig with its format version
    model.safetensors   the weights (safetensors: tensors only, no pickle)
    tokenizer.model     the SentencePiece model
    tokenizer.json      the tokenizer's portable description (special ids, normalization, pieces)

The directory is written whole or not at all (see atomic.py). `load_student` checks everything before
it builds anything and says what is wrong with which file.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_directory, recover_directory
from .config import ConfigError, StudentConfig
from .errors import DCClipError
from .models import DCCLIPStudent
from .tokenizer import JSON_FILE, MODEL_FILE, BilingualTokenizer, TokenizerError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE, MODEL_FILE, JSON_FILE)


class CheckpointError(DCClipError, ValueError):
    """A checkpoint directory is missing, incomplete or does not match its config."""


def save_student(model: DCCLIPStudent, tokenizer: BilingualTokenizer, directory: str | Path,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write the checkpoint directory atomically. `metadata` (str -> str) goes into the safetensors header."""
    if tokenizer.vocab_size > model.cfg.text.vocab_size:
        raise CheckpointError(f"tokenizer has {tokenizer.vocab_size} pieces but the text student's embedding "
                              f"has {model.cfg.text.vocab_size} rows; build the student with "
                              f"text.vocab_size >= tokenizer.vocab_size")
    if tokenizer.context_length != model.cfg.text.context_length:
        raise CheckpointError(f"tokenizer context_length {tokenizer.context_length} != text student "
                              f"context_length {model.cfg.text.context_length}")
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        write_student_files(model, tokenizer, tmp, metadata)
    return directory


def write_student_files(model: DCCLIPStudent, tokenizer: BilingualTokenizer, directory: Path,
                        metadata: dict[str, str] | None = None) -> None:
    """The checkpoint's files, into a directory the caller makes atomic (save_student, training state)."""
    # contiguous clones: safetensors refuses shared or strided storage
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    (directory / CONFIG_FILE).write_text(json.dumps(model.cfg.to_dict(), indent=2, ensure_ascii=False) + "\n")
    save_file(state, str(directory / WEIGHTS_FILE), metadata=metadata or {})
    tokenizer.save(directory)


def load_student(directory: str | Path, map_location: str = "cpu") -> tuple[DCCLIPStudent, BilingualTokenizer]:
    """Validate and load a checkpoint directory; the model is returned in eval mode."""
    directory = Path(directory)
    if not directory.exists():
        # a save killed between its two renames left the previous checkpoint as .<name>.old-*: put it back
        directory = recover_directory(directory) or directory
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {str(directory)!r} does not exist; make one with "
                              "`python -m train.demo` or `python -m train.distill`")
    missing = [f for f in CHECKPOINT_FILES if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {str(directory)!r} is missing {', '.join(missing)}; a checkpoint "
                              f"holds {', '.join(CHECKPOINT_FILES)}")
    try:
        cfg = StudentConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(directory / CONFIG_FILE)!r} is not valid JSON: {e}") from None
    except ConfigError as e:
        raise CheckpointError(f"{str(directory / CONFIG_FILE)!r}: {e}") from None
    try:
        tokenizer = BilingualTokenizer.load(directory)
    except TokenizerError as e:
        raise CheckpointError(str(e)) from None
    try:
        state = load_file(str(directory / WEIGHTS_FILE), device=map_location)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{str(directory / WEIGHTS_FILE)!r} cannot be read as safetensors ({e}); "
                              "the file is truncated or not a checkpoint") from None

    model = DCCLIPStudent(cfg)
    expected = model.state_dict()
    missing_keys = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing_keys or unexpected:
        raise CheckpointError(
            f"{str(directory / WEIGHTS_FILE)!r} does not match its config.json: "
            f"missing keys {_few(missing_keys)}, unexpected keys {_few(unexpected)}")
    wrong = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(v.shape)}"
             for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{str(directory / WEIGHTS_FILE)!r} has tensors of the wrong shape for its "
                              f"config.json: {_few(wrong)}")
    if tokenizer.vocab_size > cfg.text.vocab_size or tokenizer.context_length != cfg.text.context_length:
        raise CheckpointError(
            f"tokenizer in {str(directory)!r} ({tokenizer.vocab_size} pieces, context {tokenizer.context_length}) "
            f"does not fit the text student (vocab {cfg.text.vocab_size}, context {cfg.text.context_length})")
    bad = [f"{k} ({_non_finite(v)})" for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(f"{str(directory / WEIGHTS_FILE)!r} has non-finite weights (NaN or infinity) in "
                              f"{_few(bad)}: the training that wrote it diverged; use an earlier checkpoint")
    model.load_state_dict(state)
    return model.to(map_location).eval(), tokenizer


def _non_finite(t) -> str:
    nan = int(t.isnan().sum())
    inf = int(t.isinf().sum())
    return ", ".join(x for x in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if x) + \
        f" of {t.numel()}"


def _few(items: list[str], n: int = 5) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more
