"""Face boxes and the crops the network sees.

The face-box convention (one for training, evaluation and inference):
a square box centred on the centre of the bounding box of the five points (eye centres, nose tip,
mouth corners; any scheme reduces to them through its ``five_point_groups``), with side
``BOX_SCALE`` x the larger side of that bounding box. ``BOX_SCALE = 2.8`` is the relation of the
MTFL/AFLW release's test crops to their five points, so that "the whole test image is the box"
(``--box image``) and the ground-truth rule (``--box gt``) describe the same framing. Face-detector
boxes are mapped onto this convention by an affine correction measured on training faces.

Coordinates are continuous pixel coordinates in which pixel ``i`` has its centre at ``i``; a box
``(cx, cy, side)`` covers ``[cx - side/2, cx + side/2]``. An image of width W taken whole is the box
centred at ``(W-1)/2`` with side W.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .schemes import LandmarkScheme

BOX_SCALE = 2.8


@dataclass(frozen=True)
class Box:
    """A square face box on the package's face-box convention, in original-image pixels.

    Stored as centre and side (``cx``, ``cy``, ``side``); read as corners like other libraries' boxes
    (torchvision, insightface, face_alignment): ``x0, y0, x1, y1`` properties, ``to_xyxy()``, and
    iteration or ``np.asarray(box)`` yield ``(x0, y0, x1, y1)``, the corners the JSON output writes.
    A box may extend past the image (a face at the border is framed that way).
    """

    cx: float
    cy: float
    side: float

    @property
    def x0(self) -> float:
        return self.cx - self.side / 2.0

    @property
    def y0(self) -> float:
        return self.cy - self.side / 2.0

    @property
    def x1(self) -> float:
        return self.cx + self.side / 2.0

    @property
    def y1(self) -> float:
        return self.cy + self.side / 2.0

    def __iter__(self) -> Iterator[float]:
        return iter(self.to_xyxy())

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.asarray(self.to_xyxy(), dtype=dtype or np.float64)

    @classmethod
    def from_xyxy(cls, x0: float, y0: float, x1: float, y1: float) -> Box:
        """The square with the same centre as a rectangle and side equal to its mean side."""
        return cls((x0 + x1) / 2.0, (y0 + y1) / 2.0, ((x1 - x0) + (y1 - y0)) / 2.0)

    @classmethod
    def whole_image(cls, width: int, height: int) -> Box:
        return cls((width - 1) / 2.0, (height - 1) / 2.0, float(max(width, height)))

    def to_xyxy(self) -> tuple[float, float, float, float]:
        """The corners ``(x0, y0, x1, y1)``."""
        h = self.side / 2.0
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)

    def xyxy(self) -> tuple[float, float, float, float]:
        """``to_xyxy()``, under its earlier name."""
        return self.to_xyxy()


@dataclass(frozen=True)
class CropJitter:
    """One test-time crop of a face: its box moved by ``(dx, dy)`` times the box side and its side
    scaled by ``scale``. Averaging the landmarks of several such crops (in image pixels) is
    multi-crop inference; the network was trained on boxes jittered far more than this."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0

    def apply(self, box: Box) -> Box:
        return Box(box.cx + self.dx * box.side, box.cy + self.dy * box.side, box.side * self.scale)


def grid_jitters(shift: float) -> tuple[CropJitter, ...]:
    """The box and its 8 neighbours on a 3x3 grid ``shift`` box sides apart (the box itself first)."""
    if not 0.0 < shift < 0.5:
        raise ValueError(f"grid shift must be in (0, 0.5) box sides, got {shift}")
    steps = (0.0, -shift, shift)
    return tuple(CropJitter(dx, dy) for dy in steps for dx in steps)


def box_from_landmarks(landmarks: np.ndarray, scheme: LandmarkScheme, scale: float = BOX_SCALE) -> Box:
    """The documented face-box convention, from ground-truth landmarks ``(P, 2)``."""
    five = scheme.five_points(np.asarray(landmarks, dtype=np.float64))
    lo, hi = five.min(axis=0), five.max(axis=0)
    centre = (lo + hi) / 2.0
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1]))
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError("landmarks are degenerate: cannot derive a face box")
    return Box(float(centre[0]), float(centre[1]), extent * scale)


def crop_matrix(box: Box, size: int, rotation_deg: float = 0.0) -> np.ndarray:
    """2x3 affine matrix that maps image pixels into a ``size`` x ``size`` crop of ``box``.

    A rotation (degrees, counter-clockwise in the displayed image) turns the crop about the box centre.
    """
    s = size / box.side
    a = np.deg2rad(rotation_deg)
    cos, sin = np.cos(a) * s, np.sin(a) * s
    c = (size - 1) / 2.0
    # u = R*s*(p - centre) + c, with the image y axis pointing down.
    return np.array(
        [[cos, sin, c - cos * box.cx - sin * box.cy], [-sin, cos, c + sin * box.cx - cos * box.cy]],
        dtype=np.float64,
    )


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix.astype(np.float64))


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to ``(..., 2)`` points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


# Below this crop/image scale, warp_crop area-averages first: bilinear sampling alone aliases.
ANTIALIAS_BELOW_SCALE = 0.9


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: int, antialias: bool = True) -> np.ndarray:
    """Sample the crop; outside the image the border is replicated (as in the 300-W crops).

    When the crop shrinks the face (scale under ``ANTIALIAS_BELOW_SCALE``) and ``antialias`` is set, the
    image region under the crop is first reduced with area averaging (``cv2.INTER_AREA``) to about the
    crop's scale, so a face gets the same low-pass whether it comes from an 80-pixel crop or a 4,000-pixel
    photo; bilinear sampling alone skips pixels and aliases.
    """
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if antialias and scale < ANTIALIAS_BELOW_SCALE:
        image, matrix = _area_reduced(image, matrix, size, scale)
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _area_reduced(image: np.ndarray, matrix: np.ndarray, size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The image region the crop reads, area-reduced by ``scale``, and the crop matrix for it."""
    height, width = image.shape[:2]
    corners = apply_affine(invert_affine(matrix), np.array([[0, 0], [size - 1, 0], [0, size - 1],
                                                           [size - 1, size - 1]], dtype=np.float64))
    margin = 2.0 / scale  # the bilinear taps of the reduced image stay inside the region
    x0 = int(np.clip(np.floor(corners[:, 0].min() - margin), 0, width - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min() - margin), 0, height - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max() + margin), x0, width - 1)) + 1
    y1 = int(np.clip(np.ceil(corners[:, 1].max() + margin), y0, height - 1)) + 1
    region = image[y0:y1, x0:x1]
    out_w = max(1, round((x1 - x0) * scale))
    out_h = max(1, round((y1 - y0) * scale))
    reduced = cv2.resize(region, (out_w, out_h), interpolation=cv2.INTER_AREA)
    # cv2.resize maps pixel centres: q = (p - origin + 0.5) * f - 0.5, per axis, so p = (q + 0.5) / f - 0.5 + origin.
    fx, fy = out_w / (x1 - x0), out_h / (y1 - y0)
    to_image = np.array([[1 / fx, 0.0, 0.5 / fx - 0.5 + x0], [0.0, 1 / fy, 0.5 / fy - 0.5 + y0]])
    composed = matrix[:, :2] @ to_image[:, :2]
    offset = matrix[:, :2] @ to_image[:, 2] + matrix[:, 2]
    return reduced, np.concatenate([composed, offset[:, None]], axis=1)


def crop_matrices(boxes: np.ndarray, size: int) -> np.ndarray:
    """``crop_matrix`` (no rotation) of every box in ``(..., 3)`` (cx, cy, side) -> ``(..., 2, 3)``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    s = size / boxes[..., 2]  # (...)
    c = (size - 1) / 2.0
    out = np.zeros(boxes.shape[:-1] + (2, 3))  # (..., 2, 3), filled in place (per-face inference calls this often)
    out[..., 0, 0] = out[..., 1, 1] = s
    out[..., 0, 2] = c - s * boxes[..., 0]
    out[..., 1, 2] = c - s * boxes[..., 1]
    return out


def invert_affines(matrices: np.ndarray) -> np.ndarray:
    """The inverse of every 2x3 affine in ``(..., 2, 3)`` (cv2.invertAffineTransform's arithmetic;
    a singular matrix gives zeros, as there)."""
    m = np.asarray(matrices, dtype=np.float64)
    det = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]  # (...)
    inv_det = np.divide(1.0, det, out=np.zeros_like(det), where=det != 0)
    out = np.empty(m.shape)  # (..., 2, 3), filled in place
    a11 = out[..., 0, 0] = m[..., 1, 1] * inv_det
    a12 = out[..., 0, 1] = -m[..., 0, 1] * inv_det
    a21 = out[..., 1, 0] = -m[..., 1, 0] * inv_det
    a22 = out[..., 1, 1] = m[..., 0, 0] * inv_det
    out[..., 0, 2] = -a11 * m[..., 0, 2] - a12 * m[..., 1, 2]
    out[..., 1, 2] = -a21 * m[..., 0, 2] - a22 * m[..., 1, 2]
    return out


def apply_affines(matrices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Each 2x3 affine of ``(..., 2, 3)`` applied to its points ``(..., P, 2)`` -> ``(..., P, 2)``."""
    m = np.asarray(matrices, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64)
    return np.einsum("...ij,...pj->...pi", m[..., :2], pts) + m[..., None, :, 2]


def warp_shifted_crops(images: Sequence[np.ndarray], matrices: np.ndarray, size: int, antialias: bool = True,
                       shared_reduction: bool = True) -> np.ndarray:
    """``warp_crop`` of J crops of each image, the J crops of an image differing only by a shift.

    ``matrices`` ``(F, J, 2, 3)``: image -> crop matrices, one scale per image (row). Where that scale
    shrinks, ``shared_reduction`` area-reduces the image region under the union of the image's J crops
    once and warps every crop from it; without it each crop reduces its own region, as ``warp_crop``
    does (the same crops, bit for bit, at one more ``cv2.resize`` per crop). A shared reduction grid
    starts at the union's corner rather than at each crop's, which moves the bilinear taps and the
    area-averaging footprints by a fraction of a pixel: about a grey level per pixel where the regions
    differ, nothing where every region is clipped to the whole image (a face box as large as the image).
    Returns ``(F, J, size, size)`` crops of the first image's dtype.
    """
    m = np.asarray(matrices, dtype=np.float64)  # (F, J, 2, 3)
    n_faces, n_crops = m.shape[:2]
    if n_faces == 0:
        return np.zeros((0, n_crops, size, size), dtype=np.uint8)
    if n_faces == 1 and shared_reduction:
        # One face (per-face inference): the same arithmetic on Python floats, without the ~40 small array
        # operations below, which cost more than the two OpenCV calls on a small image.
        return warp_shifted_crops_of_one_face(images[0], m[0], size, antialias)[None]
    out = np.empty((n_faces, n_crops, size, size), dtype=images[0].dtype)
    scale = np.sqrt(np.abs(m[:, 0, 0, 0] * m[:, 0, 1, 1] - m[:, 0, 0, 1] * m[:, 0, 1, 0]))  # (F,)
    reduce = (scale < ANTIALIAS_BELOW_SCALE) if antialias else np.zeros(n_faces, dtype=bool)
    # Crop j reads reduced region group_of[j]: one region per face when shared, else one per crop.
    group_of = np.zeros(n_crops, dtype=np.int64) if shared_reduction else np.arange(n_crops)
    sources = m
    if reduce.any():
        shapes = np.array([image.shape[:2] for image in images], dtype=np.int64)  # (F, 2) height, width
        last = size - 1
        corners = np.array([[0, 0], [last, 0], [0, last], [last, last]], dtype=np.float64)
        in_image = apply_affines(invert_affines(m), np.broadcast_to(corners, (n_faces, n_crops, 4, 2)))  # (F, J, 4, 2)
        lo, hi = in_image.min(axis=2), in_image.max(axis=2)  # (F, J, 2)
        if shared_reduction:
            lo, hi = lo.min(axis=1, keepdims=True), hi.max(axis=1, keepdims=True)  # (F, 1, 2)
        margin = 2.0 / scale[:, None, None]  # (F, 1, 1): the bilinear taps of the reduced image stay inside
        limit = (shapes[:, ::-1] - 1)[:, None, :]  # (F, 1, 2) width - 1, height - 1
        start = np.clip(np.floor(lo - margin), 0, limit).astype(np.int64)  # (F, G, 2)
        stop = np.clip(np.ceil(hi + margin), start, limit).astype(np.int64) + 1  # (F, G, 2)
        extent = stop - start  # (F, G, 2)
        reduced_sizes = np.maximum(1, np.round(extent * scale[:, None, None])).astype(np.int64)  # (F, G, 2)
        # cv2.resize maps pixel centres: q = (p - origin + 0.5) * f - 0.5 per axis, so p = (q + 0.5) / f - 0.5 + origin.
        f = (reduced_sizes / extent)[:, group_of]  # (F, J, 2)
        to_image = np.zeros((n_faces, n_crops, 2, 3))
        to_image[..., 0, 0], to_image[..., 1, 1] = 1 / f[..., 0], 1 / f[..., 1]
        to_image[..., 2] = 0.5 / f - 0.5 + start[:, group_of]
        composed = m[..., :2] @ to_image[..., :2]  # (F, J, 2, 2)
        offset = (m[..., :2] @ to_image[..., 2:])[..., 0] + m[..., 2]  # (F, J, 2)
        sources = np.where(reduce[:, None, None, None], np.concatenate([composed, offset[..., None]], axis=-1), m)
    for k, image in enumerate(images):
        source = image
        for j in range(n_crops):
            if reduce[k] and (j == 0 or group_of[j] != group_of[j - 1]):
                (x0, y0), (x1, y1) = start[k, group_of[j]], stop[k, group_of[j]]
                width, height = reduced_sizes[k, group_of[j]]
                source = cv2.resize(image[y0:y1, x0:x1], (int(width), int(height)), interpolation=cv2.INTER_AREA)
            out[k, j] = cv2.warpAffine(source, sources[k, j], (size, size), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE)
    return out


def warp_shifted_crops_of_one_face(image: np.ndarray, matrices: np.ndarray, size: int,
                                    antialias: bool) -> np.ndarray:
    """``warp_shifted_crops`` of one image with a shared reduction: ``matrices`` (J, 2, 3) -> (J, size, size)."""
    rows = matrices.tolist()  # J x 2 x 3 Python floats
    (a, b, _), (c, d, _) = rows[0]
    scale = math.sqrt(abs(a * d - b * c))
    out = np.empty((len(rows), size, size), dtype=image.dtype)
    source, sources = image, matrices
    if antialias and scale < ANTIALIAS_BELOW_SCALE:
        last = float(size - 1)
        xs, ys = [], []
        for (a, b, tx), (c, d, ty) in rows:  # each crop's corners in the image (invert_affines' arithmetic)
            det = a * d - b * c
            inv_det = 1.0 / det if det != 0 else 0.0
            i11, i12, i21, i22 = d * inv_det, -b * inv_det, -c * inv_det, a * inv_det
            j1, j2 = -i11 * tx - i12 * ty, -i21 * tx - i22 * ty
            for u, v in ((0.0, 0.0), (last, 0.0), (0.0, last), (last, last)):
                xs.append(i11 * u + i12 * v + j1)
                ys.append(i21 * u + i22 * v + j2)
        margin = 2.0 / scale
        height, width = image.shape[:2]
        x0 = min(max(math.floor(min(xs) - margin), 0), width - 1)
        y0 = min(max(math.floor(min(ys) - margin), 0), height - 1)
        x1 = min(max(math.ceil(max(xs) + margin), x0), width - 1) + 1
        y1 = min(max(math.ceil(max(ys) + margin), y0), height - 1) + 1
        reduced_w = max(1, round((x1 - x0) * scale))
        reduced_h = max(1, round((y1 - y0) * scale))
        source = cv2.resize(image[y0:y1, x0:x1], (reduced_w, reduced_h), interpolation=cv2.INTER_AREA)
        fx, fy = reduced_w / (x1 - x0), reduced_h / (y1 - y0)
        # Reduced pixel q sits at image p = (q + 0.5) / f - 0.5 + origin: compose with image -> crop
        # (the products of warp_shifted_crops' matrix arithmetic, on Python floats).
        sx, sy = 1 / fx, 1 / fy
        ox, oy = 0.5 / fx - 0.5 + x0, 0.5 / fy - 0.5 + y0
        sources = np.array([[[a * sx, b * sy, a * ox + b * oy + tx], [c * sx, d * sy, c * ox + d * oy + ty]]
                            for (a, b, tx), (c, d, ty) in rows])  # (J, 2, 3)
    for j in range(len(rows)):
        out[j] = cv2.warpAffine(source, sources[j], (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    return out


def normalised_to_image(matrices: np.ndarray, points_norm: np.ndarray, size: int) -> np.ndarray:
    """Normalised crop points ``(..., P, 2)`` -> image pixels, through the axis-aligned crop matrices
    ``(..., 2, 3)`` of ``crop_matrices`` (scale ``s`` on both axes, no rotation): ``(u - t) / s``. The same
    points as ``apply_affines(invert_affines(m), from_normalised(p))`` in a few array operations, which
    per-face inference pays twice per face."""
    m = np.asarray(matrices, dtype=np.float64)
    if m[..., 0, 1].any() or m[..., 1, 0].any() or (m[..., 0, 0] != m[..., 1, 1]).any():  # ndarray methods: cheap
        raise ValueError("normalised_to_image needs axis-aligned crop matrices (crop_matrices); use apply_affines")
    crop_px = from_normalised(np.asarray(points_norm, dtype=np.float64), size)  # (..., P, 2)
    return (crop_px - m[..., None, :, 2]) / m[..., None, 0:1, 0]


def to_normalised(points_crop: np.ndarray, size: int) -> np.ndarray:
    """Crop pixels -> [-1, 1] about the crop centre (the network's landmark targets)."""
    c = (size - 1) / 2.0
    return (points_crop - c) / (size / 2.0)


def from_normalised(points_norm: np.ndarray, size: int) -> np.ndarray:
    c = (size - 1) / 2.0
    return points_norm * (size / 2.0) + c
