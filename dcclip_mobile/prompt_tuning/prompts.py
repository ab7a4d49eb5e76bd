"""The learnable prompts of MVLPT (Shen et al., arXiv 2211.11720) for this student, the towers frozen.

text (CoOp)   context vectors in the text student's token-embedding space where a template's words are:
              [BOS] prefix-context  class-name pieces  suffix-context [EOS]. Initialized from a hand-written
              template ("a photo of a {c}." -> prefix = the pieces of "a photo of a", suffix = "."), the prompt
              starts exactly where the zero-shot template is; or M random vectors before the name (CoOp's
              "end" position). One context per language, or one shared by both (its names still segmented
              per language).
visual        the image student is a CNN, so the prompt is a padding prompt (Bahng et al., 2022): learnable
              values added to the normalized input in a border `pad` pixels wide, zero inside. At export it is a
              constant added to the input: one `add` in front of the convolutions (PromptedImageStudent).
unified (UPT) one small shared network produces both: learnable tokens -> one transformer layer -> a text
              head (context deltas, added to the template/random context) and a visual head (the border values).
              Both heads start at zero, so UPT starts at the text prompt's starting point.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DCClipError
from ..models.image_student import ImageStudent
from ..models.text_student import TextStudent
from ..tokenizer import BilingualTokenizer

LANGS = ("en", "zh")
METHODS = ("text", "visual", "unified")
CONTEXTS = ("per-lang", "shared")
INITS = ("template", "random")
PLACEHOLDER = "{c}"
# the bundles' hand-written templates (lowering.scoring.BUNDLE_TEMPLATES): the zero-shot prompt a tuned one starts at
DEFAULT_TEMPLATES = {"en": "a photo of a {c}.", "zh": "一张{c}的照片。"}


class PromptError(DCClipError, ValueError):
    """A prompt spec or a saved prompt is malformed or does not fit the student."""


@dataclass
class PromptSpec:
    """Everything that fixes a prompt's shape and meaning (saved beside its tensors as JSON)."""
    method: str = "text"
    context: str = "per-lang"            # per-lang | shared
    init: str = "template"               # template | random
    n_ctx: int = 8                       # context vectors when init is random
    templates: dict = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    pad: int = 8                         # visual: border width in pixels
    image_size: int = 0                  # visual: the student's input size (set from the student)
    width: int = 0                       # text: the token-embedding width (set from the student)
    unified_dim: int = 128               # unified: the shared network's width
    unified_tokens: int = 4              # unified: tokens that feed the visual head

    def validate(self) -> "PromptSpec":
        if self.method not in METHODS:
            raise PromptError(f"prompt method {self.method!r}; accepted: {', '.join(METHODS)}")
        if self.context not in CONTEXTS:
            raise PromptError(f"prompt context {self.context!r}; accepted: {', '.join(CONTEXTS)}")
        if self.init not in INITS:
            raise PromptError(f"prompt init {self.init!r}; accepted: {', '.join(INITS)}")
        if self.n_ctx < 1:
            raise PromptError(f"n_ctx must be >= 1, got {self.n_ctx}")
        for lang in LANGS:
            t = self.templates.get(lang)
            if not isinstance(t, str) or t.count(PLACEHOLDER) != 1:
                raise PromptError(f"templates[{lang!r}] = {t!r}: one template with exactly one {PLACEHOLDER!r}")
        if self.method != "text" and not 1 <= self.pad <= max(1, self.image_size // 2 - 1):
            raise PromptError(f"pad {self.pad} does not fit a {self.image_size}-pixel input")
        return self

    @property
    def has_text(self) -> bool:
        return self.method in ("text", "unified")

    @property
    def has_visual(self) -> bool:
        return self.method in ("visual", "unified")

    def groups(self) -> tuple[str, ...]:
        """The context groups: one per language, or one shared ("shared")."""
        return ("shared",) if self.context == "shared" else LANGS

    def group_of(self, lang: str) -> str:
        return "shared" if self.context == "shared" else lang

    def template_of(self, group: str) -> str:
        """The template a group's context starts from and its names are segmented by: random init -> '{c}'."""
        if self.init == "random":
            return PLACEHOLDER
        return self.templates["en" if group == "shared" else group]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PromptSpec":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise PromptError(f"prompt spec has unknown keys {unknown}")
        return cls(**d).validate()


# ------------------------------------------------------------------------------------------ text
def _pieces(tokenizer: BilingualTokenizer, text: str) -> list[int]:
    """Piece ids of `text` without BOS/EOS (no truncation)."""
    from ..tokenizer import normalize

    return list(tokenizer.sp.encode(normalize(text))) if normalize(text) else []


def template_parts(tokenizer: BilingualTokenizer, template: str) -> tuple[list[int], list[int]]:
    """(prefix pieces, suffix pieces) of a template as they read inside a prompt: the suffix without the
    lone word-start piece SentencePiece puts in front of text that begins a string."""
    prefix, suffix = template.split(PLACEHOLDER)
    p = _pieces(tokenizer, prefix.strip()) if prefix.strip() else []
    s = _pieces(tokenizer, suffix) if suffix.strip() else []
    space = tokenizer.sp.piece_to_id("\u2581")
    if s and s[0] == space:
        s = s[1:]
    return p, s


def name_layout(tokenizer: BilingualTokenizer, template: str, name: str) -> tuple[int, list[int], int]:
    """How a class reads in `template`: (i, middle pieces, j) such that the template with the name filled in
    tokenizes as the template's first i prefix pieces + middle + its last j suffix pieces. Where SentencePiece
    merges the name with a template word (Chinese "一张猫的照片。" -> "猫的"), that word's piece is left out of
    i or j and the merged piece is in the middle, so a context started from the template reproduces the
    hand-written prompt's tokens exactly for every class."""
    p, s = template_parts(tokenizer, template)
    full = _pieces(tokenizer, template.replace(PLACEHOLDER, name))
    i = 0
    while i < len(p) and i < len(full) - 1 and full[i] == p[i]:
        i += 1
    j = 0
    while j < len(s) and i + j < len(full) - 1 and full[len(full) - 1 - j] == s[len(s) - 1 - j]:
        j += 1
    middle = full[i:len(full) - j]
    return i, middle or [tokenizer.unk_id], j


class ClassTokens:
    """One label set in one language, ready for a context: every row's layout [BOS][prefix][name][suffix][EOS]
    as indices into a table of vectors (the prefix and suffix rows come from the prompt, the rest from the
    frozen token embeddings), so a forward is one gather. A class whose name merges with a template word
    (name_layout) skips that word's context vector."""

    def __init__(self, text: TextStudent, tokenizer: BilingualTokenizer, names: Sequence[str], template: str,
                 n_prefix: int, n_suffix: int):
        L = text.cfg.context_length
        p, s = template_parts(tokenizer, template)
        free = not p and not s  # random context (CoOp): every vector before every name
        if not free and (len(p), len(s)) != (n_prefix, n_suffix):
            raise PromptError(f"a context of {n_prefix}+{n_suffix} vectors does not fit template {template!r} "
                              f"({len(p)}+{len(s)} pieces)")
        if n_prefix + n_suffix > L - 3:
            raise PromptError(f"a context of {n_prefix + n_suffix} vectors leaves no room for a class name in "
                              f"{L} tokens")
        layouts, self.truncated = [], []
        for name in names:
            i, mid, j = name_layout(tokenizer, template, name)
            if free:
                i, j = n_prefix, n_suffix
            layouts.append((i, mid, j))
        vocab = sorted({t for _, m, _ in layouts for t in m} | {tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id})
        where = {tok: k for k, tok in enumerate(vocab)}
        base = n_prefix + n_suffix  # table = [prefix rows, suffix rows, the frozen vocab rows]
        seqs = []
        for i, m, j in layouts:
            body = list(range(i)) + [base + where[t] for t in m] + [n_prefix + k for k in range(n_suffix - j, n_suffix)]
            self.truncated.append(len(body) > L - 2)  # the tokenizer's rule: keep the first L-2, then EOS
            seqs.append([base + where[tokenizer.bos_id]] + body[:L - 2] + [base + where[tokenizer.eos_id]])
        n = max(len(q) for q in seqs)
        index = torch.full((len(seqs), n), base + where[tokenizer.pad_id], dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for c, q in enumerate(seqs):
            index[c, :len(q)] = torch.tensor(q)
            mask[c, :len(q)] = 1
        with torch.no_grad():
            self.vocab_rows = text.token_embedding.weight[torch.tensor(vocab)].detach().clone()
        self.index, self.mask = index, mask
        self.n_prefix, self.n_suffix, self.names = n_prefix, n_suffix, list(names)

    def __len__(self) -> int:
        return len(self.names)

    def embed(self, text: TextStudent, prefix: torch.Tensor, suffix: torch.Tensor) -> torch.Tensor:
        """[C, D] unit-length class embeddings through the (frozen) text tower."""
        if prefix.shape[0] != self.n_prefix or suffix.shape[0] != self.n_suffix:
            raise PromptError(f"context of {prefix.shape[0]}+{suffix.shape[0]} vectors for class tokens laid "
                              f"out for {self.n_prefix}+{self.n_suffix}")
        if self.index.device != prefix.device:
            self.index, self.mask = self.index.to(prefix.device), self.mask.to(prefix.device)
        table = torch.cat([prefix, suffix, self.vocab_rows.to(prefix)])
        return F.normalize(text.forward_embeddings(table[self.index], self.mask)[1], dim=-1)


class TemplateTokens:
    """A label set in a hand-written template, tokenized as any prompt: the text side of a visual prompt."""

    def __init__(self, tokenizer: BilingualTokenizer, names: Sequence[str], template: str):
        enc = tokenizer([template.replace(PLACEHOLDER, n) for n in names])
        self.input_ids, self.mask, self.names = enc["input_ids"], enc["attention_mask"], list(names)
        self._cached: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.names)

    def embed(self, text: TextStudent) -> torch.Tensor:
        if self._cached is None:  # the tower is frozen: these never change
            with torch.no_grad():
                dev = text.token_embedding.weight.device
                self._cached = F.normalize(text.forward_trimmed(self.input_ids.to(dev), self.mask.to(dev))[1], dim=-1)
        return self._cached


class TextContext(nn.Module):
    """The learnable context vectors: {group: prefix [M1, W]} and {group: suffix [M2, W]}."""

    def __init__(self, spec: PromptSpec, text: TextStudent, tokenizer: BilingualTokenizer, generator=None):
        super().__init__()
        self.spec = spec
        self.prefix, self.suffix = nn.ParameterDict(), nn.ParameterDict()
        emb = text.token_embedding.weight.detach()
        for g in spec.groups():
            if spec.init == "random":
                pre = torch.randn(spec.n_ctx, emb.shape[1], generator=generator) * 0.02
                suf = torch.zeros(0, emb.shape[1])
            else:
                p, s = template_parts(tokenizer, spec.template_of(g))
                pre, suf = emb[torch.tensor(p, dtype=torch.long)].clone(), emb[torch.tensor(s, dtype=torch.long)].clone()
            self.prefix[g], self.suffix[g] = nn.Parameter(pre), nn.Parameter(suf)

    def shapes(self) -> dict[str, tuple[int, int]]:
        return {g: (self.prefix[g].shape[0], self.suffix[g].shape[0]) for g in self.prefix}


# ------------------------------------------------------------------------------------------ visual
def border_index(image_size: int, pad: int) -> torch.Tensor:
    """Flat indices into [3, S, S] of the border `pad` pixels wide (every channel), in a fixed order."""
    inside = torch.zeros(image_size, image_size, dtype=torch.bool)
    inside[pad:image_size - pad, pad:image_size - pad] = True
    per_channel = (~inside).flatten().nonzero().flatten()
    return torch.cat([per_channel + c * image_size * image_size for c in range(3)])


def padding_image(values: torch.Tensor, index: torch.Tensor, image_size: int) -> torch.Tensor:
    """[1, 3, S, S]: `values` at the border indices, zero elsewhere (differentiable in `values`)."""
    full = torch.zeros(3 * image_size * image_size, dtype=values.dtype, device=values.device)
    return full.scatter(0, index, values).reshape(1, 3, image_size, image_size)


class PromptedImageStudent(ImageStudent):
    """An ImageStudent whose input has a fixed prompt image added first: what a visual prompt lowers to. Its
    parameters keep ImageStudent's names, so quantizer rules and checkpoints that name them still apply."""

    def __init__(self, tower: ImageStudent, prompt: torch.Tensor):
        super().__init__(tower.cfg, tower.anchor_embed.out_features if tower.cfg.head_anchors else tower.proj.out_features)
        self.load_state_dict(tower.state_dict())
        s = tower.cfg.image_size
        if tuple(prompt.shape) != (1, 3, s, s):
            raise PromptError(f"visual prompt has shape {tuple(prompt.shape)}; this student takes [1, 3, {s}, {s}]")
        self.register_buffer("input_prompt", prompt.detach().float().clone())
        self.train(tower.training)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from ..models.image_student import check_pixel_values

        check_pixel_values(pixel_values, self.cfg.image_size)
        feature_map = self.features(pixel_values + self.input_prompt)
        return feature_map, self.embed(feature_map)


# ------------------------------------------------------------------------------------------ the prompt
class Prompt(nn.Module):
    """A text, visual or unified prompt for one student; `class_embeddings` and `image_prompt` are all a
    caller needs (the towers are passed in, never owned, so a prompt is a few thousand numbers)."""

    def __init__(self, spec: PromptSpec, text: TextStudent, tokenizer: BilingualTokenizer, seed: int = 0):
        super().__init__()
        spec.width = text.cfg.width
        self.spec = spec.validate()
        g = torch.Generator().manual_seed(seed)
        # a visual prompt's text side is the hand-written template, tokenized as any prompt (TemplateTokens)
        self.context = TextContext(spec, text, tokenizer, g) if spec.has_text else None
        if spec.has_visual:
            self.register_buffer("border", border_index(spec.image_size, spec.pad), persistent=False)
        if spec.method == "visual":
            self.visual = nn.Parameter(torch.zeros(self.border.numel()))
        if spec.method == "unified":
            shapes = self.context.shapes()
            n_text = sum(a + b for a, b in shapes.values())
            d = spec.unified_dim
            self.tokens = nn.Parameter(torch.randn(n_text + spec.unified_tokens, d, generator=g) * 0.02)
            with torch.random.fork_rng(devices=[]):  # the layer's init from `seed`, not the global generator
                torch.manual_seed(seed)
                self.shared = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=2 * d, dropout=0.0,
                                                         batch_first=True, norm_first=True)
            self.text_head = nn.Linear(d, spec.width)
            self.visual_head = nn.Linear(d, self.border.numel())
            for head in (self.text_head, self.visual_head):  # start at the text prompt's starting point
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    # the shared network's outputs, once per forward
    def _unified(self) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        h = self.shared(self.tokens[None])[0]
        deltas, k = {}, 0
        for grp, (a, b) in self.context.shapes().items():
            dt = self.text_head(h[k:k + a + b])
            deltas[grp] = (dt[:a], dt[a:])
            k += a + b
        return deltas, self.visual_head(h[k:].mean(0))

    def contexts(self, cache: dict | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{group: (prefix, suffix)}."""
        out = {grp: (self.context.prefix[grp], self.context.suffix[grp]) for grp in self.context.prefix}
        if self.spec.method == "unified":
            deltas = self._cached(cache)[0]
            out = {grp: (p + deltas[grp][0], s + deltas[grp][1]) for grp, (p, s) in out.items()}
        return out

    def _cached(self, cache: dict | None):
        if cache is None:
            return self._unified()
        if "unified" not in cache:
            cache["unified"] = self._unified()
        return cache["unified"]

    def class_tokens(self, text: TextStudent, tokenizer: BilingualTokenizer, names: Sequence[str],
                     lang: str) -> "ClassTokens | TemplateTokens":
        if self.context is None:
            return TemplateTokens(tokenizer, names, self.spec.templates[lang])
        grp = self.spec.group_of(lang)
        a, b = self.context.shapes()[grp]
        return ClassTokens(text, tokenizer, names, self.spec.template_of(grp), a, b)

    def class_embeddings(self, text: TextStudent, tokens: "ClassTokens | TemplateTokens", lang: str,
                         cache: dict | None = None) -> torch.Tensor:
        """[C, D] unit-length class embeddings of `tokens` (from class_tokens) in `lang`."""
        if isinstance(tokens, TemplateTokens):
            return tokens.embed(text)
        prefix, suffix = self.contexts(cache)[self.spec.group_of(lang)]
        return tokens.embed(text, prefix, suffix)

    def image_prompt(self, cache: dict | None = None) -> torch.Tensor | None:
        """[1, 3, S, S] added to the normalized input, or None for a text prompt."""
        if not self.spec.has_visual:
            return None
        values = self.visual if self.spec.method == "visual" else self._cached(cache)[1]
        return padding_image(values, self.border, self.spec.image_size)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def prompted_image_embeddings(image: ImageStudent, pixels: torch.Tensor, prompt_image: torch.Tensor | None) -> torch.Tensor:
    """Unit-length embeddings of preprocessed pixels with the prompt image added (None: none)."""
    x = pixels if prompt_image is None else pixels + prompt_image
    from ..models.image_student import check_pixel_values

    check_pixel_values(x, image.cfg.image_size)
    return F.normalize(image.embed(image.features(x)), dim=-1)
