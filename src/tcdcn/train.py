"""The alternating training loop of Sec. 3.3, with checkpoints, resume and per-epoch logging.

Each SGD step updates filters K and head W on Eq. 9 with Upsilon and lambda fixed (step 1); every
``covariance_interval`` steps Upsilon is recomputed in closed form (step 2, Eq. 12); at every evaluation
point (``evaluations_per_epoch`` per epoch) the per-task training and validation losses update the task
coefficients (step 3, Eq. 13-14) or the ECCV early-stopping state.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .attributes import tasks_by_name
from .checkpoint import atomic_save, model_from_state, read_checkpoint, weights_payload
from .config import Config, config_to_dict
from .data.dataset import FaceDataset, split_indices
from .data.formats import read_annotations
from .errors import CheckpointError, TcdcnError
from .metrics import nme, per_face_error, point_errors
from .model import TCDCN
from .multitask import TaskCoefficients, covariance_inverse, update_task_covariance
from .objective import attribute_losses, landmark_loss, tcdcn_objective
from .schemes import get_scheme

log = logging.getLogger("tcdcn.train")


class NonFiniteLossError(TcdcnError):
    """Training produced NaN/inf; the last good checkpoint is kept."""


@dataclass
class EvalResult:
    landmark_loss: float
    task_losses: np.ndarray  # (T,)
    nme: float


def learning_rate_at(step: int, total_steps: int, warmup_steps: int, base: float, floor: float) -> float:
    """Linear warm-up then cosine decay to ``floor``; a function of the step, so resume is exact."""
    if warmup_steps > 0 and step < warmup_steps:
        return base * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def load_pretrained(source: str) -> dict[str, Any]:
    """A checkpoint path or a shipped model name -> its state dict (model, config, scheme, tasks)."""
    from .weights import resolve_weights_file

    return read_checkpoint(resolve_weights_file(source))


class Trainer:
    def __init__(
        self,
        cfg: Config,
        out_dir: str | Path,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        faces: tuple[list, list] | None = None,
    ) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.on_epoch = on_epoch
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.scheme = get_scheme(cfg.data.scheme)
        self.tasks = tasks_by_name(cfg.data.tasks)
        self.task_names = tuple(t.name for t in self.tasks)

        if faces is None:
            all_faces = read_annotations(cfg.data.train)
            train_idx, val_idx = split_indices(len(all_faces), cfg.data.validation_fraction, cfg.data.split_seed)
            train_faces = [all_faces[i] for i in train_idx]
            val_faces = [all_faces[i] for i in val_idx]
        else:
            train_faces, val_faces = faces
        wrong = [f.source for f in train_faces[:1] if f.scheme.name != self.scheme.name]
        if wrong:
            raise TcdcnError(f"{wrong[0]}: data scheme {train_faces[0].scheme.name} != config {self.scheme.name}")
        size = cfg.model.input_size
        self.train_set = FaceDataset(train_faces, self.tasks, size, "gt")
        self.val_set = FaceDataset(val_faces, self.tasks, size, "gt")
        self.train_set.preload()
        self.val_set.preload()

        torch.manual_seed(cfg.train.seed)
        self.model = self._build_model()
        params = list(self.model.parameters())
        if cfg.train.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.train.learning_rate)
        else:
            self.optimizer = torch.optim.SGD(params, lr=cfg.train.learning_rate, momentum=0.9, nesterov=True)
        k = 2 * self.model.num_points + len(self.tasks)
        self.task_covariance = torch.eye(k, dtype=torch.float64) / k  # (M+T, M+T)
        self.coefficients = TaskCoefficients(cfg.multitask, len(self.tasks))
        self.rng = np.random.default_rng(cfg.train.seed)
        self.epoch = 0
        self.step = 0
        self.step_in_epoch = 0
        self.epoch_order: np.ndarray | None = None
        self.period_sums = np.zeros(len(self.tasks) + 1)  # running train losses since last evaluation
        self.period_count = 0
        self.best_val_nme = math.inf
        self.history: list[dict[str, Any]] = []

    # ---- set-up -------------------------------------------------------------------------------
    def _build_model(self) -> TCDCN:
        cfg = self.cfg
        if not cfg.train.init_from:
            return TCDCN(cfg.model, len(self.tasks))
        state = load_pretrained(cfg.train.init_from)
        model, src_cfg, _scheme, src_tasks = model_from_state(state, cfg.train.init_from)
        for key in ("input_size", "channels", "kernels", "feature_dim"):
            if getattr(src_cfg.model, key) != getattr(cfg.model, key):
                raise CheckpointError(f"{cfg.train.init_from}: model.{key} differs from this config's")
        if model.num_points != cfg.model.num_points:
            model.reset_landmark_head(cfg.model.num_points)
        if tuple(src_tasks) != self.task_names:
            model.reset_attribute_head(len(self.tasks))
        model.config = cfg.model
        model.train()
        return model

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_set) // self.cfg.train.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.train.epochs

    def evaluation_steps(self) -> set[int]:
        n = max(1, self.cfg.multitask.evaluations_per_epoch)
        spe = self.steps_per_epoch
        return {round(spe * (i + 1) / n) for i in range(n)}

    # ---- the three steps ----------------------------------------------------------------------
    def sgd_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Step 1: fix Upsilon and lambda, descend E on filters and W."""
        cfg = self.cfg
        lr = learning_rate_at(self.step, self.total_steps, cfg.train.warmup_epochs * self.steps_per_epoch,
                              cfg.train.learning_rate, cfg.train.min_learning_rate)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        cov_inv = None
        if cfg.objective.use_covariance:
            cov_inv = covariance_inverse(self.task_covariance, cfg.objective.covariance_ridge).float()
        terms = tcdcn_objective(self.model, batch, self.coefficients.tensor(), cov_inv, cfg.objective)
        total = terms["total"]
        if not torch.isfinite(total):
            raise NonFiniteLossError(
                f"non-finite loss at epoch {self.epoch + 1}, step {self.step}; last good checkpoint kept in "
                f"{self.out_dir} (lower train.learning_rate?)")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step += 1
        self.period_sums += np.concatenate([[terms["landmarks"].item()], terms["task_losses"].numpy()])
        self.period_count += 1
        out = {k: float(v.detach()) for k, v in terms.items() if v.ndim == 0}
        out["lr"] = lr
        return out

    def update_covariance(self) -> None:
        """Step 2: Eq. 12."""
        if self.cfg.objective.use_covariance:
            self.task_covariance = update_task_covariance(self.model.head_weight())

    def update_coefficients(self, val: EvalResult) -> np.ndarray:
        """Step 3: Eq. 13-14 (or early stopping) from this period's training and validation task losses."""
        train_task = self.period_sums[1:] / max(1, self.period_count)
        return self.coefficients.update(train_task, val.task_losses)

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset: FaceDataset, batch_size: int = 512) -> EvalResult:
        self.model.eval()
        lm_sum, task_sum, n = 0.0, np.zeros(len(self.tasks)), 0
        face_errs = []
        for start in range(0, len(dataset), batch_size):
            idx = range(start, min(len(dataset), start + batch_size))
            batch = dataset.batch(idx)
            pred, logits = self.model(batch["images"])
            b = len(idx)
            lm_sum += landmark_loss(pred, batch["landmarks"], batch["visible"]).item() * b
            task_sum += attribute_losses(logits, batch["labels"]).numpy() * b
            n += b
            # Errors in the crop frame are the image-frame errors scaled by one factor, so the
            # normalised error can be computed here directly.
            p, t = pred.numpy(), batch["landmarks"].numpy()
            errs = point_errors(p, t, self.scheme.interocular_distance(t))
            face_errs.append(per_face_error(errs, batch["visible"].numpy()))
        return EvalResult(lm_sum / n, task_sum / n, nme(np.concatenate(face_errs)))

    # ---- loop ---------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        eval_steps = self.evaluation_steps()
        started = time.time()
        while self.epoch < cfg.train.epochs:
            if self.epoch_order is None:
                self.epoch_order = self.rng.permutation(len(self.train_set))
                self.step_in_epoch = 0
            epoch_start = time.time()
            bs = cfg.train.batch_size
            while self.step_in_epoch < self.steps_per_epoch:
                idx = self.epoch_order[self.step_in_epoch * bs:(self.step_in_epoch + 1) * bs]
                batch = self.train_set.batch(idx, cfg.augment, self.rng)
                terms = self.sgd_step(batch)
                self.step_in_epoch += 1
                if self.step % cfg.multitask.covariance_interval == 0:
                    self.update_covariance()
                if self.step_in_epoch in eval_steps:
                    self._evaluation_point(terms, time.time() - epoch_start)
                if cfg.train.checkpoint_every_steps and self.step % cfg.train.checkpoint_every_steps == 0:
                    self.save_checkpoint(self.out_dir / "last.pt")
            self.epoch += 1
            self.epoch_order = None
            self.save_checkpoint(self.out_dir / "last.pt")
        summary = {
            "best_val_nme": self.best_val_nme,
            "epochs": self.epoch,
            "seconds_this_run": time.time() - started,
        }
        return summary

    def _evaluation_point(self, last_terms: dict[str, float], seconds: float) -> None:
        val = self.evaluate(self.val_set)
        train_task = self.period_sums / max(1, self.period_count)
        coefficients = self.update_coefficients(val)
        record = {
            "epoch": self.epoch + self.step_in_epoch / self.steps_per_epoch,
            "step": self.step,
            "train_landmark_loss": float(train_task[0]),
            "train_task_losses": dict(zip(self.task_names, train_task[1:].tolist())),
            "val_landmark_loss": val.landmark_loss,
            "val_task_losses": dict(zip(self.task_names, val.task_losses.tolist())),
            "val_nme": val.nme,
            "task_coefficients": dict(zip(self.task_names, coefficients.tolist())),
            "lr": last_terms.get("lr"),
            "seconds": seconds,
        }
        self.period_sums[:] = 0
        self.period_count = 0
        self.history.append(record)
        # Rewritten whole, so a resumed run never repeats the lines logged after its checkpoint.
        (self.out_dir / "history.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in self.history), encoding="utf-8")
        if val.nme < self.best_val_nme:
            self.best_val_nme = val.nme
            atomic_save(self.weights(), self.out_dir / "best.pt")
        coeffs = " ".join(f"{n}={c:.2f}" for n, c in zip(self.task_names, coefficients))
        tasks = " ".join(f"{n}={v:.3f}" for n, v in zip(self.task_names, train_task[1:]))
        log.info("epoch %.2f step %d | train lm %.4f %s | val lm %.4f nme %.2f%% | lambda %s | %.1fs",
                 record["epoch"], self.step, train_task[0], tasks, val.landmark_loss, 100 * val.nme,
                 coeffs, seconds)
        if self.on_epoch is not None:
            self.on_epoch(record)

    # ---- state --------------------------------------------------------------------------------
    def weights(self) -> dict[str, Any]:
        payload = weights_payload(self.model, self.cfg, self.scheme, self.task_names)
        payload["task_covariance"] = self.task_covariance.clone()
        payload["task_coefficients"] = self.coefficients.state_dict()
        payload["best_val_nme"] = self.best_val_nme
        return payload

    def save_checkpoint(self, path: Path) -> None:
        state = self.weights()
        state.update({
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "epoch_order": None if self.epoch_order is None else torch.from_numpy(self.epoch_order.copy()),
            "period_sums": torch.from_numpy(self.period_sums.copy()),
            "period_count": self.period_count,
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
        })
        atomic_save(state, path)

    def resume(self, path: str | Path) -> None:
        state = read_checkpoint(path)
        if config_to_dict(self.cfg)["model"] != state["config"]["model"]:
            raise CheckpointError(f"{path}: checkpoint's model config differs from the one given")
        if "optimizer" not in state:
            raise CheckpointError(f"{path}: a weights file, not a training checkpoint (no optimiser state)")
        try:
            self.model.load_state_dict(state["model"], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not fit the model ({str(exc).splitlines()[0]})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.task_covariance = state["task_covariance"].to(torch.float64)
        self.coefficients.load_state_dict(state["task_coefficients"])
        self.best_val_nme = float(state["best_val_nme"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.step_in_epoch = int(state["step_in_epoch"])
        order = state["epoch_order"]
        self.epoch_order = None if order is None else order.numpy()
        self.period_sums = state["period_sums"].numpy().copy()
        self.period_count = int(state["period_count"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        self.history = list(state["history"])
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)
