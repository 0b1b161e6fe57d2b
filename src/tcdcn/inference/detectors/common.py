"""What every face detector backend shares: detections and their calibration onto the package's face-box
convention, non-maximum suppression, the working-image frame, the image checks and the onnxruntime session.

Every ``Detection.box`` is mapped onto the face-box convention (``geometry.box_from_landmarks``: a square
centred on the five points' bounding-box centre, side 2.8 x its larger side) by an affine correction per
backend and per cascade, ``BoxCalibration``, measured on MTFL *training* faces with
``bench/calibrate_detector.py`` (never on test faces).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...geometry import Box
from ...models.denormals import cpu_session_options

# The detector models shipped with the package (ONNX files and their licences).
ASSETS = Path(__file__).resolve().parent / "assets"


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
    "blazeface": BoxCalibration(scale=2.8276, dx=0.0056, dy=-0.0002),  # 2,000 matched faces (keypoint square)
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
class WorkFrame:
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


# A backend's raw pass: (working image, its frame, input image width) -> detector squares in input pixels.
RawDetectorRun = Callable[[np.ndarray, WorkFrame, int], list[RawDetection]]


def search_side(work: np.ndarray, frame: WorkFrame, native: int, small_image_min_face: float) -> int:
    """The smallest window a sliding-window detector searches: its ``native`` size, or in an upsampled small
    image (a crop around a face) ``small_image_min_face`` x the image's short side."""
    if not frame.upsampled:
        return native
    inner = min(work.shape) - 2 * frame.pad
    return max(native, int(small_image_min_face * inner))


def onnx_session(path: Path, threads: int) -> Any:
    """An onnxruntime session on the CPU for one detector model file."""
    import onnxruntime as ort

    if not path.is_file():
        raise FileNotFoundError(f"{path}: detector model missing from the installed package")
    return ort.InferenceSession(str(path), cpu_session_options(threads), providers=["CPUExecutionProvider"])


def as_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {a.dtype} (use tcdcn.io.images.load_image)")
    if a.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_GRAY2RGB)
    if a.ndim == 3 and a.shape[2] == 3:
        return np.ascontiguousarray(a)
    if a.ndim == 3 and a.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGBA2RGB)
    raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey image, got shape {a.shape}")


def as_grey(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {a.dtype} (use tcdcn.io.images.load_image)")
    if a.ndim == 2:
        return np.ascontiguousarray(a)
    if a.ndim == 3 and a.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
    if a.ndim == 3 and a.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGBA2GRAY)
    raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey image, got shape {a.shape}")
