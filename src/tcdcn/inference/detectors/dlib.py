"""The ``dlib`` backend (optional, ``pip install dlib-bin``): dlib's HOG + linear SVM detector
(``dlib.get_frontal_face_detector()``), whose model is inside the wheel. ``score`` is the SVM margin (0 is dlib's
own decision boundary)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .common import RawDetection, WorkFrame


class DlibBackend:
    """Raw HOG rectangles in input pixels (``common.RawDetectorRun``); ``threshold`` is dlib's own."""

    def __init__(self, threshold: float = 0.0) -> None:
        self.detector: Any = _dlib_frontal_detector()
        self.threshold = threshold

    def __call__(self, work: np.ndarray, frame: WorkFrame, width: int) -> list[RawDetection]:
        rects, scores, _ = self.detector.run(work, 0, self.threshold)
        found = []
        for rect, score in zip(rects, scores):
            x, y = rect.left(), rect.top()
            w, h = rect.right() - x + 1, rect.bottom() - y + 1
            found.append(RawDetection(frame.box_to_input(x, y, w, h), float(score), "dlib", False, width))
        return found


@functools.lru_cache(maxsize=1)
def _dlib_frontal_detector() -> Any:
    """dlib's HOG detector, built once per process (deserialising it takes seconds)."""
    try:
        import dlib  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError("the 'dlib' face detector backend needs dlib: pip install dlib-bin") from exc
    return dlib.get_frontal_face_detector()
