"""AFLW (Koestinger et al., 2011) 21-point annotations, with missing points masked.

AFLW ships as an SQLite database; two plain-text exports of it are read here.

1. One face per line (``read_aflw``)::

       <image path> x1 y1 x2 y2 ... x21 y21

   43 fields separated by spaces, tabs or commas, points in AFLW's feature order (feature_id 1..21).
   A point is missing when either coordinate is ``nan`` or when it is ``-1 -1``. Blank lines and lines
   starting with ``#`` are skipped; image paths are relative to the file's folder (or ``root``).

2. One point per line, as AFLW's ``FeatureCoords`` table (``read_aflw_points``)::

       <face_id> <feature_id> <x> <y>

   with a second file of ``<face_id> <image path>`` lines (from ``Faces`` + ``FaceImages``); a
   feature a face does not list is missing. Faces come out in the order of the second file.

Missing points get ``visible = False``; their coordinates are a placeholder (the centroid of the face's
visible points) that keeps arithmetic finite and must not be scored. A face needs at least one point.

AFLW names its points from the viewer's side: ``LeftEyeCenter`` (feature 8) is the image-left eye.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...errors import AnnotationError
from ...schemes import LandmarkScheme, register_scheme
from ..annotation import FaceAnnotation
from .text import read_text_lines

AFLW_POINTS = 21

_AFLW_NAMES = (
    "left_brow_left", "left_brow_centre", "left_brow_right",
    "right_brow_left", "right_brow_centre", "right_brow_right",
    "left_eye_left", "left_eye_centre", "left_eye_right",
    "right_eye_left", "right_eye_centre", "right_eye_right",
    "left_ear", "nose_left", "nose_centre", "nose_right", "right_ear",
    "mouth_left", "mouth_centre", "mouth_right", "chin_centre",
)

AFLW_21 = register_scheme(LandmarkScheme(
    name="aflw-21",
    point_names=_AFLW_NAMES,
    # 0-based: brows 0-5 mirror end to end, eyes 6-11 likewise, ears 12/16, nostrils 13/15, mouth
    # corners 17/19; nose centre 14, mouth centre 18 and chin 20 are on the midline.
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 16), (13, 15), (17, 19)),
    # Eye centres are AFLW features 8 and 11 (1-based), the nose tip 15, mouth corners 18 and 20.
    five_point_groups=((7,), (10,), (14,), (17,), (19,)),
    outer_eye_corners=(6, 11),
    description="AFLW 21 points, 0-based (feature_id - 1); visible=False marks missing points.",
))




def _fields(line: str) -> list[str]:
    return line.replace(",", " ").split()


def _face(points: np.ndarray, present: np.ndarray, image: Path, source: str, p: Path,
          line: int | None) -> FaceAnnotation:
    if not present.any():
        raise AnnotationError(p, "face has no points", line)
    filled = points.copy()
    filled[~present] = points[present].mean(axis=0)
    return FaceAnnotation(image, filled.astype(np.float32), AFLW_21, {}, present.copy(), source)


def _check_image(image: Path, p: Path, line: int | None, check: bool) -> None:
    if check and not image.is_file():
        raise AnnotationError(p, f"image {image} not found", line)


def parse_aflw_line(text: str, path: Path, line_no: int, root: Path,
                    check_images: bool = True) -> FaceAnnotation:
    fields = _fields(text)
    if len(fields) != 1 + 2 * AFLW_POINTS:
        raise AnnotationError(path, f"expected {1 + 2 * AFLW_POINTS} fields (image path, 21 x y pairs), "
                              f"found {len(fields)}", line_no)
    try:
        values = np.array([float(v) for v in fields[1:]], dtype=np.float64).reshape(AFLW_POINTS, 2)
    except ValueError as exc:
        raise AnnotationError(path, f"non-numeric value ({exc})", line_no) from None
    if np.isinf(values).any():
        raise AnnotationError(path, "infinite coordinate", line_no)
    present = ~(np.isnan(values).any(axis=1) | (values == -1).all(axis=1))
    image = root / fields[0].replace("\\", "/")
    _check_image(image, path, line_no, check_images)
    return _face(values, present, image, f"{path}:{line_no}", path, line_no)


def read_aflw(path: str | Path, root: str | Path | None = None,
              check_images: bool = True) -> list[FaceAnnotation]:
    """Read the one-face-per-line format; ``AnnotationError`` naming the file and line on bad input."""
    p = Path(path)
    base = Path(root) if root is not None else p.parent
    faces = [parse_aflw_line(line, p, n, base, check_images)
             for n, line in enumerate(read_text_lines(p), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not faces:
        raise AnnotationError(p, "no annotations in file")
    return faces


def read_aflw_points(coords_file: str | Path, faces_file: str | Path, root: str | Path | None = None,
                     check_images: bool = True) -> list[FaceAnnotation]:
    """Read the one-point-per-line export plus its ``face_id image_path`` list (paths relative to
    ``root``, default the faces file's folder)."""
    cp, fp = Path(coords_file), Path(faces_file)
    base = Path(root) if root is not None else fp.parent
    images: dict[str, tuple[Path, int]] = {}
    for n, line in enumerate(read_text_lines(fp), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in (line.split(",", 1) if "," in line else line.split(None, 1))]
        if len(fields) != 2 or not all(fields):
            raise AnnotationError(fp, "expected 'face_id image_path'", n)
        face_id = fields[0]
        if face_id in images:
            raise AnnotationError(fp, f"face {face_id} listed twice", n)
        images[face_id] = (base / fields[1].replace("\\", "/"), n)
    if not images:
        raise AnnotationError(fp, "no faces in file")
    points = {fid: np.full((AFLW_POINTS, 2), np.nan) for fid in images}
    first_line: dict[str, int] = {}
    for n, line in enumerate(read_text_lines(cp), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = _fields(line)
        if len(fields) != 4:
            raise AnnotationError(cp, f"expected 'face_id feature_id x y', found {len(fields)} fields", n)
        face_id = fields[0]
        if face_id not in images:
            raise AnnotationError(cp, f"face {face_id} is not in {fp}", n)
        try:
            feature = int(fields[1])
            x, y = float(fields[2]), float(fields[3])
        except ValueError as exc:
            raise AnnotationError(cp, f"non-numeric value ({exc})", n) from None
        if not 1 <= feature <= AFLW_POINTS:
            raise AnnotationError(cp, f"feature_id must be 1..{AFLW_POINTS}, found {feature}", n)
        if not (math.isfinite(x) and math.isfinite(y)):
            raise AnnotationError(cp, "non-finite coordinate", n)
        if not np.isnan(points[face_id][feature - 1]).all():
            raise AnnotationError(cp, f"face {face_id} feature {feature} given twice", n)
        points[face_id][feature - 1] = (x, y)
        first_line.setdefault(face_id, n)
    faces = []
    for face_id, (image, n) in images.items():
        _check_image(image, fp, n, check_images)
        present = ~np.isnan(points[face_id]).any(axis=1)
        if not present.any():
            raise AnnotationError(fp, f"face {face_id} has no points in {cp}", n)
        faces.append(_face(points[face_id], present, image, f"{cp}:{first_line[face_id]}", fp, n))
    return faces
