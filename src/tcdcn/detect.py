"""Face detection that runs offline with the package's own dependencies.

Backends:

- ``"opencv"`` (default, always available): OpenCV's Haar cascades shipped in ``cv2.data`` -- the
  frontal cascade, plus the profile cascade run on the image and on its mirror image (the cascade only
  knows one facing direction), merged by non-maximum suppression.
- ``"dlib"`` (optional, ``pip install dlib-bin``): dlib's HOG + linear SVM detector
  (``dlib.get_frontal_face_detector()``), whose model is inside the wheel.

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

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from .geometry import Box

Backend = Literal["opencv", "dlib"]
BACKENDS: tuple[str, ...] = ("opencv", "dlib")


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
# (--limit 2000: every 5th of the 10,000 training faces, so lfw_5590 and net_7876 in proportion)
# Values are the medians of side_gt / side_raw and (centre_gt - centre_raw) / side_raw over matched faces.
CALIBRATIONS: dict[str, BoxCalibration] = {
    "opencv-frontal": BoxCalibration(scale=1.2000, dx=0.0085, dy=0.0874),  # 1,847 matched faces
    "opencv-profile": BoxCalibration(scale=1.0138, dx=-0.1543, dy=0.0940),  # 975 matched faces
    "dlib": BoxCalibration(scale=1.3216, dx=-0.0075, dy=0.0071),  # 1,917 matched faces
}


@dataclass(frozen=True)
class Detection:
    """A face: ``box`` on the package's face-box convention, ``score`` higher = more confident.

    Scores are backend-specific: OpenCV, the number of raw cascade windows merged into the detection
    (profile detections count for ``profile_score_weight`` of that); dlib, the SVM margin.
    """

    box: Box
    score: float


@dataclass(frozen=True)
class RawDetection:
    """A detector square before calibration, in pixels of the input image.

    ``source`` names the calibration (``"opencv-frontal"``, ``"opencv-profile"``, ``"dlib"``);
    ``mirrored`` says the detector ran on the mirror image: ``box`` is then in the *mirror image's*
    pixels (so that the calibration offsets apply as measured); ``to_image`` maps a calibrated box back.
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


class FaceDetector:
    """``FaceDetector()(image_rgb) -> list[Detection]``, boxes on the package's face-box convention.

    ``image_rgb`` is ``(H, W, 3)`` uint8 RGB (grey ``(H, W)`` is accepted). An image without faces, or
    too small to hold one (under ``min_input_side`` pixels), gives an empty list.
    """

    def __init__(
        self,
        backend: str = "opencv",
        *,
        min_work_side: int = 200,
        max_work_side: int = 1024,
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
        self.min_work_side = min_work_side
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
        if backend == "opencv":
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
        dets = [Detection(r.calibrated(self.calibrations), r.score) for r in raws]
        return non_max_suppression(dets, self.iou_threshold)

    def raw_detections(self, image_rgb: np.ndarray) -> list[RawDetection]:
        """Uncalibrated detector squares (before NMS), in input pixels; for calibration and debugging."""
        grey = _to_grey(image_rgb)
        height, width = grey.shape
        if min(height, width) < self.min_input_side:
            return []
        work, frame = self._working_image(grey)
        return self._run(work, frame, width)

    # ------------------------------------------------------------------------------------- internals

    def _working_image(self, grey: np.ndarray) -> tuple[np.ndarray, _WorkFrame]:
        height, width = grey.shape
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
        if max(work.shape) <= self.pad_below and self.pad_fraction > 0:
            pad = int(round(self.pad_fraction * max(work.shape)))
            work = cv2.copyMakeBorder(work, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        return work, _WorkFrame(scale, pad, scale > 1.0)

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

    def _run_dlib(self, work: np.ndarray, frame: _WorkFrame, width: int) -> list[RawDetection]:
        rects, scores, _ = self._dlib_detector.run(work, 0, self.dlib_threshold)
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


def _load_cascade(path: Path) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"{path}: OpenCV could not load the Haar cascade")
    return cascade


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


def detect_faces(image_rgb: np.ndarray, backend: str = "opencv") -> list[Detection]:
    """One-off convenience: ``FaceDetector(backend)(image_rgb)`` (build a detector to reuse it)."""
    return FaceDetector(backend)(image_rgb)


__all__ = [
    "BACKENDS",
    "CALIBRATIONS",
    "BoxCalibration",
    "Detection",
    "FaceDetector",
    "RawDetection",
    "box_iou",
    "detect_faces",
    "non_max_suppression",
]
