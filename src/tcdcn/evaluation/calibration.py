"""Mirror-axis calibration: remove the horizontal bias that mirror augmentation leaves behind.

Mirror augmentation reflects a training crop about its centre column and its landmarks with it. When an
annotation set places its points a constant ``delta`` to the right of the mirror-consistent position (a
coordinate-origin or resizing convention of the release), the mirrored copies teach positions ``2 *
delta`` left of the unmirrored ones; a network trained on both learns the midpoint and predicts ``delta``
left of the annotations on every face. On the MTFL validation split a 5-point network trained there sits
0.017 inter-ocular distances left of the annotations, and mirror-averaging its predictions leaves it
there (so the network itself is symmetric and the asymmetry is in the labels).

The fix measures each point's mean horizontal offset on held-out faces of the *same annotation set*
(the validation split carved from the training data, never a test set) and folds it into the landmark
head's bias, so torch and ONNX exports carry it with no extra step. Only x is corrected: mirroring does
not touch y, so the network already learned the annotations' vertical convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.annotation import FaceAnnotation
from ..geometry import box_from_landmarks
from ..io.images import load_image, to_grey
from ..models.network import TCDCN
from .metrics import normalised_face_errors
from .protocol import LandmarkPredictor


def prediction_offsets(model: LandmarkPredictor, faces: Sequence[FaceAnnotation]) -> np.ndarray:
    """(N, P, 2) prediction - annotation per face and point, in normalised crop units (1 = half a side).

    Faces are framed with the ground-truth box convention and no rotation, so an image-pixel offset is the
    normalised one times ``side / 2``. ``model``: a torch or onnxruntime landmark model.
    """
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [box_from_landmarks(f.landmarks, f.scheme) for f in faces]
    pred = model.predict(greys, boxes).landmarks  # (N, P, 2)
    target = np.stack([f.landmarks for f in faces]).astype(np.float64)  # (N, P, 2)
    side = np.array([b.side for b in boxes], dtype=np.float64)  # (N,)
    return (pred - target) * (2.0 / side)[:, None, None]


def horizontal_offsets(offsets: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """Mean x offset per point over faces, (N, P, 2) -> (P, 2) with the y column zero."""
    x = offsets[..., 0]  # (N, P)
    if visible is None:
        mean_x = x.mean(axis=0)
    else:
        weight = visible.astype(np.float64)
        mean_x = (x * weight).sum(axis=0) / np.maximum(weight.sum(axis=0), 1.0)
    return np.stack([mean_x, np.zeros_like(mean_x)], axis=1)


def fold_landmark_offset(network: TCDCN, offset: np.ndarray) -> None:
    """Subtract a (P, 2) normalised offset from every prediction by shifting the landmark head's bias."""
    points = network.num_points
    if offset.shape != (points, 2):
        raise ValueError(f"offset must have shape ({points}, 2), got {offset.shape}")
    with torch.no_grad():
        # The head's outputs are reshaped to (P, 2) row-major: output 2p + c is point p, coordinate c.
        network.landmark_head.bias -= torch.as_tensor(offset.reshape(-1), dtype=network.landmark_head.bias.dtype)


def cross_fitted_error(offsets: np.ndarray, faces: Sequence[FaceAnnotation], folds: int = 2) -> tuple[float, float]:
    """Mean normalised error before and after the correction, each fold corrected with offsets fitted
    on the other folds (so the "after" figure is not fitted on the faces it scores)."""
    target = np.stack([f.landmarks for f in faces]).astype(np.float64)  # (N, P, 2)
    scheme = faces[0].scheme
    side = np.array([box_from_landmarks(f.landmarks, scheme).side for f in faces])  # (N,)
    iod = scheme.interocular_distance(target)  # (N,)
    to_pixels = (side / 2.0)[:, None, None]
    pred = target + offsets * to_pixels
    fold_of = np.arange(len(faces)) % folds
    corrected = pred.copy()
    for k in range(folds):
        fitted = horizontal_offsets(offsets[fold_of != k])  # (P, 2)
        corrected[fold_of == k] -= fitted[None] * to_pixels[fold_of == k]
    before = normalised_face_errors(pred, target, iod).mean()
    after = normalised_face_errors(corrected, target, iod).mean()
    return float(before), float(after)
