"""The 300-W evaluation protocol's subsets, read from the 300-W download with ``read_pts_folder``.

The download has ``lfpw/{trainset,testset}``, ``helen/{trainset,testset}``, ``afw`` and ``ibug``, each
a folder of images with ``.pts`` files (68 points). The usual subsets:

- ``common``: lfpw/testset + helen/testset (554 faces);
- ``challenging``: ibug (135 faces);
- ``full``: common + challenging (689 faces);
- ``train``: lfpw/trainset + helen/trainset + afw (3,148 faces).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import AnnotationError
from ...schemes import IBUG_68
from ..annotation import FaceAnnotation
from .pts import read_pts_folder

W300_SUBSETS: dict[str, tuple[str, ...]] = {
    "common": ("lfpw/testset", "helen/testset"),
    "challenging": ("ibug",),
    "full": ("lfpw/testset", "helen/testset", "ibug"),
    "train": ("lfpw/trainset", "helen/trainset", "afw"),
}


def read_300w(root: str | Path, subset: str, allow_missing: bool = False) -> list[FaceAnnotation]:
    """Faces of a 300-W subset, folder by folder in the order above (each folder sorted by file name).

    A missing folder is an ``AnnotationError`` naming it, unless ``allow_missing`` (then the folders
    that are there are read, and at least one must be).
    """
    if subset not in W300_SUBSETS:
        raise ValueError(f"unknown 300-W subset {subset!r}; known: {sorted(W300_SUBSETS)}")
    base = Path(root)
    if not base.is_dir():
        raise AnnotationError(base, "no such folder")
    folders = W300_SUBSETS[subset]
    missing = [f for f in folders if not (base / f).is_dir()]
    present = [f for f in folders if f not in missing]
    if missing and (not allow_missing or not present):
        raise AnnotationError(base, f"300-W subset {subset!r} needs folder(s) {', '.join(folders)}; "
                              f"missing: {', '.join(missing)}")
    faces: list[FaceAnnotation] = []
    for folder in present:
        faces += read_pts_folder(base / folder, IBUG_68)
    return faces
