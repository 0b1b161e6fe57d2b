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
# Regression columns of the keypoints used for the face square: (x, y) of the image-left eye, the
# image-right eye, the nose tip and the mouth centre (the model's keypoints 0-3; 4-5 are the ears).
KEYPOINTS = slice(4, 12)


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
    grids, box and keypoint offsets in input pixels, sigmoid scores. The square returned is the
    bounding square of four of the model's six keypoints (the eyes, the nose tip, the mouth centre), not
    its face box: the package's box convention is the bounding square of five such points, and the
    keypoints' square follows it across poses far more closely (centre off by a median 0.063 of the box
    side with the face box, on MTFL validation faces, before this choice). Overlapping anchors are
    merged later by the package's NMS, after calibration.
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
            points = (self.anchors[i] + reg[0, i, KEYPOINTS].reshape(-1, 2)) * k - 0.5  # (4, 2) input pixels
            lo, hi = points.min(axis=0), points.max(axis=0)
            cx, cy = (lo + hi) / 2.0
            found.append((float(scores[i]), float(cx), float(cy), float(max(hi - lo))))
        return found
