"""The 300-W / iBUG ``.pts`` format: a ``version`` line, ``n_points: N``, then N ``x y`` lines in braces.

Coordinates in ``.pts`` files are 1-based (MATLAB's convention: the top-left pixel's centre is (1, 1)), as
iBUG's own reader (menpo's ``PTSImporter``) assumes; every other coordinate in this package is 0-based
(pixel centres at integers, as OpenCV and NumPy index), so the reader subtracts ``PTS_ORIGIN``. Keeping
the 1-based values would place every point one pixel right of and below the face, and mirror
augmentation (which reflects about the 0-based centre) would then teach two positions a pixel apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import AnnotationError
from ...schemes import IBUG_68, LandmarkScheme
from ..annotation import FaceAnnotation
from .text import parse_point_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PTS_ORIGIN = 1.0  # the coordinate of the first pixel's centre in .pts files


def read_pts(path: str | Path, expected_points: int | None = None) -> np.ndarray:
    """Return ``(N, 2)`` float32 points, 0-based; ``AnnotationError`` with file and line on any defect."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(p, f"cannot read ({exc})") from None
    n_points: int | None = None
    start = None
    for i, line in enumerate(lines, start=1):
        s = line.strip()
        if s.startswith("n_points"):
            try:
                n_points = int(s.split(":", 1)[1])
            except (IndexError, ValueError):
                raise AnnotationError(p, f"bad n_points line {s!r}", i) from None
        elif s == "{":
            start = i
            break
    if n_points is None or start is None:
        raise AnnotationError(p, "missing 'n_points:' header or '{'")
    points = []
    end = None
    for i in range(start + 1, len(lines) + 1):
        s = lines[i - 1].strip()
        if s == "}":
            end = i
            break
        if not s:
            continue
        points.append(parse_point_line(s, p, i))
    if end is None:
        raise AnnotationError(p, "missing closing '}'")
    if len(points) != n_points:
        raise AnnotationError(p, f"header says {n_points} points, found {len(points)}")
    if expected_points is not None and n_points != expected_points:
        raise AnnotationError(p, f"expected {expected_points} points, found {n_points}")
    return (np.asarray(points, dtype=np.float64) - PTS_ORIGIN).astype(np.float32)


def find_image(pts_path: Path) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for cand in (pts_path.with_suffix(suffix), pts_path.with_suffix(suffix.upper())):
            if cand.exists():
                return cand
    return None


def read_pts_folder(folder: str | Path, scheme: LandmarkScheme = IBUG_68) -> list[FaceAnnotation]:
    """Every ``.pts`` file below ``folder`` (recursively, sorted) with the image beside it."""
    root = Path(folder)
    files = sorted(root.rglob("*.pts"))
    if not files:
        raise AnnotationError(root, "no .pts files in folder")
    faces = []
    for f in files:
        image = find_image(f)
        if image is None:
            raise AnnotationError(f, "no image beside this .pts file (tried " + ", ".join(IMAGE_SUFFIXES) + ")")
        points = read_pts(f, expected_points=scheme.num_points)
        faces.append(FaceAnnotation(image, points, scheme, {}, None, str(f)))
    return faces
