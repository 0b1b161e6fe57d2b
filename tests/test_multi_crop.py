"""Multi-crop inference: each face predicted from several slightly moved boxes, averaged in image pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tcdcn.config import Config
from tcdcn.data.annotation import FaceAnnotation
from tcdcn.geometry import Box, CropJitter, box_from_landmarks, grid_jitters
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.inference.test_time import set_test_time_options
from tcdcn.io.images import load_image, to_grey
from tcdcn.models.network import TCDCN
from tcdcn.models.registry import SHIPPED, STANDARD_MULTI_CROP
from tcdcn.schemes import get_scheme


def _model(tasks: tuple[str, ...] = ()) -> LandmarkModel:
    torch.manual_seed(0)
    network = TCDCN(Config().model, len(tasks)).eval()
    with torch.no_grad():
        network.landmark_head.weight.normal_(0.0, 0.05)
    return LandmarkModel(network, Config(), get_scheme("mtfl-5"), tasks)


@pytest.fixture()
def faces(mtfl_train_faces: list[FaceAnnotation]) -> tuple[list[np.ndarray], list[Box]]:
    chosen = mtfl_train_faces[:5]
    return ([to_grey(load_image(f.image_path)) for f in chosen],
            [box_from_landmarks(f.landmarks, f.scheme) for f in chosen])


def test_a_jitter_moves_and_scales_the_box_by_its_side() -> None:
    assert CropJitter(0.1, -0.05, 1.2).apply(Box(50.0, 40.0, 20.0)) == Box(52.0, 39.0, 24.0)
    assert CropJitter().apply(Box(50.0, 40.0, 20.0)) == Box(50.0, 40.0, 20.0)


def test_the_grid_is_the_box_and_its_eight_neighbours() -> None:
    grid = grid_jitters(0.03)
    assert len(grid) == 9 and len(set(grid)) == 9
    assert grid[0] == CropJitter()
    assert {(j.dx, j.dy) for j in grid} == {(x, y) for x in (-0.03, 0.0, 0.03) for y in (-0.03, 0.0, 0.03)}
    assert all(j.scale == 1.0 for j in grid)
    for bad in (0.0, -0.1, 0.5):
        with pytest.raises(ValueError, match="grid shift"):
            grid_jitters(bad)


def test_one_identity_crop_is_the_plain_prediction(faces) -> None:
    greys, boxes = faces
    model = _model()
    plain = model.predict(greys, boxes).landmarks
    model.multi_crop = (CropJitter(),)
    np.testing.assert_array_equal(model.predict(greys, boxes).landmarks, plain)


@pytest.mark.parametrize("mirror", [False, True])
def test_multi_crop_is_the_mean_of_the_moved_boxes_predictions(faces, mirror: bool) -> None:
    greys, boxes = faces
    model = _model(("male", "smiling", "glasses"))
    model.mirror_average = mirror
    jitters = grid_jitters(0.04)
    singles = [model.predict(greys, [j.apply(b) for b in boxes]) for j in jitters]
    model.multi_crop = jitters
    # A small batch size splits the faces over several network calls; the answer must not change.
    for batch_size in (256, 20):
        pred = model.predict(greys, boxes, batch_size=batch_size)
        np.testing.assert_allclose(pred.landmarks, np.mean([s.landmarks for s in singles], axis=0), atol=1e-4)
        logits = np.mean([np.log(s.attribute_probabilities / (1 - s.attribute_probabilities)) for s in singles], 0)
        np.testing.assert_allclose(pred.attribute_probabilities, 1 / (1 + np.exp(-logits)), atol=1e-5)
    # The moved boxes really give different answers, so the average is not trivially the centre crop.
    assert np.abs(singles[1].landmarks - singles[0].landmarks).max() > 0.05


def test_multi_crop_with_mirroring_stays_mirror_equivariant(faces) -> None:
    """The grid is symmetric in x, so a mirrored face still gets the mirror of its answer."""
    greys, boxes = faces
    scheme = get_scheme("mtfl-5")
    model = _model()
    model.mirror_average, model.multi_crop = True, grid_jitters(0.03)
    mirrored_greys = [np.ascontiguousarray(g[:, ::-1]) for g in greys]
    mirrored_boxes = [Box(g.shape[1] - 1 - b.cx, b.cy, b.side) for g, b in zip(greys, boxes)]
    widths = np.array([g.shape[1] for g in greys], dtype=np.float64)[:, None]
    plain = model.predict(greys, boxes).landmarks
    back = model.predict(mirrored_greys, mirrored_boxes).landmarks[:, scheme.flip_index].copy()
    back[..., 0] = widths - 1 - back[..., 0]
    np.testing.assert_allclose(back, plain, atol=2e-3)


def test_test_time_options_keep_override_or_fill_in_the_defaults() -> None:
    model = _model()
    set_test_time_options(model)
    assert model.multi_crop == () and model.mirror_average is False
    set_test_time_options(model, multi_crop=True)
    assert model.multi_crop == STANDARD_MULTI_CROP
    own = (CropJitter(), CropJitter(0.01, 0.0))
    model.multi_crop = own
    set_test_time_options(model, mirror_average=True, multi_crop=True)
    assert model.multi_crop == own and model.mirror_average is True
    set_test_time_options(model, multi_crop=False)
    assert model.multi_crop == ()
    model.multi_crop = own
    set_test_time_options(model, multi_crop="grid")  # the grid whatever the model's own crops
    assert model.multi_crop == STANDARD_MULTI_CROP
    with pytest.raises(ValueError, match="multi_crop"):
        set_test_time_options(model, multi_crop="diagonal")


def test_shipped_records_drive_the_test_time_options_on_both_backends() -> None:
    from tcdcn.inference.loading import load_landmark_model

    for name, record in SHIPPED.items():
        for backend in ("torch", "onnx"):
            model = load_landmark_model(name, backend=backend)
            assert (model.mirror_average, model.multi_crop, model.box_refinements) == (
                record.mirror_average, record.multi_crop, record.box_refinements), (name, backend)


def test_one_refinement_is_a_second_pass_on_the_first_answers_box(faces) -> None:
    greys, boxes = faces
    model = _model()
    first = model.predict(greys, boxes).landmarks
    second = model.predict(greys, [box_from_landmarks(p, model.scheme) for p in first]).landmarks
    model.box_refinements = 1
    np.testing.assert_array_equal(model.predict(greys, boxes).landmarks, second)
    assert np.abs(second - first).max() > 0.05  # the re-framed box really differs


def test_refinement_passes_run_unmirrored_and_the_last_pass_mirror_averaged(faces) -> None:
    """With mirror-averaging on, the re-framing pass is the plain crop's answer (one crop per face, no
    mirror image), and only the last pass averages each crop with its mirror image."""
    greys, boxes = faces
    model = _model()
    first = model.predict(greys, boxes).landmarks  # mirror off, box alone: the refinement pass's answer
    reframed = [box_from_landmarks(p, model.scheme) for p in first]
    model.multi_crop = (CropJitter(0.02, 0.02), CropJitter(-0.02, -0.02))
    model.mirror_average = True
    expected = model.predict(greys, reframed).landmarks
    calls: list[int] = []
    run_network = model.run_network
    model.run_network = lambda crops: (calls.append(len(crops)), run_network(crops))[1]  # type: ignore[method-assign]
    model.box_refinements = 1
    np.testing.assert_allclose(model.predict(greys, boxes).landmarks, expected, rtol=0, atol=1e-5)
    assert calls == [len(greys), 2 * 2 * len(greys)]  # 1 plain crop, then 2 crops and their mirror images


def test_refinement_makes_a_trained_model_forget_the_box_error(faces) -> None:
    """The shipped model from a box 8% of its side off centre: re-framed on its own points, its answer
    moves back towards the answer from the convention's box."""
    greys, boxes = faces
    model = LandmarkModel.load("mtfl-5pt")
    set_test_time_options(model, mirror_average=False, multi_crop=False, box_refinements=0)
    moved = [CropJitter(0.08, -0.08).apply(b) for b in boxes]
    centred = model.predict(greys, boxes).landmarks
    drift_plain = np.abs(model.predict(greys, moved).landmarks - centred).mean()
    model.box_refinements = 2
    drift_refined = np.abs(model.predict(greys, moved).landmarks - model.predict(greys, boxes).landmarks).mean()
    assert drift_refined < 0.5 * drift_plain


def test_refinement_keeps_the_box_when_the_points_are_degenerate() -> None:
    model = _model()
    box = Box(10.0, 10.0, 20.0)
    assert model._refined_box(np.full((5, 2), 3.0), box) == box
    with pytest.raises(ValueError, match="box_refinements"):
        set_test_time_options(model, box_refinements=-1)
