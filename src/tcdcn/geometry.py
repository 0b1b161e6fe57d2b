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

from dataclasses import dataclass

import cv2
import numpy as np

from .schemes import LandmarkScheme

BOX_SCALE = 2.8


@dataclass(frozen=True)
class Box:
    """A square face box: centre and side, in image pixels."""

    cx: float
    cy: float
    side: float

    @classmethod
    def from_xyxy(cls, x0: float, y0: float, x1: float, y1: float) -> Box:
        """The square with the same centre as a rectangle and side equal to its mean side."""
        return cls((x0 + x1) / 2.0, (y0 + y1) / 2.0, ((x1 - x0) + (y1 - y0)) / 2.0)

    @classmethod
    def whole_image(cls, width: int, height: int) -> Box:
        return cls((width - 1) / 2.0, (height - 1) / 2.0, float(max(width, height)))

    def xyxy(self) -> tuple[float, float, float, float]:
        h = self.side / 2.0
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)


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


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Sample the crop; outside the image the border is replicated (as in the 300-W crops)."""
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def to_normalised(points_crop: np.ndarray, size: int) -> np.ndarray:
    """Crop pixels -> [-1, 1] about the crop centre (the network's landmark targets)."""
    c = (size - 1) / 2.0
    return (points_crop - c) / (size / 2.0)


def from_normalised(points_norm: np.ndarray, size: int) -> np.ndarray:
    c = (size - 1) / 2.0
    return points_norm * (size / 2.0) + c
