"""The one zero-shot scoring rule a bundle states and everyone applies: the exporter's class embeddings,
the report's host rows and the phone apps' benchmark all build a class from the manifest's templates.

    prompt     the template with "{c}" replaced by the class name (the one placeholder syntax, as in the
               CLIP templates of dcclip_mobile.data.labels)
    class      normalize(mean over the language's templates of the unit-length prompt embeddings)
    logits     logit_scale * cos(image embedding, class)

The manifest records the templates per language in class_embeddings.templates ({"en": [..], "zh": [..]}).
"""
from __future__ import annotations

from typing import Sequence

from dcclip_mobile.zeroshot import prompt_prototypes

PLACEHOLDER = "{c}"
# One template per language: a phone re-embeds a label set with one text run per class and language.
BUNDLE_TEMPLATES = {"en": ["a photo of a {c}."], "zh": ["一张{c}的照片。"]}
LANGS = ("en", "zh")


def check_templates(templates: dict[str, Sequence[str]], where: str = "templates") -> dict[str, list[str]]:
    """{lang: [template, ..]} for both languages, each non-empty and each template holding "{c}"."""
    if not isinstance(templates, dict):
        raise ValueError(f"{where} must map each language to a list of templates, got {type(templates).__name__}")
    out = {}
    for lang in LANGS:
        ts = templates.get(lang)
        if isinstance(ts, str) or not ts or any(not isinstance(t, str) or PLACEHOLDER not in t for t in ts):
            raise ValueError(f"{where}[{lang!r}] = {ts!r}: give a non-empty list of templates, each with "
                             f"{PLACEHOLDER!r} where the class name goes (e.g. {BUNDLE_TEMPLATES[lang]!r})")
        out[lang] = list(ts)
    return out


def fill(template: str, name: str) -> str:
    return template.replace(PLACEHOLDER, name)


def prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class-major: the prompts of class 0 in template order, then class 1, ... (what `prototypes` expects)."""
    return [fill(t, name) for name in classnames for t in templates]


prototypes = prompt_prototypes  # [C*k, D] class-major prompt embeddings -> [C, D], the library's one rule


def manifest_templates(manifest: dict) -> dict[str, list[str]] | None:
    """The templates a bundle's class embeddings were built with; None when it ships no class embeddings."""
    entry = manifest.get("class_embeddings")
    if not entry:
        return None
    return check_templates(entry.get("templates"), "manifest class_embeddings.templates")


def describe(templates: dict[str, list[str]]) -> str:
    """How many templates per language, as a report row names the rule: "1 per language", "3 en, 1 zh"."""
    counts = sorted({len(ts) for ts in templates.values()})
    if len(counts) == 1:
        return f"{counts[0]} per language"
    return ", ".join(f"{len(ts)} {lang}" for lang, ts in templates.items())
