"""The ``opencv`` backend: OpenCV's Haar cascades shipped in ``cv2.data``, the frontal cascade plus the profile
cascade run on the image and on its mirror image (the cascade only knows one facing direction), merged by
non-maximum suppression. ``score`` is the number of raw cascade windows merged into a detection (profile
detections count for ``profile_score_weight`` of that)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .common import RawDetection, WorkFrame, search_side

# The smallest window the cascades were trained on, in pixels.
CASCADE_WINDOW = 24


class HaarCascadeBackend:
    """Raw cascade squares in input pixels (``common.RawDetectorRun``)."""

    def __init__(self, use_profile: bool = True, scale_factor: float = 1.1, min_neighbors: int = 4,
                 profile_min_neighbors: int = 6, profile_score_weight: float = 0.5,
                 small_image_min_face: float = 0.25) -> None:
        root = Path(cv2.data.haarcascades)
        self.frontal = load_cascade(root / "haarcascade_frontalface_default.xml")
        self.profile = load_cascade(root / "haarcascade_profileface.xml") if use_profile else None
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.profile_min_neighbors = profile_min_neighbors
        self.profile_score_weight = profile_score_weight
        self.small_image_min_face = small_image_min_face

    def __call__(self, work: np.ndarray, frame: WorkFrame, width: int) -> list[RawDetection]:
        equalised = cv2.equalizeHist(work)
        found: list[RawDetection] = []
        min_size = search_side(work, frame, CASCADE_WINDOW, self.small_image_min_face)
        rects, counts = self.frontal.detectMultiScale2(
            equalised, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size),
        )
        for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).reshape(-1)):
            found.append(RawDetection(frame.box_to_input(x, y, w, h), float(n), "opencv-frontal", False, width))
        if self.profile is not None:
            for mirrored, img in ((False, equalised), (True, np.ascontiguousarray(equalised[:, ::-1]))):
                rects, counts = self.profile.detectMultiScale2(
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


def load_cascade(path: Path) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"{path}: OpenCV could not load the Haar cascade")
    return cascade
