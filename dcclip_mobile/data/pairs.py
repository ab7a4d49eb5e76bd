"""Image-text pairs from CSV or JSONL, as open_clip users keep them: `filepath, caption, lang` per row
(lang optional: "en" or "zh"; relative paths are relative to the file)."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .preprocess import load_image


@dataclass
class Pair:
    filepath: Path
    caption: str
    lang: str


class PairsFile:
    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pairs file {str(path)!r} does not exist")
        rows: list[dict] = []
        if path.suffix == ".jsonl":
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{str(path)!r} line {n} is not JSON: {e}") from None
        elif path.suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
        else:
            raise ValueError(f"pairs file {str(path)!r}: accepted formats are .jsonl, .csv, .tsv")
        self.pairs = []
        for n, r in enumerate(rows, 1):
            if "filepath" not in r or "caption" not in r:
                raise ValueError(f"{str(path)!r} row {n} needs 'filepath' and 'caption' fields, has {sorted(r)}")
            lang = (r.get("lang") or "en").strip()
            if lang not in ("en", "zh"):
                raise ValueError(f"{str(path)!r} row {n}: lang {lang!r}; accepted: 'en', 'zh'")
            fp = Path(r["filepath"])
            self.pairs.append(Pair(fp if fp.is_absolute() else path.parent / fp, str(r["caption"]), lang))
        if not self.pairs:
            raise ValueError(f"pairs file {str(path)!r} has no rows")
        self.dataset_id = f"pairs-{path.resolve()}-{path.stat().st_mtime_ns}-{len(self.pairs)}"

    def __len__(self) -> int:
        return len(self.pairs)

    def image(self, i: int) -> Image.Image:
        return load_image(self.pairs[i].filepath)

    def caption(self, i: int) -> tuple[str, str]:
        return self.pairs[i].caption, self.pairs[i].lang
