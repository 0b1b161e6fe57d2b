"""``FaceDetector``: face detection that runs offline with the package's own dependencies.

Backends, one module each: ``blazeface`` (the default: MediaPipe's BlazeFace short-range model, fastest and, as
measured in ``docs/detection.md``, as complete as MTCNN), ``mtcnn`` (MTCNN's three cascaded CNNs), ``opencv``
(OpenCV's Haar cascades) and ``dlib`` (optional, ``pip install dlib-bin``: dlib's HOG detector). Measured on
AFLW test faces and 300-W photos in ``docs/detection.md`` (``bench/detectors.py``).

Every ``Detection.box`` is already mapped onto the package's face-box convention by the backend's
``BoxCalibration`` (``common``).

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

import cv2
import numpy as np

from .common import (
    CALIBRATIONS,
    BoxCalibration,
    Detection,
    RawDetection,
    RawDetectorRun,
    WorkFrame,
    as_grey,
    as_rgb,
    non_max_suppression,
)

BACKENDS: tuple[str, ...] = ("blazeface", "mtcnn", "opencv", "dlib")
DEFAULT_BACKEND = "blazeface"
RGB_BACKENDS = ("blazeface", "mtcnn")

# ``score_threshold=None`` means these: BlazeFace's and MTCNN's face probabilities; OpenCV and dlib
# keep every detection their own thresholds (``min_neighbors``, ``dlib_threshold``) let through.
DEFAULT_SCORE_THRESHOLDS: dict[str, float] = {"blazeface": 0.5, "mtcnn": 0.9, "opencv": 0.0, "dlib": -np.inf}


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
        self.iou_threshold = iou_threshold
        self.calibrations = dict(CALIBRATIONS if calibrations is None else calibrations)
        self.raw_detector = _backend(backend, threads=threads, small_image_min_face=small_image_min_face,
                                     use_profile=use_profile, scale_factor=scale_factor, min_neighbors=min_neighbors,
                                     profile_min_neighbors=profile_min_neighbors,
                                     profile_score_weight=profile_score_weight, dlib_threshold=dlib_threshold)

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
        image = as_rgb(image_rgb) if self.backend in RGB_BACKENDS else as_grey(image_rgb)
        height, width = image.shape[:2]
        if min(height, width) < self.min_input_side:
            return []
        work, frame = self._working_image(image)
        found = self.raw_detector(work, frame, width)
        if self.backend == "blazeface" and frame.pad:
            # BlazeFace sees the whole image at 128x128: the border that lets it find a face filling a
            # tight crop also shrinks a smaller face in a thumbnail below what it scores well, so the
            # image is also run without it (NMS merges the two answers).
            inner = work[frame.pad:-frame.pad, frame.pad:-frame.pad]
            found += self.raw_detector(inner, dataclasses.replace(frame, pad=0), width)
        return found

    # ------------------------------------------------------------------------------------- internals

    def _working_image(self, grey: np.ndarray) -> tuple[np.ndarray, WorkFrame]:
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
        return work, WorkFrame(scale, pad, scale > 1.0, self._min_face(height, width))


def detect_faces(image_rgb: np.ndarray, backend: str = DEFAULT_BACKEND) -> list[Detection]:
    """One-off convenience: ``FaceDetector(backend)(image_rgb)`` (build a detector to reuse it)."""
    return FaceDetector(backend)(image_rgb)


def _backend(name: str, *, threads: int, small_image_min_face: float, use_profile: bool, scale_factor: float,
             min_neighbors: int, profile_min_neighbors: int, profile_score_weight: float,
             dlib_threshold: float) -> RawDetectorRun:
    """The raw pass of backend ``name``; each module is imported only when its backend is chosen."""
    if name == "blazeface":
        from .blazeface import BlazeFaceBackend

        return BlazeFaceBackend(threads)
    if name == "mtcnn":
        from .mtcnn import MtcnnBackend

        return MtcnnBackend(threads, small_image_min_face)
    if name == "opencv":
        from .opencv import HaarCascadeBackend

        return HaarCascadeBackend(use_profile, scale_factor, min_neighbors, profile_min_neighbors,
                                  profile_score_weight, small_image_min_face)
    from .dlib import DlibBackend

    return DlibBackend(dlib_threshold)
