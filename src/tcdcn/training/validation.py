"""The trainer's scores on a face set: losses of the objective and the normalised mean error, computed with
``tcdcn.evaluation.metrics`` (the same functions ``tcdcn evaluate`` reports with).

Errors are computed in the crop frame: the image-frame errors of a face scaled by one factor, which the
normalising distance (taken in the same frame) divides out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import FaceDataset
from ..evaluation.metrics import nme, normalised_face_errors
from ..schemes import LandmarkScheme
from .distributed import DistributedContext
from .objective import attribute_losses, landmark_loss


@dataclass
class EvalResult:
    """Mean landmark loss, mean loss of each task and NME over a face set."""

    landmark_loss: float
    task_losses: np.ndarray  # (T,)
    nme: float


@torch.no_grad()
def score_on(model: torch.nn.Module, dataset: FaceDataset, scheme: LandmarkScheme, num_tasks: int,
             dist: DistributedContext, device: torch.device, batch_size: int = 512) -> EvalResult:
    """Losses and NME of ``model`` on ``dataset``; under torchrun each rank scores its slice and the sums are
    shared (every rank gets the same result)."""
    model.eval()
    lm_sum, task_sum, n = 0.0, np.zeros(num_tasks), 0
    face_errs = [np.zeros(0)]
    first, stop = dist.shard(len(dataset))
    for start in range(first, stop, batch_size):
        idx = range(start, min(stop, start + batch_size))
        batch = dataset.batch(idx)
        pred, logits = model(batch["images"].to(device))
        pred, logits = pred.cpu(), logits.cpu()
        b = len(idx)
        lm_sum += landmark_loss(pred, batch["landmarks"], batch["visible"]).item() * b
        task_sum += attribute_losses(logits, batch["labels"]).numpy() * b
        n += b
        p, t = pred.numpy(), batch["landmarks"].numpy()
        face_errs.append(normalised_face_errors(p, t, scheme.interocular_distance(t), batch["visible"].numpy()))
    sums = dist.all_reduce_sum(np.concatenate([[lm_sum, n], task_sum]))
    all_errs = np.concatenate(dist.all_gather(np.concatenate(face_errs)))  # rank order = set order
    total = sums[1]
    return EvalResult(float(sums[0] / total), sums[2:] / total, nme(all_errs))


@torch.no_grad()
def derived_error_on(model: torch.nn.Module, dataset: FaceDataset, derivation: np.ndarray, dist: DistributedContext,
                     device: torch.device, batch_size: int = 512) -> float:
    """NME of the points ``derivation`` (Q, P) takes from ``model``'s P-point predictions, against ``dataset``'s
    Q-point annotations, normalised by their scheme's inter-ocular distance (the auxiliary faces' score)."""
    model.eval()
    face_errs = [np.zeros(0)]
    first, stop = dist.shard(len(dataset))
    for start in range(first, stop, batch_size):
        batch = dataset.batch(range(start, min(stop, start + batch_size)))
        pred = model(batch["images"].to(device))[0].cpu().numpy()  # (b, P, 2)
        derived = np.einsum("qp,bpc->bqc", derivation, pred)  # (b, Q, 2)
        target = batch["landmarks"].numpy()
        face_errs.append(normalised_face_errors(derived, target, dataset.scheme.interocular_distance(target)))
    return nme(np.concatenate(dist.all_gather(np.concatenate(face_errs))))
