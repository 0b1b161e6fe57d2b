"""One reader per annotation format, all returning ``FaceAnnotation`` lists.

``read_annotations(path)`` picks the reader from what the path is (an MTFL-style list file, or a folder
of images with ``.pts`` files); each reader can also be called directly.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import AnnotationError
from ..annotation import FaceAnnotation
from .aflw import AFLW_21, read_aflw, read_aflw_points
from .celeba import CELEBA_ATTRIBUTE_TASKS, CELEBA_TASK_NAMES, read_celeba
from .cofw import COFW_29, load_cofw_arrays, read_cofw
from .helen import HELEN_194, read_helen, read_helen_folder
from .mtfl import read_mtfl
from .pts import read_pts, read_pts_folder
from .w300 import W300_SUBSETS, read_300w

__all__ = [
    "read_annotations", "read_mtfl", "read_pts", "read_pts_folder", "read_helen", "read_helen_folder",
    "read_cofw", "load_cofw_arrays", "read_celeba", "read_aflw", "read_aflw_points", "read_300w",
    "HELEN_194", "COFW_29", "AFLW_21", "CELEBA_ATTRIBUTE_TASKS", "CELEBA_TASK_NAMES", "W300_SUBSETS",
]


def read_annotations(path: str | Path) -> list[FaceAnnotation]:
    p = Path(path)
    if p.is_dir():
        return read_pts_folder(p)
    if p.is_file():
        return read_mtfl(p)
    raise AnnotationError(p, "no such file or folder")
