"""Auxiliary faces of a coarser scheme in dense training (data.auxiliary_train): the scheme's derivation
matrix, the objective's auxiliary term, the carve of the auxiliary file and a real small run with MTFL's
5-point faces beside 68-point 300-W faces."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from small_training import NO_AUGMENTATION, small_config

from tcdcn.config import ConfigError, config_from_dict, load_config
from tcdcn.data.annotation import FaceAnnotation
from tcdcn.data.dataset import FaceDataset, split_auxiliary_faces, split_faces
from tcdcn.data.formats import read_pts, read_pts_folder
from tcdcn.data.transforms import CropParams
from tcdcn.schemes import IBUG_68, MTFL_5, LandmarkScheme, derivation_matrix
from tcdcn.training.objective import derived_point_error, tcdcn_objective, weighted_terms
from tcdcn.training.trainer import Trainer
from tcdcn.training.validation import derived_error_on

REPO = Path(__file__).resolve().parents[1]
HELDOUT_MTFL_CONFIG = REPO / "configs" / "300w-68pt-heldout-mtfl.yaml"

# ---- the derivation matrix ----------------------------------------------------------------------------
# afw/1051618982_1.pts, 0-based (the file's values minus 1): the means of points 36-41 and 42-47 worked out
# by hand from the file, and points 30, 48 and 54 as written there.
AFW_FACE = "1051618982_1.pts"
AFW_FIVE_POINTS = np.array([
    [97.535, 88.2475],  # left eye: x (87.166 + 94.340 + 102.926 + 110.428 + 102.527 + 93.823) / 6 - 1
    [157.482, 89.8555],  # right eye: x (145.633 + 154.239 + 162.802 + 170.422 + 163.208 + 154.588) / 6 - 1
    [125.940, 117.968],  # nose tip, point 30
    [98.015, 140.417],  # mouth corner, point 48
    [152.856, 141.603],  # mouth corner, point 54
])


@pytest.fixture(scope="module")
def afw_landmarks(w300_afw_dir: Path) -> np.ndarray:
    return read_pts(w300_afw_dir / AFW_FACE)  # (68, 2), 0-based


def test_derivation_matrix_gives_the_hand_computed_five_points_of_a_real_face(afw_landmarks: np.ndarray) -> None:
    matrix = derivation_matrix(IBUG_68, MTFL_5)
    assert matrix.shape == (5, 68)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    np.testing.assert_allclose(matrix @ afw_landmarks, AFW_FIVE_POINTS, atol=1e-3)
    # MTFL's "left" is the image's left: the first derived eye and mouth corner lie left of the second ones.
    five = matrix @ afw_landmarks
    assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]
    # The face-box convention reads the same points.
    np.testing.assert_allclose(IBUG_68.five_points(afw_landmarks), five, atol=1e-4)


def test_derivation_commutes_with_mirroring(afw_landmarks: np.ndarray) -> None:
    matrix = derivation_matrix(IBUG_68, MTFL_5)
    width = 1000.0
    mirrored = afw_landmarks[IBUG_68.flip_index] * [-1, 1] + [width - 1, 0]  # the face of the mirrored image
    expected = ((matrix @ afw_landmarks) * [-1, 1] + [width - 1, 0])[MTFL_5.flip_index]
    np.testing.assert_allclose(matrix @ mirrored, expected, atol=1e-4)


def test_derivations_a_scheme_does_not_declare_are_refused() -> None:
    np.testing.assert_array_equal(derivation_matrix(IBUG_68, IBUG_68), np.eye(68))
    with pytest.raises(KeyError, match="does not derive scheme 'ibug-68'"):
        derivation_matrix(MTFL_5, IBUG_68)
    # A mouth corner taken from point 53 (the mirror of 49, not of 48) breaks mirroring consistency.
    lopsided = dataclasses.replace(IBUG_68, name="lopsided-68", five_point_groups=(
        *IBUG_68.five_point_groups[:4], (53,)))
    with pytest.raises(ValueError, match="does not commute with mirroring"):
        derivation_matrix(lopsided, MTFL_5)
    three = LandmarkScheme("three", ("a", "b", "c"), (), ((0,), (1,), (2,), (0,), (1,)),
                           derived_schemes=(("mtfl-5", ((0,), (1,))),))
    assert three.derivation_matrix("mtfl-5").shape == (5, 3)  # five_point_groups, not the entry, make mtfl-5
    with pytest.raises(ValueError, match="derivation of 'pair'"):
        LandmarkScheme("bad", ("a", "b"), (), ((0,), (1,), (0,), (0,), (1,)), derived_schemes=(("pair", ((0, 5),)),))


# ---- the objective ------------------------------------------------------------------------------------
def test_derived_point_error_is_the_normalised_mean_distance() -> None:
    pred = torch.zeros(2, 68, 2)
    pred[1, 30] = torch.tensor([0.3, 0.4])  # face 1: the nose tip 0.5 away, every other derived point exact
    matrix = torch.from_numpy(derivation_matrix(IBUG_68, MTFL_5)).float()
    target = torch.zeros(2, 5, 2)
    interocular = torch.tensor([1.0, 0.25])
    error = derived_point_error(pred, matrix, target, interocular)
    assert error.item() == pytest.approx((0.0 + (0.5 / 5) / 0.25) / 2, abs=1e-5)
    # An eye point moved by 0.6 moves the derived eye centre by 0.1.
    pred = torch.zeros(1, 68, 2)
    pred[0, 39, 0] = 0.6
    error = derived_point_error(pred, matrix, torch.zeros(1, 5, 2), torch.ones(1))
    assert error.item() == pytest.approx(0.02, abs=1e-5)


def _mixed_batch(afw_faces: list[FaceAnnotation], mtfl_faces: list[FaceAnnotation], size: int) -> dict:
    main = FaceDataset(afw_faces, (), size).stack(range(len(afw_faces)), [CropParams()] * len(afw_faces))
    aux = FaceDataset(mtfl_faces, (), size).stack(range(len(mtfl_faces)), [CropParams()] * len(mtfl_faces))
    return {**main, "auxiliary_images": aux["images"], "auxiliary_landmarks": aux["landmarks"],
            "auxiliary_interocular": aux["interocular"]}


def test_mixed_batch_loss_uses_both_sources(w300_afw_dir: Path, mtfl_train_faces: list[FaceAnnotation],
                                             tmp_path: Path) -> None:
    afw_faces = read_pts_folder(w300_afw_dir)[:4]
    cfg = small_config(data={"scheme": "ibug-68", "tasks": []}, model={"num_points": 68},
                       objective={"auxiliary_weight": 2.0})
    trainer = Trainer(cfg, tmp_path, faces=(afw_faces, afw_faces),
                      auxiliary_faces=(mtfl_train_faces[:6], mtfl_train_faces[6:8]))
    torch.nn.init.normal_(trainer.model.landmark_head.weight, std=0.05)  # a head that predicts a face
    model = trainer.model
    batch = _mixed_batch(afw_faces, mtfl_train_faces[:6], cfg.model.input_size)
    matrix = trainer.auxiliary_derivation
    terms = tcdcn_objective(model, batch, torch.zeros(0), None, cfg.objective, matrix)
    main_only = tcdcn_objective(model, {k: v for k, v in batch.items() if not k.startswith("auxiliary")},
                                torch.zeros(0), None, cfg.objective, matrix)
    # The main faces' terms are those of a batch without auxiliary faces; the auxiliary term adds with its weight.
    assert terms["landmarks"].item() == pytest.approx(main_only["landmarks"].item(), rel=1e-5)
    assert "auxiliary" not in main_only and terms["auxiliary"].item() > 0
    assert terms["total"].item() == pytest.approx(sum(v.item() for v in weighted_terms(terms, cfg.objective).values()),
                                                  rel=1e-5)
    assert terms["total"].item() == pytest.approx(main_only["total"].item() + 2.0 * terms["auxiliary"].item(), rel=1e-5)
    # It is the derived points' error of the auxiliary faces' own forward pass.
    model.eval()
    alone = derived_point_error(model(batch["auxiliary_images"])[0], matrix, batch["auxiliary_landmarks"],
                                batch["auxiliary_interocular"])
    assert terms["auxiliary"].item() == pytest.approx(alone.item(), rel=1e-5)
    # Its gradient reaches the landmark head's rows of the points it derives from, and no other row.
    model.zero_grad()
    terms["auxiliary"].backward()
    row_norms = model.landmark_head.weight.grad.reshape(68, 2, -1).norm(dim=(1, 2))  # (68,)
    used = sorted({30, 48, 54, *range(36, 48)})
    assert (row_norms[used] > 0).all()
    assert torch.count_nonzero(row_norms[[i for i in range(68) if i not in used]]) == 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shared_parameters())
    # A rank whose slice of the auxiliary faces is empty stacks empty tensors and adds nothing.
    empty = FaceDataset(mtfl_train_faces[:1], (), cfg.model.input_size).stack([], [])
    assert empty["images"].shape == (0, 1, cfg.model.input_size, cfg.model.input_size)
    assert derived_point_error(torch.zeros(0, 68, 2), matrix, empty["landmarks"], empty["interocular"]).item() == 0


# ---- config and carve ---------------------------------------------------------------------------------
def test_auxiliary_keys_are_checked() -> None:
    with pytest.raises(ConfigError, match="data.auxiliary_train: .* is data.test"):
        config_from_dict({"data": {"auxiliary_train": "../shared/data/mtfl/testing.txt",
                                   "test": "../shared/data/mtfl/./testing.txt"}})
    for key, value in (("auxiliary_fraction", 1.0), ("auxiliary_fraction", 0.0),
                       ("auxiliary_validation_fraction", 1.0)):
        with pytest.raises(ConfigError, match=f"data.{key}"):
            config_from_dict({"data": {key: value}})
    with pytest.raises(ConfigError, match="objective.auxiliary_weight"):
        config_from_dict({"objective": {"auxiliary_weight": 0.0}})


def test_heldout_mtfl_config_adds_only_mtfl_training_faces() -> None:
    with_mtfl = load_config(HELDOUT_MTFL_CONFIG)
    heldout = load_config(REPO / "configs" / "300w-68pt-heldout.yaml")
    assert Path(with_mtfl.data.auxiliary_train).name == "training.txt"
    assert "mtfl" in Path(with_mtfl.data.auxiliary_train).parts
    # The dense data, its carve and the network are the held-out recipe's.
    keep = ("train", "scheme", "validation_fraction", "split_seed", "exclude", "tasks")
    assert all(getattr(with_mtfl.data, k) == getattr(heldout.data, k) for k in keep)
    assert with_mtfl.model == heldout.model and with_mtfl.augment == heldout.augment


def test_auxiliary_carve_is_the_mtfl_model_s_carve(mtfl_train_faces: list[FaceAnnotation]) -> None:
    """At 0.1 and seed 0, the auxiliary validation faces are configs/mtfl-5pt.yaml's validation faces, so the
    shipped 5-point model (whose filters the dense recipe starts from) never trained on them either."""
    mtfl_cfg = load_config(REPO / "configs" / "mtfl-5pt.yaml")
    dense_cfg = load_config(HELDOUT_MTFL_CONFIG)
    aux_train, aux_val = split_auxiliary_faces(mtfl_train_faces, dense_cfg.data)
    _, mtfl_val = split_faces(mtfl_train_faces, mtfl_cfg.data)
    assert [f.source for f in aux_val] == [f.source for f in mtfl_val]
    assert len(aux_train) + len(aux_val) == len(mtfl_train_faces) == 10_000
    assert not {f.source for f in aux_train} & {f.source for f in aux_val}


def test_trainer_refuses_auxiliary_faces_its_scheme_cannot_derive(mtfl_train_faces: list[FaceAnnotation],
                                                                    w300_afw_dir: Path, tmp_path: Path) -> None:
    dense = read_pts_folder(w300_afw_dir)[:2]
    with pytest.raises(ConfigError, match="data.auxiliary_train: scheme mtfl-5 does not derive scheme 'ibug-68'"):
        Trainer(small_config(), tmp_path, faces=(mtfl_train_faces[:8], mtfl_train_faces[:8]),
                auxiliary_faces=(dense, []))


# ---- a real small run ---------------------------------------------------------------------------------
AFW_FACES = 16
MTFL_FACES = 32
EPOCHS = 40  # 2 steps of 8 AFW + 8 MTFL faces each


def _trainer(afw: list[FaceAnnotation], mtfl: list[FaceAnnotation] | None, out: Path) -> Trainer:
    cfg = small_config(data={"scheme": "ibug-68", "tasks": []}, model={"num_points": 68}, augment=NO_AUGMENTATION,
                       objective={"landmark_weight": 3.0, "auxiliary_weight": 10.0},
                       multitask={"coefficients": "fixed"},
                       train={"epochs": EPOCHS, "learning_rate": 3e-3, "min_learning_rate": 3e-3})
    return Trainer(cfg, out, faces=(afw, afw), auxiliary_faces=None if mtfl is None else (mtfl, mtfl[:32]))


def test_small_run_with_mtfl_faces_lowers_the_auxiliary_term(
        w300_afw_dir: Path, mtfl_train_faces: list[FaceAnnotation], tmp_path: Path) -> None:
    afw = read_pts_folder(w300_afw_dir)[:AFW_FACES]
    mtfl = mtfl_train_faces[:MTFL_FACES]
    with_aux = _trainer(afw, mtfl, tmp_path / "with")
    scored = FaceDataset(mtfl, (), with_aux.cfg.model.input_size)  # the auxiliary training faces, un-augmented
    start = with_aux.evaluate_auxiliary(scored)
    with_aux.fit()
    end = with_aux.evaluate_auxiliary(scored)
    history = with_aux.history
    assert with_aux.auxiliary_per_step == 8 and len(history) == EPOCHS
    losses = [r["train_auxiliary_loss"] for r in history]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert end < 0.5 * start, (start, end)
    assert history[-1]["gradient_norms"]["shared"]["auxiliary"] > 0
    assert "val_auxiliary_nme" in history[-1]
    # Without the MTFL faces, the same run (the 68-point faces alone) leaves those faces' five points further off.
    without = _trainer(afw, None, tmp_path / "without")
    without.fit()
    assert "train_auxiliary_loss" not in without.history[-1]
    alone = derived_error_on(without.model, scored, derivation_matrix(IBUG_68, MTFL_5), without.dist, without.device)
    assert end < 0.95 * alone, (end, alone)


class _Interrupted(Exception):
    """Stands in for a crash in the middle of training."""


def test_auxiliary_run_resumes_exactly_mid_epoch(w300_afw_dir: Path, mtfl_train_faces: list[FaceAnnotation],
                                                 tmp_path: Path) -> None:
    """The auxiliary faces are drawn from the run's random stream and their running loss is in the checkpoint,
    so a run killed mid-epoch continues on the uninterrupted run's trajectory."""
    afw = read_pts_folder(w300_afw_dir)[:8]
    cfg = small_config(data={"scheme": "ibug-68", "tasks": [], "auxiliary_fraction": 0.2},
                       model={"num_points": 68},
                       train={"epochs": 2, "batch_size": 4, "seed": 5, "checkpoint_every_steps": 1})
    faces, aux = (afw, afw[:4]), (mtfl_train_faces[:40], mtfl_train_faces[40:44])
    reference = Trainer(cfg, tmp_path / "reference", faces=faces, auxiliary_faces=aux)
    reference.fit()
    assert reference.auxiliary_per_step == 1 and reference.step == 4

    def crash(record: dict) -> None:
        if record["step"] == 2:  # after last.pt of step 2; the evaluation point of step 2 was not saved
            raise _Interrupted

    with pytest.raises(_Interrupted):
        Trainer(cfg, tmp_path / "run", on_epoch=crash, faces=faces, auxiliary_faces=aux).fit()
    resumed = Trainer(cfg, tmp_path / "run", faces=faces, auxiliary_faces=aux)
    resumed.resume(tmp_path / "run" / "last.pt")
    resumed.fit()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in reference.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == strip
    assert all("train_auxiliary_loss" in r and "val_auxiliary_nme" in r for r in strip)
    for name, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
