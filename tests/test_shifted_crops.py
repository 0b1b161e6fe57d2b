"""The multi-crop grid built from one area reduction per face against ``make_crop`` per moved box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tcdcn.data.annotation import FaceAnnotation
from tcdcn.data.formats import read_annotations
from tcdcn.data.transforms import make_crop, make_jittered_crops
from tcdcn.geometry import (
    Box,
    CropJitter,
    apply_affine,
    apply_affines,
    box_from_landmarks,
    crop_matrices,
    crop_matrix,
    from_normalised,
    invert_affine,
    invert_affines,
    normalised_to_image,
    warp_shifted_crops,
)
from tcdcn.inference.loading import load_landmark_model
from tcdcn.inference.test_time import set_test_time_options
from tcdcn.io.images import load_image, to_grey
from tcdcn.models.registry import STANDARD_MULTI_CROP

W300_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "300w"


def _greys(faces: list[FaceAnnotation]) -> list[np.ndarray]:
    return [to_grey(load_image(f.image_path)) for f in faces]


def _per_jitter(greys: list[np.ndarray], boxes: list[Box], size: int,
                jitters: tuple[CropJitter, ...]) -> np.ndarray:
    """(F, J, S, S) float32: ``make_crop`` on every moved box, one area reduction per crop."""
    return np.stack([[make_crop(g, j.apply(b), size)[0] for j in jitters] for g, b in zip(greys, boxes)])


@pytest.fixture(scope="module")
def aflw(mtfl_test_faces: list[FaceAnnotation]) -> tuple[list[np.ndarray], list[Box]]:
    """AFLW test faces as evaluated: the whole 80x80 image is the box."""
    greys = _greys(mtfl_test_faces[:60])
    return greys, [Box.whole_image(g.shape[1], g.shape[0]) for g in greys]


@pytest.fixture(scope="module")
def w300() -> tuple[list[np.ndarray], list[Box]]:
    """300-W faces with their ground-truth box: the box lies inside the 256x256 image and shrinks."""
    if not W300_DIR.exists():
        pytest.skip(f"shared data not found at {W300_DIR}")
    faces = read_annotations(W300_DIR)[:40]
    return _greys(faces), [box_from_landmarks(f.landmarks, f.scheme) for f in faces]


def test_vectorised_matrices_are_the_per_box_ones() -> None:
    boxes = np.array([[40.2, 41.7, 80.0], [131.8, 115.8, 181.3]])
    matrices = crop_matrices(boxes, 60)  # (2, 2, 3)
    points = np.array([[[3.0, 4.0], [50.5, 7.25]], [[0.0, 0.0], [59.0, 59.0]]])  # (2, 2, 2)
    for box, matrix, pts, mapped in zip(boxes, matrices, points, apply_affines(invert_affines(matrices), points)):
        np.testing.assert_array_equal(matrix, crop_matrix(Box(*box), 60))
        np.testing.assert_array_equal(invert_affines(matrix), invert_affine(crop_matrix(Box(*box), 60)))
        np.testing.assert_allclose(mapped, apply_affine(invert_affine(matrix), pts), rtol=0, atol=1e-12)


def test_normalised_points_map_to_the_image_as_through_the_inverse_matrix() -> None:
    boxes = np.array([[[40.2, 41.7, 80.0], [41.8, 43.3, 80.0]], [[131.8, 115.8, 181.3], [128.2, 112.2, 181.3]]])
    matrices = crop_matrices(boxes, 60)  # (2, 2, 2, 3)
    normalised = np.random.default_rng(0).uniform(-1.2, 1.2, size=(2, 2, 5, 2))  # (F, J, P, 2)
    expected = apply_affines(invert_affines(matrices), from_normalised(normalised, 60))
    np.testing.assert_allclose(normalised_to_image(matrices, normalised, 60), expected, rtol=0, atol=1e-9)
    # By hand: the crop's centre is the box centre, its normalised corner (1, 1) half a side away.
    np.testing.assert_allclose(normalised_to_image(crop_matrices(np.array([10.0, 20.0, 8.0]), 60),
                                                   np.array([[0.0, 0.0], [1.0, 1.0]]), 60),
                               [[10.0, 20.0], [14.0, 24.0]], atol=1e-12)
    with pytest.raises(ValueError, match="axis-aligned"):
        normalised_to_image(crop_matrix(Box(40.0, 40.0, 80.0), 60, rotation_deg=10.0), normalised[0, 0], 60)


def test_one_box_gives_make_crop_exactly(aflw, w300) -> None:
    """The refinement pass (one crop per face) keeps the crops of ``make_crop``, bit for bit."""
    for greys, boxes in (aflw, w300):
        crops, matrices = make_jittered_crops(greys, boxes, 60, (CropJitter(),))
        np.testing.assert_array_equal(crops.astype(np.float32), _per_jitter(greys, boxes, 60, (CropJitter(),)))
        np.testing.assert_array_equal(matrices[:, 0], np.stack([crop_matrix(b, 60) for b in boxes]))


def test_grid_on_whole_image_boxes_is_make_crop_exactly(aflw) -> None:
    """Where every moved box's region is clipped to the whole image (the AFLW test protocol), the
    shared reduction is each crop's own: the grid is ``make_crop``'s, bit for bit."""
    greys, boxes = aflw
    crops, _ = make_jittered_crops(greys, boxes, 60, STANDARD_MULTI_CROP)
    np.testing.assert_array_equal(crops.astype(np.float32), _per_jitter(greys, boxes, 60, STANDARD_MULTI_CROP))


def test_shared_reduction_is_close_to_one_reduction_per_crop(w300) -> None:
    """Inside a larger image, the grid's crops read one reduction whose grid starts at the union's corner,
    not at each crop's: a fraction of a pixel of phase, about a grey level per pixel."""
    greys, boxes = w300
    old = _per_jitter(greys, boxes, 80, STANDARD_MULTI_CROP)
    new, _ = make_jittered_crops(greys, boxes, 80, STANDARD_MULTI_CROP)
    diff = np.abs(new.astype(np.float32) - old)  # (F, J, S, S)
    assert diff[:, 0].max() > 0  # the regions really differ here
    assert diff.mean() < 1.5
    assert np.median(diff) <= 1.0
    exact, _ = make_jittered_crops(greys, boxes, 80, STANDARD_MULTI_CROP, shared_reduction=False)
    np.testing.assert_array_equal(exact.astype(np.float32), old)


def test_mixed_jitter_scales_reduce_per_scale(w300) -> None:
    greys, boxes = w300
    jitters = (CropJitter(), CropJitter(0.04, 0.0), CropJitter(scale=1.1), CropJitter(-0.04, 0.0, 1.1))
    crops, _ = make_jittered_crops(greys[:5], boxes[:5], 60, jitters)
    separate = [make_jittered_crops(greys[:5], boxes[:5], 60, jitters[k:k + 2])[0] for k in (0, 2)]
    np.testing.assert_array_equal(crops, np.concatenate(separate, axis=1))


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_shipped_grid_inference_keeps_its_landmarks(aflw, w300, backend: str) -> None:
    """The shipped model with refinement, the 3x3 grid (``--grid``) and mirroring, with the shared reduction
    against one reduction per crop (the crops of make_crop). On AFLW test faces the refined boxes are
    smaller than the image, so some grids differ: 0.05 px mean at most (0.045 px over all 2,995). On
    300-W faces (0.2 px mean measured) within the pipeline's own sub-pixel noise: moving the given boxes
    by 0.4 px moves its answers by 0.15 px."""
    model = load_landmark_model("mtfl-5pt", backend=backend, threads=1)
    set_test_time_options(model, multi_crop="grid")
    assert model.box_refinements == 1 and len(model.multi_crop) == 9 and model.mirror_average
    for (greys, boxes), tolerance in ((aflw, 0.05), (w300, 0.4)):
        model.shared_crop_reduction = True
        shared = model.predict(greys, boxes)
        model.shared_crop_reduction = False
        exact = model.predict(greys, boxes)
        assert np.linalg.norm(shared.landmarks - exact.landmarks, axis=-1).mean() <= tolerance
        assert np.abs(shared.attribute_probabilities - exact.attribute_probabilities).mean() < 0.01


def test_per_crop_reduction_is_the_old_default_inference(aflw, w300) -> None:
    """``shared_crop_reduction=False`` runs the crops of ``make_crop``: predictions equal a reference
    built crop by crop with make_crop and mapped back point by point, to float rounding."""
    model = load_landmark_model("mtfl-5pt", backend="onnx", threads=1)
    model.shared_crop_reduction = False
    model.box_refinements = 0
    for greys, boxes in (aflw, w300):
        crops = _per_jitter(greys, boxes, model.input_size, model.multi_crop)  # (F, J, S, S)
        normalised, _ = model._run_crops(crops.reshape(-1, 1, model.input_size, model.input_size), model.mirror_average)
        size = model.input_size
        points = normalised.reshape(len(greys), len(model.multi_crop), -1, 2) * (size / 2.0) + (size - 1) / 2.0
        reference = np.stack([np.mean([apply_affine(invert_affine(crop_matrix(j.apply(b), size)), p)
                                       for j, p in zip(model.multi_crop, face_points)], axis=0)
                              for b, face_points in zip(boxes, points)])
        np.testing.assert_allclose(model.predict(greys, boxes).landmarks, reference, rtol=0, atol=1e-4)


def test_one_face_takes_the_scalar_path_with_the_same_crops() -> None:
    """One face (per-face inference) runs the reduction's arithmetic on Python floats: the crops equal the
    vectorised path's bit for bit, for boxes inside, across and beyond random images, small and large."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        height, width = rng.integers(20, 400, 2)
        image = rng.integers(0, 255, (height, width), dtype=np.uint8)
        side = rng.uniform(5, 1.5 * max(height, width))
        cx, cy = rng.uniform(-0.2 * width, 1.2 * width), rng.uniform(-0.2 * height, 1.2 * height)
        shifts = rng.uniform(-0.05, 0.05, (int(rng.integers(1, 10)), 2))
        boxes = np.array([[cx + dx * side, cy + dy * side, side] for dx, dy in shifts])[None]  # (1, J, 3)
        matrices = crop_matrices(boxes, 60)
        one = warp_shifted_crops([image], matrices, 60)
        vectorised = warp_shifted_crops([image, image], np.concatenate([matrices, matrices]), 60)[:1]
        np.testing.assert_array_equal(one, vectorised)


@pytest.mark.parametrize("plan", ["shipped", "grid", "two refinements unmirrored", "one pass", "mixed scales",
                                  "per-crop reduction", "small calls"])
def test_a_face_alone_gets_the_answers_it_gets_in_a_batch(aflw, w300, plan: str) -> None:
    """``predict`` on one face takes the one-face path (``_predict_one_face``) where it computes the same
    passes as the batched path; faces in a batch take the batched one. Their landmarks agree to float
    rounding, the attribute probabilities likewise, whatever the plan (plans the one-face path does not
    compute, mixed crop scales, per-crop reduction and passes split over calls, go the batched way)."""
    model = load_landmark_model("mtfl-5pt", backend="onnx", threads=1)
    batch_size = None
    if plan == "grid":
        set_test_time_options(model, multi_crop="grid")
    elif plan == "two refinements unmirrored":
        set_test_time_options(model, mirror_average=False, box_refinements=2)
    elif plan == "one pass":
        set_test_time_options(model, mirror_average=False, multi_crop=False, box_refinements=0)
    elif plan == "mixed scales":
        model.multi_crop = (CropJitter(0.02, 0.0, 1.0), CropJitter(-0.02, 0.0, 1.1))
    elif plan == "per-crop reduction":
        model.shared_crop_reduction = False
    elif plan == "small calls":
        batch_size = 2  # the last pass's 2 crops and their mirror images in two calls
    calls: list[int] = []
    run = model.run_network
    model.run_network = lambda crops: calls.append(len(crops)) or run(crops)  # type: ignore[method-assign]
    one_face_runs: list[int] = []
    one_face = model._predict_one_face
    model._predict_one_face = lambda *a: one_face_runs.append(1) or one_face(*a)  # type: ignore[method-assign]
    takes_one_face_path = plan not in ("mixed scales", "per-crop reduction", "small calls")
    for greys, boxes in (aflw, w300):
        together = model.predict(greys[:8], boxes[:8], batch_size=batch_size)
        assert not one_face_runs
        calls.clear()
        alone = [model.predict([g], [b], batch_size=batch_size) for g, b in zip(greys[:8], boxes[:8])]
        assert len(one_face_runs) == (8 if takes_one_face_path else 0)
        one_face_runs.clear()
        passes = model.box_refinements + (2 if plan == "small calls" else 1)
        assert len(calls) == 8 * passes  # every pass of a face in one call unless the call size splits it
        np.testing.assert_allclose(np.concatenate([a.landmarks for a in alone]), together.landmarks,
                                   rtol=0, atol=1e-9)
        np.testing.assert_allclose(np.concatenate([a.attribute_probabilities for a in alone]),
                                   together.attribute_probabilities, rtol=0, atol=1e-9)
