"""The MTFL release format (Zhang et al., ECCV 2014), as in ``training.txt`` / ``testing.txt``.

One face per line: ``<path> x1..x5 y1..y5 gender smile glasses pose``. Quirks handled: ``\\`` or ``/``
in paths, CRLF line ends, leading spaces, 1/2 codes for the binary attributes (1 = yes / male) and
pose 1..5 (left profile, left, frontal, right, right profile). Paths are relative to the file's folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...errors import AnnotationError
from ...schemes import MTFL_5
from ..annotation import FaceAnnotation
from .text import read_text_lines

_BINARY = (("male", 11), ("smiling", 12), ("glasses", 13))
_POSES = ("pose_left_profile", "pose_left", "pose_frontal", "pose_right", "pose_right_profile")
_FIELDS = 15


def parse_mtfl_line(text: str, path: Path, line_no: int, root: Path) -> FaceAnnotation:
    fields = text.split()
    if len(fields) != _FIELDS:
        raise AnnotationError(path, f"expected {_FIELDS} fields (path, 10 coordinates, 4 attributes), "
                              f"found {len(fields)}", line_no)
    try:
        numbers = [float(v) for v in fields[1:11]]
        codes = [int(v) for v in fields[11:]]
    except ValueError as exc:
        raise AnnotationError(path, f"non-numeric value ({exc})", line_no) from None
    if not all(math.isfinite(v) for v in numbers):
        raise AnnotationError(path, "non-finite coordinate", line_no)
    for (name, idx), code in zip(_BINARY, codes[:3]):
        if code not in (1, 2):
            raise AnnotationError(path, f"{name} code must be 1 or 2, found {code} (field {idx + 1})",
                                  line_no)
    if codes[3] not in range(1, 6):
        raise AnnotationError(path, f"pose code must be 1..5, found {codes[3]}", line_no)
    xy = np.array([numbers[:5], numbers[5:]], dtype=np.float32).T  # (5, 2)
    attributes = {name: int(code == 1) for (name, _), code in zip(_BINARY, codes[:3])}
    attributes.update({pose: int(codes[3] == i + 1) for i, pose in enumerate(_POSES)})
    image = root / fields[0].replace("\\", "/")
    return FaceAnnotation(image, xy, MTFL_5, attributes, None, f"{path}:{line_no}")


def read_mtfl(path: str | Path, root: str | Path | None = None) -> list[FaceAnnotation]:
    """Read an MTFL list file; raises ``AnnotationError`` naming the file and line on bad input."""
    p = Path(path)
    lines = read_text_lines(p)
    base = Path(root) if root is not None else p.parent
    faces = [parse_mtfl_line(line, p, n, base)
             for n, line in enumerate(lines, start=1) if line.strip()]
    if not faces:
        raise AnnotationError(p, "no annotations in file")
    return faces
