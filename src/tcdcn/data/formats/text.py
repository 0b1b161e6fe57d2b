"""Reading annotation text files: one clear error naming the file for unreadable or non-text input."""

from __future__ import annotations

import math
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


def parse_point_line(text: str, path: Path, line_no: int, separators: str = "",
                     form: str = "x y") -> tuple[float, float]:
    """One ``x y`` line (``separators``, e.g. ",", count as spaces; ``form`` names the expected layout in
    errors); ``AnnotationError`` with file:line."""
    s = text.strip()
    for sep in separators:
        s = s.replace(sep, " ")
    parts = s.split()
    if len(parts) != 2:
        raise AnnotationError(path, f"expected '{form}', found {text.strip()!r}", line_no)
    try:
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise AnnotationError(path, f"non-numeric point {text.strip()!r}", line_no) from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise AnnotationError(path, "non-finite point", line_no)
    return x, y
