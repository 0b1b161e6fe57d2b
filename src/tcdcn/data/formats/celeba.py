"""CelebA (Liu et al., ICCV 2015) landmark and attribute lists, and the MAFL subsets of it.

- ``list_landmarks_align_celeba.txt`` (or ``list_landmarks_celeba.txt``): line 1 the face count, line 2
  the column names ``lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y
  rightmouth_x rightmouth_y``, then ``000001.jpg 69 109 106 113 77 142 73 152 108 154``. Columns are
  found by name. CelebA's "lefteye" / "leftmouth" are the image's left (in that first row lefteye_x
  69 < righteye_x 106), which is MTFL_5's order, so points are taken as they are.
- ``list_attr_celeba.txt``: line 1 the count, line 2 the 40 attribute names, then the image name and
  40 values of 1 (yes) / -1 (no).
- MAFL (Zhang et al., TPAMI 2016) ``training.txt`` / ``testing.txt``: one image name per line,
  selecting the faces (19,000 / 1,000).

Attributes become binary tasks through ``CELEBA_ATTRIBUTE_TASKS``: the 22 of the paper's MAFL attributes
that CelebA's 40 provide, each ``(CelebA name, task name, group)``. None of them is left/right-sided,
so mirroring leaves them unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...attributes import CELEBA_ATTRIBUTE_TASKS, CELEBA_TASK_NAMES
from ...errors import AnnotationError
from ...schemes import MTFL_5
from ..annotation import FaceAnnotation
from .helen import read_name_list
from .text import read_text_lines

# (CelebA attribute, task name, group). "male", "smiling", "glasses" share MTFL's task names.

_LANDMARK_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                     "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")




def _header(p: Path, lines: list[str]) -> tuple[int, list[str]]:
    if len(lines) < 2:
        raise AnnotationError(p, "expected a count line and a header line", len(lines) or 1)
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise AnnotationError(p, f"first line must be the face count, found {lines[0].strip()!r}", 1) from None
    names = lines[1].split()
    if not names:
        raise AnnotationError(p, "empty header line", 2)
    return count, names


def _rows(p: Path, lines: list[str], count: int, width: int):
    """Yield ``(line number, image name, values)`` of the data rows; checks widths, duplicates, count."""
    seen: set[str] = set()
    n = 0
    for i, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != width + 1:
            raise AnnotationError(p, f"expected an image name and {width} values, found {len(fields)} fields", i)
        if fields[0] in seen:
            raise AnnotationError(p, f"image {fields[0]!r} listed twice", i)
        seen.add(fields[0])
        n += 1
        yield i, fields[0], fields[1:]
    if n != count:
        raise AnnotationError(p, f"first line says {count} faces, found {n} (truncated file?)")


def read_celeba_landmarks(path: str | Path) -> dict[str, tuple[np.ndarray, int]]:
    """Image name -> ``((5, 2) float32 points in MTFL_5 order, line number)``, in file order."""
    p = Path(path)
    lines = read_text_lines(p)
    count, names = _header(p, lines)
    missing = [c for c in _LANDMARK_COLUMNS if c not in names]
    if missing:
        raise AnnotationError(p, f"header lacks column(s) {missing}", 2)
    columns = [names.index(c) for c in _LANDMARK_COLUMNS]
    out: dict[str, tuple[np.ndarray, int]] = {}
    for i, name, values in _rows(p, lines, count, len(names)):
        try:
            numbers = [float(values[c]) for c in columns]
        except ValueError as exc:
            raise AnnotationError(p, f"non-numeric value ({exc})", i) from None
        if not all(math.isfinite(v) for v in numbers):
            raise AnnotationError(p, "non-finite coordinate", i)
        out[name] = (np.asarray(numbers, dtype=np.float32).reshape(5, 2), i)
    return out


def read_celeba_attributes(path: str | Path) -> tuple[list[str], dict[str, dict[str, int]]]:
    """``(attribute names, image name -> {CelebA attribute: 0/1})`` from ``list_attr_celeba.txt``."""
    p = Path(path)
    lines = read_text_lines(p)
    count, names = _header(p, lines)
    labels: dict[str, dict[str, int]] = {}
    for i, name, values in _rows(p, lines, count, len(names)):
        row = {}
        for attr, v in zip(names, values):
            if v not in ("1", "-1"):
                raise AnnotationError(p, f"attribute {attr} must be 1 or -1, found {v!r}", i)
            row[attr] = int(v == "1")
        labels[name] = row
    return names, labels


def _task_table(tasks: Sequence[str] | None) -> list[tuple[str, str]]:
    if tasks is None:
        return [(c, t) for c, t, _ in CELEBA_ATTRIBUTE_TASKS]
    by_task = {t: c for c, t, _ in CELEBA_ATTRIBUTE_TASKS}
    unknown = [t for t in tasks if t not in by_task]
    if unknown:
        raise ValueError(f"unknown CelebA task(s) {unknown}; known: {list(CELEBA_TASK_NAMES)}")
    return [(by_task[t], t) for t in tasks]


def read_celeba(landmarks_file: str | Path, images_dir: str | Path,
                attributes_file: str | Path | None = None, subset_file: str | Path | None = None,
                tasks: Sequence[str] | None = None, check_images: bool = True) -> list[FaceAnnotation]:
    """CelebA / MAFL faces with MTFL_5 landmarks and (given ``attributes_file``) binary attribute tasks.

    ``subset_file`` (MAFL ``training.txt`` / ``testing.txt``) keeps only the listed images, in its
    order; ``tasks`` picks task names from ``CELEBA_TASK_NAMES`` (default: all of them). With
    ``check_images`` every image must exist in ``images_dir``.
    """
    lm_path = Path(landmarks_file)
    landmarks = read_celeba_landmarks(lm_path)
    table = _task_table(tasks)
    labels: dict[str, dict[str, int]] | None = None
    if attributes_file is not None:
        header, labels = read_celeba_attributes(attributes_file)
        absent = [c for c, _ in table if c not in header]
        if absent:
            raise AnnotationError(attributes_file, f"header lacks attribute(s) {absent}", 2)
    if subset_file is not None:
        listed = read_name_list(subset_file)
        for name, n in listed:
            if name not in landmarks:
                raise AnnotationError(subset_file, f"image {name!r} is not in {lm_path}", n)
        names = [name for name, _ in listed]
    else:
        names = list(landmarks)
    images = Path(images_dir)
    faces = []
    for name in names:
        points, line_no = landmarks[name]
        attributes: dict[str, int] = {}
        if labels is not None:
            row = labels.get(name)
            if row is None:
                assert attributes_file is not None
                raise AnnotationError(attributes_file, f"no attributes for image {name!r} "
                                      f"(landmarks at {lm_path}:{line_no})")
            attributes = {task: row[celeba] for celeba, task in table}
        image = images / name
        if check_images and not image.is_file():
            raise AnnotationError(lm_path, f"image {name!r} not found in {images}", line_no)
        faces.append(FaceAnnotation(image, points, MTFL_5, attributes, None, f"{lm_path}:{line_no}"))
    if not faces:
        raise AnnotationError(lm_path, "no annotations in file")
    return faces
