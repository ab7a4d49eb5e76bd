"""Real inputs for calibration and parity: eval images, English and Chinese texts, a label set.

Calibration and parity use disjoint images and differently worded prompts, so the gate does not
measure a quantizer on the very inputs it was calibrated on. Texts cover the lengths a phone sends: besides
the class prompts (a few tokens), held-apart sentences of the bilingual corpus (dcclip_mobile/data/corpus.py,
documents no stage trained on) fill every length bucket up to the context in both languages, LENGTH_PARITY
per bucket for the gate and LENGTH_CALIBRATION others for static int8's activation ranges (`length_texts`). The images come from Fashion-MNIST's test
split by default (`default_eval_set`) or from any image source the training runners' --images accepts
(`eval_set_from_source`: Fashion-MNIST, an ELEVATER folder, a pairs file).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from dcclip_mobile.config import StudentConfig
from dcclip_mobile.data import corpus
from dcclip_mobile.data.fashion_mnist import CLASSES_EN, CLASSES_ZH, DatasetMissingError, FashionMNIST
from dcclip_mobile.data.preprocess import ImageLoadError, ImagePreprocess, preprocess_image
from dcclip_mobile.errors import DCClipError
from dcclip_mobile.tokenizer import LENGTH_BUCKETS, BilingualTokenizer, length_bucket, normalize

from .scoring import BUNDLE_TEMPLATES, LANGS, check_templates, fill, prompts

FASHION_LABELS_EN, FASHION_LABELS_ZH = list(CLASSES_EN), list(CLASSES_ZH)
TEMPLATES = BUNDLE_TEMPLATES  # what a bundle's class embeddings are built with unless an EvalSet says otherwise
CALIBRATION_TEMPLATES = {"en": ["a blurry photo of a {c}.", "a close-up photo of the {c}.", "a {c} on a white background."],
                         "zh": ["一张模糊的{c}的照片。", "{c}的特写照片。", "白色背景上的{c}。"]}
EXTRA_TEXTS = [("en", "a person walking a dog in the park"), ("zh", "公园里遛狗的人"),
               ("en", "two cats sleeping on a sofa"), ("zh", "沙发上睡觉的两只猫"),
               ("en", "mixed 中英文 caption"), ("zh", "一辆红色的汽车停在路边。")]


LENGTH_PARITY = 16       # held-apart texts per language and length bucket in the parity gate
LENGTH_CALIBRATION = 8   # and, other ones, in static int8's calibration
LENGTH_POOL = 400        # texts drawn per language to fill the buckets from
# without the corpus assets (a machine that has not run setup.sh): long texts to cut to every length
BUILTIN_LONG_TEXTS = [
    ("en", "A young woman in a red raincoat walks her two small dogs along the wet cobblestone street of an old "
           "harbour town early on a grey autumn morning, while fishing boats rock gently at the pier behind her."),
    ("en", "My grandmother's kitchen always smelled of fresh bread and cinnamon, and on Sunday afternoons the whole "
           "family would gather around the long wooden table by the window to eat, talk and play cards until dark."),
    ("en", "The photo shows a crowded night market with colourful lanterns hanging above the stalls, people queuing "
           "for grilled skewers and noodles, and a street musician playing the violin next to a fruit stand."),
    ("en", "After the storm had passed, the children ran out into the garden to look for snails on the stone wall, "
           "splashing through the puddles in their rubber boots and laughing at the dripping leaves of the trees."),
    ("zh", "清晨的公园里，几位老人正在湖边打太极拳，旁边的小孩子拿着彩色的风筝奔跑，远处的柳树在微风中轻轻摇摆，阳光透过树叶洒在石板路上，"
           "整个画面显得安静又温暖。"),
    ("zh", "我们在海边的小镇住了三天，每天早上去市场买新鲜的海鲜和水果，下午在沙滩上散步看日落，晚上坐在民宿的阳台上喝茶聊天，"
           "这是今年最放松的一次旅行。"),
    ("zh", "照片里是一只橘色的小猫趴在窗台上晒太阳，它的眼睛半闭着，尾巴搭在一盆绿色的植物旁边，窗外能看到对面楼房的红色屋顶和蓝色的天空。"),
    ("zh", "这家餐厅的装修很有特色，墙上挂满了老照片和手写的菜单，服务员很热情，推荐的红烧肉和清蒸鱼都非常好吃，价格也比较实惠，下次还会再来。"),
]


class InputsError(DCClipError, ValueError):
    """Calibration or parity inputs cannot be made (missing data, bad label files, a bad image source)."""


@dataclass
class EvalSet:
    """Raw images and texts; image_inputs() and text_inputs() turn them into one student's inputs.

    labels None (a pairs file without --labels): no class embeddings ship, and the parity images' own
    captions are what zero-shot top-1 agreement decides among."""

    calibration_images: list[Image.Image]
    parity_images: list[Image.Image]
    labels: dict[str, list[str]] | None  # {"en": [...], "zh": [...]}, same classes in the same order
    calibration_texts: list[tuple[str, str]] = field(default_factory=list)  # (language, text)
    extra_texts: list[tuple[str, str]] = field(default_factory=lambda: list(EXTRA_TEXTS))
    templates: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in TEMPLATES.items()})
    captions: list[tuple[str, str]] = field(default_factory=list)  # (language, caption) of parity images
    provenance: dict = field(default_factory=dict)  # where the images came from: the manifest's "calibration"
    # texts of every length (language, text) the length buckets are filled from; None: the corpus's held-apart
    # documents (or BUILTIN_LONG_TEXTS without the corpus assets); [] : no length buckets
    length_pool: list[tuple[str, str]] | None = None

    def __post_init__(self):
        self.templates = check_templates(self.templates, "EvalSet.templates")
        # the same keys whoever built the set, so a manifest reader need not guess
        self.provenance = {"source": "in-memory images", "kind": "in-memory", "dataset_id": None,
                           "selection": "given by the caller", "labels_from": "given" if self.labels else None,
                           "texts_from": "given" if self.calibration_texts else "parity texts", "skipped": 0,
                           **self.provenance}

    def class_prompts(self, lang: str) -> list[str]:
        """Class-major prompts of the label set in this set's templates (scoring.prototypes' order)."""
        return prompts(self.labels[lang], self.templates[lang]) if self.labels else []

    def decision_groups(self) -> dict[str, list[list[str]]]:
        """Per language, what zero-shot top-1 agreement decides among: each class's prompts (one per
        template), or without labels each parity caption on its own (languages with fewer than 2 left out)."""
        if self.labels:
            return {lang: [[fill(t, name) for t in self.templates[lang]] for name in self.labels[lang]] for lang in LANGS}
        groups = {lang: [[text] for lg, text in self.captions if lg == lang] for lang in LANGS}
        return {lang: g for lang, g in groups.items() if len(g) >= 2}

    def parity_texts(self) -> list[tuple[str, str]]:
        """(language, text): the decision groups, English then Chinese, then captions, then free texts."""
        out = [(lang, t) for lang, groups in self.decision_groups().items() for g in groups for t in g]
        if self.labels:
            out += list(self.captions)
        return out + list(self.extra_texts)


def default_length_pool(seed: int = 0, n: int = LENGTH_POOL) -> tuple[list[tuple[str, str]], str]:
    """(pool, where from): held-apart corpus texts of lengths spread up to 64 tokens, n per language; without
    the corpus assets, BUILTIN_LONG_TEXTS."""
    if corpus.corpus_present():
        return ([(lang, t) for lang in LANGS for t in corpus.length_mix(lang, n, seed=seed, split="heldout")],
                "held-apart documents of the registry corpus (dcclip_mobile/data/corpus.py)")
    return list(BUILTIN_LONG_TEXTS), "built-in long texts (the corpus assets are not fetched)"


def length_texts(tokenizer: BilingualTokenizer, pool: list[tuple[str, str]], per_bucket: int,
                 exclude: set[str] = frozenset()) -> list[tuple[str, str]]:
    """(language, text) filling every length bucket up to the tokenizer's context with per_bucket texts per
    language: pool texts in pool order by the bucket their tokens (BOS/EOS counted) fall in once cut to the
    context, then, where a bucket is short, the longest pool texts cut (at a space where there is one) to
    lengths in it, as many different texts as there are before a second cut of one. No text in `exclude`."""
    L = tokenizer.context_length
    pieces = lambda t: len(tokenizer.sp.encode(normalize(t)))  # noqa: E731
    buckets = [(lo, min(hi, L)) for lo, hi in LENGTH_BUCKETS if lo <= L]
    out: list[tuple[str, str]] = []
    for lang in LANGS:
        texts = [t for lg, t in pool if lg == lang]
        if not texts:
            continue
        fitted = corpus.fit_to_context(texts, pieces, L - 2)
        lengths = [pieces(t) + 2 for t in fitted]
        chosen: dict[tuple[int, int], list[str]] = {b: [] for b in buckets}
        taken: set[str] = set(exclude)

        def take(t: str, n: int) -> None:
            b = next((b for b in buckets if b[0] <= n <= b[1]), None)
            if b is not None and len(chosen[b]) < per_bucket and t not in taken:
                chosen[b].append(t)
                taken.add(t)

        for t, n in zip(fitted, lengths):
            take(t, n)
        longest = [t for _, t in sorted(zip(lengths, fitted), key=lambda x: -x[0])]
        for lo, hi in buckets:
            for budget in range(hi - 2, max(lo - 2, 1) - 1, -1):
                if len(chosen[(lo, hi)]) >= per_bucket:
                    break
                for t in longest:
                    if len(chosen[(lo, hi)]) >= per_bucket:
                        break
                    cut = corpus.fit_to_context([t], pieces, budget)[0]
                    take(cut, pieces(cut) + 2)
        out += [(lang, t) for b in buckets for t in chosen[b]]
    return out


def text_bucket(lang: str, n_tokens: int) -> str:
    """A text's group in the parity gate's bucket figures: 'en 50-64'."""
    return f"{lang} {length_bucket(n_tokens)}"


def read_labels(path_en: str | Path | None, path_zh: str | Path | None) -> dict[str, list[str]]:
    """One label per line, English and Chinese files of the same length; Fashion-MNIST's when both are None."""
    if path_en is None and path_zh is None:
        return {"en": list(FASHION_LABELS_EN), "zh": list(FASHION_LABELS_ZH)}
    if path_en is None or path_zh is None:
        raise InputsError("give both --labels (English) and --labels-zh (Chinese), one label per line, same order")
    out = {}
    for lang, p in (("en", path_en), ("zh", path_zh)):
        p = Path(p)
        if not p.is_file():
            raise InputsError(f"label file {str(p)!r} does not exist")
        out[lang] = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(out["en"]) != len(out["zh"]) or len(out["en"]) < 2:
        raise InputsError(f"label files must list the same classes, at least 2: {len(out['en'])} English "
                          f"vs {len(out['zh'])} Chinese")
    return out


def _fashion_mnist_test() -> FashionMNIST:
    try:
        return FashionMNIST("test")
    except DatasetMissingError as e:
        raise InputsError(f"{e}; or pass --images SOURCE (export_bundles(images=...)) or an EvalSet") from None


def fashion_mnist_images(indices: list[int]) -> list[Image.Image]:
    """Fashion-MNIST test images as RGB PIL images (Debian's dataset-fashion-mnist)."""
    test = _fashion_mnist_test()
    return [test.image(i) for i in indices]


def calibration_texts(labels: dict[str, list[str]], n: int) -> list[tuple[str, str]]:
    """The label set in other wordings than the class prompts; interleaved (English, Chinese, next label, ...),
    so any prefix calibrates on both languages."""
    return [(lang, fill(CALIBRATION_TEMPLATES[lang][j], labels[lang][i]))
            for j in range(len(CALIBRATION_TEMPLATES["en"])) for i in range(len(labels["en"]))
            for lang in LANGS][:max(2, n)]


def default_eval_set(labels: dict[str, list[str]] | None = None, n_calibration: int = 128,
                     n_parity: int = 256) -> EvalSet:
    """Fashion-MNIST test images (calibration: the first n, parity: from index 5000) and prompts.

    256 parity images make 512 top-1 decisions: the int8 gate's 0.97 then sits ~2 standard errors below
    a true 0.98 agreement. At 64 images (128 decisions) a stage-2 student whose int8 image tower agrees
    on 97.9% of 512 images failed the gate at 96.1% (5 flips)."""
    given = labels is not None
    labels = labels or {"en": list(FASHION_LABELS_EN), "zh": list(FASHION_LABELS_ZH)}
    test = _fashion_mnist_test()
    calib = [test.image(i) for i in range(n_calibration)]
    parity = [test.image(i) for i in range(5000, 5000 + n_parity)]
    provenance = {"source": "fashion-mnist (default)", "kind": "fashion-mnist", "dataset_id": test.dataset_id,
                  "selection": f"calibration test[0:{n_calibration}], parity test[5000:{5000 + n_parity}]",
                  "labels_from": "given" if given else "fashion-mnist", "texts_from": "labels in calibration templates"}
    return EvalSet(calibration_images=calib, parity_images=parity, labels=labels,
                   calibration_texts=calibration_texts(labels, n_calibration), provenance=provenance)


# --- any image source ---------------------------------------------------------------------------

SOURCE_KINDS = {"FashionMNIST": "fashion-mnist", "ElevaterFolder": "elevater", "PairsFile": "pairs"}


def _spread_order(source, seed: int) -> list[int]:
    """A seeded order of the source's images; with labels, round-robin over classes, so the parity images
    (taken first) and the calibration images (next) are each as class-balanced as the source allows."""
    order = list(range(len(source)))
    random.Random(seed).shuffle(order)
    labels = getattr(source, "labels", None)
    if labels is None:
        return order
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(int(labels[i]), []).append(i)
    queues = [by_class[c] for c in sorted(by_class)]
    return [q[r] for r in range(max(map(len, queues))) for q in queues if r < len(q)]


def _split_sizes(n: int, n_calibration: int, n_parity: int) -> tuple[int, int]:
    """(calibration, parity) counts; a source smaller than both keeps their ratio, at least one of each."""
    if n >= n_calibration + n_parity:
        return n_calibration, n_parity
    parity = min(n - 1, max(1, round(n * n_parity / (n_calibration + n_parity))))
    return n - parity, parity


def _source_labels(source, labels: dict[str, list[str]] | None, name: str) -> tuple[dict | None, str | None]:
    """The label set for class prompts: the given one, else the source's class names, else none."""
    if labels is not None:
        return labels, "given"
    classes = getattr(source, "classes", None)
    if not classes:
        return None, None
    if any(lang not in classes for lang in LANGS) or len(classes["en"]) != len(classes["zh"]) or len(classes["en"]) < 2:
        raise InputsError(f"image source {name!r} names its classes as {sorted(classes)} with "
                          f"{[len(v) for v in classes.values()]} names: it needs the same >= 2 classes in "
                          "English and Chinese; or pass --labels and --labels-zh")
    return {lang: list(classes[lang]) for lang in LANGS}, "source"


def eval_set_from_source(source, labels: dict[str, list[str]] | None = None, n_calibration: int = 128,
                         n_parity: int = 256, name: str | None = None, seed: int = 0) -> EvalSet:
    """Calibration and parity images, disjoint, from any image source (an object with len(), image(i) and
    dataset_id: dcclip_mobile.data's FashionMNIST, ElevaterFolder, PairsFile). Class prompts: `labels`,
    else the source's class names; a source without either (a pairs file) gives no class embeddings, and
    its parity captions are what top-1 agreement decides among. Text calibration: the calibration images'
    captions where the source has them (the user's own wording), else the labels in other templates.
    Unreadable image files are skipped and counted (as training does); too few readable ones is an error."""
    kind = SOURCE_KINDS.get(type(source).__name__, type(source).__name__)
    name = name or kind
    if len(source) < 2:
        raise InputsError(f"image source {name!r} has {len(source)} image(s); calibration and parity need at least "
                          "2 (disjoint sets)")
    labels, labels_from = _source_labels(source, labels, name)
    has_captions = callable(getattr(source, "caption", None))
    if labels is None and not has_captions:
        raise InputsError(f"image source {name!r} has neither class names nor captions: pass --labels and "
                          "--labels-zh (one label per line) for the parity gate's zero-shot decisions")
    want_cal, want_par = _split_sizes(len(source), n_calibration, n_parity)
    picked: dict[str, list[int]] = {"parity": [], "calibration": []}
    images: dict[str, list[Image.Image]] = {"parity": [], "calibration": []}
    skipped, first_problem = 0, None
    for i in _spread_order(source, seed):
        part = "parity" if len(picked["parity"]) < want_par else "calibration"
        if part == "calibration" and len(picked["calibration"]) >= want_cal:
            break
        try:
            images[part].append(source.image(i))
        except (ImageLoadError, OSError) as e:
            skipped, first_problem = skipped + 1, first_problem or e
            continue
        picked[part].append(i)
    if not images["parity"] or not images["calibration"]:
        raise InputsError(f"image source {name!r}: only {len(images['parity']) + len(images['calibration'])} of "
                          f"{len(source)} images could be read, need 2 (first problem: {first_problem})")
    captions = [source.caption(i)[::-1] for i in picked["parity"]] if has_captions else []
    if has_captions:
        cal_texts = [source.caption(i)[::-1] for i in picked["calibration"]]
        texts_from = "captions"
    else:
        cal_texts, texts_from = calibration_texts(labels, n_calibration), "labels in calibration templates"
    provenance = {"source": name, "kind": kind, "dataset_id": source.dataset_id,
                  "selection": f"seeded (seed {seed}){', class-balanced' if hasattr(source, 'labels') else ''}: "
                               "parity first, calibration next, disjoint",
                  "labels_from": labels_from, "texts_from": texts_from, "skipped": skipped}
    return EvalSet(calibration_images=images["calibration"], parity_images=images["parity"], labels=labels,
                   calibration_texts=cal_texts, captions=captions, provenance=provenance)


def image_preprocess_description(cfg: StudentConfig) -> dict:
    """The rule (dcclip_mobile.data.preprocess) as the manifest states it for the apps."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in ImagePreprocess.for_student(cfg).to_dict().items()}


def preprocess(img: Image.Image, cfg: StudentConfig) -> torch.Tensor:
    """PIL image -> float32 [1,3,S,S], by training's one preprocessing."""
    return preprocess_image(img, ImagePreprocess.for_student(cfg)).unsqueeze(0).contiguous()


def image_inputs(images: list[Image.Image], cfg: StudentConfig) -> list[tuple[torch.Tensor]]:
    return [(preprocess(img, cfg),) for img in images]


def text_inputs(texts: list[str], tokenizer: BilingualTokenizer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for t in texts:
        enc = tokenizer([t])
        out.append((enc["input_ids"], enc["attention_mask"]))
    return out
