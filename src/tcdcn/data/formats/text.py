"""Reading annotation text files: one clear error naming the file for unreadable or non-text input."""

from __future__ import annotations

from pathlib import Path

from ...errors import AnnotationError


def read_text_lines(p: Path) -> list[str]:
    """The file's lines (any line ending), or ``AnnotationError`` naming the file."""
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise AnnotationError(p, f"cannot read ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise AnnotationError(p, "not a text file (not UTF-8)") from None
