"""The ONNX face detector backends, BlazeFace (the default) and MTCNN: real faces found on the face-box
convention, nothing in blank or noise images, score_threshold and min_face_size honoured, boxes in
original pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tcdcn.data.formats import read_mtfl
from tcdcn.geometry import Box, box_from_landmarks
from tcdcn.inference.detectors import ASSETS, CALIBRATIONS, DEFAULT_BACKEND, DEFAULT_SCORE_THRESHOLDS, FaceDetector
from tcdcn.io.images import load_image

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "examples" / "astronaut.jpg"
MTFL_TEST = REPO.parent / "shared" / "data" / "mtfl" / "testing.txt"


ONNX_BACKENDS = ("blazeface", "mtcnn")


@pytest.fixture(scope="module", params=ONNX_BACKENDS)
def detector(request: pytest.FixtureRequest) -> FaceDetector:
    return FaceDetector(request.param)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image(ASTRONAUT)


def _near(det: Box, gt: Box, centre: float = 0.15, ratio: float = 1.3) -> bool:
    close = np.hypot(det.cx - gt.cx, det.cy - gt.cy) <= centre * gt.side
    return bool(close and 1 / ratio <= det.side / gt.side <= ratio)


def test_default_backend_ships_its_models() -> None:
    assert DEFAULT_BACKEND == "blazeface" and FaceDetector().backend == "blazeface"
    assert (ASSETS / "blazeface_short_range.onnx").is_file()
    for name in ("pnet", "rnet", "onet"):
        assert (ASSETS / f"mtcnn_{name}.onnx").is_file()
    assert "blazeface" in CALIBRATIONS and "mtcnn" in CALIBRATIONS


def test_astronaut(detector: FaceDetector, astronaut: np.ndarray) -> None:
    dets = detector(astronaut)
    assert len(dets) == 1  # one face, no spurious boxes
    box, score = dets[0].box, dets[0].score
    # Eileen Collins' face: eyes near (204, 101) and (246, 103), mouth corners near y 140.
    assert 205 < box.cx < 245 and 100 < box.cy < 140
    assert 100 < box.side < 160
    assert DEFAULT_SCORE_THRESHOLDS[detector.backend] <= score <= 1.0  # a probability


def test_aflw_test_crops_on_the_convention(detector: FaceDetector) -> None:
    if not MTFL_TEST.exists():
        pytest.skip(f"MTFL data not found at {MTFL_TEST}")
    faces = read_mtfl(MTFL_TEST)[::300][:10]  # AFLW crops, 80x80, poses mixed
    near = 0
    for face in faces:
        gt = box_from_landmarks(face.landmarks, face.scheme)
        dets = detector(load_image(face.image_path))
        assert len(dets) <= 1
        near += any(_near(d.box, gt) for d in dets)
    assert near >= 9


def test_nothing_in_blank_or_noise_images(detector: FaceDetector) -> None:
    rng = np.random.default_rng(0)
    assert detector(np.full((480, 640, 3), 128, np.uint8)) == []
    assert detector(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) == []
    assert detector(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)) == []
    assert detector(np.zeros((10, 10, 3), np.uint8)) == []  # below min_input_side


def test_grey_and_rgba_input(detector: FaceDetector, astronaut: np.ndarray) -> None:
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    rgba = cv2.cvtColor(astronaut, cv2.COLOR_RGB2RGBA)
    for image in (grey, rgba):
        dets = detector(image)
        assert len(dets) == 1 and 205 < dets[0].box.cx < 245


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_score_threshold(backend: str, astronaut: np.ndarray) -> None:
    score = max(d.score for d in FaceDetector(backend, score_threshold=0.0)(astronaut))
    assert FaceDetector(backend, score_threshold=min(1.0, score + 1e-6))(astronaut) == []
    assert len(FaceDetector(backend, score_threshold=score - 1e-6)(astronaut)) == 1
    assert FaceDetector(backend).score_threshold == DEFAULT_SCORE_THRESHOLDS[backend]
    assert DEFAULT_SCORE_THRESHOLDS == {"blazeface": 0.5, "mtcnn": 0.9, "opencv": 0.0, "dlib": -np.inf}


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_min_face_size(backend: str, astronaut: np.ndarray) -> None:
    side = FaceDetector(backend)(astronaut)[0].box.side
    assert len(FaceDetector(backend, min_face_size=side * 0.8)(astronaut)) == 1
    assert FaceDetector(backend, min_face_size=side * 1.5)(astronaut) == []


def test_min_face_size_small_face_in_large_image(astronaut: np.ndarray) -> None:
    # A small face (convention box about 50 pixels) in a large image (MTCNN): found with a small
    # min_face_size and with the default (40), not with 80.
    canvas = np.full((960, 1280, 3), 90, np.uint8)
    face = cv2.resize(astronaut[40:200, 140:300], (64, 64), interpolation=cv2.INTER_AREA)
    canvas[400:464, 600:664] = face
    small = FaceDetector("mtcnn", min_face_size=24, max_work_side=1280)(canvas)
    assert any(abs(d.box.cx - 632) < 20 and abs(d.box.cy - 432) < 20 for d in small)
    assert any(abs(d.box.cx - 632) < 20 for d in FaceDetector("mtcnn", max_work_side=1280)(canvas))
    assert FaceDetector("mtcnn", min_face_size=80, max_work_side=1280)(canvas) == []


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_downscaled_large_image_mapped_back(backend: str, astronaut: np.ndarray) -> None:
    ref = FaceDetector(backend)(astronaut)[0].box
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)  # x4; detector works at 640
    dets = FaceDetector(backend)(big)
    assert len(dets) == 1
    box = dets[0].box
    assert abs(box.cx - ((ref.cx + 0.5) * 4 - 0.5)) < 0.05 * box.side
    assert abs(box.cy - ((ref.cy + 0.5) * 4 - 0.5)) < 0.05 * box.side
    assert 0.9 < box.side / (4 * ref.side) < 1.1
    # The same face with the image padded on the left/top: the box moves with it.
    padded = cv2.copyMakeBorder(big, 300, 0, 500, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    moved = FaceDetector(backend)(padded)[0].box
    assert abs(moved.cx - 500 - box.cx) < 0.05 * box.side and abs(moved.cy - 300 - box.cy) < 0.05 * box.side


def test_one_thread_session_by_default() -> None:
    assert FaceDetector("blazeface").raw_detector.model.session.get_session_options().intra_op_num_threads == 1
    assert FaceDetector("mtcnn").raw_detector.model.pnet.get_session_options().intra_op_num_threads == 1
    assert FaceDetector("mtcnn", threads=2).raw_detector.model.onet.get_session_options().intra_op_num_threads == 2
