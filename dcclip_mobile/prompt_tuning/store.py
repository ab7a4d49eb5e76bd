"""A tuned prompt on disk: a directory a stranger can hand you without being able to run code on your machine.

    prompt.json           format_version, the PromptSpec, the student it was tuned on (name, shapes and a hash of
                          each tower's weights), the label set it was tuned for {"en": [..], "zh": [..]}, the tasks,
                          shots and seed, and the scores measured when it was saved
    prompt.safetensors    the prompt's tensors (safetensors: tensors only, no pickle)

Written whole or not at all (atomic.py). `load_prompt` checks the version, keys, shapes and that the student is
the one the prompt was tuned on, and says which is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import atomic_directory
from ..models import DCCLIPStudent
from ..tokenizer import BilingualTokenizer
from ..versioned_json import read_versioned_json
from .engine import tower_fingerprint
from .prompts import LANGS, Prompt, PromptError, PromptSpec

PROMPT_JSON = "prompt.json"
PROMPT_TENSORS = "prompt.safetensors"
PROMPT_FORMAT_VERSION = 1


def student_identity(model: DCCLIPStudent) -> dict:
    return {"name": model.cfg.name, "embed_dim": model.cfg.embed_dim, "text_width": model.cfg.text.width,
            "image_size": model.cfg.image.image_size, "text_sha": tower_fingerprint(model.text),
            "image_sha": tower_fingerprint(model.image)}


def save_prompt(prompt: Prompt, model: DCCLIPStudent, directory: str | Path, classes: dict[str, list[str]] | None = None,
                info: dict | None = None) -> Path:
    """Write the prompt directory atomically. `classes` is the label set a bundle should ship with it."""
    if classes is not None and (set(classes) != set(LANGS) or len(classes["en"]) != len(classes["zh"])):
        raise PromptError(f"classes must name the same classes in {', '.join(LANGS)}: got "
                          f"{ {k: len(v) for k, v in classes.items()} }")
    meta = {"format_version": PROMPT_FORMAT_VERSION, "spec": prompt.spec.to_dict(), "student": student_identity(model),
            "classes": classes, **(info or {})}
    state = {k: v.detach().contiguous().clone() for k, v in prompt.state_dict().items()}
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        (tmp / PROMPT_JSON).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        save_file(state, str(tmp / PROMPT_TENSORS), metadata={"format": "dcclip-prompt"})
    return directory


def read_prompt_info(directory: str | Path) -> dict:
    directory = Path(directory)
    for f in (PROMPT_JSON, PROMPT_TENSORS):
        if not (directory / f).is_file():
            raise PromptError(f"prompt directory {str(directory)!r} has no {f}; a tuned prompt is what "
                              "`python -m train.prompt_tune --save DIR` writes")
    meta = read_versioned_json(directory / PROMPT_JSON, PROMPT_FORMAT_VERSION, PromptError,
                               ". Re-run python -m train.prompt_tune to save the prompt again.")
    for key in ("spec", "student", "classes"):
        if key not in meta:
            raise PromptError(f"{str(directory / PROMPT_JSON)!r} lacks {key!r}")
    return meta


def load_prompt(directory: str | Path, model: DCCLIPStudent, tokenizer: BilingualTokenizer,
                check_student: bool = True) -> tuple[Prompt, dict]:
    """(prompt, its prompt.json) for `model`; PromptError if the files are broken or the student is another."""
    directory = Path(directory)
    meta = read_prompt_info(directory)
    spec = PromptSpec.from_dict(meta["spec"])
    if check_student:
        mine = student_identity(model)
        differ = [k for k, v in meta["student"].items() if mine.get(k) != v]
        if differ:
            raise PromptError(f"prompt {str(directory)!r} was tuned on another student ({', '.join(differ)} differ: "
                              f"{ {k: meta['student'][k] for k in differ} } vs { {k: mine.get(k) for k in differ} }); "
                              "a prompt only means something on the towers it was tuned on")
    try:
        state = load_file(str(directory / PROMPT_TENSORS))
    except (SafetensorError, OSError) as e:
        raise PromptError(f"{str(directory / PROMPT_TENSORS)!r} is not a readable safetensors file: {e}") from None
    prompt = Prompt(spec, model.text, tokenizer)
    want = prompt.state_dict()
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise PromptError(f"{str(directory / PROMPT_TENSORS)!r}: missing {missing}, unexpected {extra} for a "
                          f"{spec.method} prompt")
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(want[k].shape)}" for k in want if state[k].shape != want[k].shape]
    if bad:
        raise PromptError(f"{str(directory / PROMPT_TENSORS)!r}: wrong shapes: {'; '.join(bad)}")
    with torch.no_grad():
        prompt.load_state_dict(state)
    return prompt.eval(), meta
