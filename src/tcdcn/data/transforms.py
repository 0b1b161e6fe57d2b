"""From an annotated image to the network's input: the face-box crop and its augmentations.

Every crop goes through ``make_crop``: training draws random box jitter, rotation, mirroring and
photometric changes (``AugmentConfig``); evaluation and inference use the box as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..config import AugmentConfig
from ..geometry import (
    Box,
    CropJitter,
    apply_affine,
    crop_matrices,
    crop_matrix,
    to_normalised,
    warp_crop,
    warp_shifted_crops,
)
from ..schemes import LandmarkScheme


@dataclass(frozen=True)
class CropParams:
    """One draw of the geometric and photometric augmentation (identity by default)."""

    scale: float = 1.0
    shift_x: float = 0.0  # in units of the box side
    shift_y: float = 0.0
    rotation_deg: float = 0.0
    mirror: bool = False
    contrast: float = 1.0
    brightness: float = 0.0  # in units of the image's grey range (0..255)
    blur_sigma: float = 0.0  # Gaussian blur of the crop, in crop pixels (0 = none)
    # One occluding rectangle (left, top, width, height in units of the crop side; grey level 0..255), or
    # None. The landmarks stay: the network learns to place points it cannot see.
    occluder: tuple[float, float, float, float, float] | None = None


IDENTITY = CropParams()


def draw_params(cfg: AugmentConfig, rng: np.random.Generator) -> CropParams:
    # Blur and occlusion draw from ``rng`` only when enabled, so configs without them keep the random
    # stream (and the crops) of earlier versions.
    blur_sigma = 0.0
    if cfg.blur_probability > 0 and rng.random() < cfg.blur_probability:
        blur_sigma = float(rng.uniform(0.5, cfg.blur_sigma))
    occluder = None
    if cfg.occlusion_probability > 0 and rng.random() < cfg.occlusion_probability:
        width, height = rng.uniform(0.1, cfg.occlusion_size, size=2)
        left, top = rng.uniform(0, 1 - width), rng.uniform(0, 1 - height)
        occluder = (float(left), float(top), float(width), float(height), float(rng.uniform(0, 255)))
    return CropParams(
        scale=float(rng.uniform(1 - cfg.scale, 1 + cfg.scale)),
        shift_x=float(rng.uniform(-cfg.shift, cfg.shift)),
        shift_y=float(rng.uniform(-cfg.shift, cfg.shift)),
        rotation_deg=float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)),
        mirror=bool(cfg.mirror and rng.random() < 0.5),
        contrast=float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)),
        brightness=float(rng.uniform(-cfg.brightness, cfg.brightness) * 128.0),
        blur_sigma=blur_sigma,
        occluder=occluder,
    )


def jittered_box(box: Box, params: CropParams) -> Box:
    return Box(box.cx + params.shift_x * box.side, box.cy + params.shift_y * box.side, box.side * params.scale)


def make_crop(
    image: np.ndarray,
    box: Box,
    size: int,
    params: CropParams = IDENTITY,
    landmarks: np.ndarray | None = None,
    scheme: LandmarkScheme | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Crop a grey ``(H, W)`` uint8 image to ``(size, size)`` float32.

    Returns the crop, the landmarks ``(P, 2)`` normalised to [-1, 1] in the crop (or None), and the
    2x3 matrix from image pixels to crop pixels (before mirroring, which ``params.mirror`` applies).
    """
    matrix = crop_matrix(jittered_box(box, params), size, params.rotation_deg)
    crop = warp_crop(image, matrix, size).astype(np.float32)  # (S, S)
    if params.contrast != 1.0 or params.brightness != 0.0:
        mean = crop.mean()
        crop = np.clip((crop - mean) * params.contrast + mean + params.brightness, 0, 255)
    if params.blur_sigma > 0:
        crop = cv2.GaussianBlur(crop, (0, 0), params.blur_sigma)
    if params.occluder is not None:
        left, top, width, height, grey = params.occluder
        x0, y0 = round(left * size), round(top * size)
        crop[y0:y0 + max(1, round(height * size)), x0:x0 + max(1, round(width * size))] = grey
    norm = None
    if landmarks is not None:
        norm = to_normalised(apply_affine(matrix, landmarks), size).astype(np.float32)  # (P, 2)
    if params.mirror:
        crop = crop[:, ::-1].copy()
        if norm is not None:
            if scheme is None:
                raise ValueError("mirroring landmarks needs their scheme (flip pairs)")
            norm = norm[scheme.flip_index] * np.array([-1.0, 1.0], dtype=np.float32)
    return crop, norm, matrix


def box_array(boxes: Sequence[Box] | np.ndarray) -> np.ndarray:
    """Boxes as a ``(N, 3)`` float64 array of (cx, cy, side)."""
    if isinstance(boxes, np.ndarray):
        return boxes.astype(np.float64).reshape(-1, 3)
    return np.array([(b.cx, b.cy, b.side) for b in boxes], dtype=np.float64).reshape(-1, 3)


@functools.lru_cache(maxsize=64)
def _jitter_steps(jitters: tuple[CropJitter, ...]) -> tuple[np.ndarray, bool]:
    """(J, 3) rows (dx, dy, scale) of ``jitters`` and whether they share one scale; cached, as per-face
    inference asks for the same few tuples on every call."""
    steps = np.array([(j.dx, j.dy, j.scale) for j in jitters], dtype=np.float64).reshape(-1, 3)  # (J, 3)
    steps.flags.writeable = False
    return steps, bool(len(steps) and np.all(steps[:, 2] == steps[0, 2]))


def make_jittered_crops(images: Sequence[np.ndarray], boxes: Sequence[Box] | np.ndarray, size: int,
                        jitters: Sequence[CropJitter], shared_reduction: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``make_crop`` without augmentation of every box moved by every jitter, all at once.

    ``images[i]`` holds face ``i`` (the same array may repeat, it is never copied); ``boxes`` are
    ``Box`` objects or a ``(F, 3)`` array. Returns ``(F, J, size, size)`` crops (the images' dtype) and
    the ``(F, J, 2, 3)`` image -> crop matrices. With ``shared_reduction`` the jitters of one scale
    share one area reduction per face (``geometry.warp_shifted_crops``; crops within about a grey level
    of ``make_crop``'s); without it, or for a single jitter, the crops are ``make_crop``'s exactly.
    """
    base = box_array(boxes)  # (F, 3)
    steps, one_scale = _jitter_steps(tuple(jitters))  # (J, 3)
    side = base[:, None, 2]  # (F, 1)
    moved = np.empty((len(base), len(steps), 3))  # (F, J, 3), as CropJitter.apply
    moved[..., 0] = base[:, None, 0] + steps[:, 0] * side
    moved[..., 1] = base[:, None, 1] + steps[:, 1] * side
    moved[..., 2] = side * steps[:, 2]
    matrices = crop_matrices(moved, size)  # (F, J, 2, 3)
    if one_scale:
        return warp_shifted_crops(images, matrices, size, shared_reduction=shared_reduction), matrices
    crops = np.empty((len(base), len(steps), size, size), dtype=images[0].dtype if len(images) else np.uint8)
    for scale in np.unique(steps[:, 2]):  # one shared reduction per scale
        chosen = np.flatnonzero(steps[:, 2] == scale)
        crops[:, chosen] = warp_shifted_crops(images, matrices[:, chosen], size, shared_reduction=shared_reduction)
    return crops, matrices
