"""Landmark metrics as pure functions of arrays (no model, no I/O)."""

from __future__ import annotations

import numpy as np

DEFAULT_FAILURE_THRESHOLD = 0.10


def point_errors(pred: np.ndarray, target: np.ndarray, normaliser: np.ndarray) -> np.ndarray:
    """(N, P, 2), (N, P, 2), (N,) -> (N, P) point-to-point distances over the normalising distance."""
    dist = np.linalg.norm(np.asarray(pred, float) - np.asarray(target, float), axis=-1)
    return dist / np.asarray(normaliser, float)[:, None]


def per_face_error(errors: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """(N, P) normalised errors -> (N,) mean over the (visible) points of each face."""
    if visible is None:
        return errors.mean(axis=1)
    vis = np.asarray(visible, bool)
    counts = vis.sum(axis=1)
    return np.where(counts > 0, (errors * vis).sum(axis=1) / np.maximum(counts, 1), np.nan)


def normalised_face_errors(pred: np.ndarray, target: np.ndarray, normaliser: np.ndarray,
                           visible: np.ndarray | None = None) -> np.ndarray:
    """(N, P, 2), (N, P, 2), (N,), (N, P) -> (N,) each face's mean point error over its normalising distance,
    over the visible points: the figure every error statistic of the package starts from."""
    return per_face_error(point_errors(pred, target, normaliser), visible)


def nme(face_errors: np.ndarray) -> float:
    """Mean normalised error over faces."""
    return float(np.mean(face_errors))


def failure_rate(face_errors: np.ndarray, threshold: float = DEFAULT_FAILURE_THRESHOLD) -> float:
    """Fraction of faces whose mean error is above ``threshold``."""
    return float(np.mean(np.asarray(face_errors) > threshold))


def per_landmark_error(errors: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """(N, P) -> (P,) mean error of each landmark over the faces where it is visible."""
    if visible is None:
        return errors.mean(axis=0)
    vis = np.asarray(visible, bool)
    return (errors * vis).sum(axis=0) / np.maximum(vis.sum(axis=0), 1)


def per_region_error(errors: np.ndarray, regions: tuple[tuple[str, tuple[int, ...]], ...],
                     visible: np.ndarray | None = None) -> dict[str, float]:
    """(N, P) normalised errors -> mean error of each named region's points, over the faces and points
    where they are visible (a scheme's ``regions``: e.g. contour, brows, nose, eyes, mouth)."""
    vis = np.ones(np.shape(errors), bool) if visible is None else np.asarray(visible, bool)
    out = {}
    for name, indices in regions:
        part_vis = vis[:, list(indices)]  # (N, R)
        count = part_vis.sum()
        out[name] = float((errors[:, list(indices)] * part_vis).sum() / count) if count else float("nan")
    return out


def ced(face_errors: np.ndarray, max_error: float = 0.2, steps: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: thresholds and the fraction of faces at or below each."""
    thresholds = np.linspace(0.0, max_error, steps)
    errs = np.sort(np.asarray(face_errors, float))
    fractions = np.searchsorted(errs, thresholds, side="right") / max(len(errs), 1)
    return thresholds, fractions


def auc(face_errors: np.ndarray, max_error: float = DEFAULT_FAILURE_THRESHOLD, steps: int = 1001) -> float:
    """Area under the CED curve up to ``max_error``, normalised to [0, 1]."""
    thresholds, fractions = ced(face_errors, max_error, steps)
    return float(np.trapezoid(fractions, thresholds) / max_error)


def binary_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, T), (N, T) -> (T,) accuracy of thresholding each task's probability at 0.5."""
    return np.mean((np.asarray(probabilities) >= 0.5) == (np.asarray(labels) >= 0.5), axis=0)
