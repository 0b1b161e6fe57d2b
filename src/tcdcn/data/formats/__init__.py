"""One reader per annotation format, all returning ``FaceAnnotation`` lists.

``read_annotations(path)`` picks the reader from what the path is (an MTFL-style list file, or a folder
of images with ``.pts`` files); each reader can also be called directly.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import AnnotationError
from ..annotation import FaceAnnotation
from .mtfl import read_mtfl
from .pts import read_pts, read_pts_folder

__all__ = ["read_annotations", "read_mtfl", "read_pts", "read_pts_folder"]


def read_annotations(path: str | Path) -> list[FaceAnnotation]:
    p = Path(path)
    if p.is_dir():
        return read_pts_folder(p)
    if p.is_file():
        return read_mtfl(p)
    raise AnnotationError(p, "no such file or folder")
