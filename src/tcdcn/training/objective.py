"""The objective of Eq. 9, term by term.

    E = landmark_weight * sum ||y - W_M^T x||^2                 (landmark least squares; or wing loss)
        + sum_t lambda_t * CE_t                                   (attribute cross-entropy)
        + covariance_weight * tr(W Upsilon^{-1} W^T)              (task covariance prior)
        + filter_decay * tr(K K^T)                                (weight decay on filters)
        + auxiliary_weight * mean_i e_i                           (auxiliary faces, when the batch has them)
        + landmark_weight * distillation_weight * L(y_teacher, W_M^T x)   (a teacher's answers, when given)

The auxiliary term is this package's extension for faces annotated in a coarser scheme (data.auxiliary_train,
e.g. MTFL's 5 points beside 68-point faces): e_i is the normalised error of the points a derivation matrix D
(``schemes.derivation_matrix``) takes from face i's dense prediction, against its annotation. Those faces go
through the same forward pass as the rest; their attribute outputs are not trained.

The distillation term is another extension (``objective.distillation_teacher``): the landmark loss L (least
squares or wing, as the ground-truth term) against a trained teacher network's answers on the same augmented
crops (``teacher_landmarks`` in the batch), so that a cheaper network can learn from a wider one.

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


def derived_point_error(pred: torch.Tensor, derivation: torch.Tensor, target: torch.Tensor,
                        interocular: torch.Tensor) -> torch.Tensor:
    """Mean over faces of the mean point-to-point distance between the points ``derivation`` derives from
    ``pred`` and ``target``, over each face's ``interocular`` distance: (B,P,2), (Q,P), (B,Q,2), (B,) -> scalar.

    The distance has a 1e-12 floor inside its square root, so a point placed exactly keeps a finite gradient.
    """
    if pred.shape[0] == 0:
        return pred.new_zeros(())
    derived = torch.einsum("qp,bpc->bqc", derivation.to(pred.dtype), pred)  # (B, Q, 2)
    distance = ((derived - target).pow(2).sum(dim=-1) + 1e-12).sqrt()  # (B, Q)
    return (distance.mean(dim=1) / interocular.to(pred.dtype)).mean()


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
    derivation: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Forward the batch and return the named terms, the per-task losses and ``total``.

    With ``derivation`` (Q, P) and a batch holding auxiliary faces (``auxiliary_images`` (A,1,S,S),
    ``auxiliary_landmarks`` (A,Q,2), ``auxiliary_interocular`` (A,)), the auxiliary faces share the forward
    pass and add the ``auxiliary`` term (``derived_point_error``) with ``cfg.auxiliary_weight``.
    """
    auxiliary = batch.get("auxiliary_images") if derivation is not None else None
    if auxiliary is not None and auxiliary.shape[0]:
        count = batch["images"].shape[0]
        all_landmarks, all_logits = model(torch.cat([batch["images"], auxiliary]))
        landmarks, logits = all_landmarks[:count], all_logits[:count]  # (B,P,2), (B,T)
        auxiliary_landmarks = all_landmarks[count:]  # (A, P, 2)
    else:
        landmarks, logits = model(batch["images"])  # (B,P,2), (B,T)
        auxiliary_landmarks = None
    lm = _landmark_term(landmarks, batch["landmarks"], cfg, batch.get("visible"))
    task_ce = attribute_losses(logits, batch["labels"])  # (T,)
    terms: dict[str, torch.Tensor] = {
        "landmarks": lm,
        "attributes": (task_coefficients * task_ce).sum(),
        "filters": filter_penalty(model.filters()),
    }
    total = cfg.landmark_weight * lm + terms["attributes"] + cfg.filter_decay * terms["filters"]
    if auxiliary_landmarks is not None and derivation is not None:
        terms["auxiliary"] = derived_point_error(auxiliary_landmarks, derivation, batch["auxiliary_landmarks"],
                                                 batch["auxiliary_interocular"])
        total = total + cfg.auxiliary_weight * terms["auxiliary"]
    teacher = batch.get("teacher_landmarks")  # (B, P, 2)
    if teacher is not None:
        terms["distillation"] = _landmark_term(landmarks, teacher, cfg)
        total = total + cfg.landmark_weight * cfg.distillation_weight * terms["distillation"]
    if cfg.use_covariance and covariance_inverse is not None:
        terms["covariance"] = covariance_penalty(model.head_weight(), covariance_inverse)
        total = total + cfg.covariance_weight * terms["covariance"]
    terms["total"] = total
    terms["task_losses"] = task_ce.detach()
    terms["pred_landmarks"] = landmarks.detach()
    return terms


def _landmark_term(pred: torch.Tensor, target: torch.Tensor, cfg: ObjectiveConfig,
                   visible: torch.Tensor | None = None) -> torch.Tensor:
    """The configured landmark loss (least squares or wing) of ``pred`` against ``target``, (B,P,2) each."""
    if cfg.landmark_loss == "wing":
        return wing_loss(pred, target, cfg.wing_width, cfg.wing_curvature, visible)
    return landmark_loss(pred, target, visible)


def weighted_terms(terms: dict[str, torch.Tensor], cfg: ObjectiveConfig) -> dict[str, torch.Tensor]:
    """Each term of ``tcdcn_objective``'s result as it enters ``total`` (times its weight), by name."""
    weighted = {
        "landmarks": cfg.landmark_weight * terms["landmarks"],
        "attributes": terms["attributes"],  # lambda_t already applied
        "filters": cfg.filter_decay * terms["filters"],
    }
    if "auxiliary" in terms:
        weighted["auxiliary"] = cfg.auxiliary_weight * terms["auxiliary"]
    if "distillation" in terms:
        weighted["distillation"] = cfg.landmark_weight * cfg.distillation_weight * terms["distillation"]
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
