"""The objective of Eq. 9, term by term.

    E = landmark_weight * sum ||y - W_M^T x||^2                 (landmark least squares; or wing loss)
        + sum_t lambda_t * CE_t                                   (attribute cross-entropy)
        + covariance_weight * tr(W Upsilon^{-1} W^T)              (task covariance prior)
        + filter_decay * tr(K K^T)                                (weight decay on filters)

Each term is returned by name so the trainer logs them; ``total`` is what SGD descends. Losses are
means over the batch (the paper's sums divided by N, which only rescales the step size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import ObjectiveConfig
from ..models.network import TCDCN


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of squared coordinate errors per face, mean over faces; (B,P,2), (B,P,2), (B,P) -> scalar."""
    sq = (pred - target).pow(2).sum(dim=-1)  # (B, P)
    if visible is not None:
        sq = sq * visible.to(sq.dtype)
    return sq.sum(dim=1).mean()


def wing_loss(
    pred: torch.Tensor, target: torch.Tensor, width: float, curvature: float, visible: torch.Tensor | None = None
) -> torch.Tensor:
    """Wing loss (Feng et al. 2018) of each coordinate, summed per face, mean over faces.

    w * ln(1 + |x| / eps) for |x| < w, |x| - C beyond, with C = w - w * ln(1 + w / eps) so the two pieces
    meet; (B,P,2), (B,P,2), (B,P) -> scalar.
    """
    err = (pred - target).abs()  # (B, P, 2)
    joint = width - width * torch.log1p(torch.tensor(width / curvature))
    per_coord = torch.where(err < width, width * torch.log1p(err / curvature), err - joint)  # (B, P, 2)
    per_point = per_coord.sum(dim=-1)  # (B, P)
    if visible is not None:
        per_point = per_point * visible.to(per_point.dtype)
    return per_point.sum(dim=1).mean()


def attribute_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of each task; (B,T), (B,T) -> (T,)."""
    if logits.shape[1] == 0:
        return logits.new_zeros(0)
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=0)


def covariance_penalty(head_weight: torch.Tensor, covariance_inverse: torch.Tensor) -> torch.Tensor:
    """tr(W Upsilon^{-1} W^T) for W (D, K) and Upsilon^{-1} (K, K)."""
    return torch.einsum("dk,kl,dl->", head_weight, covariance_inverse, head_weight)


def filter_penalty(filters: list[torch.Tensor]) -> torch.Tensor:
    """tr(K K^T) = sum of squared filter weights."""
    return sum((k.pow(2).sum() for k in filters), torch.zeros(()))


def tcdcn_objective(
    model: TCDCN,
    batch: dict[str, torch.Tensor],
    task_coefficients: torch.Tensor,
    covariance_inverse: torch.Tensor | None,
    cfg: ObjectiveConfig,
) -> dict[str, torch.Tensor]:
    """Forward the batch and return the named terms, the per-task losses and ``total``."""
    landmarks, logits = model(batch["images"])  # (B,P,2), (B,T)
    if cfg.landmark_loss == "wing":
        lm = wing_loss(landmarks, batch["landmarks"], cfg.wing_width, cfg.wing_curvature, batch.get("visible"))
    else:
        lm = landmark_loss(landmarks, batch["landmarks"], batch.get("visible"))
    task_ce = attribute_losses(logits, batch["labels"])  # (T,)
    terms: dict[str, torch.Tensor] = {
        "landmarks": lm,
        "attributes": (task_coefficients * task_ce).sum(),
        "filters": filter_penalty(model.filters()),
    }
    total = cfg.landmark_weight * lm + terms["attributes"] + cfg.filter_decay * terms["filters"]
    if cfg.use_covariance and covariance_inverse is not None:
        terms["covariance"] = covariance_penalty(model.head_weight(), covariance_inverse)
        total = total + cfg.covariance_weight * terms["covariance"]
    terms["total"] = total
    terms["task_losses"] = task_ce.detach()
    terms["pred_landmarks"] = landmarks.detach()
    return terms


def weighted_terms(terms: dict[str, torch.Tensor], cfg: ObjectiveConfig) -> dict[str, torch.Tensor]:
    """Each term of ``tcdcn_objective``'s result as it enters ``total`` (times its weight), by name."""
    weighted = {
        "landmarks": cfg.landmark_weight * terms["landmarks"],
        "attributes": terms["attributes"],  # lambda_t already applied
        "filters": cfg.filter_decay * terms["filters"],
    }
    if "covariance" in terms:
        weighted["covariance"] = cfg.covariance_weight * terms["covariance"]
    return weighted


def term_gradient_norms(
    terms: dict[str, torch.Tensor],
    cfg: ObjectiveConfig,
    parameter_groups: dict[str, list[torch.nn.Parameter]],
) -> dict[str, dict[str, float]]:
    """L2 norm of each weighted term's gradient on each parameter group: {group: {term: norm}}.

    One backward per term through ``torch.autograd.grad``, so the parameters' ``.grad`` and the optimiser
    are untouched; ``terms`` must come from a forward pass with autograd on. A term that does not reach a
    group (the covariance prior on the conv layers, the filter decay on the heads) has norm 0.
    """
    norms: dict[str, dict[str, float]] = {group: {} for group in parameter_groups}
    for name, term in weighted_terms(terms, cfg).items():
        for group, params in parameter_groups.items():
            if not term.requires_grad:
                norms[group][name] = 0.0
                continue
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            squared = sum(float(g.detach().double().pow(2).sum()) for g in grads if g is not None)
            norms[group][name] = squared ** 0.5
    return norms
