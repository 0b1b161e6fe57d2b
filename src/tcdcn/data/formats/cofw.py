"""COFW (Burgos-Artizzu, Perona, Dollar, ICCV 2013): 29 points with occlusion flags, in ``.mat`` files.

``COFW_train.mat`` holds ``IsTr`` (cell array of images, grey or RGB uint8), ``phisTr`` (N x 87: 29 x,
then 29 y, then 29 occlusion flags, 1 = occluded) and ``bboxesTr`` (N x 4: x, y, w, h);
``COFW_test.mat`` the same as ``IsT`` / ``phisT`` / ``bboxesT``. Both MATLAB v7.3 files (HDF5, read
with h5py: arrays are stored transposed and cell arrays as object references) and older ones (read
with ``scipy.io.loadmat``) are accepted.

The images live inside the ``.mat``, while a ``FaceAnnotation`` points at an image file, so
``read_cofw(mat, cache_dir)`` writes each face's image to ``cache_dir`` as a PNG named
``<mat stem>_<index, 4 digits, 1-based>.png`` (skipped when a file of that name is already there: the
folder is a cache, delete it to rewrite) and returns annotations pointing at those files.
``load_cofw_arrays`` gives the raw arrays for in-memory use. Coordinates are as released (MATLAB's
1-based pixel convention, like the 300-W ``.pts`` files).

Occluded points get ``visible = False`` but keep their coordinates. Note that the COFW protocol scores
all 29 points, occluded ones included: an evaluation that follows it must not drop them by ``visible``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import AnnotationError
from ...schemes import LandmarkScheme, register_scheme
from ..annotation import FaceAnnotation

COFW_POINTS = 29

# The LFPW fiducials COFW kept (the first 28 of LFPW's 35 plus the chin), in the release's order.
# "left"/"right" are taken as the image's left/right; the pairs below do not depend on that choice,
# only the order of the eye and mouth groups in five_point_groups does.
_COFW_NAMES = (
    "left_brow_outer", "right_brow_outer", "left_brow_inner", "right_brow_inner",
    "left_brow_top", "left_brow_bottom", "right_brow_top", "right_brow_bottom",
    "left_eye_outer", "right_eye_outer", "left_eye_inner", "right_eye_inner",
    "left_eye_top", "left_eye_bottom", "right_eye_top", "right_eye_bottom",
    "left_pupil", "right_pupil", "left_nostril", "right_nostril",
    "nose_tip", "nose_bottom", "mouth_left", "mouth_right",
    "upper_lip_top", "upper_lip_bottom", "lower_lip_top", "lower_lip_bottom", "chin",
)

COFW_29 = register_scheme(LandmarkScheme(
    name="cofw-29",
    point_names=_COFW_NAMES,
    flip_pairs=((0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15), (16, 17),
                (18, 19), (22, 23)),
    five_point_groups=((16,), (17,), (20,), (22,), (23,)),
    outer_eye_corners=(8, 9),
    description="COFW 29 points, 0-based; visible=False marks occluded points (still scored by COFW).",
))

_VARIABLES = (("IsTr", "phisTr", "bboxesTr"), ("IsT", "phisT", "bboxesT"))


@dataclass(frozen=True)
class CofwArrays:
    """The arrays of one COFW ``.mat``: images (H x W or H x W x 3 uint8), phis (N, 87), bboxes (N, 4)."""

    images: list[np.ndarray]
    phis: np.ndarray
    bboxes: np.ndarray | None


def _pick_names(keys: set[str], p: Path) -> tuple[str, str, str]:
    for names in _VARIABLES:
        if names[0] in keys and names[1] in keys:
            return names
    raise AnnotationError(p, "no COFW variables (IsTr/phisTr or IsT/phisT) in file; found "
                          + (", ".join(sorted(keys)) or "none"))


def _load_hdf5(p: Path) -> CofwArrays:
    try:
        import h5py
    except ImportError:
        raise AnnotationError(p, "MATLAB v7.3 file: reading it needs h5py (pip install h5py)") from None
    try:
        with h5py.File(p, "r") as f:
            keys = {k for k in f.keys() if not k.startswith("#")}
            im_name, phi_name, box_name = _pick_names(keys, p)
            cell = f[im_name]
            if h5py.check_dtype(ref=cell.dtype) is None:
                raise AnnotationError(p, f"{im_name} is not a cell array of images")
            images = []
            for ref in np.asarray(cell).reshape(-1):
                if not ref:
                    raise AnnotationError(p, f"{im_name} holds an empty reference")
                # MATLAB stores column-major: an H x W (x 3) image reads back as (3 x) W x H.
                images.append(np.ascontiguousarray(np.asarray(f[ref]).transpose()))
            phis = np.asarray(f[phi_name], dtype=np.float64).T
            bboxes = np.asarray(f[box_name], dtype=np.float64).T if box_name in keys else None
    except AnnotationError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise AnnotationError(p, f"cannot read MATLAB v7.3 file ({exc})") from None
    return CofwArrays(images, phis, bboxes)


def _load_classic(p: Path) -> CofwArrays:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise AnnotationError(p, "reading .mat files needs scipy (pip install scipy)") from None
    try:
        data = loadmat(str(p))
    except Exception as exc:  # scipy raises several unrelated types for damaged files
        raise AnnotationError(p, f"cannot read .mat file ({exc})") from None
    keys = {k for k in data if not k.startswith("__")}
    im_name, phi_name, box_name = _pick_names(keys, p)
    cell = data[im_name]
    if cell.dtype != object:
        raise AnnotationError(p, f"{im_name} is not a cell array of images")
    images = [np.asarray(im) for im in cell.reshape(-1)]
    phis = np.asarray(data[phi_name], dtype=np.float64)
    bboxes = np.asarray(data[box_name], dtype=np.float64) if box_name in keys else None
    return CofwArrays(images, phis, bboxes)


def load_cofw_arrays(path: str | Path) -> CofwArrays:
    """Images, ``phis`` and boxes of a COFW ``.mat`` (v7.3 or older), checked for shape."""
    p = Path(path)
    if not p.is_file():
        raise AnnotationError(p, "no such file")
    try:
        import h5py

        is_hdf5 = h5py.is_hdf5(str(p))
    except ImportError:
        with p.open("rb") as fh:
            is_hdf5 = b"MATLAB 7.3" in fh.read(128)
    arrays = _load_hdf5(p) if is_hdf5 else _load_classic(p)
    phis = arrays.phis
    if phis.ndim != 2 or phis.shape[1] != 3 * COFW_POINTS:
        raise AnnotationError(p, f"phis must be N x {3 * COFW_POINTS} (29 x, 29 y, 29 occlusion flags), "
                              f"found shape {phis.shape}")
    if phis.shape[0] != len(arrays.images):
        raise AnnotationError(p, f"{len(arrays.images)} images but {phis.shape[0]} rows of phis")
    if arrays.bboxes is not None and arrays.bboxes.shape != (phis.shape[0], 4):
        raise AnnotationError(p, f"bboxes must be N x 4, found shape {arrays.bboxes.shape}")
    for i, im in enumerate(arrays.images, start=1):
        if im.ndim not in (2, 3) or (im.ndim == 3 and im.shape[2] not in (1, 3)) or im.size == 0:
            raise AnnotationError(p, f"face {i}: image of shape {im.shape} is not grey or RGB")
    return arrays


def _to_uint8(im: np.ndarray) -> np.ndarray:
    if im.dtype == np.uint8:
        return im
    arr = im.astype(np.float64)
    if arr.size and arr.max() <= 1.0:
        arr = arr * 255.0
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _write_png(im: np.ndarray, target: Path) -> None:
    from PIL import Image

    arr = _to_uint8(im)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    tmp = target.with_name(target.name + ".part")
    Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")
    tmp.replace(target)


def cofw_faces_from_arrays(arrays: CofwArrays, image_paths: list[Path], source: str) -> list[FaceAnnotation]:
    """Annotations for ``arrays`` whose images are (or will be) at ``image_paths``."""
    faces = []
    for i, (row, image) in enumerate(zip(arrays.phis, image_paths), start=1):
        if not all(math.isfinite(v) for v in row):
            raise AnnotationError(source, f"face {i}: non-finite value in phis")
        flags = row[2 * COFW_POINTS:]
        if not np.all((flags == 0) | (flags == 1)):
            raise AnnotationError(source, f"face {i}: occlusion flags must be 0 or 1")
        xy = np.stack([row[:COFW_POINTS], row[COFW_POINTS:2 * COFW_POINTS]], axis=1).astype(np.float32)
        faces.append(FaceAnnotation(image, xy, COFW_29, {}, flags == 0, f"{source}[{i}]"))
    return faces


def read_cofw(path: str | Path, cache_dir: str | Path) -> list[FaceAnnotation]:
    """Read a COFW ``.mat``; write its images to ``cache_dir`` as PNGs and point the annotations at them.

    ``FaceAnnotation.source`` is ``"<mat>[i]"`` with ``i`` the 1-based face index (the MATLAB index).
    """
    p = Path(path)
    arrays = load_cofw_arrays(p)
    cache = Path(cache_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnnotationError(cache, f"cannot create image cache folder ({exc.strerror or exc})") from None
    paths = [cache / f"{p.stem}_{i:04d}.png" for i in range(1, len(arrays.images) + 1)]
    faces = cofw_faces_from_arrays(arrays, paths, str(p))
    for im, target in zip(arrays.images, paths):
        if not target.is_file():
            try:
                _write_png(im, target)
            except OSError as exc:
                raise AnnotationError(target, f"cannot write image ({exc})") from None
    return faces
