"""Make the test vectors both apps' non-UI code is checked against (the Android core's JUnit tests through
android_demo/run_jvm_tests.sh, the Swift core's XCTests), with the real Python code.

    python -m lowering.golden [--out android_demo/build/golden] [--bundle DIR] [--ios]

Without --bundle: trains a tiny bilingual tokenizer on a fixed corpus, builds a tiny student (seed 0),
saves it with `save_student`, and exports an Android bundle with the real `python -m lowering.export`
(fp32, no latency) into OUT/bundles/android (without Debian's Fashion-MNIST, whose images the CLI uses for
parity, the same exporter is called as a library, `export_bundles`, with synthetic parity images). With --bundle: uses that exported bundle as it is.

Then writes OUT/cases.json, vectors golden.json does not carry, each computed by the project's own code on
the bundle's own files:
  tokenizer   many strings (English, Chinese, mixed, emoji, full-width, whitespace kinds, scripts, digits,
              over-long, random mixes) with BilingualTokenizer.load(bundle): normalize(), the untruncated
              SentencePiece pieces, encode() and the padded input_ids / attention_mask
              and the same for a larger vocabulary trained here (OUT/stress/tokenizer.json)
  tokenizer_corpus  held-apart sentences of the bilingual corpus (dcclip_mobile/data/corpus.py) of every length,
              many over the 64-token context, and sentences holding each script the corpus has, encoded by a
              tokenizer trained on that corpus the way stage 1 trains it (OUT/corpus/tokenizer.json); these
              long texts are also in the bundle's and the stress tokenizer's cases
  preprocess  synthetic RGB and RGBA PNGs of many sizes (up- and down-sampling, non-square, already at
              size) through dcclip_mobile.data.preprocess: sha256 of the float32 tensor, sum, first values
  alpha       RGBA pixels composited on white by Pillow (preprocess.to_rgb)
  scoring     golden image embeddings against class_embeddings.json: logits, softmax, top-5 (torch)
Everything goes under OUT (a gitignored build directory), never into git.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

from dcclip_mobile import bundle_manifest as bm
from dcclip_mobile.checkpoint import save_student
from dcclip_mobile.config import load_preset
from dcclip_mobile.data.fashion_mnist import fashion_mnist_present
from dcclip_mobile.data.preprocess import ImagePreprocess, preprocess_image, to_rgb
from dcclip_mobile.errors import run_main
from dcclip_mobile.models import DCCLIPStudent
from dcclip_mobile.tokenizer import BilingualTokenizer, normalize, train_tokenizer

CORPUS = [
    "a photo of a t-shirt.", "a photo of a trouser.", "a photo of a pullover.", "a photo of a dress.",
    "a photo of a coat.", "a photo of a sandal.", "a photo of a shirt.", "a photo of a sneaker.",
    "a photo of a bag.", "a photo of an ankle boot.", "a blurry photo of the dog.", "a good photo of a cat.",
    "a person walking a dog in the park", "two cats sleeping on a sofa", "a red car parked by the road.",
    "the quick brown fox jumps over the lazy dog", "there are 3 apples and 12 oranges on the table in 2024",
    "一张T恤的照片。", "一张裤子的照片。", "一张套头衫的照片。", "一张连衣裙的照片。", "一张外套的照片。",
    "一张凉鞋的照片。", "一张衬衫的照片。", "一张运动鞋的照片。", "一张包的照片。", "一张短靴的照片。",
    "一张模糊的狗的照片。", "一张好看的猫的照片，很可爱！", "公园里遛狗的人", "沙发上睡觉的两只猫",
    "一辆红色的汽车停在路边。", "mixed 中英文 text, 混合的句子.", "今天是2024年5月1日，天气很好。",
]

TEXTS = [
    # English, Chinese, mixed
    "a photo of a t-shirt.", "A Photo Of An ANKLE BOOT!", "two cats sleeping on a sofa",
    "一张T恤的照片。", "一辆红色的汽车停在路边。", "公园里遛狗的人", "mixed 中英文 caption",
    "iPhone 15 Pro 的照片", "我爱dogs和cats", "shirt衬衫shirt",
    # digits (split_digits at training)
    "1234567890", "room 101, floor 7", "3.14159", "2024年5月1日",
    # emoji: plain, ZWJ sequence, flags, skin tone, variation selector, keycap
    "🐶", "a dog 🐶 and a cat 🐱", "👨\u200d👩\u200d👧 family", "🇨🇳🇺🇸", "👍🏽 ok", "❤️ love", "1️⃣", "狗🐶猫🐱",
    # full-width and CJK punctuation (NFKC folds the full-width forms)
    "ＡＢＣ　１２３", "（你好），世界！？", "“引号”、《书名》【括号】", "ｔ－ｓｈｉｒｔ", "ｶﾀｶﾅ ﾃｽﾄ",
    # whitespace of every kind Python's \s knows, leading/trailing, runs
    "  leading and trailing  ", "tab\tnew\nline\r\nvt\x0bff\x0c", "a\u3000b\xa0c\u2009d\u202fe\u205ff",
    "x\x1cy\x1dz\x1ew\x1fv", "nel\x85ls\u2028ps\u2029ogham\u1680end", "", "   ", "\t\n",
    # NFKC and case edge cases
    "ﬁne ﬂour", "①②③ ⑴", "x² H₂O ½", "café", "cafe\u0301", "STRASSE Straße", "İstanbul", "ΟΔΥΣΣΕΥΣ ΣΑΣ",
    "xΣ8l", "Σ", "aΣ", "aΣ'b", "aΣ.", "ΑΣ\u0301Α", "ΑΣ\u0301", "1Σ", "ᾼΣ", "ǅΣ",
    "Ⅻ ㎏ ℃ №", "ǅ ǈ", "ｈｅｌｌｏ　ＷＯＲＬＤ",
    # other scripts: byte fallback for characters the vocabulary lacks
    "안녕하세요", "こんにちは カタカナ", "Привет мир", "مرحبا", "नमस्ते", "ᚠᛇᚻ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠀀𠀁 rare han",
    # the whitespace symbol itself, angle brackets that look like byte pieces, specials' spellings
    "▁", "a▁b ▁", "<0x41> <s> </s> <pad> <unk>", "\x00nul", "\u200b zero width \ufeff",
    # over-long (truncated to context_length, EOS kept)
    "a photo of a t-shirt " * 40, "一张T恤的照片" * 40, ("mixed 中英文 🐶 " * 30).strip(),
    "supercalifragilisticexpialidocious " * 10,
]

POOL = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?-'\"()") +
        list("的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会") +
        list("，。！？、；：「」『』（）ＡＢＣａｂｃ１２３　") + ["🐶", "🐱", "👍🏽", "❤️", "🇨🇳", "\t", "\n", "\u3000"] +
        list("éüñçßΣσςЖжйאב한글ひらカタ"))


def random_texts(n: int, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def make_checkpoint(directory: Path) -> Path:
    cfg = load_preset("tiny")
    tok = train_tokenizer(CORPUS * 8, vocab_size=cfg.text.vocab_size, context_length=cfg.text.context_length)
    torch.manual_seed(0)
    cfg.text.vocab_size = tok.vocab_size
    model = DCCLIPStudent(cfg)
    # an untrained student's BatchNorm statistics make image embeddings vanish; estimate them once
    model.train()
    with torch.no_grad():
        model.image(torch.rand(8, 3, cfg.image.image_size, cfg.image.image_size) * 4 - 2)
    return save_student(model.eval(), tok, directory / "checkpoint")


def export_bundle(checkpoint: Path, out: Path, target: str = "android") -> Path:
    precision = {"android": "fp32", "ios": "fp16"}[target]
    if not fashion_mnist_present():
        # the CLI's parity images are Fashion-MNIST's; without the Debian package, the same exporter as a library
        from dcclip_mobile.checkpoint import load_student

        from .export import export_bundles
        from .inputs import CALIBRATION_TEMPLATES, FASHION_LABELS_EN, FASHION_LABELS_ZH, EvalSet
        from .scoring import fill

        print("note: Fashion-MNIST is not installed; exporting with synthetic parity images", flush=True)
        labels = {"en": FASHION_LABELS_EN, "zh": FASHION_LABELS_ZH}
        texts = [(lang, fill(CALIBRATION_TEMPLATES[lang][0], labels[lang][i])) for i in range(4) for lang in ("en", "zh")]
        images = [synthetic_image(28, 28, 100 + i, False) for i in range(8)]
        model, tok = load_student(checkpoint)
        export_bundles(model, tok, [target], out, {target: [precision]}, EvalSet(images[:4], images[4:], labels, texts),
                       checkpoint=checkpoint, measure_latency=False)
        return out / target
    cmd = [sys.executable, "-m", "lowering.export", "--target", target, "--checkpoint", str(checkpoint),
           "--precision", precision, "--out", str(out), "--no-latency", "--eval-images", "4"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    return out / target


def checksum(x: torch.Tensor) -> dict:
    x = x.detach().to(torch.float32).contiguous()
    return {"shape": list(x.shape), "sha256": hashlib.sha256(x.numpy().astype("<f4").tobytes()).hexdigest(),
            "sum": float(x.sum()), "first": [float(v) for v in x.flatten()[:8]]}


def _utf16(*parts: str | int) -> list[int]:
    """UTF-16 code units: strings as they encode, ints as single (surrogate) units."""
    out: list[int] = []
    for part in parts:
        if isinstance(part, int):
            out.append(part)
        else:
            data = part.encode("utf-16-le")
            out += [int.from_bytes(data[k:k + 2], "little") for k in range(0, len(data), 2)]
    return out


# Lone surrogates (text that is not valid Unicode, e.g. a JSON "\\ud800"), as UTF-16 code units so that no JSON
# parser has to hold them in a string: the tokenizer's one rule (each becomes U+FFFD before normalization).
SURROGATE_TEXTS = [_utf16("a", 0xD800, "b"), _utf16(0xDFFF), _utf16("x", 0xD800, 0xD800, "y"), _utf16("end ", 0xD83D),
                   _utf16(0xDE00, " start"), _utf16("ok ", 0xD83D, 0xDE00, " pair"), _utf16("一张", 0xDC00, "照片"),
                   _utf16(0xDBFF, 0xDBFF, 0xDFFF)]


def surrogate_cases(tok: BilingualTokenizer) -> list[dict]:
    out = []
    for units in SURROGATE_TEXTS:
        # surrogatepass: a valid high+low pair decodes to one character, a lone surrogate stays one code point
        text = b"".join(u.to_bytes(2, "little") for u in units).decode("utf-16-le", "surrogatepass")
        enc = tok([text])
        out.append({"utf16": units, "normalized": normalize(text), "ids": tok.encode(text),
                    "input_ids": enc["input_ids"][0].tolist(), "attention_mask": enc["attention_mask"][0].tolist()})
    return out


def corpus_texts(per_lang: int = 120, per_script: int = 3) -> list[str]:
    """Held-apart corpus texts of every length up to past the 64-token context, both languages, then up to
    per_script sentences holding each script the corpus has (by the first word of a character's Unicode name:
    CJK, LATIN, FULLWIDTH, DIGIT, GREEK, ...). Without the corpus assets: lowering's built-in long texts."""
    from dcclip_mobile.data import corpus

    from .inputs import BUILTIN_LONG_TEXTS

    if not corpus.corpus_present():
        print("note: the corpus assets are not fetched; the long cases are the built-in texts", flush=True)
        return [t[:n] for _, t in BUILTIN_LONG_TEXTS for n in range(3, len(t) + 3, 3)]
    texts = [t for lang in corpus.LANGS for t in corpus.length_mix(lang, per_lang, seed=5, context_length=90,
                                                                     split="heldout")]
    seen: dict[str, int] = {}
    names: dict[str, str] = {}
    for lang in corpus.LANGS:
        for sent in corpus.sentences(lang, "heldout") + corpus.sentences(lang, "train"):
            scripts = set()
            for c in set(sent):
                if c not in names:
                    names[c] = _script(c)
                scripts.add(names[c])
            scripts.discard("SPACE")
            new = [sc for sc in scripts if seen.get(sc, 0) < per_script]
            if new:
                texts.append(sent)
                for sc in scripts:
                    seen[sc] = seen.get(sc, 0) + 1
    return texts


def _script(c: str) -> str:
    import unicodedata

    return unicodedata.name(c, f"U+{ord(c):04X}").split(" ")[0]


def corpus_tokenizer(out: Path, texts: list[str]) -> BilingualTokenizer:
    """A tokenizer trained on the registry corpus the way train.distill trains one (a sample, so it takes
    seconds), context 64; without the corpus assets, on the long texts themselves."""
    from dcclip_mobile.data import corpus

    train = corpus.tokenizer_texts(8000, max_sentences_per_lang=10000, top_words=4000) \
        if corpus.corpus_present() else texts * 4 + CORPUS * 4
    tok = train_tokenizer(train + CORPUS * 4, vocab_size=8000, context_length=64)
    tok.save(out / "corpus")
    return tok


def stress_tokenizer(out: Path) -> BilingualTokenizer:
    """A second, larger vocabulary (many competing multi-character pieces) to exercise the segmentation."""
    tok = train_tokenizer(CORPUS * 4 + TEXTS + random_texts(3000, seed=99), vocab_size=3000, context_length=32)
    tok.save(out / "stress")
    return tok


def tokenizer_cases(tok: BilingualTokenizer, n_random: int = 200, extra: list[str] = ()) -> list[dict]:
    out = []
    for text in TEXTS + random_texts(n_random) + list(extra):
        enc = tok([text])
        out.append({"text": text, "normalized": normalize(text), "pieces": tok.sp.encode(normalize(text), out_type=int),
                    "ids": tok.encode(text),
                    "input_ids": enc["input_ids"][0].tolist(), "attention_mask": enc["attention_mask"][0].tolist()})
    return out


def synthetic_image(w: int, h: int, seed: int, alpha: bool) -> Image.Image:
    """Smooth gradients plus noise and hard edges: what makes resamplers disagree if they are not exact."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([xx / max(w - 1, 1) * 255, yy / max(h - 1, 1) * 255, (xx + yy) % 32 * 8], -1)
    img = np.clip(base + rng.normal(0, 40, base.shape), 0, 255)
    img[h // 3: h // 2, w // 4: w // 2] = [255, 0, 0]
    arr = img.round().astype(np.uint8)
    if alpha:
        a = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
        a[: h // 4] = 255
        a[-h // 4:] = 0
        return Image.fromarray(np.concatenate([arr, a], -1), "RGBA")
    return Image.fromarray(arr, "RGB")


def preprocess_cases(pre: ImagePreprocess, out: Path) -> list[dict]:
    s = pre.size
    sizes = [(28, 28, False), (s, s, False), (s + 1, s, False), (3 * s + 7, 2 * s + 1, False), (s // 2 + 3, 2 * s, False),
             (17, 5, False), (1, 1, False), (4 * s, 4 * s, False), (2 * s + 5, s + 2, True), (s, s, True),
             (s - 1, 3 * s, False)]
    (out / "images").mkdir(parents=True, exist_ok=True)
    cases = []
    for i, (w, h, alpha) in enumerate(sizes):
        img = synthetic_image(w, h, i, alpha)
        rel = f"images/{i}_{w}x{h}{'_rgba' if alpha else ''}.png"
        img.save(out / rel, format="PNG")
        cases.append({"file": rel, "width": w, "height": h, "alpha": alpha,
                      "preprocessed": checksum(preprocess_image(img, pre))})
    return cases


def alpha_cases() -> dict:
    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, (1, 512, 4), dtype=np.uint8)
    rgba[0, :256, 3] = np.arange(256)  # every alpha value once
    rgb = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    return {"rgba": rgba.reshape(-1).tolist(), "rgb": rgb.reshape(-1).tolist()}


def scoring_cases(bundle: Path, manifest: dict, golden: dict) -> list[dict]:
    entry = manifest.get("class_embeddings")
    if not entry:
        return []
    classes = json.loads((bundle / entry["file"]).read_text())
    cases = []
    for lang in ("en", "zh"):
        protos = torch.tensor(classes[f"embeddings_{lang}"], dtype=torch.float32)
        for img in golden["images"]:
            emb = torch.tensor(img["embedding"], dtype=torch.float32)
            cos = torch.nn.functional.normalize(emb, dim=-1) @ torch.nn.functional.normalize(protos, dim=-1).T
            logits = manifest["logit_scale"] * cos
            probs = logits.softmax(-1)
            top = probs.topk(min(5, len(probs)))
            cases.append({"language": lang, "image": img["file"], "embedding": img["embedding"],
                          "logits": logits.tolist(), "probs": probs.tolist(), "top5": top.indices.tolist(),
                          "top5_labels": [classes[f"labels_{lang}"][i] for i in top.indices.tolist()]})
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "android_demo" / "build" / "golden"))
    ap.add_argument("--bundle", default=None, help="an exported bundle directory to use instead of making one")
    ap.add_argument("--ios", action="store_true",
                    help="also export the same checkpoint for iOS (Core ML, fp16) into OUT/bundles/ios and name it in "
                         "bundle_path_ios.txt: the Swift tests then read that bundle (same tokenizer, golden and labels)")
    return run_main(ap, _run, argv)


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.bundle:
        bundle = Path(args.bundle).resolve()
    else:
        checkpoint = make_checkpoint(out)
        bundle = export_bundle(checkpoint, out / "bundles")
        if args.ios:
            ios = export_bundle(checkpoint, out / "bundles", "ios")
            (out / "bundle_path_ios.txt").write_text(str(ios.resolve()) + "\n")
    manifest = bm.load_manifest(bundle)
    problems = bm.verify_files(bundle, manifest)
    if problems:
        raise bm.BundleError(f"bundle {bundle} does not match its manifest: {'; '.join(problems[:5])}")
    golden = bm.load_golden(bundle)
    tok = BilingualTokenizer.load(bundle)
    p = manifest["image"]["preprocess"]
    pre = ImagePreprocess.from_dict(p)
    long_texts = corpus_texts()
    cases = {"format_version": 1, "bundle": str(bundle), "context_length": tok.context_length,
             "tokenizer": tokenizer_cases(tok, extra=long_texts),
             "tokenizer_stress": tokenizer_cases(stress_tokenizer(out), 400, extra=long_texts),
             "tokenizer_corpus": tokenizer_cases(corpus_tokenizer(out, long_texts), 0, extra=long_texts),
             "tokenizer_surrogates": surrogate_cases(tok),
             "preprocess": preprocess_cases(pre, out), "alpha": alpha_cases(),
             "scoring": scoring_cases(bundle, manifest, golden)}
    (out / "cases.json").write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n")
    (out / "bundle_path.txt").write_text(str(bundle) + "\n")
    print(f"golden: bundle {bundle}; {len(cases['tokenizer'])} texts, {len(cases['preprocess'])} images, "
          f"{len(cases['scoring'])} scoring cases -> {out / 'cases.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
