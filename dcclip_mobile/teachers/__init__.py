"""Teachers: one protocol (base.Teacher), two implementations, and the feature cache."""
from __future__ import annotations

from .base import ImageFeatures, Teacher, TextFeatures

TEACHER_SPECS = "'offline', 'altclip:<hub id or local directory>'"


def build_teacher(spec: str, **kwargs) -> Teacher:
    """'offline' -> the registry-carried default; 'altclip:BAAI/AltCLIP' or 'altclip:/path/to/dir' -> AltCLIP."""
    if spec == "offline":
        from .offline import OfflineTeacher
        return OfflineTeacher(**kwargs)
    if isinstance(spec, str) and spec.startswith("altclip:") and len(spec) > len("altclip:"):
        from .altclip import AltCLIPTeacher
        return AltCLIPTeacher(spec[len("altclip:"):], **kwargs)
    raise ValueError(f"unknown teacher {spec!r}; accepted: {TEACHER_SPECS}")


__all__ = ["ImageFeatures", "Teacher", "TextFeatures", "build_teacher", "TEACHER_SPECS"]
