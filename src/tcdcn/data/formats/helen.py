"""The Helen 194-point format (Le et al., ECCV 2012), as in the official ``annotation/*.txt`` files.

One face per file: the first line is the image name without extension (``100032540_1``), then 194
lines ``x , y`` in pixels of that image (a plain ``x y`` is accepted too). ``read_helen_folder`` pairs a
folder of such files with the folder of images (``<name>.jpg``); the official train/test lists
(``trainnames.txt`` / ``testnames.txt``: one image name per line) select a split.

Point layout (0-based), one curve per part, points spaced evenly along it:
contour 0-40, nose 41-57, outer lip 58-85 (upper 58-71, lower 72-85), inner lip 86-113 (upper 86-99,
lower 100-113), eye 114-133, eye 134-153, brow 154-173, brow 174-193 (Helen calls 114-133 and
154-173 "right": the subject's right, the image's left, as in the iBUG 68 naming).

Mirror correspondences are not published with the dataset; ``HELEN_194`` derives them from this
layout under stated assumptions (see ``_helen_flip_pairs``), the same way ``derive_flip_pairs`` finds
them geometrically from a mean shape. With real Helen files at hand, check them with
``derive_flip_pairs(mean_shape(faces), HELEN_PARTS)`` and ``left_right_agreement(faces)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ...errors import AnnotationError
from ...schemes import LandmarkScheme, register_scheme
from ..annotation import FaceAnnotation
from .pts import IMAGE_SUFFIXES
from .text import parse_point_line, read_text_lines

HELEN_POINTS = 194

# Part name -> index range; pairs of parts that mirror onto each other (a part may mirror onto itself).
HELEN_PART_RANGES: dict[str, range] = {
    "contour": range(0, 41),
    "nose": range(41, 58),
    "outer_lip_upper": range(58, 72),
    "outer_lip_lower": range(72, 86),
    "inner_lip_upper": range(86, 100),
    "inner_lip_lower": range(100, 114),
    "eye_image_left": range(114, 134),
    "eye_image_right": range(134, 154),
    "brow_image_left": range(154, 174),
    "brow_image_right": range(174, 194),
}
HELEN_PARTS: tuple[tuple[range, range], ...] = (
    (HELEN_PART_RANGES["contour"], HELEN_PART_RANGES["contour"]),
    (HELEN_PART_RANGES["nose"], HELEN_PART_RANGES["nose"]),
    (HELEN_PART_RANGES["outer_lip_upper"], HELEN_PART_RANGES["outer_lip_upper"]),
    (HELEN_PART_RANGES["outer_lip_lower"], HELEN_PART_RANGES["outer_lip_lower"]),
    (HELEN_PART_RANGES["inner_lip_upper"], HELEN_PART_RANGES["inner_lip_upper"]),
    (HELEN_PART_RANGES["inner_lip_lower"], HELEN_PART_RANGES["inner_lip_lower"]),
    (HELEN_PART_RANGES["eye_image_left"], HELEN_PART_RANGES["eye_image_right"]),
    (HELEN_PART_RANGES["brow_image_left"], HELEN_PART_RANGES["brow_image_right"]),
)


def _helen_flip_pairs() -> tuple[tuple[int, int], ...]:
    """Mirror pairs from the layout.

    Open curves that are their own mirror image (contour, nose, each lip curve) are sampled evenly
    from one end to the other, so point ``k`` of ``n`` mirrors onto point ``n-1-k`` whichever end they
    start at. The eye and brow contours are closed curves of 20 points; as in the iBUG 68 scheme both
    are assumed to start at their image-left corner and run the same way round, so the mirror of point
    ``k`` of one is point ``(10 - k) mod 20`` of the other. That assumption is the doubtful one.
    """
    pairs: list[tuple[int, int]] = []
    for name in ("contour", "nose", "outer_lip_upper", "outer_lip_lower", "inner_lip_upper",
                 "inner_lip_lower"):
        r = HELEN_PART_RANGES[name]
        n = len(r)
        pairs += [(r[k], r[n - 1 - k]) for k in range(n // 2)]
    for left, right in (("eye_image_left", "eye_image_right"), ("brow_image_left", "brow_image_right")):
        a, b = HELEN_PART_RANGES[left], HELEN_PART_RANGES[right]
        n = len(a)
        pairs += [(a[k], b[(n // 2 - k) % n]) for k in range(n)]
    return tuple(pairs)


def _helen_point_names() -> tuple[str, ...]:
    names: list[str] = []
    for part, r in HELEN_PART_RANGES.items():
        names += [f"{part}_{k}" for k in range(len(r))]
    return tuple(names)


HELEN_194 = register_scheme(LandmarkScheme(
    name="helen-194",
    point_names=_helen_point_names(),
    flip_pairs=_helen_flip_pairs(),
    # Eye contour means; nose: the middle of the nose curve (the base of the nose; Helen has no tip
    # point); mouth corners: the two lip curves meet there, so each corner is the mean of the end of
    # the upper and the start/end of the lower curve nearest to it.
    five_point_groups=(tuple(range(114, 134)), tuple(range(134, 154)), (49,), (58, 85), (71, 72)),
    # Helen's protocol normalises by the distance between the eye-contour centroids.
    outer_eye_corners=None,
    description="Helen 194 points, 0-based; flip pairs derived from the part layout (see helen.py).",
))




def parse_helen_file(path: str | Path) -> tuple[str, np.ndarray]:
    """Return ``(image name, (194, 2) float32 points)``; ``AnnotationError`` with file and line."""
    p = Path(path)
    lines = read_text_lines(p)
    if not lines or not lines[0].strip():
        raise AnnotationError(p, "first line must be the image name", 1)
    name = lines[0].strip()
    if len(name.replace(",", " ").split()) != 1:
        raise AnnotationError(p, f"first line must be the image name, found {name!r}", 1)
    points: list[tuple[float, float]] = []
    for i, line in enumerate(lines[1:], start=2):
        s = line.strip()
        if not s:
            continue
        x, y = parse_point_line(s, p, i, separators=",", form="x , y")
        if len(points) == HELEN_POINTS:
            raise AnnotationError(p, f"more than {HELEN_POINTS} points", i)
        points.append((x, y))
    if len(points) != HELEN_POINTS:
        raise AnnotationError(p, f"expected {HELEN_POINTS} points, found {len(points)}")
    return name, np.asarray(points, dtype=np.float32)


def _find_image(images: Path, name: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for cand in (images / f"{name}{suffix}", images / f"{name}{suffix.upper()}"):
            if cand.is_file():
                return cand
    return None


def read_helen(path: str | Path, images_dir: str | Path) -> FaceAnnotation:
    """One Helen annotation file; the image ``<name>.<ext>`` must be in ``images_dir``."""
    p = Path(path)
    name, points = parse_helen_file(p)
    image = _find_image(Path(images_dir), name)
    if image is None:
        raise AnnotationError(p, f"image {name!r} not found in {images_dir} (tried "
                              + ", ".join(IMAGE_SUFFIXES) + ")", 1)
    return FaceAnnotation(image, points, HELEN_194, {}, None, str(p))


def _natural_key(p: Path) -> tuple[object, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))


def read_name_list(path: str | Path) -> list[tuple[str, int]]:
    """``(name, line number)`` of a file with one image name per line (Helen's trainnames/testnames,
    MAFL's training/testing lists); blank lines are skipped."""
    p = Path(path)
    names: list[tuple[str, int]] = []
    for i, line in enumerate(read_text_lines(p), start=1):
        s = line.strip()
        if not s:
            continue
        if len(s.split()) != 1:
            raise AnnotationError(p, f"expected one name per line, found {s!r}", i)
        names.append((s, i))
    if not names:
        raise AnnotationError(p, "no names in file")
    return names


def read_helen_folder(annotation_dir: str | Path, images_dir: str | Path,
                      names_file: str | Path | None = None) -> list[FaceAnnotation]:
    """Every ``*.txt`` in ``annotation_dir`` (in natural order: 1, 2, ..., 10), images from ``images_dir``.

    With ``names_file`` (e.g. Helen's ``testnames.txt``) only the faces whose image name it lists are
    returned, in the list's order; a listed name without an annotation file is an error.
    """
    root = Path(annotation_dir)
    files = sorted(root.glob("*.txt"), key=_natural_key)
    if not files:
        raise AnnotationError(root, "no .txt annotation files in folder")
    wanted = read_name_list(names_file) if names_file is not None else None
    parsed: dict[str, tuple[Path, np.ndarray]] = {}
    for f in files:
        name, points = parse_helen_file(f)
        if name in parsed:
            raise AnnotationError(f, f"image {name!r} already annotated in {parsed[name][0]}", 1)
        parsed[name] = (f, points)
    order = [(name, 0) for name in parsed] if wanted is None else wanted
    faces = []
    for name, i in order:
        if name not in parsed:
            assert names_file is not None
            raise AnnotationError(names_file, f"no annotation file for image {name!r} in {root}", i)
        f, points = parsed[name]
        image = _find_image(Path(images_dir), name)
        if image is None:
            raise AnnotationError(f, f"image {name!r} not found in {images_dir}", 1)
        faces.append(FaceAnnotation(image, points, HELEN_194, {}, None, str(f)))
    return faces


# ----- checking a scheme's left/right choices against data ---------------------------------------

def mean_shape(faces: Sequence[FaceAnnotation]) -> np.ndarray:
    """Mean of the faces' landmarks after normalising each face for position and scale (no rotation)."""
    if not faces:
        raise ValueError("mean_shape needs at least one face")
    shapes = []
    for f in faces:
        pts = np.asarray(f.landmarks, dtype=np.float64)
        centred = pts - pts.mean(axis=0)
        scale = np.sqrt((centred**2).sum(axis=1).mean()) or 1.0
        shapes.append(centred / scale)
    return np.mean(shapes, axis=0)


def derive_flip_pairs(shape: np.ndarray,
                      parts: Iterable[tuple[Sequence[int], Sequence[int]]]) -> tuple[tuple[int, int], ...]:
    """Mirror correspondences found geometrically from a (roughly frontal, upright) shape.

    The shape is mirrored about the vertical line through its centroid; within each pair of parts
    (``(part, part)`` for a part that is its own mirror image) every mirrored point is matched to a
    point of the partner part by minimum-cost assignment. Raises ``ValueError`` when the result is not
    an involution (the shape is too asymmetric to tell).
    """
    from scipy.optimize import linear_sum_assignment

    pts = np.asarray(shape, dtype=np.float64)
    mirrored = pts.copy()
    mirrored[:, 0] = 2.0 * pts[:, 0].mean() - pts[:, 0]
    perm = list(range(len(pts)))
    for a, b in parts:
        a_idx, b_idx = list(a), list(b)
        if len(a_idx) != len(b_idx):
            raise ValueError(f"parts of different sizes: {len(a_idx)} and {len(b_idx)}")
        cost = np.linalg.norm(mirrored[a_idx][:, None, :] - pts[b_idx][None, :, :], axis=-1)
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols):
            perm[a_idx[r]] = b_idx[c]
            perm[b_idx[c]] = a_idx[r]
    for i, j in enumerate(perm):
        if perm[j] != i:
            raise ValueError(f"mirror matching is not an involution at point {i}")
    return tuple((i, j) for i, j in enumerate(perm) if i < j)


def left_right_agreement(faces: Sequence[FaceAnnotation]) -> float:
    """Fraction of faces whose five points put eye 0 and mouth corner 0 to the image-left of 1 and 2.

    On a set of mostly frontal faces this is near 1 when a scheme's ``five_point_groups`` follow the
    image-left-first convention, and near 0 when they are swapped.
    """
    if not faces:
        raise ValueError("left_right_agreement needs at least one face")
    ok = 0
    for f in faces:
        five = f.scheme.five_points(np.asarray(f.landmarks, dtype=np.float64))
        ok += int(five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0])
    return ok / len(faces)
