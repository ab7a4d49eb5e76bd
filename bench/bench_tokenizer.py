"""The phone's text side, measured: tokenizer efficiency by vocabulary size, and the text student against the
teacher by input length.

    python bench/bench_tokenizer.py sizes [--sizes 4000,8000,16000] [--json out.json]
    python bench/bench_tokenizer.py cosine --checkpoint runs/demo/stage1/checkpoint [--json out.json]

sizes: trains the bilingual tokenizer the way stage 1 does (train.distill: the registry corpus of
dcclip_mobile/data/corpus.py plus stage 1's prompts) at each vocabulary bound, and the old one (prompts only,
bound 8000) as "before"; on the corpus's held-apart sentences (documents no tokenizer was trained on) it
reports pieces per Chinese character and per English word, the byte-fallback share, the share of texts over the
64-token context, and the embedding table's size (fp32 and int8 per row) at the preset's text width.
cosine: the student's text embedding against the offline teacher's on held-apart texts of every length
(corpus.length_mix on the heldout split) and on class prompts, by language and length bucket.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dcclip_mobile.config import load_preset  # noqa: E402
from dcclip_mobile.data import corpus  # noqa: E402
from dcclip_mobile.data.labels import bilingual_corpus  # noqa: E402
from dcclip_mobile.tokenizer import length_bucket, piece_stats, train_tokenizer  # noqa: E402

MAX_EVAL = 3000  # held-apart sentences per language


def eval_sets() -> dict[str, list[str]]:
    out = {}
    for lang in corpus.LANGS:
        s = corpus.sentences(lang, "heldout")
        step = max(1, len(s) // MAX_EVAL)
        out[lang] = s[::step][:MAX_EVAL]
    # the phone's class-prompt queries, for comparison
    prompts = bilingual_corpus(2000, seed=123)
    for lang in corpus.LANGS:
        out[f"{lang}-prompts"] = [t for t, lg in prompts if lg == lang]
    return out


def row(name: str, tok, sets: dict, width: int, seconds: float | None = None) -> dict:
    r = {"tokenizer": name, "vocab": tok.vocab_size,
         "embedding_mb_fp32": tok.vocab_size * width * 4 / 1e6,
         "embedding_mb_int8": tok.vocab_size * (width + 4) / 1e6}  # int8 per row + an fp32 scale per row
    for key, texts in sets.items():
        r[key] = piece_stats(tok, texts)
    if seconds is not None:
        r["train_s"] = round(seconds, 1)
    return r


def markdown(rows: list[dict]) -> str:
    head = ("| tokenizer | pieces | ZH pieces/char | ZH byte-fallback | ZH over 64 | EN pieces/word | EN byte-fallback "
            "| EN over 64 | prompts EN / ZH pieces per word / char | embedding MB fp32 / int8 |\n" + "|---" * 10 + "|")
    lines = [head]
    for r in rows:
        zh, en = r["zh"], r["en"]
        lines.append(f"| {r['tokenizer']} | {r['vocab']} | {zh['pieces_per_char']:.3f} | {100 * zh['byte_fallback_share']:.2f}% "
                     f"| {100 * zh['over_context_share']:.1f}% | {en['pieces_per_word']:.3f} | "
                     f"{100 * en['byte_fallback_share']:.2f}% | {100 * en['over_context_share']:.1f}% | "
                     f"{r['en-prompts']['pieces_per_word']:.2f} / {r['zh-prompts']['pieces_per_char']:.2f} | "
                     f"{r['embedding_mb_fp32']:.1f} / {r['embedding_mb_int8']:.1f} |")
    return "\n".join(lines)


def sizes(args) -> dict:
    torch.set_num_threads(1)
    cfg = load_preset(args.preset)
    width, context = cfg.text.width, cfg.text.context_length
    sets = eval_sets()
    print({k: len(v) for k, v in sets.items()}, flush=True)
    prompts = [t for t, _ in bilingual_corpus(8000, seed=0)]
    rows = []
    t = time.perf_counter()
    rows.append(row("before: prompts only, bound 8000", train_tokenizer(prompts, 8000, context), sets, width,
                    time.perf_counter() - t))
    print(markdown(rows), flush=True)
    for v in [int(x) for x in args.sizes.split(",")]:
        t = time.perf_counter()
        tok = train_tokenizer(prompts + corpus.tokenizer_texts(v), v, context)
        rows.append(row(f"corpus + prompts, bound {v}", tok, sets, width, time.perf_counter() - t))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    table = markdown(rows)
    print(table)
    return {"preset": args.preset, "eval_texts": {k: len(v) for k, v in sets.items()}, "rows": rows, "markdown": table}


@torch.no_grad()
def cosine(args) -> dict:
    """Student vs teacher text embedding cosine, by language and length bucket."""
    from dcclip_mobile.checkpoint import load_student
    from dcclip_mobile.teachers import build_teacher

    torch.set_num_threads(1)
    model, tok = load_student(args.checkpoint)
    model.eval()
    teacher = build_teacher("offline")
    texts = []
    for lang in corpus.LANGS:
        mix = corpus.length_mix(lang, args.per_lang, seed=7, context_length=tok.context_length, split="heldout")
        mix = corpus.fit_to_context(mix, lambda t: len(tok.sp.encode(_norm(t))), tok.context_length - 2)
        texts += [(lang, t) for t in mix]
    for t, lang in bilingual_corpus(args.per_lang // 2, seed=321):
        texts.append((f"{lang}-prompt", t))
    out: dict = {}
    for i in range(0, len(texts), 64):
        chunk = texts[i:i + 64]
        enc = tok([t for _, t in chunk])
        s = torch.nn.functional.normalize(model.encode_text(enc["input_ids"], enc["attention_mask"]).float(), dim=-1)
        te = torch.nn.functional.normalize(teacher.encode_text([t for _, t in chunk]).embedding.float().cpu(), dim=-1)
        cos = (s * te).sum(-1)
        for (lang, _), n, c in zip(chunk, enc["attention_mask"].sum(-1).tolist(), cos.tolist()):
            key = lang if lang.endswith("prompt") else f"{lang} {length_bucket(n)}"
            out.setdefault(key, []).append(c)
    table = {k: {"n": len(v), "mean_cosine": sum(v) / len(v), "min_cosine": min(v)} for k, v in sorted(out.items())}
    lines = ["| texts | n | mean cosine to teacher | min |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['n']} | {v['mean_cosine']:.3f} | {v['min_cosine']:.3f} |" for k, v in table.items()]
    print("\n".join(lines))
    return {"checkpoint": str(args.checkpoint), "buckets": table, "markdown": "\n".join(lines)}


def _norm(t: str) -> str:
    from dcclip_mobile.tokenizer import normalize

    return normalize(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("sizes")
    a.add_argument("--sizes", default="4000,8000,12000,16000,24000")
    a.add_argument("--preset", default="small-lite")
    a.add_argument("--json")
    b = sub.add_parser("cosine")
    b.add_argument("--checkpoint", required=True)
    b.add_argument("--per-lang", type=int, default=400)
    b.add_argument("--json")
    args = ap.parse_args(argv)
    result = sizes(args) if args.command == "sizes" else cosine(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
