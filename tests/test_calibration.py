"""Mirror-axis calibration: fitted on held-out faces, folded into the landmark head, scored cross-fitted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tcdcn.config import Config
from tcdcn.data.annotation import FaceAnnotation
from tcdcn.evaluation.calibration import (
    cross_fitted_error,
    fold_landmark_offset,
    horizontal_offsets,
    prediction_offsets,
)
from tcdcn.geometry import box_from_landmarks
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.models.network import TCDCN
from tcdcn.schemes import get_scheme


def _network() -> TCDCN:
    torch.manual_seed(0)
    network = TCDCN(Config().model, 0).eval()
    with torch.no_grad():
        network.landmark_head.weight.normal_(0.0, 0.05)
    return network


def test_folding_shifts_every_prediction_by_minus_the_offset() -> None:
    network = _network()
    images = torch.rand(3, 1, 60, 60) * 255
    with torch.no_grad():
        before, logits_before = network(images)
    offset = np.array([[0.1, 0.0], [-0.2, 0.0], [0.0, 0.05], [0.3, 0.0], [0.0, 0.0]])
    fold_landmark_offset(network, offset)
    with torch.no_grad():
        after, logits_after = network(images)
    torch.testing.assert_close(after, before - torch.as_tensor(offset, dtype=torch.float32)[None])
    torch.testing.assert_close(logits_after, logits_before)
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        fold_landmark_offset(network, np.zeros((68, 2)))


def test_horizontal_offsets_hand_values() -> None:
    # Two faces, two points: x offsets (1, 3) and (-2, 5); y offsets are ignored.
    offsets = np.array([[[1.0, 9.0], [-2.0, 9.0]], [[3.0, -9.0], [5.0, -9.0]]])
    np.testing.assert_allclose(horizontal_offsets(offsets), [[2.0, 0.0], [1.5, 0.0]])
    visible = np.array([[True, False], [True, True]])
    np.testing.assert_allclose(horizontal_offsets(offsets, visible), [[2.0, 0.0], [5.0, 0.0]])


def _faces(n: int) -> list[FaceAnnotation]:
    rng = np.random.default_rng(0)
    base = np.array([[30.0, 35.0], [50.0, 35.0], [40.0, 45.0], [32.0, 55.0], [48.0, 55.0]])
    scheme = get_scheme("mtfl-5")
    return [FaceAnnotation(Path(f"{i}.jpg"), base + rng.normal(0, 1.0, base.shape), scheme) for i in range(n)]


def test_cross_fitted_error_removes_a_planted_shift_and_keeps_noise() -> None:
    faces = _faces(40)
    rng = np.random.default_rng(1)
    planted = np.zeros((40, 5, 2))
    planted[..., 0] = -0.05  # every face predicted 0.05 half-sides left of its annotation
    before, after = cross_fitted_error(planted, faces)
    side = np.array([box_from_landmarks(f.landmarks, f.scheme).side for f in faces])
    iod = get_scheme("mtfl-5").interocular_distance(np.stack([f.landmarks for f in faces]))
    assert before == pytest.approx(float(np.mean(0.05 * side / 2 / iod)), rel=1e-9)
    assert after == pytest.approx(0.0, abs=1e-12)
    # Pure noise: the other fold's mean is not this fold's, so a cross-fitted correction cannot help much.
    noisy = rng.normal(0.0, 0.05, (40, 5, 2))
    before, after = cross_fitted_error(noisy, faces)
    assert after > 0.9 * before


def test_prediction_offsets_move_by_the_folded_amount(mtfl_train_faces: list[FaceAnnotation]) -> None:
    faces = mtfl_train_faces[:6]
    model = LandmarkModel(_network(), Config(), get_scheme("mtfl-5"), ())
    offsets = prediction_offsets(model, faces)  # (6, 5, 2)
    fitted = horizontal_offsets(offsets)
    fold_landmark_offset(model.network, fitted)
    np.testing.assert_allclose(prediction_offsets(model, faces), offsets - fitted[None], atol=1e-5)
    np.testing.assert_allclose(horizontal_offsets(prediction_offsets(model, faces))[:, 0], 0.0, atol=1e-5)


def test_mirror_averaging_keeps_a_folded_shift(mtfl_train_faces: list[FaceAnnotation]) -> None:
    """Test-time mirroring of a calibrated model = mirroring of the uncalibrated one, plus the shift."""
    import copy

    from tcdcn.io.images import load_image, to_grey

    faces = mtfl_train_faces[:4]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [box_from_landmarks(f.landmarks, f.scheme) for f in faces]
    base = LandmarkModel(_network(), Config(), get_scheme("mtfl-5"), ())
    shift = np.array([[0.02, 0.0], [0.05, 0.0], [0.01, 0.0], [-0.03, 0.0], [0.04, 0.0]])
    calibrated = LandmarkModel(copy.deepcopy(base.network), Config(), get_scheme("mtfl-5"), ())
    fold_landmark_offset(calibrated.network, -shift)  # the head now adds `shift`
    calibrated.landmark_shift = shift
    base.mirror_average = calibrated.mirror_average = True
    side = np.array([b.side for b in boxes])[:, None, None]
    expected = base.predict(greys, boxes).landmarks + shift[None] * side / 2
    np.testing.assert_allclose(calibrated.predict(greys, boxes).landmarks, expected, atol=1e-3)
    # Without the record, mirroring would cancel most of the shift: the test above can fail.
    calibrated.landmark_shift = None
    assert np.abs(calibrated.predict(greys, boxes).landmarks - expected).max() > 0.01


def test_mirror_averaged_prediction_is_mirror_equivariant(mtfl_train_faces: list[FaceAnnotation]) -> None:
    """Mirror-averaging answers a mirrored face with the mirror of its answer (points re-paired)."""
    from tcdcn.geometry import Box
    from tcdcn.io.images import load_image, to_grey

    faces = mtfl_train_faces[:4]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [box_from_landmarks(f.landmarks, f.scheme) for f in faces]
    scheme = get_scheme("mtfl-5")
    model = LandmarkModel(_network(), Config(), scheme, ())
    # A column c of a W-wide image lands on W - 1 - c (pixel centres at integers).
    mirrored_greys = [np.ascontiguousarray(g[:, ::-1]) for g in greys]
    mirrored_boxes = [Box(g.shape[1] - 1 - b.cx, b.cy, b.side) for g, b in zip(greys, boxes)]
    widths = np.array([g.shape[1] for g in greys], dtype=np.float64)[:, None]

    def plain_and_mirrored_back() -> tuple[np.ndarray, np.ndarray]:
        plain = model.predict(greys, boxes).landmarks  # (N, 5, 2)
        back = model.predict(mirrored_greys, mirrored_boxes).landmarks[:, scheme.flip_index].copy()
        back[..., 0] = widths - 1 - back[..., 0]
        return plain, back

    model.mirror_average = True
    plain, back = plain_and_mirrored_back()
    np.testing.assert_allclose(back, plain, atol=2e-3)
    # Without mirror-averaging the network is not symmetric, so the same identity fails.
    model.mirror_average = False
    plain, back = plain_and_mirrored_back()
    assert np.abs(back - plain).max() > 0.05
