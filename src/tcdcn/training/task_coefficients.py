"""The closed-form steps of the alternating algorithm (Sec. 3.3) and the ECCV 2014 baseline.

- ``update_task_covariance``: Eq. 12, Upsilon = (W^T W)^{1/2} / tr((W^T W)^{1/2}).
- ``TaskCoefficients``: Eq. 13-14, lambda_t = clip(mu_t - CE_t, eps, 1) with mu_t from the task's
  validation and training trends over a strip of ``tau`` evaluations; or fixed equal weights.
- ``TaskwiseEarlyStopping``: the ECCV 2014 criterion; a halted task keeps coefficient 0 for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import MultitaskConfig


def matrix_sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues clipped)."""
    sym = (matrix + matrix.t()) / 2
    eigenvalues, eigenvectors = torch.linalg.eigh(sym)
    root = eigenvalues.clamp_min(0).sqrt()
    return (eigenvectors * root) @ eigenvectors.t()


def update_task_covariance(head_weight: torch.Tensor) -> torch.Tensor:
    """Eq. 12: the unit-trace PSD Upsilon that minimises tr(W Upsilon^{-1} W^T); W is (D, K)."""
    w = head_weight.detach().to(torch.float64)
    root = matrix_sqrt_psd(w.t() @ w)  # (K, K)
    trace = torch.trace(root)
    k = w.shape[1]
    if trace <= 1e-12:  # W = 0: no evidence of correlation yet
        return torch.eye(k, dtype=torch.float64) / k
    return root / trace


def covariance_inverse(task_covariance: torch.Tensor, ridge: float) -> torch.Tensor:
    k = task_covariance.shape[0]
    return torch.linalg.inv(task_covariance + ridge * torch.eye(k, dtype=task_covariance.dtype))


def covariance_to_correlation(task_covariance: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.clip(np.diag(task_covariance), 1e-12, None))
    return task_covariance / np.outer(d, d)


def trend_mu(val_history: list[np.ndarray], train_history: list[np.ndarray], tau: int, rho: float) -> np.ndarray | None:
    """Eq. 14: mu_t = rho * relative val decrease * relative train decrease over the last tau steps.

    Histories are lists of (T,) per-task losses, one entry per evaluation; None before tau+1 entries.
    """
    if len(val_history) <= tau or len(train_history) <= tau:
        return None
    v_old, v_now = val_history[-1 - tau], val_history[-1]
    t_old, t_now = train_history[-1 - tau], train_history[-1]
    val_trend = (v_old - v_now) / np.maximum(v_old, 1e-12)
    train_trend = (t_old - t_now) / np.maximum(t_old, 1e-12)
    return rho * val_trend * train_trend


def dynamic_coefficients(mu: np.ndarray, train_loss: np.ndarray, eps: float) -> np.ndarray:
    """Eq. 13: lambda_t = min(1, max(eps, mu_t - mean training cross-entropy of task t))."""
    return np.clip(mu - train_loss, eps, 1.0)


def early_stopping_criterion(
    train_history: np.ndarray, val_now: float, coefficient: float, strip: int
) -> float:
    """ECCV 2014 criterion for one task at the latest evaluation; train_history (J,) of training errors."""
    # The ECCV strip j = t-k..t holds k+1 values; the formula scales the median by k (= strip).
    window = train_history[-strip - 1:]
    k = strip
    med = float(np.median(window))
    denom = float(window.sum() - k * med)
    best_train = float(train_history.min())
    trend_factor = (k * med) / denom if abs(denom) > 1e-12 else np.inf
    gap_factor = (val_now - best_train) / max(coefficient * best_train, 1e-12)
    return float(trend_factor * gap_factor)


@dataclass
class TaskCoefficients:
    """lambda_t for each attribute task, with the loss history the updates read."""

    config: MultitaskConfig
    num_tasks: int
    values: np.ndarray = field(init=False)
    halted: np.ndarray = field(init=False)
    train_history: list[np.ndarray] = field(default_factory=list)
    val_history: list[np.ndarray] = field(default_factory=list)
    value_history: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.values = np.full(self.num_tasks, self.config.initial_coefficient, dtype=np.float64)
        self.halted = np.zeros(self.num_tasks, dtype=bool)

    def update(self, train_loss: np.ndarray, val_loss: np.ndarray) -> np.ndarray:
        """Record this evaluation's per-task losses (T,) and return the new coefficients."""
        self.train_history.append(np.asarray(train_loss, np.float64))
        self.val_history.append(np.asarray(val_loss, np.float64))
        mode = self.config.coefficients
        if mode == "dynamic":
            mu = trend_mu(self.val_history, self.train_history, self.config.tau, self.config.rho)
            if mu is not None:
                self.values = dynamic_coefficients(mu, self.train_history[-1], self.config.eps)
        elif mode == "early_stopping":
            train = np.stack(self.train_history)  # (J, T)
            if len(train) > self.config.early_stop_strip:
                for t in np.flatnonzero(~self.halted):
                    score = early_stopping_criterion(
                        train[:, t], self.val_history[-1][t], self.values[t], self.config.early_stop_strip
                    )
                    if score > self.config.early_stop_threshold:
                        self.halted[t] = True
            self.values = np.where(self.halted, 0.0, self.config.initial_coefficient)
        self.value_history.append(self.values.copy())
        return self.values

    def tensor(self) -> torch.Tensor:
        return torch.as_tensor(self.values, dtype=torch.float32)

    def state_dict(self) -> dict:
        return {
            "values": self.values.tolist(),
            "halted": self.halted.tolist(),
            "train_history": [h.tolist() for h in self.train_history],
            "val_history": [h.tolist() for h in self.val_history],
            "value_history": [h.tolist() for h in self.value_history],
        }

    def load_state_dict(self, state: dict) -> None:
        self.values = np.asarray(state["values"], np.float64)
        self.halted = np.asarray(state["halted"], bool)
        self.train_history = [np.asarray(h, np.float64) for h in state["train_history"]]
        self.val_history = [np.asarray(h, np.float64) for h in state["val_history"]]
        self.value_history = [np.asarray(h, np.float64) for h in state["value_history"]]
