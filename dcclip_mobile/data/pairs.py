"""Image-text pairs from CSV or JSONL, as open_clip users keep them: `filepath, caption, lang` per row
(lang optional: "en" or "zh"; relative paths are relative to the file).

Every valid file is read and every malformed row refused, with its row number:
  - UTF-8, with or without a byte-order mark (Excel and Notepad write one);
  - JSONL: one JSON object per line, lines split on "\\n" only (a "\\r" before it is dropped): U+2028, U+0085
    and the other characters str.splitlines() would split on are valid inside a JSON string; blank lines
    are skipped; the row number is the line number;
  - CSV/TSV: a header row naming the columns; row N is the N-th data row;
  - filepath and caption must be strings (filepath not empty): a null, a number or a list is refused, never
    turned into the text "None" or "5"; lang, when present, "en" or "zh" (empty in a CSV: "en").
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .preprocess import load_image

LANGS = ("en", "zh")


@dataclass
class Pair:
    filepath: Path
    caption: str
    lang: str


def _kind(v: object) -> str:
    return "null" if v is None else {bool: "a boolean", int: "a number", float: "a number", str: "a string",
                                     list: "a list", dict: "an object"}.get(type(v), type(v).__name__)


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")  # a leading byte-order mark is not part of the data
    except UnicodeDecodeError as e:
        raise ValueError(f"pairs file {str(path)!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def _jsonl_rows(path: Path) -> list[tuple[int, object]]:
    rows = []
    for n, line in enumerate(_text(path).split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(path)!r} line {n} is not JSON ({e.msg} at column {e.colno}); each line must be "
                             "one object {\"filepath\": ..., \"caption\": ..., \"lang\": ...}") from None
    return rows


def _csv_rows(path: Path) -> list[tuple[int, object]]:
    reader = csv.DictReader(io.StringIO(_text(path), newline=""), delimiter="\t" if path.suffix == ".tsv" else ",")
    try:
        return [(n, r) for n, r in enumerate(reader, 1)]
    except csv.Error as e:
        raise ValueError(f"{str(path)!r} line {reader.line_num} is not valid CSV: {e}") from None


class PairsFile:
    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pairs file {str(path)!r} does not exist")
        if path.suffix == ".jsonl":
            rows, unit = _jsonl_rows(path), "line"
        elif path.suffix in (".csv", ".tsv"):
            rows, unit = _csv_rows(path), "row"
        else:
            raise ValueError(f"pairs file {str(path)!r}: accepted formats are .jsonl, .csv, .tsv")
        self.pairs = [self._pair(path, f"{str(path)!r} {unit} {n}", r, unit == "row") for n, r in rows]
        if not self.pairs:
            raise ValueError(f"pairs file {str(path)!r} has no rows")
        self.dataset_id = f"pairs-{path.resolve()}-{path.stat().st_mtime_ns}-{len(self.pairs)}"

    @staticmethod
    def _pair(path: Path, where: str, r: object, csv_row: bool) -> Pair:
        if not isinstance(r, dict):
            raise ValueError(f"{where} is {_kind(r)}, not an object with 'filepath' and 'caption'")
        if "filepath" not in r or "caption" not in r:
            raise ValueError(f"{where} needs 'filepath' and 'caption' fields, has "
                             f"{sorted(str(k) for k in r if k is not None)}")

        def kind(v: object) -> str:  # a CSV cell is None only when the row is shorter than the header
            return "missing (the row has fewer fields than the header)" if csv_row and v is None else _kind(v)

        fp, caption = r["filepath"], r["caption"]
        lang = r.get("lang", "") if not csv_row else (r.get("lang") or "")
        if not isinstance(fp, str) or not fp.strip():
            raise ValueError(f"{where}: filepath is {kind(fp) if not isinstance(fp, str) else 'empty'}; "
                             "it must be the image's path (relative to the pairs file or absolute)")
        if not isinstance(caption, str):
            raise ValueError(f"{where}: caption is {kind(caption)}; it must be a string (write a number as "
                             "\"5\" if that is the caption)")
        if not isinstance(lang, str):
            raise ValueError(f"{where}: lang is {_kind(lang)}; accepted: 'en', 'zh' (or leave it out: 'en')")
        lang = lang.strip() or "en"
        if lang not in LANGS:
            raise ValueError(f"{where}: lang {lang!r}; accepted: 'en', 'zh'")
        p = Path(fp)
        return Pair(p if p.is_absolute() else path.parent / p, caption, lang)

    def __len__(self) -> int:
        return len(self.pairs)

    def image(self, i: int) -> Image.Image:
        return load_image(self.pairs[i].filepath)

    def caption(self, i: int) -> tuple[str, str]:
        return self.pairs[i].caption, self.pairs[i].lang
