"""The bilingual (English + Chinese) SentencePiece tokenizer that ships to the phone.

One tokenizer is two files in a directory:
  tokenizer.model  the SentencePiece model (unigram, byte fallback: no text is ever <unk>)
  tokenizer.json   everything a Kotlin or Swift port needs to reproduce `encode` exactly: the pieces with
                   their scores and types, the special ids, the context length and the normalization rule.

Normalization is done here, in plain Python, before SentencePiece sees the text (SentencePiece itself is
trained with the identity rule). The rule is small enough to port: Unicode NFKC, lower case, every run of
whitespace to one space, strip. NFKC is what makes full-width punctuation and letters ("，", "Ａ") the same
tokens as their ASCII forms.

Lone surrogates (a JSON "\\ud800" with no partner: text that is not valid Unicode) have one rule, in every
port: before normalization each becomes U+FFFD (the replacement character), which byte fallback then
encodes as its UTF-8 bytes. In Python every surrogate code point in a str is lone (json pairs the valid ones);
in Java a surrogate char not part of a high+low pair; Swift's String cannot hold one (decoding UTF-16
already applies the rule).
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm
import torch

from .atomic import atomic_write_bytes
from .errors import DCClipError
from .versioned_json import read_versioned_json

TOKENIZER_FORMAT_VERSION = 1
MODEL_FILE = "tokenizer.model"
JSON_FILE = "tokenizer.json"

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
NORMALIZATION = {"unicode": "NFKC", "lowercase": True, "collapse_whitespace": True, "strip": True}
_WHITESPACE = re.compile(r"\s+")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
LONE_SURROGATES = "each lone surrogate becomes U+FFFD before normalization"


class TokenizerError(DCClipError, ValueError):
    """A tokenizer file is missing or malformed, or an input is not text."""


def normalize(text: str) -> str:
    """The normalization rule of tokenizer.json ("normalization"), as code; lone surrogates first become
    U+FFFD (tokenizer.json "lone_surrogates")."""
    text = _LONE_SURROGATE.sub("\ufffd", text)
    text = unicodedata.normalize("NFKC", text).lower()
    return _WHITESPACE.sub(" ", text).strip()


def _check_text(text: object, where: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{where} must be a str, got {type(text).__name__}: {text!r:.80}")
    return text


class BilingualTokenizer:
    """Encodes text to fixed-length ids with BOS/EOS/pad and an attention mask."""

    def __init__(self, model_proto: bytes, context_length: int):
        if context_length < 2:
            raise TokenizerError(f"context_length must be >= 2 (room for BOS and EOS), got {context_length}")
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self._model_proto = model_proto
        self.context_length = int(context_length)
        specials = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if specials != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise TokenizerError(f"tokenizer special ids (pad, unk, bos, eos) are {specials}; expected "
                                 f"{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}. Train it with train_tokenizer().")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = specials

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    # encoding ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """BOS + pieces + EOS, truncated to context_length: truncation drops pieces, never EOS."""
        pieces = self.sp.encode(normalize(_check_text(text)), out_type=int)
        return [self.bos_id] + pieces[: self.context_length - 2] + [self.eos_id]

    def __call__(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """One text or a batch -> {"input_ids", "attention_mask"}, both int64 [B, context_length]."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        ids = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), self.context_length), dtype=torch.long)
        for i, text in enumerate(texts):
            row = self.encode(_check_text(text, f"texts[{i}]"))
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to (normalized) text; special ids are dropped."""
        ids = [int(i) for i in ids]
        return self.sp.decode([i for i in ids if i not in (self.pad_id, self.bos_id, self.eos_id)])

    # files --------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """The portable description: enough for a Kotlin/Swift encoder to match encode() id for id."""
        pieces = []
        for i in range(self.vocab_size):
            kind = ("byte" if self.sp.is_byte(i) else "control" if self.sp.is_control(i)
                    else "unknown" if self.sp.is_unknown(i) else "unused" if self.sp.is_unused(i) else "normal")
            pieces.append({"piece": self.sp.id_to_piece(i), "score": self.sp.get_score(i), "type": kind})
        return {
            "format_version": TOKENIZER_FORMAT_VERSION,
            "model_type": "unigram",
            "context_length": self.context_length,
            "special_ids": {"pad": self.pad_id, "unk": self.unk_id, "bos": self.bos_id, "eos": self.eos_id},
            "normalization": NORMALIZATION,
            "lone_surrogates": LONE_SURROGATES,
            # How SentencePiece turns normalized text into pieces, for the ports: a "▁" is put before
            # the text and replaces every space; a character no piece covers becomes its UTF-8 bytes,
            # each the piece "<0xAB>"; segmentation is the maximum-score (Viterbi) path over pieces.
            "add_dummy_prefix": True,
            "whitespace_symbol": "\u2581",
            "byte_fallback": True,
            "truncation": "keep BOS, keep the first context_length-2 pieces, keep EOS; pad with pad id",
            "pieces": pieces,
        }

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / MODEL_FILE, self._model_proto)
        atomic_write_bytes(directory / JSON_FILE, json.dumps(self.to_json(), ensure_ascii=False, indent=1).encode())

    @classmethod
    def load(cls, directory: str | Path) -> "BilingualTokenizer":
        directory = Path(directory)
        model, meta = directory / MODEL_FILE, directory / JSON_FILE
        for f in (model, meta):
            if not f.is_file():
                raise TokenizerError(f"tokenizer file {str(f)!r} is missing; a tokenizer directory holds "
                                     f"{MODEL_FILE} and {JSON_FILE} (write them with BilingualTokenizer.save)")
        info = read_versioned_json(meta, TOKENIZER_FORMAT_VERSION, TokenizerError)
        if info.get("normalization") != NORMALIZATION:
            raise TokenizerError(f"{str(meta)!r} states normalization {info.get('normalization')!r}; "
                                 f"this dcclip-mobile implements {NORMALIZATION}")
        proto = model.read_bytes()
        if not proto:
            raise TokenizerError(f"tokenizer file {str(model)!r} is empty (0 bytes); copy the checkpoint or bundle "
                                 "again, or re-save the tokenizer")
        if type(info.get("context_length")) is not int:
            raise TokenizerError(f"{str(meta)!r} context_length must be an integer, got {info.get('context_length')!r}")
        try:
            tok = cls(proto, info["context_length"])
        except RuntimeError as e:
            raise TokenizerError(f"tokenizer file {str(model)!r} is not a SentencePiece model ("
                                 f"{str(e).strip().splitlines()[-1][:200] if str(e).strip() else 'no detail'})") from None
        if len(info.get("pieces", [])) != tok.vocab_size:
            raise TokenizerError(f"{str(meta)!r} lists {len(info.get('pieces', []))} pieces but "
                                 f"{MODEL_FILE} has {tok.vocab_size}: the two files do not belong together")
        return tok


# input lengths in tokens (BOS and EOS included, as the attention mask counts them), for reporting by length:
# class prompts sit in the first bucket, a phone's sentence queries in all of them
LENGTH_BUCKETS = ((1, 16), (17, 32), (33, 49), (50, 64))


def length_bucket(n_tokens: int) -> str:
    """'1-16', '17-32', '33-49', '50-64' (LENGTH_BUCKETS), or '65+' for a longer context."""
    for lo, hi in LENGTH_BUCKETS:
        if lo <= n_tokens <= hi:
            return f"{lo}-{hi}"
    return f"{LENGTH_BUCKETS[-1][1] + 1}+"


def piece_stats(tokenizer: BilingualTokenizer, texts: Iterable[str]) -> dict:
    """How efficiently `tokenizer` reads `texts` (untruncated, without BOS/EOS), on normalized text:
    pieces per non-space character (the figure for Chinese), pieces per whitespace-separated word (the figure
    for English), the share of pieces that are byte-fallback pieces (characters the vocabulary lacks, each
    UTF-8 byte one piece), and the share of texts longer than the context (context_length - 2 pieces)."""
    n = pieces = chars = words = byte_pieces = over = 0
    for text in texts:
        norm = normalize(_check_text(text))
        ids = tokenizer.sp.encode(norm, out_type=int)
        n += 1
        pieces += len(ids)
        chars += sum(1 for c in norm if not c.isspace())
        words += len(norm.split())
        byte_pieces += sum(1 for i in ids if tokenizer.sp.is_byte(i))
        over += len(ids) > tokenizer.context_length - 2
    return {"texts": n, "pieces": pieces, "chars": chars, "words": words, "byte_pieces": byte_pieces,
            "pieces_per_char": pieces / chars if chars else None, "pieces_per_word": pieces / words if words else None,
            "byte_fallback_share": byte_pieces / pieces if pieces else None,
            "over_context_share": over / n if n else None}


def train_tokenizer(texts: Iterable[str], vocab_size: int, context_length: int,
                    character_coverage: float = 0.9995) -> BilingualTokenizer:
    """Train a unigram SentencePiece model with byte fallback on an English + Chinese corpus.

    vocab_size is an upper bound: a small corpus gives fewer pieces (hard_vocab_limit off), so check
    `tokenizer.vocab_size` before sizing an embedding table. A vocabulary too small for the characters
    `character_coverage` asks for (Chinese has thousands) covers the most frequent characters that fit in half
    of its room instead; the others fall back to bytes.
    """
    corpus = [normalize(_check_text(t, "corpus text")) for t in texts]
    corpus = [t for t in corpus if t]
    if not corpus:
        raise TokenizerError("the tokenizer corpus is empty; give it English and Chinese sentences")
    if vocab_size < 260:
        raise TokenizerError(f"vocab_size must be >= 260 (256 byte pieces + 4 specials), got {vocab_size}")
    corpus = _characters_that_fit(corpus, character_coverage, (vocab_size - 260) // 2)
    model = _BytesSink()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, model_type="unigram",
        vocab_size=vocab_size, hard_vocab_limit=False, byte_fallback=True,
        character_coverage=character_coverage, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        num_threads=max(1, min(4, os.cpu_count() or 1)), minloglevel=2,
    )
    return BilingualTokenizer(model.data, context_length)


def _characters_that_fit(corpus: list[str], coverage: float, room: int) -> list[str]:
    """The corpus as is when the characters `coverage` needs number at most `room`; else with every character
    but the `room` most frequent ones deleted (SentencePiece makes each covered character a piece and takes no
    coverage under 0.98): those become byte pieces when encoding."""
    from collections import Counter

    counts = Counter(c for t in corpus for c in t if not c.isspace())
    total = sum(counts.values())
    ranked = counts.most_common()
    covered = needed = 0
    for _, n in ranked:
        if covered >= coverage * total:
            break
        covered, needed = covered + n, needed + 1
    if needed <= room:
        return corpus
    keep = {c for c, _ in ranked[:max(room, 1)]}
    out = ["".join(c for c in t if c in keep or c.isspace()) for t in corpus]
    return [t for t in out if t.strip()]


class _BytesSink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, b: bytes) -> None:
        self.data += b
