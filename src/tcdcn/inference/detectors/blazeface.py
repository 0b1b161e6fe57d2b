"""The ``blazeface`` backend (the default): MediaPipe's BlazeFace short-range model, one 128x128 pass of a small
CNN over the whole (square-padded) image, run by onnxruntime from ``assets/blazeface_short_range.onnx``
(0.4 MB; Apache 2.0, converted from MediaPipe's .tflite, see ``assets/BLAZEFACE_LICENSE.txt``). ``score`` is the
face probability in [0, 1]; the smallest face it finds is about a tenth of the working image's long side.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .common import ASSETS, RawDetection, WorkFrame, onnx_session

MODEL_FILE = ASSETS / "blazeface_short_range.onnx"


class BlazeFaceBackend:
    """Raw BlazeFace squares in input pixels (``common.RawDetectorRun``)."""

    def __init__(self, threads: int = 1) -> None:
        self.model = BlazeFace(MODEL_FILE, threads)

    def __call__(self, work: np.ndarray, frame: WorkFrame, width: int) -> list[RawDetection]:
        return [RawDetection(frame.square_to_input(cx, cy, side), score, "blazeface", False, width)
                for score, cx, cy, side in self.model(work)]


class BlazeFace:
    """MediaPipe's BlazeFace short-range model on an RGB uint8 image: ``(score, cx, cy, side)`` per
    anchor scoring at least ``min_score``, in pixels of the image (pixel centres at integers).

    The image is padded to a square (bottom and right) and resized to 128x128; decoding follows
    MediaPipe's face_detection_short_range graph: anchors on 16x16 (2 per cell) and 8x8 (6 per cell)
    grids, box offsets in input pixels, sigmoid scores. Overlapping anchors are merged later by the
    package's NMS, after calibration.
    """

    size = 128

    def __init__(self, path: Path, threads: int = 1, min_score: float = 0.25) -> None:
        self.session = onnx_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.min_score = min_score
        anchors = []
        for grid, per_cell in ((16, 2), (8, 6)):
            ys, xs = np.mgrid[0:grid, 0:grid]
            centres = np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], axis=1)
            anchors.append(np.repeat(centres, per_cell, axis=0))
        self.anchors = np.concatenate(anchors) * self.size

    def __call__(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        height, width = image.shape[:2]
        side = max(height, width)
        square = np.zeros((side, side, 3), np.uint8)
        square[:height, :width] = image
        interp = cv2.INTER_AREA if side > self.size else cv2.INTER_LINEAR
        pixels = cv2.resize(square, (self.size, self.size), interpolation=interp)
        x = (pixels.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
        reg, logits = self.session.run(None, {self.input_name: x})
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0].astype(np.float64), -100.0, 100.0)))
        k = side / self.size
        found = []
        for i in np.nonzero(scores >= self.min_score)[0]:
            cx = (self.anchors[i, 0] + reg[0, i, 0]) * k - 0.5
            cy = (self.anchors[i, 1] + reg[0, i, 1]) * k - 0.5
            found.append((float(scores[i]), float(cx), float(cy), float(reg[0, i, 2] + reg[0, i, 3]) / 2 * k))
        return found
