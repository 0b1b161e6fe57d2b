"""From an annotated image to the network's input: the face-box crop and its augmentations.

Every crop goes through ``make_crop``: training draws random box jitter, rotation, mirroring and
photometric changes (``AugmentConfig``); evaluation and inference use the box as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import AugmentConfig
from ..geometry import Box, apply_affine, crop_matrix, to_normalised, warp_crop
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


IDENTITY = CropParams()


def draw_params(cfg: AugmentConfig, rng: np.random.Generator) -> CropParams:
    return CropParams(
        scale=float(rng.uniform(1 - cfg.scale, 1 + cfg.scale)),
        shift_x=float(rng.uniform(-cfg.shift, cfg.shift)),
        shift_y=float(rng.uniform(-cfg.shift, cfg.shift)),
        rotation_deg=float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)),
        mirror=bool(cfg.mirror and rng.random() < 0.5),
        contrast=float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)),
        brightness=float(rng.uniform(-cfg.brightness, cfg.brightness) * 128.0),
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
