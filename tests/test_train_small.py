"""The training loop on a handful of real MTFL faces: it learns, it resumes exactly, it refuses bad checkpoints.

A narrow network (the default architecture with fewer channels) keeps every run to seconds on one thread.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from small_training import NO_AUGMENTATION, small_config

from tcdcn.config import Config
from tcdcn.data.annotation import FaceAnnotation
from tcdcn.data.formats import read_pts_folder
from tcdcn.errors import CheckpointError
from tcdcn.evaluation.metrics import per_face_error, point_errors
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.models.checkpoint import atomic_save, read_checkpoint
from tcdcn.training.schedule import learning_rate_at
from tcdcn.training.trainer import Trainer

# ---- learning ----------------------------------------------------------------------------------------
# Overfitting 32 faces: the run must leave the mean-shape plateau (about 10% NME on these faces) and fit
# the faces themselves. 400 steps at a constant learning rate reach about 3% (about 13 s of one core).
OVERFIT_FACES = 32
OVERFIT_EPOCHS = 100  # 4 steps of 8 faces each
OVERFIT_TARGET_NME = 0.05
# The best constant prediction (the mean shape) must be beaten by this factor.
OVERFIT_BASELINE_FACTOR = 0.5


def _mean_shape_nme(trainer: Trainer) -> float:
    """NME of predicting the mean normalised shape for every face: the plateau a blind model reaches."""
    targets = trainer.train_set.batch(range(len(trainer.train_set)))["landmarks"].numpy()  # (N, P, 2)
    mean_shape = np.broadcast_to(targets.mean(axis=0), targets.shape)
    errors = point_errors(mean_shape, targets, trainer.scheme.interocular_distance(targets))
    return float(per_face_error(errors).mean())


def test_tiny_run_overfits_real_faces(mtfl_train_faces: list[FaceAnnotation], tmp_path: Path) -> None:
    faces = mtfl_train_faces[:OVERFIT_FACES]
    cfg = small_config(
        augment=NO_AUGMENTATION,
        objective={"landmark_weight": 100.0},
        multitask={"coefficients": "fixed", "covariance_interval": 20},
        train={"epochs": OVERFIT_EPOCHS, "batch_size": 8, "learning_rate": 3e-3, "min_learning_rate": 3e-3},
    )
    trainer = Trainer(cfg, tmp_path, faces=(faces, faces))
    start = trainer.evaluate(trainer.train_set)
    baseline = _mean_shape_nme(trainer)
    summary = trainer.fit()
    end = trainer.evaluate(trainer.train_set)
    assert start.nme > 0.3  # the zero-initialised head predicts every point at the crop centre
    message = f"training NME {end.nme:.3f} (start {start.nme:.3f}, mean shape {baseline:.3f})"
    assert end.nme < OVERFIT_TARGET_NME, message
    assert end.nme < OVERFIT_BASELINE_FACTOR * baseline, message
    assert end.landmark_loss < start.landmark_loss / 20
    assert summary["epochs"] == OVERFIT_EPOCHS and trainer.step == OVERFIT_EPOCHS * 4
    assert summary["best_val_nme"] == pytest.approx(min(r["val_nme"] for r in trainer.history))
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == OVERFIT_EPOCHS


def test_learning_rate_schedule() -> None:
    # Linear warm-up over 10 steps, then cosine from 1.0 to the floor 0.1 over the remaining 90.
    assert learning_rate_at(0, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert learning_rate_at(9, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert learning_rate_at(10, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert learning_rate_at(55, 100, 10, 1.0, 0.1) == pytest.approx(0.55)
    assert learning_rate_at(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert learning_rate_at(500, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


# ---- resume --------------------------------------------------------------------------------------------
class _Interrupted(Exception):
    """Stands in for a crash in the middle of training."""


def _snapshot(trainer: Trainer) -> dict[str, Any]:
    return {
        "epoch": trainer.epoch,
        "step": trainer.step,
        "step_in_epoch": trainer.step_in_epoch,
        "epoch_order": None if trainer.epoch_order is None else trainer.epoch_order.copy(),
        "period_sums": trainer.period_sums.copy(),
        "period_count": trainer.period_count,
        "task_covariance": trainer.task_covariance.clone(),
        "coefficients": copy.deepcopy(trainer.coefficients.state_dict()),
        "history": copy.deepcopy(trainer.history),
        "rng": copy.deepcopy(trainer.rng.bit_generator.state),
        "parameters": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
    }


def _record_checkpoints(trainer: Trainer) -> dict[int, dict[str, Any]]:
    """Snapshot the trainer every time it writes a checkpoint, keyed by step (the last write wins)."""
    snapshots: dict[int, dict[str, Any]] = {}
    save = trainer.save_checkpoint

    def save_and_record(path: Path) -> None:
        snapshots[trainer.step] = _snapshot(trainer)
        save(path)

    trainer.save_checkpoint = save_and_record  # type: ignore[method-assign]
    return snapshots


def _without_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def _assert_same_state(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for key in ("epoch", "step", "step_in_epoch", "period_count", "coefficients", "rng"):
        assert actual[key] == expected[key], key
    assert (actual["epoch_order"] is None) == (expected["epoch_order"] is None)
    if expected["epoch_order"] is not None:
        np.testing.assert_array_equal(actual["epoch_order"], expected["epoch_order"])
    np.testing.assert_array_equal(actual["period_sums"], expected["period_sums"])
    assert torch.equal(actual["task_covariance"], expected["task_covariance"])
    assert _without_timing(actual["history"]) == _without_timing(expected["history"])
    for name, value in expected["parameters"].items():
        assert torch.equal(actual["parameters"][name], value), name
    for param_id, state in expected["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(actual["optimizer"]["state"][param_id][key], value), (param_id, key)


# (evaluations per epoch, checkpoint every n steps, step whose evaluation "crashes", step of last.pt):
# an interruption after a whole epoch, and one in the middle of an epoch with a part-filled loss period.
RESUME_CASES = [
    pytest.param(2, 0, 5, 4, id="after-epoch-2"),
    pytest.param(1, 1, 4, 3, id="mid-epoch-3"),
]


@pytest.mark.parametrize("evaluations, every_steps, crash_step, resume_step", RESUME_CASES)
def test_resume_continues_exactly(mtfl_train_faces: list[FaceAnnotation], tmp_path: Path, evaluations: int,
                                  every_steps: int, crash_step: int, resume_step: int) -> None:
    # Augmentation on, so resume must restore the random stream; covariance updated every step and
    # dynamic coefficients with tau 1, so both change and must be restored.
    cfg = small_config(
        multitask={"coefficients": "dynamic", "tau": 1, "covariance_interval": 1, "evaluations_per_epoch": evaluations},
        train={"epochs": 3, "batch_size": 8, "seed": 3, "learning_rate": 3e-3, "warmup_epochs": 1,
               "checkpoint_every_steps": every_steps},
    )
    faces = (mtfl_train_faces[200:216], mtfl_train_faces[300:308])  # 16 train (2 steps per epoch), 8 val

    reference = Trainer(cfg, tmp_path / "reference", faces=faces)
    checkpoints = _record_checkpoints(reference)
    reference.fit()
    assert reference.step == 6

    def crash(record: dict[str, Any]) -> None:
        if record["step"] == crash_step:
            raise _Interrupted

    interrupted = Trainer(cfg, tmp_path / "run", on_epoch=crash, faces=faces)
    with pytest.raises(_Interrupted):
        interrupted.fit()

    resumed = Trainer(cfg, tmp_path / "run", faces=faces)
    resumed.resume(tmp_path / "run" / "last.pt")
    assert resumed.step == resume_step
    _assert_same_state(_snapshot(resumed), checkpoints[resume_step])
    assert not torch.equal(resumed.task_covariance, torch.eye(18, dtype=torch.float64) / 18)
    assert len(resumed.coefficients.value_history) == len(resumed.history) > 0

    resumed.fit()
    assert resumed.epoch == 3 and resumed.step == 6
    _assert_same_state(_snapshot(resumed), _snapshot(reference))
    # The log is rewritten whole: nothing the crashed run logged after its checkpoint is repeated.
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert len(lines) == len(reference.history) == 3 * evaluations


# ---- checkpoints that must be refused -----------------------------------------------------------------
@pytest.fixture(scope="module")
def five_point_run(mtfl_train_faces: list[FaceAnnotation], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short 5-point training run; its folder holds last.pt (checkpoint) and best.pt (weights)."""
    out = tmp_path_factory.mktemp("five_point_run")
    faces = mtfl_train_faces[:8]
    Trainer(small_config(train={"epochs": 1, "batch_size": 8}), out, faces=(faces, faces)).fit()
    return out


def test_truncated_checkpoint_is_refused(five_point_run: Path, tmp_path: Path,
                                         mtfl_train_faces: list[FaceAnnotation]) -> None:
    whole = (five_point_run / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: not a readable checkpoint"):
        read_checkpoint(truncated)
    faces = mtfl_train_faces[:8]
    trainer = Trainer(small_config(), tmp_path / "run", faces=(faces, faces))
    with pytest.raises(CheckpointError, match="truncated.pt"):
        trainer.resume(truncated)
    with pytest.raises(CheckpointError, match="truncated.pt"):
        LandmarkModel.load(truncated)


def test_missing_and_foreign_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pt")
    foreign = tmp_path / "foreign.pt"
    atomic_save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a tcdcn checkpoint"):
        read_checkpoint(foreign)


def test_weights_file_cannot_be_resumed(five_point_run: Path, tmp_path: Path,
                                        mtfl_train_faces: list[FaceAnnotation]) -> None:
    faces = mtfl_train_faces[:8]
    trainer = Trainer(small_config(), tmp_path / "run", faces=(faces, faces))
    with pytest.raises(CheckpointError, match="no optimiser state"):
        trainer.resume(five_point_run / "best.pt")
    # ... but it loads for inference.
    assert LandmarkModel.load(five_point_run / "best.pt").scheme.name == "mtfl-5"


@pytest.fixture(scope="module")
def sixty_eight_point_faces(w300_afw_dir: Path) -> list[FaceAnnotation]:
    return read_pts_folder(w300_afw_dir)[:4]


def _sixty_eight_point_trainer(faces: list[FaceAnnotation], out: Path) -> Trainer:
    cfg = small_config(data={"scheme": "ibug-68", "tasks": []}, model={"num_points": 68})
    return Trainer(cfg, out, faces=(faces, faces))


def test_five_point_checkpoint_is_refused_by_a_68_pointsmall_config(
        five_point_run: Path, tmp_path: Path, sixty_eight_point_faces: list[FaceAnnotation]) -> None:
    trainer = _sixty_eight_point_trainer(sixty_eight_point_faces, tmp_path / "run")
    untouched = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(CheckpointError, match="model config differs"):
        trainer.resume(five_point_run / "last.pt")
    # No silent partial load: the 68-point model is exactly as it was.
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, untouched[name]), name
    assert trainer.step == 0 and trainer.epoch == 0


def _forged_checkpoint(five_point_run: Path, out: Path) -> Path:
    """A checkpoint whose config claims 68 points but whose weights hold a 5-point head."""
    state = read_checkpoint(five_point_run / "last.pt")
    state["config"]["model"]["num_points"] = 68
    state["config"]["data"]["scheme"] = "ibug-68"
    state["config"]["data"]["tasks"] = []
    atomic_save(state, out)
    return out


def test_checkpoint_whose_weights_do_not_fit_its_config_is_refused(
        five_point_run: Path, tmp_path: Path, sixty_eight_point_faces: list[FaceAnnotation]) -> None:
    forged = _forged_checkpoint(five_point_run, tmp_path / "forged.pt")
    trainer = _sixty_eight_point_trainer(sixty_eight_point_faces, tmp_path / "run")
    with pytest.raises(CheckpointError, match="forged.pt: weights do not fit"):
        trainer.resume(forged)
    assert trainer.step == 0 and trainer.epoch == 0
    with pytest.raises(CheckpointError, match="weights do not fit"):
        LandmarkModel.load(forged)


def test_refused_checkpoint_leaves_the_model_untouched(
        five_point_run: Path, tmp_path: Path, sixty_eight_point_faces: list[FaceAnnotation]) -> None:
    forged = _forged_checkpoint(five_point_run, tmp_path / "forged.pt")
    trainer = _sixty_eight_point_trainer(sixty_eight_point_faces, tmp_path / "run")
    untouched = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(CheckpointError):
        trainer.resume(forged)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, untouched[name]), name


# ---- stochastic weight averaging ------------------------------------------------------------------------
def _averagingsmall_config(start: int) -> Config:
    return small_config(train={"epochs": 3, "batch_size": 8, "seed": 5, "learning_rate": 3e-3,
                          "min_learning_rate": 3e-3, "weight_averaging_from": start})


def test_averaged_weights_are_the_mean_of_the_epoch_end_weights(mtfl_train_faces: list[FaceAnnotation],
                                                                 tmp_path: Path) -> None:
    faces = (mtfl_train_faces[400:416], mtfl_train_faces[500:508])  # 2 steps per epoch
    trainer = Trainer(_averagingsmall_config(start=2), tmp_path, faces=faces)
    epoch_ends: list[dict[str, torch.Tensor]] = []
    # With one evaluation per epoch the callback runs after the epoch's last step: the epoch-end weights.
    trainer.on_epoch = lambda record: epoch_ends.append(copy.deepcopy(trainer.model.state_dict()))
    trainer.fit()
    assert len(epoch_ends) == 3
    saved = read_checkpoint(tmp_path / "averaged.pt")
    assert saved["averaged_epochs"] == 2
    for name, value in saved["model"].items():
        expected = (epoch_ends[1][name] + epoch_ends[2][name]) / 2  # epochs 2 and 3; epoch 1 left out
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
    # The averaged model differs from the last weights, and its validation figure is the one logged.
    assert not torch.equal(saved["model"]["fc.weight"], epoch_ends[2]["fc.weight"])
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert "averaged_val_nme" not in history[0]
    assert [r["averaged_epochs"] for r in history[1:]] == [1, 2]
    averaged = LandmarkModel.load(tmp_path / "averaged.pt").network
    assert history[2]["averaged_val_nme"] == pytest.approx(trainer.evaluate(trainer.val_set, model=averaged).nme)


def test_averaged_weights_survive_a_resume(mtfl_train_faces: list[FaceAnnotation], tmp_path: Path) -> None:
    cfg = _averagingsmall_config(start=1)
    faces = (mtfl_train_faces[400:416], mtfl_train_faces[500:508])
    Trainer(cfg, tmp_path / "reference", faces=faces).fit()

    def crash(record: dict[str, Any]) -> None:
        if record["step"] == 4:  # epoch 2's evaluation: last.pt still holds epoch 1 with 1 averaged epoch
            raise _Interrupted

    with pytest.raises(_Interrupted):
        Trainer(cfg, tmp_path / "run", on_epoch=crash, faces=faces).fit()
    resumed = Trainer(cfg, tmp_path / "run", faces=faces)
    resumed.resume(tmp_path / "run" / "last.pt")
    resumed.fit()
    expected = read_checkpoint(tmp_path / "reference" / "averaged.pt")
    actual = read_checkpoint(tmp_path / "run" / "averaged.pt")
    assert actual["averaged_epochs"] == expected["averaged_epochs"] == 3
    for name, value in expected["model"].items():
        torch.testing.assert_close(actual["model"][name], value, rtol=0, atol=0)

    # A checkpoint written without averaging cannot silently start an average mid-way.
    plain = tmp_path / "plain"
    Trainer(small_config(train={"epochs": 1, "batch_size": 8, "seed": 5}), plain, faces=faces).fit()
    with pytest.raises(CheckpointError, match="no averaged weights"):
        Trainer(cfg, tmp_path / "again", faces=faces).resume(plain / "last.pt")
