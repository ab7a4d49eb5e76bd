import json

import pytest
import torch

from dcclip_mobile.tokenizer import (BOS_ID, EOS_ID, PAD_ID, BilingualTokenizer, TokenizerError, normalize,
                                     train_tokenizer)

ROUND_TRIP = [
    "a photo of a sneaker.",                 # English
    "一张运动鞋的照片。",                      # Chinese
    "mixed 中英文 text, 混合的句子.",           # mixed scripts
    "a cat 😀 with emoji 🐱",                 # emoji: not in the vocab, must come back through byte fallback
    "全角标点：（你好）！“引号”",                 # full-width punctuation
    "",                                      # empty
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ　１２３",          # full-width letters, digits and ideographic space
    "unseen 字符 龘 and ümlauts",              # characters the corpus never had
]


@pytest.fixture(scope="module")
def roomy_tokenizer(sample_texts):
    """A long context, so round trips are not cut by truncation."""
    return train_tokenizer(sample_texts * 8, vocab_size=1000, context_length=128)


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip_is_the_normalized_text(roomy_tokenizer, text):
    ids = roomy_tokenizer.encode(text)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert roomy_tokenizer.unk_id not in ids, "byte fallback must leave no <unk>"
    assert roomy_tokenizer.decode(ids) == normalize(text)


def test_normalization_rule():
    assert normalize("  Hello\t\nWORLD  ") == "hello world"
    assert normalize("你好，世界！") == "你好,世界!"     # full-width comma and bang become ASCII (NFKC)
    assert normalize("ＡＢＣ") == "abc"
    assert normalize("。") == "。"                   # the ideographic full stop has no compatibility form


def test_emoji_becomes_byte_pieces(roomy_tokenizer):
    ids = roomy_tokenizer.encode("😀")
    # "▁" + the 4 UTF-8 bytes of U+1F600, each a byte piece "<0x..>"
    pieces = [roomy_tokenizer.sp.id_to_piece(i) for i in ids[1:-1]]
    assert [p for p in pieces if p.startswith("<0x")] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]


def test_fixed_length_and_mask(tiny_tokenizer):
    out = tiny_tokenizer(["a photo of a bag.", "一张包的照片。", ""])
    L = tiny_tokenizer.context_length
    assert out["input_ids"].shape == (3, L) and out["attention_mask"].shape == (3, L)
    assert out["input_ids"].dtype == torch.long and out["attention_mask"].dtype == torch.long
    for row, mask in zip(out["input_ids"], out["attention_mask"]):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
        assert row[0] == BOS_ID and row[n - 1] == EOS_ID and (row[n:] == PAD_ID).all()
    assert out["attention_mask"][2].sum() == 2  # empty text: BOS + EOS


def test_truncation_keeps_eos_and_prefix(tiny_tokenizer):
    L = tiny_tokenizer.context_length
    long_text = "a photo of a sneaker and a bag and a coat " * 50 + "一张照片" * 100
    ids = tiny_tokenizer.encode(long_text)
    assert len(ids) == L and ids[-1] == EOS_ID and ids[0] == BOS_ID
    full = tiny_tokenizer.sp.encode(normalize(long_text))
    assert ids[1:-1] == full[: L - 2]
    batch = tiny_tokenizer([long_text])
    assert batch["attention_mask"].sum() == L and batch["input_ids"][0, -1] == EOS_ID


def test_batch_equals_single(tiny_tokenizer):
    texts = ["a photo of a coat.", "一张外套的照片。"]
    batch = tiny_tokenizer(texts)
    for i, t in enumerate(texts):
        single = tiny_tokenizer(t)
        assert torch.equal(batch["input_ids"][i], single["input_ids"][0])


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["ok", 5]])
def test_non_string_text_is_a_clear_error(tiny_tokenizer, bad):
    with pytest.raises(TypeError, match="str"):
        if isinstance(bad, list):
            tiny_tokenizer(bad)
        else:
            tiny_tokenizer.encode(bad)


def test_save_load_and_portable_json(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save(tmp_path)
    again = BilingualTokenizer.load(tmp_path)
    for t in ROUND_TRIP:
        assert again.encode(t) == tiny_tokenizer.encode(t)
    info = json.loads((tmp_path / "tokenizer.json").read_text())
    assert info["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert info["context_length"] == tiny_tokenizer.context_length
    assert info["normalization"]["unicode"] == "NFKC"
    assert len(info["pieces"]) == tiny_tokenizer.vocab_size
    assert sum(p["type"] == "byte" for p in info["pieces"]) == 256
    assert info["pieces"][4] == {"piece": "<0x00>", "score": 0.0, "type": "byte"}
    normal = [p for p in info["pieces"] if p["type"] == "normal"]
    assert normal and all(isinstance(p["score"], float) for p in normal)


def test_load_refuses_missing_and_mismatched_files(tiny_tokenizer, tmp_path):
    with pytest.raises(TokenizerError, match="tokenizer.model"):
        BilingualTokenizer.load(tmp_path)
    tiny_tokenizer.save(tmp_path)
    info = json.loads((tmp_path / "tokenizer.json").read_text())
    info["pieces"] = info["pieces"][:-1]
    (tmp_path / "tokenizer.json").write_text(json.dumps(info))
    with pytest.raises(TokenizerError, match="do not belong together"):
        BilingualTokenizer.load(tmp_path)


def test_training_rejects_bad_input():
    with pytest.raises(TokenizerError, match="empty"):
        train_tokenizer(["", "   "], vocab_size=500, context_length=8)
    with pytest.raises(TokenizerError, match="vocab_size"):
        train_tokenizer(["hello"], vocab_size=100, context_length=8)


def test_piece_stats_counts_pieces_characters_words_and_byte_fallback(roomy_tokenizer):
    from dcclip_mobile.tokenizer import piece_stats

    emoji = piece_stats(roomy_tokenizer, ["😀😀"])  # two characters the vocabulary lacks: 8 byte pieces
    assert emoji["chars"] == 2 and emoji["words"] == 1 and emoji["byte_pieces"] == 8
    assert emoji["pieces_per_char"] == emoji["pieces"] / 2 and emoji["byte_fallback_share"] == 8 / emoji["pieces"]
    known = piece_stats(roomy_tokenizer, ["a photo of a sneaker.", "一张运动鞋的照片。"])
    assert known["texts"] == 2 and known["byte_pieces"] == 0 and known["words"] == 5 + 1
    assert known["chars"] == len("aphotoofasneaker.") + len("一张运动鞋的照片。")
    assert known["over_context_share"] == 0.0
    assert piece_stats(roomy_tokenizer, ["a photo " * 200])["over_context_share"] == 1.0


def test_length_buckets():
    from dcclip_mobile.tokenizer import length_bucket

    assert [length_bucket(n) for n in (1, 16, 17, 32, 33, 49, 50, 64, 65)] == [
        "1-16", "1-16", "17-32", "17-32", "33-49", "33-49", "50-64", "50-64", "65+"]


def test_a_vocabulary_smaller_than_the_characters_keeps_the_frequent_ones():
    """3,000 distinct Han characters and room for 370: training must not fail (SentencePiece takes no
    character coverage under 0.98); the frequent characters become pieces, the rare ones bytes."""
    rare = "".join(chr(0x4E00 + 500 + i) for i in range(3000))
    texts = ["猫狗鸟鱼马牛羊" * 3 + " a cat and a dog"] * 200 + [rare[i:i + 30] for i in range(0, 3000, 30)]
    tok = train_tokenizer(texts, vocab_size=1000, context_length=64)
    assert tok.vocab_size <= 1000
    pieces = [tok.sp.id_to_piece(i) for i in tok.encode("猫狗")[1:-1]]
    assert not any(p.startswith("<0x") for p in pieces)
    assert all(tok.sp.is_byte(i) for i in tok.encode(rare[2500])[2:-1])  # after the "▁" piece
