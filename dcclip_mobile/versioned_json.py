"""Reading the project's JSON files that carry a format_version (bundle manifest, golden vectors, tokenizer
metadata): one place that turns a corrupt or foreign file into an error naming the file."""
from __future__ import annotations

import json
from pathlib import Path


def read_versioned_json(path: str | Path, version: int, error: type[Exception], what_to_do: str = "") -> dict:
    """The JSON object in `path` if its format_version is `version`; otherwise `error(message)`, the message
    naming the file, what was found, and ending with `what_to_do`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise error(f"{str(path)!r} is not valid JSON: {e}") from None
    found = data.get("format_version") if isinstance(data, dict) else None
    if found != version:
        raise error(f"{str(path)!r} has format_version {found!r}; this dcclip-mobile reads {version}{what_to_do}")
    return data
