"""Few-shot adaptation by multitask vision-language prompt tuning (MVLPT, arXiv 2211.11720) on a frozen student.

    prompts.py   the prompts (text/CoOp, visual padding, unified/UPT) and what a visual prompt lowers to
    engine.py    image features (cached), fitting on one or several tasks, scoring, the baselines
    store.py     saving and loading a tuned prompt (safetensors + JSON, atomic)
"""
from .prompts import DEFAULT_TEMPLATES, METHODS, Prompt, PromptError, PromptSpec, PromptedImageStudent

__all__ = ["DEFAULT_TEMPLATES", "METHODS", "Prompt", "PromptError", "PromptSpec", "PromptedImageStudent"]
