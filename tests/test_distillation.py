"""Distillation (``objective.distillation_teacher``): a trained teacher's answers on each training crop
(mirror-averaged, its mirror calibration taken out) join the batch, the objective adds the landmark loss
against them with its weight, a teacher of another crop size or point count is refused naming its file, and
SGD on the term moves a student towards its teacher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from small_training import NO_AUGMENTATION, small_config

from tcdcn.data.annotation import FaceAnnotation
from tcdcn.errors import CheckpointError
from tcdcn.evaluation.calibration import fold_landmark_offset
from tcdcn.models.checkpoint import atomic_save, model_from_state, read_checkpoint
from tcdcn.training.objective import tcdcn_objective, wing_loss
from tcdcn.training.trainer import Trainer

WING = {"landmark_loss": "wing", "landmark_weight": 3.0}


@pytest.fixture()
def teacher_file(mtfl_train_faces: list[FaceAnnotation], tmp_path: Path) -> Path:
    """A narrow network after a few SGD steps on 16 MTFL faces, saved as a checkpoint."""
    faces = mtfl_train_faces[:16]
    cfg = small_config(augment=NO_AUGMENTATION, objective=WING, train={"learning_rate": 3e-3})
    trainer = Trainer(cfg, tmp_path / "teacher", faces=(faces, faces))
    batch = trainer.train_set.batch(range(8))
    for _ in range(5):
        trainer.sgd_step(batch)
    path = tmp_path / "teacher.pt"
    trainer.save_checkpoint(path)
    return path


def _mirror_averaged(network: torch.nn.Module, images: torch.Tensor, flip_index: np.ndarray) -> torch.Tensor:
    """By hand: the mean of the answers on the crops and on their mirror images, reflected back; (B, P, 2)."""
    with torch.no_grad():
        plain, _ = network(images)
        mirrored, _ = network(images.flip(-1))
    reflected = mirrored[:, torch.as_tensor(flip_index)] * torch.tensor([-1.0, 1.0])
    return (plain + reflected) / 2


@pytest.mark.parametrize("calibrated", [False, True])
def test_the_teachers_answer_is_its_mirror_average_in_the_labels_convention(
        mtfl_train_faces: list[FaceAnnotation], teacher_file: Path, tmp_path: Path, calibrated: bool) -> None:
    faces = mtfl_train_faces[:16]
    plain_file = teacher_file
    state = read_checkpoint(teacher_file)
    teacher_network, _cfg, scheme, _tasks = model_from_state(state, str(teacher_file))
    offset_x = np.array([0.01, 0.02, 0.0, -0.01, 0.03])
    if calibrated:  # as ship_model.py records it: the head's bias already moved by -offset_x
        fold_landmark_offset(teacher_network, np.stack([offset_x, np.zeros(5)], axis=1))
        state = {**state, "model": teacher_network.state_dict(), "mirror_calibration": {"offset_x": offset_x.tolist()}}
        state.pop("content_sha256", None)
        teacher_file = tmp_path / "calibrated-teacher.pt"
        atomic_save(state, teacher_file)
    cfg = small_config(augment=NO_AUGMENTATION, objective={**WING, "distillation_teacher": str(teacher_file)})
    trainer = Trainer(cfg, tmp_path / "student", faces=(faces, faces))
    batch, _ = trainer.training_batch(np.arange(8))
    assert batch["teacher_landmarks"].shape == batch["landmarks"].shape == (8, 5, 2)
    expected = _mirror_averaged(teacher_network, batch["images"], scheme.flip_index)  # (8, 5, 2)
    if calibrated:
        # The average holds (b + reflected partner b) / 2 of the folded shift b = -offset_x.
        shift = np.stack([-offset_x, np.zeros(5)], axis=1)
        held = (shift + shift[scheme.flip_index] * np.array([-1.0, 1.0])) / 2
        expected = expected - torch.as_tensor(held, dtype=torch.float32)
    torch.testing.assert_close(batch["teacher_landmarks"], expected, rtol=1e-5, atol=1e-6)
    if calibrated:  # the calibration is taken out: the same answers as the uncalibrated teacher's
        uncalibrated = small_config(augment=NO_AUGMENTATION,
                                    objective={**WING, "distillation_teacher": str(plain_file)})
        plain_teacher = Trainer(uncalibrated, tmp_path / "student-of-plain", faces=(faces, faces)).teacher
        assert plain_teacher is not None
        torch.testing.assert_close(batch["teacher_landmarks"], plain_teacher(batch["images"]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weight", [0.5, 2.0])
def test_the_objective_adds_the_weighted_loss_against_the_teacher(mtfl_train_faces: list[FaceAnnotation],
                                                                  teacher_file: Path, tmp_path: Path,
                                                                  weight: float) -> None:
    faces = mtfl_train_faces[:16]
    cfg = small_config(augment=NO_AUGMENTATION, objective={**WING, "distillation_teacher": str(teacher_file),
                                                           "distillation_weight": weight})
    trainer = Trainer(cfg, tmp_path / "student", faces=(faces, faces))
    batch, _ = trainer.training_batch(np.arange(8))
    coefficients = trainer.coefficients.tensor()
    covariance_inverse = trainer.covariance.inverse().float()
    with_teacher = tcdcn_objective(trainer.model, batch, coefficients, covariance_inverse, cfg.objective)
    without = tcdcn_objective(trainer.model, {k: v for k, v in batch.items() if k != "teacher_landmarks"},
                              coefficients, covariance_inverse, cfg.objective)
    expected_term = wing_loss(with_teacher["pred_landmarks"], batch["teacher_landmarks"], cfg.objective.wing_width,
                              cfg.objective.wing_curvature)
    assert float(with_teacher["distillation"].detach()) == pytest.approx(float(expected_term.detach()), rel=1e-6)
    assert float(with_teacher["distillation"].detach()) > 0.01  # a fresh student and a trained teacher disagree
    assert "distillation" not in without
    added = float((with_teacher["total"] - without["total"]).detach())
    assert added == pytest.approx(3.0 * weight * float(expected_term.detach()), rel=1e-5)


def test_a_teacher_of_another_crop_size_is_refused(mtfl_train_faces: list[FaceAnnotation], teacher_file: Path,
                                                   tmp_path: Path) -> None:
    faces = mtfl_train_faces[:16]
    cfg = small_config(model={"input_size": 64}, objective={"distillation_teacher": str(teacher_file)})
    with pytest.raises(CheckpointError, match=r"teacher\.pt: a distillation teacher needs this config's crop size"):
        Trainer(cfg, tmp_path / "student", faces=(faces, faces))


def test_sgd_on_the_distillation_term_moves_the_student_towards_its_teacher(
        mtfl_train_faces: list[FaceAnnotation], teacher_file: Path, tmp_path: Path) -> None:
    faces = mtfl_train_faces[:16]
    cfg = small_config(augment=NO_AUGMENTATION,
                       objective={**WING, "distillation_teacher": str(teacher_file), "distillation_weight": 10.0},
                       train={"learning_rate": 3e-3, "min_learning_rate": 3e-3})
    trainer = Trainer(cfg, tmp_path / "student", faces=(faces, faces))
    batch, _ = trainer.training_batch(np.arange(8))
    first = trainer.sgd_step(batch)["distillation"]
    for _ in range(30):
        last = trainer.sgd_step(batch)["distillation"]
    assert last < 0.5 * first, (first, last)
