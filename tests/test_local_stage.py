"""The local stage: patch groups as scheme data, the re-framing geometry, torch/ONNX parity, an untrained stage
returning its input, the shipped stage improving 300w-68pt on its validation split, and its switches."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tcdcn.cli import main as cli_main
from tcdcn.config import load_config
from tcdcn.data.dataset import split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.data.patches import PatchGeometry
from tcdcn.errors import CheckpointError
from tcdcn.evaluation.metrics import nme, normalised_face_errors
from tcdcn.geometry import apply_affine, box_from_landmarks
from tcdcn.inference.loading import load_landmark_model
from tcdcn.inference.local_stage import LocalStage
from tcdcn.io.images import load_image, to_grey
from tcdcn.models.local_stage import LocalStageNetwork, export_local_stage
from tcdcn.schemes import IBUG_68, LandmarkScheme

REPO = Path(__file__).resolve().parents[1]
SIDES = (83.0, 65.0, 82.0, 55.0, 55.0, 52.0, 61.0)


@pytest.fixture(scope="module")
def helen_faces() -> list:
    cfg = load_config(REPO / "configs" / "300w-68pt-transfer.yaml")
    faces = read_annotations(REPO / cfg.data.train)
    return split_faces(faces, cfg.data)[1]  # the shipped model's validation split


def _geometry() -> PatchGeometry:
    return PatchGeometry(IBUG_68, 128, 48, SIDES)


def test_ibug68_patch_groups_cover_every_point_once_and_mirror_onto_groups() -> None:
    points = sorted(i for _, group in IBUG_68.patch_groups for i in group)
    assert points == list(range(68))
    groups = {frozenset(g) for _, g in IBUG_68.patch_groups}
    flip = IBUG_68.flip_index
    assert all(frozenset(int(flip[i]) for i in g) in groups for g in groups)


def test_a_patch_group_without_its_mirror_group_is_refused() -> None:
    with pytest.raises(ValueError, match="mirror image of a patch group"):
        LandmarkScheme(name="two", point_names=("a", "b"), flip_pairs=((0, 1),),
                       five_point_groups=((0,), (1,), (0,), (0,), (1,)), patch_groups=(("a", (0,)),))


def test_reframing_levels_the_eye_line_and_centres_the_box(helen_faces: list) -> None:
    geometry = _geometry()
    points = helen_faces[0].landmarks.astype(np.float64)
    m = geometry.reframing(points)
    left, right = IBUG_68.eye_centres(apply_affine(m, points)[None])
    assert abs(left[0, 1] - right[0, 1]) < 1e-6  # eye line level
    box = box_from_landmarks(points, IBUG_68)
    np.testing.assert_allclose(apply_affine(m, np.array([box.cx, box.cy])), [63.5, 63.5], atol=1e-6)
    # One face-box side is canonical_size pixels: the eye distance scales by canonical_size / side.
    scale = np.linalg.norm(right - left) / np.linalg.norm(np.subtract(*IBUG_68.eye_centres(points[None])))
    assert scale == pytest.approx(128 / box.side, rel=1e-9)


def test_cut_patches_are_standardised_and_points_relative_to_their_group_centre() -> None:
    geometry = _geometry()
    rng = np.random.default_rng(0)
    reframed = rng.integers(0, 255, (128, 128)).astype(np.uint8)
    points = rng.uniform(30, 100, (68, 2))
    patches, relative = geometry.cut(reframed, points)
    assert patches.shape == (7, 48, 48) and relative.shape == (68, 2)
    np.testing.assert_allclose(patches.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(patches.std(axis=(1, 2)), 1, atol=1e-2)
    for side, (_, group) in zip(SIDES, IBUG_68.patch_groups):
        np.testing.assert_allclose(relative[list(group)].mean(axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(relative[list(group)] * side + points[list(group)].mean(axis=0),
                                   points[list(group)], atol=1e-4)


def _stage(tmp_path: Path, random_heads: bool, mirror: bool = True) -> tuple[LocalStage, LocalStageNetwork]:
    geometry = _geometry()
    torch.manual_seed(0)
    network = LocalStageNetwork(geometry)
    if random_heads:
        for head in network.heads:
            torch.nn.init.normal_(head[-1].weight, std=0.01)
    path = export_local_stage(network, geometry, tmp_path / "stage.onnx")
    return LocalStage(path, mirror_average=mirror), network.eval()


def test_onnx_stage_matches_torch(tmp_path: Path) -> None:
    stage, network = _stage(tmp_path, random_heads=True)
    rng = np.random.default_rng(1)
    patches = rng.normal(size=(3, 7, 48, 48)).astype(np.float32)
    relative = rng.normal(scale=0.2, size=(3, 68, 2)).astype(np.float32)
    with torch.no_grad():
        expected = network(torch.from_numpy(patches), torch.from_numpy(relative)).numpy()
    assert np.abs(expected).max() > 1e-3  # a stage that moves points
    np.testing.assert_allclose(stage.run_network(patches, relative), expected, atol=1e-5)
    assert stage.geometry == _geometry()


@pytest.mark.parametrize("mirror", [True, False])
def test_untrained_stage_returns_its_input_points(tmp_path: Path, helen_faces: list, mirror: bool) -> None:
    stage, _ = _stage(tmp_path, random_heads=False, mirror=mirror)
    faces = helen_faces[:3]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    points = np.stack([f.landmarks for f in faces]).astype(np.float64) + 1.5
    # Zero residuals: re-framing, mirroring and mapping back must give the same image points.
    np.testing.assert_allclose(stage.refine(greys, points), points, atol=1e-6)


def test_stage_moves_points_the_same_for_a_face_alone_or_in_a_batch(tmp_path: Path, helen_faces: list) -> None:
    stage, _ = _stage(tmp_path, random_heads=True)
    faces = helen_faces[:3]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    points = np.stack([f.landmarks for f in faces]).astype(np.float64)
    together = stage.refine(greys, points)
    alone = np.concatenate([stage.refine(greys[i:i + 1], points[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert np.abs(together - points).max() > 1e-3


def test_shipped_local_stage_improves_300w_68pt_on_its_validation_split(helen_faces: list) -> None:
    model = load_landmark_model("300w-68pt")
    assert model.local_stage is not None and model.use_local_stage
    greys = [to_grey(load_image(f.image_path)) for f in helen_faces]
    boxes = [box_from_landmarks(f.landmarks, IBUG_68) for f in helen_faces]
    targets = np.stack([f.landmarks for f in helen_faces]).astype(np.float64)
    normaliser = IBUG_68.interocular_distance(targets)
    with_stage = nme(normalised_face_errors(model.predict(greys, boxes).landmarks, targets, normaliser))
    model.use_local_stage = False
    without = nme(normalised_face_errors(model.predict(greys, boxes).landmarks, targets, normaliser))
    # docs/results.md: about 0.2 points better on these 181 faces.
    assert with_stage < without - 0.001, (with_stage, without)


def test_local_stage_switches(tmp_path: Path, w300_afw_dir: Path, capsys: pytest.CaptureFixture[str],
                              caplog: pytest.LogCaptureFixture) -> None:
    image = next(iter(sorted(w300_afw_dir.glob("*.jpg"))))
    caplog.set_level(logging.INFO, logger="tcdcn")
    assert cli_main(["predict", str(image), "--model", "300w-68pt", "--no-local-stage", "--out",
                     str(tmp_path / "a")]) == 0
    line = next(r.getMessage() for r in caplog.records if "test-time options" in r.getMessage())
    running, defaults = line.split("(the model's defaults")
    assert "local stage" not in running and "local stage" in defaults
    assert cli_main(["predict", str(image), "--model", "mtfl-5pt", "--local-stage", "--out", str(tmp_path / "b")]) == 2
    assert "has no local stage" in capsys.readouterr().err


def test_a_face_whose_points_give_no_box_keeps_its_points(tmp_path: Path, helen_faces: list) -> None:
    stage, _ = _stage(tmp_path, random_heads=True)
    faces = helen_faces[:2]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    points = np.stack([f.landmarks for f in faces]).astype(np.float64)
    points[1] = 50.0  # every point in one place: no face box
    refined = stage.refine(greys, points)
    np.testing.assert_array_equal(refined[1], points[1])
    np.testing.assert_allclose(refined[0], stage.refine(greys[:1], points[:1])[0], atol=1e-9)
    assert np.abs(refined[0] - points[0]).max() > 1e-3


def test_export_writes_the_local_stage_beside_the_graph_and_the_export_runs_it(
        tmp_path: Path, helen_faces: list, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "dense.onnx"
    assert cli_main(["export", "--model", "300w-68pt", "--out", str(out)]) == 0
    assert (tmp_path / "dense.local.onnx").is_file()
    exported, shipped = load_landmark_model(out), load_landmark_model("300w-68pt", backend="onnx")
    assert exported.local_stage is not None and exported.use_local_stage
    faces = helen_faces[:8]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [box_from_landmarks(f.landmarks, IBUG_68) for f in faces]
    np.testing.assert_allclose(exported.predict(greys, boxes).landmarks, shipped.predict(greys, boxes).landmarks,
                               atol=1e-6)
    # without the stage beside it, the graph runs alone and says so
    (tmp_path / "dense.local.onnx").rename(tmp_path / "elsewhere.onnx")
    caplog.set_level(logging.WARNING, logger="tcdcn")
    alone = load_landmark_model(out)
    assert alone.local_stage is None and "dense.local.onnx) is not beside it" in caplog.text
    # a different file under the stage's name is refused
    (tmp_path / "dense.local.onnx").write_bytes((tmp_path / "elsewhere.onnx").read_bytes()[:-1] + b"\0")
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_landmark_model(out)
