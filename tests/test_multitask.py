"""Closed-form steps of the alternating algorithm: task covariance (Eq. 12), task coefficients
(Eq. 13-14) and the ECCV 2014 task-wise early stopping, against hand-computed values."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from tcdcn.config import MultitaskConfig
from tcdcn.training.task_coefficients import TaskCoefficients, dynamic_coefficients, early_stopping_criterion, trend_mu
from tcdcn.training.task_covariance import (
    covariance_inverse,
    covariance_to_correlation,
    matrix_sqrt_psd,
    update_task_covariance,
)


def _prior(head_weight: torch.Tensor, task_covariance: torch.Tensor) -> float:
    """tr(W U^-1 W^T), computed explicitly in float64."""
    w = head_weight.to(torch.float64)
    return float(torch.trace(w @ torch.linalg.inv(task_covariance) @ w.t()))


def _random_head(rows: int = 12, tasks: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(rows, tasks)))  # (D, K)


# ---- Eq. 12 ----------------------------------------------------------------------------------------
def test_task_covariance_is_symmetric_psd_unit_trace() -> None:
    cov = update_task_covariance(_random_head())
    assert cov.shape == (5, 5) and cov.dtype == torch.float64
    torch.testing.assert_close(cov, cov.t(), rtol=0, atol=1e-12)
    assert torch.linalg.eigvalsh(cov).min() >= -1e-12
    assert float(torch.trace(cov)) == pytest.approx(1.0, abs=1e-12)


def test_task_covariance_is_the_normalised_root_of_wtw() -> None:
    head = _random_head(seed=3)
    cov = update_task_covariance(head)
    root = cov * float(torch.linalg.svdvals(head).sum())  # tr((W^T W)^{1/2}) = sum of singular values
    torch.testing.assert_close(root @ root, head.t() @ head, rtol=0, atol=1e-9)


def test_task_covariance_minimises_the_prior_over_unit_trace_psd_matrices() -> None:
    head = _random_head(rows=10, tasks=4, seed=1)
    best = update_task_covariance(head)
    best_value = _prior(head, best)
    # Known optimum: min over unit-trace PSD U of tr(W U^-1 W^T) = (tr((W^T W)^{1/2}))^2 = (nuclear norm)^2.
    nuclear = float(np.linalg.svd(head.numpy(), compute_uv=False).sum())
    assert best_value == pytest.approx(nuclear**2, rel=1e-9)
    rng = np.random.default_rng(2)
    for _ in range(500):
        a = rng.normal(size=(4, 4)) * rng.uniform(0.1, 3.0, size=4)
        candidate = a @ a.T + 1e-9 * np.eye(4)
        candidate /= np.trace(candidate)
        assert _prior(head, torch.from_numpy(candidate)) >= best_value * (1 - 1e-9)
    # Small perturbations of the optimum that keep unit trace never improve it (a local check too).
    for _ in range(100):
        e = rng.normal(size=(4, 4))
        e = (e + e.T) / 2
        e -= np.eye(4) * np.trace(e) / 4
        nearby = best.numpy() + 1e-3 * e
        if np.linalg.eigvalsh(nearby).min() > 0:
            assert _prior(head, torch.from_numpy(nearby)) >= best_value * (1 - 1e-12)


def test_zero_head_gives_identity_over_k() -> None:
    cov = update_task_covariance(torch.zeros(8, 6))
    torch.testing.assert_close(cov, torch.eye(6, dtype=torch.float64) / 6)


def test_covariance_update_does_not_track_gradients() -> None:
    head = _random_head().float().requires_grad_(True)
    assert not update_task_covariance(head).requires_grad


def test_matrix_sqrt_clips_negative_round_off() -> None:
    # A rank-1 PSD matrix with a tiny negative eigenvalue from round-off must not give NaN.
    v = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    root = matrix_sqrt_psd(v @ v.t() - 1e-15 * torch.eye(3, dtype=torch.float64))
    assert torch.isfinite(root).all()
    torch.testing.assert_close(root @ root, v @ v.t(), rtol=0, atol=1e-7)


def test_covariance_inverse_includes_the_ridge() -> None:
    cov = update_task_covariance(_random_head(seed=4))
    ridge = 1e-3
    inverse = covariance_inverse(cov, ridge)
    eye = torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close((cov + ridge * eye) @ inverse, eye, rtol=0, atol=1e-9)
    # A singular covariance (W = 0 in one column) is still invertible thanks to the ridge.
    singular = torch.diag(torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    assert torch.isfinite(covariance_inverse(singular, ridge)).all()


def test_covariance_to_correlation_has_unit_diagonal() -> None:
    cov = update_task_covariance(_random_head(seed=5)).numpy()
    corr = covariance_to_correlation(cov)
    np.testing.assert_allclose(np.diag(corr), 1.0, atol=1e-12)
    assert np.all(np.abs(corr) <= 1 + 1e-12)


# ---- Eq. 13-14 ----------------------------------------------------------------------------------------
# Two tasks, tau = 2, rho = 10. Over the strip, task 0's validation loss goes 4 -> 2 (relative fall 0.5)
# and its training loss 8 -> 4 (0.5): mu = 10 * 0.5 * 0.5 = 2.5. Task 1's validation loss rises 2 -> 3
# (-0.5) while its training loss halves (0.5): mu = -2.5.
VAL = [np.array([4.0, 2.0]), np.array([3.0, 2.0]), np.array([2.0, 3.0])]
TRAIN = [np.array([8.0, 1.0]), np.array([6.0, 1.0]), np.array([4.0, 0.5])]


def test_trend_mu_is_none_before_tau_plus_one_entries() -> None:
    assert trend_mu([], [], tau=2, rho=10.0) is None
    assert trend_mu(VAL[:2], TRAIN[:2], tau=2, rho=10.0) is None


def test_trend_mu_hand_value() -> None:
    np.testing.assert_allclose(trend_mu(VAL, TRAIN, tau=2, rho=10.0), [2.5, -2.5])


def test_trend_mu_reads_the_entry_tau_back() -> None:
    # With a fourth entry the strip starts at entry 1: task 0 val 3 -> 1.5 (0.5), train 6 -> 3 (0.5);
    # task 1 val 2 -> 4 (-1), train 1 -> 0.5 (0.5).
    val = [*VAL, np.array([1.5, 4.0])]
    train = [*TRAIN, np.array([3.0, 0.5])]
    np.testing.assert_allclose(trend_mu(val, train, tau=2, rho=10.0), [2.5, -5.0])


def test_dynamic_coefficients_clip_to_eps_and_one() -> None:
    mu = np.array([2.5, -2.5, 0.5])
    train_ce = np.array([0.5, 0.1, 0.3])
    # 2.0 -> 1; -2.6 -> eps; 0.2 stays.
    np.testing.assert_allclose(dynamic_coefficients(mu, train_ce, eps=0.01), [1.0, 0.01, 0.2])


def _config(**changes: object) -> MultitaskConfig:
    return replace(MultitaskConfig(), **changes)


def test_fixed_mode_keeps_constant_coefficients() -> None:
    coefficients = TaskCoefficients(_config(coefficients="fixed", initial_coefficient=0.7), num_tasks=2)
    for val, train in zip(VAL * 2, TRAIN * 2):
        values = coefficients.update(train, val)
        np.testing.assert_array_equal(values, [0.7, 0.7])
    assert len(coefficients.value_history) == 6 and len(coefficients.train_history) == 6
    torch.testing.assert_close(coefficients.tensor(), torch.tensor([0.7, 0.7]))


def test_dynamic_mode_turns_down_a_task_whose_validation_loss_rises() -> None:
    cfg = _config(coefficients="dynamic", initial_coefficient=0.5, tau=2, rho=1000.0, eps=0.01)
    coefficients = TaskCoefficients(cfg, num_tasks=2)
    # Task 0: validation and training losses both fall fast. Task 1: validation loss rises.
    train = [np.array([1.0, 0.6]), np.array([0.7, 0.5]), np.array([0.4, 0.4])]
    val = [np.array([1.0, 0.6]), np.array([0.75, 0.7]), np.array([0.5, 0.8])]
    np.testing.assert_array_equal(coefficients.update(train[0], val[0]), [0.5, 0.5])  # no strip yet
    np.testing.assert_array_equal(coefficients.update(train[1], val[1]), [0.5, 0.5])
    # Task 0: mu = 1000 * 0.5 * 0.6 = 300, minus CE 0.4 -> clipped to 1.
    # Task 1: mu = 1000 * (0.6 - 0.8) / 0.6 * (0.6 - 0.4) / 0.6 = -66.7 -> eps.
    np.testing.assert_allclose(coefficients.update(train[2], val[2]), [1.0, 0.01])
    # The sawtooth: once task 1's validation loss falls again over the strip, it comes back.
    coefficients.update(np.array([0.3, 0.3]), np.array([0.45, 0.6]))
    values = coefficients.update(np.array([0.25, 0.2]), np.array([0.4, 0.4]))
    # Task 1 strip: val 0.8 -> 0.4 (0.5), train 0.4 -> 0.2 (0.5): mu = 250 -> 1.
    np.testing.assert_allclose(values, [1.0, 1.0])
    assert len(coefficients.value_history) == 5
    np.testing.assert_allclose(coefficients.value_history[2], [1.0, 0.01])


def test_early_stopping_criterion_hand_value() -> None:
    # strip 3 -> the window is the last 4 entries [0.7, 0.65, 0.6, 0.58]: median 0.625, sum 2.53.
    # As in the ECCV formula the median is scaled by k = strip (3): trend = 1.875 / (2.53 - 1.875).
    # Gap: (validation 0.7 - best training 0.58) / (coefficient 1 * 0.58).
    history = np.array([1.0, 0.8, 0.7, 0.65, 0.6, 0.58])
    expected = (3 * 0.625) / (2.53 - 3 * 0.625) * (0.7 - 0.58) / (1.0 * 0.58)
    assert early_stopping_criterion(history, 0.7, 1.0, strip=3) == pytest.approx(expected, rel=1e-9)
    # A smaller coefficient makes the gap count more.
    assert early_stopping_criterion(history, 0.7, 0.5, strip=3) == pytest.approx(2 * expected, rel=1e-9)


def test_early_stopping_criterion_is_zero_without_generalisation_gap() -> None:
    history = np.array([1.0, 0.5, 0.25, 0.125])
    assert early_stopping_criterion(history, 0.125, 1.0, strip=2) == 0.0


def test_early_stopping_mode_halts_a_task_for_good() -> None:
    cfg = _config(coefficients="early_stopping", initial_coefficient=1.0, early_stop_strip=2,
                  early_stop_threshold=1.0)
    coefficients = TaskCoefficients(cfg, num_tasks=2)
    # Task 0 plateaus at 0.5 with validation loss 2.0 (gap 3 relative to its best training loss);
    # task 1 keeps halving with validation loss equal to training loss (no gap, score 0).
    history = [
        (np.array([1.0, 1.0]), np.array([1.2, 1.0])),
        (np.array([0.5, 0.5]), np.array([1.5, 0.5])),
        (np.array([0.5, 0.25]), np.array([2.0, 0.25])),
    ]
    values = [coefficients.update(train, val).copy() for train, val in history]
    np.testing.assert_array_equal(values[0], [1.0, 1.0])  # fewer entries than strip + 1: no decision
    np.testing.assert_array_equal(values[1], [1.0, 1.0])
    np.testing.assert_array_equal(values[2], [0.0, 1.0])
    assert coefficients.halted.tolist() == [True, False]
    # Even when task 0 starts to look good again, it stays halted.
    for train, val in [(np.array([0.1, 0.2]), np.array([0.1, 0.2])), (np.array([0.05, 0.1]), np.array([0.05, 0.1]))]:
        np.testing.assert_array_equal(coefficients.update(train, val), [0.0, 1.0])


def test_state_dict_round_trip_continues_identically() -> None:
    cfg = _config(coefficients="dynamic", tau=2, rho=1000.0)
    original = TaskCoefficients(cfg, num_tasks=2)
    for val, train in zip(VAL, TRAIN):
        original.update(train, val)
    state = original.state_dict()
    json.dumps(state)  # plain lists and floats: safe for weights_only checkpoints and logs
    restored = TaskCoefficients(cfg, num_tasks=2)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.values, original.values)
    np.testing.assert_array_equal(restored.halted, original.halted)
    for name in ("train_history", "val_history", "value_history"):
        np.testing.assert_array_equal(np.stack(getattr(restored, name)), np.stack(getattr(original, name)))
    next_train, next_val = np.array([3.0, 0.4]), np.array([1.5, 2.5])
    np.testing.assert_array_equal(restored.update(next_train, next_val), original.update(next_train, next_val))


def test_early_stopping_state_round_trip_keeps_halted_tasks() -> None:
    cfg = _config(coefficients="early_stopping", early_stop_strip=2, early_stop_threshold=1.0)
    original = TaskCoefficients(cfg, num_tasks=1)
    for train, val in [(1.0, 1.2), (0.5, 1.5), (0.5, 2.0)]:
        original.update(np.array([train]), np.array([val]))
    assert original.halted.tolist() == [True]
    restored = TaskCoefficients(cfg, num_tasks=1)
    restored.load_state_dict(original.state_dict())
    assert restored.halted.tolist() == [True]
    np.testing.assert_array_equal(restored.update(np.array([0.01]), np.array([0.01])), [0.0])
