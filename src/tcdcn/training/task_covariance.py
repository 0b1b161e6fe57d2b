"""Step 2 of the alternating algorithm (Sec. 3.3): the task covariance Upsilon in closed form.

Eq. 12: Upsilon = (W^T W)^{1/2} / tr((W^T W)^{1/2}), the unit-trace PSD matrix that minimises the prior
tr(W Upsilon^{-1} W^T) of the objective for the current head W. ``TaskCovariance`` holds Upsilon between updates.
"""

from __future__ import annotations

import numpy as np
import torch


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
    """(Upsilon + ridge * I)^{-1}: the ridge keeps the inverse finite when a task is uncorrelated with all."""
    k = task_covariance.shape[0]
    return torch.linalg.inv(task_covariance + ridge * torch.eye(k, dtype=task_covariance.dtype))


def covariance_to_correlation(task_covariance: np.ndarray) -> np.ndarray:
    """Correlation = covariance / sqrt(product of the two variances), variances floored at 1e-12."""
    d = np.sqrt(np.clip(np.diag(task_covariance), 1e-12, None))
    return task_covariance / np.outer(d, d)


class TaskCovariance:
    """Upsilon (K x K, float64, K = landmark coordinates + tasks) between its closed-form updates.

    It starts at I / K (no evidence of correlation); ``update`` is step 2, ``inverse`` what step 1's prior term
    reads.
    """

    def __init__(self, size: int, ridge: float) -> None:
        self.matrix = torch.eye(size, dtype=torch.float64) / size  # (K, K)
        self.ridge = ridge

    def update(self, head_weight: torch.Tensor) -> None:
        """Eq. 12 for the head W (D, K)."""
        self.matrix = update_task_covariance(head_weight)

    def inverse(self) -> torch.Tensor:
        return covariance_inverse(self.matrix, self.ridge)
