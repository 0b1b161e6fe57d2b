"""Face detector: finds real faces (boxes on the face-box convention), nothing in blank images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tcdcn.data.formats import read_mtfl
from tcdcn.geometry import Box, box_from_landmarks
from tcdcn.inference.detectors import (
    BoxCalibration,
    Detection,
    FaceDetector,
    RawDetection,
    box_iou,
    non_max_suppression,
)
from tcdcn.io.images import load_image

MTFL_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mtfl" / "testing.txt"
# NASA's portrait of Eileen Collins (public domain), 512x512 RGB, the image scikit-image ships as astronaut().
ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image(ASTRONAUT)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _hits(det: Box, gt: Box) -> bool:
    close = np.hypot(det.cx - gt.cx, det.cy - gt.cy) <= 0.25 * gt.side
    return bool(close and 1 / 1.5 <= det.side / gt.side <= 1.5)


def test_astronaut(detector: FaceDetector, astronaut: np.ndarray) -> None:
    image = astronaut  # 512x512 RGB; Eileen Collins' face near (x 210, y 100)
    dets = detector(image)
    assert dets and all(isinstance(d, Detection) for d in dets)
    best = max(dets, key=lambda d: d.score)
    assert 170 < best.box.cx < 250 and 60 < best.box.cy < 150
    assert 80 < best.box.side < 250


def test_mtfl_test_crops(detector: FaceDetector) -> None:
    if not MTFL_TEST.exists():
        pytest.skip("MTFL data not available")
    frontal = [f for f in read_mtfl(MTFL_TEST) if f.attributes["pose_frontal"]][:8]
    hits = 0
    for face in frontal:
        gt = box_from_landmarks(face.landmarks, face.scheme)
        dets = detector(load_image(face.image_path))  # 80x80: upsampled and padded internally
        hits += any(_hits(d.box, gt) for d in dets)
    assert hits >= 6


def test_no_faces_in_blank_or_tiny_images(detector: FaceDetector) -> None:
    assert detector(np.full((300, 400, 3), 128, dtype=np.uint8)) == []
    assert detector(np.full((10, 10, 3), 200, dtype=np.uint8)) == []
    assert detector(np.zeros((10, 10), dtype=np.uint8)) == []


def test_large_image_mapped_back(detector: FaceDetector, astronaut: np.ndarray) -> None:
    import cv2

    image = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_LINEAR)
    small = FaceDetector(max_work_side=512, scale_factor=1.2)
    best = max(small(image), key=lambda d: d.score)
    assert 170 * 4 < best.box.cx < 250 * 4 and 60 * 4 < best.box.cy < 150 * 4


def test_calibration_and_mirroring() -> None:
    raw = Box(50.0, 40.0, 20.0)
    calib = BoxCalibration(scale=1.5, dx=0.1, dy=-0.2)
    assert calib.apply(raw) == Box(52.0, 36.0, 30.0)
    mirrored = RawDetection(raw, 1.0, "x", True, image_width=101)
    # In the mirror image the box moves right by dx; in the image it moves left.
    assert mirrored.calibrated({"x": calib}) == Box(48.0, 36.0, 30.0)


def test_non_max_suppression_keeps_best() -> None:
    a = Detection(Box(50, 50, 40), 5.0)
    b = Detection(Box(52, 50, 40), 3.0)
    inner = Detection(Box(50, 50, 20), 9.0)
    far = Detection(Box(200, 50, 40), 1.0)
    kept = non_max_suppression([a, b, inner, far])
    assert kept == [inner, far]
    assert box_iou(a.box, a.box) == pytest.approx(1.0)


@pytest.mark.slow  # building dlib's detector takes a few seconds
def test_dlib_backend_if_installed(astronaut: np.ndarray) -> None:
    pytest.importorskip("dlib")
    dets = FaceDetector("dlib")(astronaut)
    assert dets
    best = max(dets, key=lambda d: d.score)
    assert 170 < best.box.cx < 250 and 60 < best.box.cy < 150
    assert FaceDetector("dlib")(np.full((10, 10, 3), 200, dtype=np.uint8)) == []  # detector is cached


def test_bad_input_and_backend() -> None:
    with pytest.raises(ValueError, match="unknown face detector backend"):
        FaceDetector("nope")
    with pytest.raises(ValueError, match="uint8"):
        FaceDetector()(np.zeros((50, 50, 3), dtype=np.float32))
