"""The method's parts act on a real training run (a narrow network on a handful of MTFL faces, seconds on one
thread): the dynamic coefficients turn a task down and back up, the ECCV early-stopping baseline halts a task
from un-augmented training losses, the covariance update changes the landmark head's gradient, and each
evaluation point records the gradient norm of every objective term.

Validation losses are replaced through a stub of ``Trainer.evaluate`` where a test needs a trend it controls;
the training side is the real run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from small_training import NO_AUGMENTATION, small_config

from tcdcn.data.annotation import FaceAnnotation
from tcdcn.data.dataset import FaceDataset
from tcdcn.training.objective import tcdcn_objective
from tcdcn.training.task_coefficients import AUGMENTED_BATCH_MEAN, UNAUGMENTED_TRAIN_FACES
from tcdcn.training.trainer import Trainer
from tcdcn.training.validation import EvalResult

ValidationLosses = Callable[[int, EvalResult], np.ndarray]


def _stub_validation(trainer: Trainer, task_losses: ValidationLosses) -> list[EvalResult]:
    """Make ``trainer.evaluate`` on the validation split return ``task_losses(j, real result)`` as the task
    losses of the j-th evaluation (0-based); every other face set is scored for real and returned in the list."""
    real_evaluate = trainer.evaluate
    other_results: list[EvalResult] = []
    calls = {"validation": 0}

    def evaluate(dataset: FaceDataset, batch_size: int = 512, model: torch.nn.Module | None = None) -> EvalResult:
        result = real_evaluate(dataset, batch_size, model)
        if dataset is not trainer.val_set:
            other_results.append(result)
            return result
        j = calls["validation"]
        calls["validation"] += 1
        return replace(result, task_losses=np.asarray(task_losses(j, result), np.float64))

    trainer.evaluate = evaluate  # type: ignore[method-assign]
    return other_results


# ---- dynamic coefficients (Eq. 13-14) -----------------------------------------------------------------
# Phase 1 (evaluations 0-3): every task's validation loss rises by 20% per evaluation, so mu < 0 and lambda
# falls to eps. Phase 2: the first task's validation loss halves per evaluation, so its mu grows with the
# training trend and lambda rises to the ceiling. Only the first task's lambda is asserted: Eq. 14 multiplies
# the two trends, and on 16 faces only that task's training loss falls at every evaluation.
TURN_DOWN_EVALUATIONS = 4
DYNAMIC_EPOCHS = 8


def _dynamic_validation(j: int, result: EvalResult) -> np.ndarray:
    rising = 1.2 ** j
    losses = np.full(len(result.task_losses), rising)  # the other tasks' follow phase 1 throughout
    if j >= TURN_DOWN_EVALUATIONS:
        losses[0] = 1.2 ** (TURN_DOWN_EVALUATIONS - 1) * 0.5 ** (j - TURN_DOWN_EVALUATIONS + 1)
    return losses


def test_dynamic_coefficient_turns_a_task_down_and_back_up(mtfl_train_faces: list[FaceAnnotation],
                                                           tmp_path: Path) -> None:
    faces = mtfl_train_faces[:16]
    cfg = small_config(
        augment=NO_AUGMENTATION,
        multitask={"coefficients": "dynamic", "tau": 1, "rho": 1000.0, "eps": 0.01, "initial_coefficient": 1.0,
                   "evaluations_per_epoch": 1, "covariance_interval": 2},
        train={"epochs": DYNAMIC_EPOCHS, "batch_size": 8, "learning_rate": 1e-3, "min_learning_rate": 1e-3},
    )
    trainer = Trainer(cfg, tmp_path, faces=(faces, faces))
    _stub_validation(trainer, _dynamic_validation)
    summary = trainer.fit()

    lambdas = np.array([list(r["task_coefficients"].values()) for r in trainer.history])  # (J, T)
    train = np.stack(trainer.coefficients.train_history)  # (J, T), the losses step 3 read
    assert lambdas.shape == (DYNAMIC_EPOCHS, len(trainer.task_names))
    assert all(r["coefficient_train_loss_source"] == AUGMENTED_BATCH_MEAN for r in trainer.history)
    # Eq. 14 multiplies the validation trend by the training trend: the case needs a falling training loss.
    assert (train[1:, 0] < train[:-1, 0]).all(), f"training losses of the first task: {train[:, 0].round(4)}"
    first = trainer.task_names[0]
    message = f"lambda of {first} per evaluation: {lambdas[:, 0].round(3).tolist()}"
    # Before tau + 1 evaluations lambda stays at its start; then the rising validation loss turns it down to
    # eps, and the improving one brings it back up to the ceiling.
    np.testing.assert_array_equal(lambdas[0], 1.0)
    np.testing.assert_allclose(lambdas[1:TURN_DOWN_EVALUATIONS, 0], 0.01, err_msg=message)
    np.testing.assert_array_equal(lambdas[TURN_DOWN_EVALUATIONS:, 0], 1.0, err_msg=message)
    counts = summary["task_coefficient_counts"]
    assert counts[first] == {"updates": DYNAMIC_EPOCHS, "at_eps": TURN_DOWN_EVALUATIONS - 1,
                             "at_ceiling": DYNAMIC_EPOCHS - TURN_DOWN_EVALUATIONS + 1, "at_zero": 0}


# ---- ECCV 2014 task-wise early stopping --------------------------------------------------------------
def test_early_stopping_halts_from_unaugmented_training_losses(mtfl_train_faces: list[FaceAnnotation],
                                                               tmp_path: Path) -> None:
    faces = mtfl_train_faces[:16]
    epochs = 6
    cfg = small_config(
        # Default augmentation: the running mean over augmented batches differs from the un-augmented loss.
        multitask={"coefficients": "early_stopping", "early_stop_strip": 2, "early_stop_threshold": 1.0,
                   "early_stop_train_faces": 12, "evaluations_per_epoch": 1},
        train={"epochs": epochs, "batch_size": 8, "learning_rate": 3e-3, "min_learning_rate": 3e-3},
    )
    trainer = Trainer(cfg, tmp_path, faces=(faces, faces))
    assert trainer.coefficient_train_set is not None and len(trainer.coefficient_train_set) == 12
    # Validation losses rise from twice the starting training loss while training goes on: a growing gap.
    start = trainer.evaluate(trainer.coefficient_train_set).task_losses
    unaugmented = _stub_validation(trainer, lambda j, result: 2.0 * start * (1 + 0.5 * j))
    summary = trainer.fit()

    assert trainer.coefficients.train_loss_source == UNAUGMENTED_TRAIN_FACES
    assert len(unaugmented) == epochs  # one scoring of the un-augmented subset per evaluation point
    read = np.stack(trainer.coefficients.train_history)  # (J, T)
    # The criterion read the un-augmented losses, not the augmented running mean the history also logs.
    np.testing.assert_array_equal(read, np.stack([r.task_losses for r in unaugmented]))
    augmented_mean = np.array([list(r["train_task_losses"].values()) for r in trainer.history])
    assert not np.allclose(read, augmented_mean)
    for record, result in zip(trainer.history, unaugmented):
        assert record["coefficient_train_loss_source"] == UNAUGMENTED_TRAIN_FACES
        np.testing.assert_allclose(list(record["coefficient_train_task_losses"].values()), result.task_losses)

    halted = trainer.coefficients.halted
    message = f"un-augmented training losses {read.round(4).tolist()}"
    assert halted.any(), message
    for t in np.flatnonzero(halted):
        assert read[-1, t] < read[0, t], message  # the case: training loss falls while validation rises
        task = trainer.task_names[t]
        assert trainer.history[-1]["task_coefficients"][task] == 0.0
        assert summary["task_coefficient_counts"][task]["at_zero"] >= 1


# ---- task covariance (Eq. 12) acts on the landmark head ----------------------------------------------
def _landmark_head_gradient(trainer: Trainer, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """d total / d landmark head weight on ``batch`` with the trainer's current Upsilon and lambda."""
    terms = tcdcn_objective(trainer.model, batch, trainer.coefficients.tensor(), trainer.covariance.inverse().float(),
                            trainer.cfg.objective)
    (gradient,) = torch.autograd.grad(terms["total"], [trainer.model.landmark_head.weight])
    return gradient


def test_covariance_update_changes_the_landmark_head_gradient(mtfl_train_faces: list[FaceAnnotation],
                                                              tmp_path: Path) -> None:
    faces = mtfl_train_faces[:16]
    cfg = small_config(augment=NO_AUGMENTATION, multitask={"covariance_interval": 1000},
                  train={"learning_rate": 3e-3, "min_learning_rate": 3e-3})
    trainer = Trainer(cfg, tmp_path, faces=(faces, faces))
    batch = trainer.train_set.batch(range(8))
    for _ in range(5):  # the landmark head starts at zero: give it weights for the prior to act on
        trainer.sgd_step(batch)
    covariance_before = trainer.task_covariance.clone()
    before = _landmark_head_gradient(trainer, batch)
    trainer.update_covariance()
    after = _landmark_head_gradient(trainer, batch)
    assert not torch.equal(trainer.task_covariance, covariance_before)
    difference = float((after - before).norm())
    assert difference > 1e-6 * float(before.norm()), f"gradient change {difference:.3g} of {float(before.norm()):.3g}"
    # The data terms are the same forward pass both times: the change is the prior's, 2 w (U1^-1 - U0^-1)
    # on the landmark columns of W.
    weight = trainer.model.head_weight().detach().double()
    points = trainer.model.landmark_head.out_features
    inverse_before = torch.linalg.inv(covariance_before + trainer.covariance.ridge * torch.eye(len(covariance_before),
                                                                                             dtype=torch.float64))
    expected = 2 * cfg.objective.covariance_weight * (weight @ (trainer.covariance.inverse() - inverse_before))
    torch.testing.assert_close((after - before).double(), expected[:, :points].t(), rtol=1e-3, atol=1e-7)


# ---- the gradient-share record ------------------------------------------------------------------------
@pytest.mark.parametrize("use_covariance", [True, False])
def test_history_records_each_terms_gradient_norm(mtfl_train_faces: list[FaceAnnotation], tmp_path: Path,
                                                  use_covariance: bool) -> None:
    faces = mtfl_train_faces[:16]
    cfg = small_config(objective={"use_covariance": use_covariance},
                  multitask={"evaluations_per_epoch": 2, "covariance_interval": 1}, train={"epochs": 2})
    trainer = Trainer(cfg, tmp_path, faces=(faces, faces))
    summary = trainer.fit()
    written = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert len(written) == 4 and written == json.loads(json.dumps(trainer.history))
    active = {"landmarks", "attributes", "filters"} | ({"covariance"} if use_covariance else set())
    for record in written:
        norms = record["gradient_norms"]
        assert set(norms) == {"shared", "landmark_head"}
        assert set(norms["shared"]) == set(norms["landmark_head"]) == active
        # Each term reaches the layers it depends on, and only those.
        for term in ("landmarks", "attributes", "filters"):
            assert norms["shared"][term] > 0, (term, norms)
        assert norms["landmark_head"]["landmarks"] > 0
        assert norms["landmark_head"]["attributes"] == 0 and norms["landmark_head"]["filters"] == 0
        if use_covariance:
            assert norms["landmark_head"]["covariance"] > 0 and norms["shared"]["covariance"] == 0
        assert set(record["task_coefficients"]) == set(trainer.task_names)
    counts = summary["task_coefficient_counts"]
    assert set(counts) == set(trainer.task_names)
    assert all(c["updates"] == len(written) for c in counts.values())
