"""Step 3 of the alternating algorithm (Sec. 3.3): the task coefficients lambda_t, and the ECCV 2014 baseline.

``TaskCoefficients`` records each evaluation point's per-task training and validation losses and asks its rule
(``multitask.coefficients``) for the new lambda:

- ``DynamicCoefficients``: Eq. 13-14, lambda_t = clip(mu_t - CE_t, eps, 1) with mu_t from the task's validation
  and training trends over a strip of ``tau`` evaluations;
- ``FixedCoefficients``: every lambda_t stays ``initial_coefficient``;
- ``TaskwiseEarlyStopping``: the ECCV 2014 criterion; a halted task keeps coefficient 0 for good.

The training losses each rule reads (``CoefficientRule.train_loss_source``):

- the dynamic and fixed rules read the mean of the training batches since the previous evaluation point
  (augmented, as SGD saw them);
- early stopping reads, as the ECCV 2014 paper defines its training error, the loss of the current model on
  un-augmented training faces (``multitask.early_stop_train_faces`` of them, the same faces at every
  evaluation point). Until this was changed it read the augmented running mean, which on augmented data
  stays above the validation loss: the generalisation-gap factor of the criterion was then negative or near
  zero and the baseline halted a task at the last step or never.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import MultitaskConfig


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


#: ``CoefficientRule.train_loss_source`` values: the mean over the augmented training batches since the
#: previous evaluation point, or the loss on a fixed subset of un-augmented training faces.
AUGMENTED_BATCH_MEAN = "augmented_batch_mean"
UNAUGMENTED_TRAIN_FACES = "unaugmented_train_faces"


class CoefficientRule:
    """How lambda changes at an evaluation point. ``halted`` marks the tasks stopped for good (only early
    stopping halts any); ``train_loss_source`` says which training losses the trainer hands to it."""

    train_loss_source: str = AUGMENTED_BATCH_MEAN

    def __init__(self, config: MultitaskConfig, num_tasks: int) -> None:
        self.config = config
        self.halted = np.zeros(num_tasks, dtype=bool)

    def next_values(self, values: np.ndarray, train_history: list[np.ndarray],
                    val_history: list[np.ndarray]) -> np.ndarray:
        """The coefficients after an evaluation point, from the current ones and the loss histories (T,) each."""
        raise NotImplementedError


class FixedCoefficients(CoefficientRule):
    """``multitask.coefficients: fixed``: every lambda_t stays ``initial_coefficient``."""

    def next_values(self, values: np.ndarray, train_history: list[np.ndarray],
                    val_history: list[np.ndarray]) -> np.ndarray:
        return values


class DynamicCoefficients(CoefficientRule):
    """``multitask.coefficients: dynamic``: Eq. 13-14 once ``tau`` + 1 evaluations are recorded."""

    def next_values(self, values: np.ndarray, train_history: list[np.ndarray],
                    val_history: list[np.ndarray]) -> np.ndarray:
        mu = trend_mu(val_history, train_history, self.config.tau, self.config.rho)
        if mu is None:
            return values
        return dynamic_coefficients(mu, train_history[-1], self.config.eps)


class TaskwiseEarlyStopping(CoefficientRule):
    """``multitask.coefficients: early_stopping``: the ECCV 2014 criterion over a strip of
    ``early_stop_strip`` evaluations; a task whose score passes ``early_stop_threshold`` halts for good.
    Its training errors are losses on un-augmented training faces, as the criterion defines them."""

    train_loss_source = UNAUGMENTED_TRAIN_FACES

    def next_values(self, values: np.ndarray, train_history: list[np.ndarray],
                    val_history: list[np.ndarray]) -> np.ndarray:
        train = np.stack(train_history)  # (J, T)
        strip = self.config.early_stop_strip
        if len(train) > strip:
            for t in np.flatnonzero(~self.halted):
                score = early_stopping_criterion(train[:, t], val_history[-1][t], values[t], strip)
                if score > self.config.early_stop_threshold:
                    self.halted[t] = True
        return np.where(self.halted, 0.0, self.config.initial_coefficient)


RULES: dict[str, type[CoefficientRule]] = {
    "dynamic": DynamicCoefficients,
    "fixed": FixedCoefficients,
    "early_stopping": TaskwiseEarlyStopping,
}


def coefficient_bound_counts(value_history: list[np.ndarray], eps: float, ceiling: float) -> list[dict[str, int]]:
    """Per task, how many coefficient updates left lambda at eps, at ``ceiling`` and at 0 (halted).

    ``value_history``: the (T,) coefficients after each update. Shows whether the rule acted: a task that
    sits at eps from early on is switched off, one that never leaves the ceiling was never turned down.
    """
    if not value_history:
        return []
    values = np.stack(value_history)  # (J, T)
    return [{"updates": int(values.shape[0]),
             "at_eps": int(np.isclose(column, eps, rtol=0, atol=1e-12).sum()),
             "at_ceiling": int(np.isclose(column, ceiling, rtol=0, atol=1e-12).sum()),
             "at_zero": int((column == 0).sum())}
            for column in values.T]


class TaskCoefficients:
    """lambda_t for each attribute task, with the loss history the updates read."""

    def __init__(self, config: MultitaskConfig, num_tasks: int) -> None:
        self.config = config
        self.num_tasks = num_tasks
        self.rule = RULES[config.coefficients](config, num_tasks)
        self.values = np.full(num_tasks, config.initial_coefficient, dtype=np.float64)
        self.train_history: list[np.ndarray] = []
        self.val_history: list[np.ndarray] = []
        self.value_history: list[np.ndarray] = []

    @property
    def train_loss_source(self) -> str:
        """Which training losses ``update`` expects (``AUGMENTED_BATCH_MEAN`` or ``UNAUGMENTED_TRAIN_FACES``)."""
        return self.rule.train_loss_source

    @property
    def ceiling(self) -> float:
        """The largest value lambda takes: 1 under Eq. 13's clip, ``initial_coefficient`` under the other rules."""
        return 1.0 if self.config.coefficients == "dynamic" else self.config.initial_coefficient

    def bound_counts(self) -> list[dict[str, int]]:
        """``coefficient_bound_counts`` of this run's updates, one entry per task."""
        return coefficient_bound_counts(self.value_history, self.config.eps, self.ceiling)

    @property
    def halted(self) -> np.ndarray:
        """(T,) tasks stopped for good by early stopping."""
        return self.rule.halted

    def update(self, train_loss: np.ndarray, val_loss: np.ndarray) -> np.ndarray:
        """Record this evaluation's per-task losses (T,) and return the new coefficients."""
        self.train_history.append(np.asarray(train_loss, np.float64))
        self.val_history.append(np.asarray(val_loss, np.float64))
        self.values = self.rule.next_values(self.values, self.train_history, self.val_history)
        self.value_history.append(self.values.copy())
        return self.values

    def tensor(self) -> torch.Tensor:
        """The coefficients as the float32 tensor the objective multiplies the task losses by."""
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
        self.rule.halted = np.asarray(state["halted"], bool)
        self.train_history = [np.asarray(h, np.float64) for h in state["train_history"]]
        self.val_history = [np.asarray(h, np.float64) for h in state["val_history"]]
        self.value_history = [np.asarray(h, np.float64) for h in state["value_history"]]
