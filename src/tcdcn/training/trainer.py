"""The alternating training loop of Sec. 3.3, with checkpoints, resume and per-epoch logging.

Each SGD step updates filters K and head W on Eq. 9 with Upsilon and lambda fixed (step 1); every
``covariance_interval`` steps Upsilon is recomputed in closed form (step 2, Eq. 12); at every evaluation
point (``evaluations_per_epoch`` per epoch) the per-task training and validation losses update the task
coefficients (step 3, Eq. 13-14) or the ECCV early-stopping state. The training losses are the mean over
the augmented batches since the previous evaluation point, except for early stopping, whose criterion is
defined on un-augmented training faces (``multitask.early_stop_train_faces`` of them, scored afresh).

Each evaluation point also records, in ``history.jsonl``, the L2 norm of each weighted term's gradient
(landmarks, attributes, covariance, filters) on the shared layers (conv + fc) and on the landmark head,
measured on the last training batch with one backward per term and no optimiser step (under torchrun, on
rank 0's slice of it), so whether a term can act on the representation is read off the run itself.

Auxiliary faces (``data.auxiliary_train``, e.g. MTFL's 5 points beside 68-point faces): every step adds
``round(batch_size * f / (1 - f))`` of them (``f`` = ``data.auxiliary_fraction``), drawn with replacement
from the training part of their carve with the run's random stream, augmented alike, forwarded with the
main faces; the points the config's scheme derives (``schemes.derivation_matrix``) are trained towards
their annotation (the objective's ``auxiliary`` term). The epoch, the schedule and the validation split
stay the main data's; each evaluation point also scores the derived points on up to
``AUXILIARY_VALIDATION_FACES`` faces of the auxiliary carve's validation part (``val_auxiliary_nme``).

Faults: ``last.pt`` (written atomically at every epoch end and every ``checkpoint_every_steps``) holds
everything the loop reads -- parameters, optimiser, Upsilon, lambda with its loss history, the epoch's
batch order and position in it, the running period losses and the random states -- so ``--resume``
after a kill, even mid-epoch, continues on the exact trajectory of an uninterrupted run. A non-finite
loss stops the run before the update and before any checkpoint is overwritten.

Scale-out: under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel; every
rank walks the same global batch order and draws the same augmentations, computes its contiguous slice
of each global batch (so the global batch stays ``train.batch_size``), and the per-task training and
validation losses are summed over ranks before the coefficient update, so every rank computes the same
lambda and Upsilon (checked at each evaluation). Rank 0 alone writes checkpoints, history and logs.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from ..attributes import tasks_by_name
from ..config import Config, config_to_dict
from ..data.dataset import FaceDataset, split_auxiliary_faces, split_faces
from ..data.formats import read_annotations
from ..data.transforms import draw_params
from ..errors import CheckpointError, ConfigError, TcdcnError
from ..io.atomic import atomic_write_text
from ..models.checkpoint import atomic_save, read_checkpoint, weights_payload
from ..models.denormals import enable_flush_to_zero, flush_state_dict
from ..schemes import derivation_matrix, get_scheme
from .distributed import DataParallelView, DistributedContext, init_from_environment, parameter_fingerprint
from .objective import tcdcn_objective, term_gradient_norms
from .schedule import learning_rate_at
from .task_coefficients import UNAUGMENTED_TRAIN_FACES, TaskCoefficients
from .task_covariance import TaskCovariance
from .transfer import distillation_teacher, initial_network
from .validation import EvalResult, derived_error_on, score_on

log = logging.getLogger("tcdcn.train")

# Ranks run identical arithmetic on identical inputs for Upsilon and lambda, so they must agree exactly;
# the parameter fingerprint goes through one gradient all-reduce per step and is allowed round-off.
RANK_AGREEMENT_TOLERANCE = 0.0
PARAMETER_AGREEMENT_TOLERANCE = 1e-6
# Auxiliary validation faces scored at each evaluation point: evenly spaced over the carve's validation part.
AUXILIARY_VALIDATION_FACES = 256


class NonFiniteLossError(TcdcnError):
    """Training produced NaN/inf; the last good checkpoint is kept."""


class Trainer:
    """One training run: the data, the network, the optimiser and the epoch loop, which calls the three steps
    of the alternating algorithm (``sgd_step``, ``update_covariance``, ``update_coefficients``), scores the
    validation split at each evaluation point and writes checkpoints and history to ``out_dir``."""

    def __init__(
        self,
        cfg: Config,
        out_dir: str | Path,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        faces: tuple[list, list] | None = None,
        distributed: DistributedContext | None = None,
        auxiliary_faces: tuple[list, list] | None = None,
    ) -> None:
        """``faces``: (training, validation) faces instead of ``data.train``'s carve; ``auxiliary_faces``:
        (training, validation) auxiliary faces instead of ``data.auxiliary_train``'s carve. ``distributed``:
        the process group to train in; by default joined from torchrun's environment (a single-process
        context when there is none)."""
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.on_epoch = on_epoch
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        # Adam with the filter decay drives weights that get no data gradient through the denormal range
        # (tcdcn.models.denormals); flushing them keeps both training and the saved weights fast on every CPU.
        enable_flush_to_zero()
        # ``train.device`` ("cpu" or "cuda") where the config has it; the CPU otherwise.
        device_name = str(getattr(cfg.train, "device", "cpu") or "cpu")
        if device_name == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device: cuda asked for, but torch sees no CUDA device here (use cpu)")
        self.dist = distributed if distributed is not None else init_from_environment(torch.device(device_name))
        if device_name == "cuda" and self.dist.is_distributed:
            device_name = f"cuda:{self.dist.local_rank}"
            torch.cuda.set_device(device_name)
        self.device = torch.device(device_name)
        if cfg.train.batch_size < self.dist.world_size:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} is smaller than the "
                              f"{self.dist.world_size} processes that share each batch")
        self.scheme = get_scheme(cfg.data.scheme)
        self.tasks = tasks_by_name(cfg.data.tasks)
        self.task_names = tuple(t.name for t in self.tasks)

        if faces is None:
            train_faces, val_faces = split_faces(read_annotations(cfg.data.train), cfg.data)
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
        self._init_auxiliary(auxiliary_faces)

        torch.manual_seed(cfg.train.seed)
        self.model = initial_network(cfg, self.task_names).to(self.device)
        with torch.no_grad():  # weights loaded from older checkpoints may hold denormals
            flushed, _ = flush_state_dict(self.model.state_dict())
            self.model.load_state_dict(flushed)
        # objective.distillation_teacher's frozen network; its answers join each training batch.
        self.teacher = distillation_teacher(cfg)
        if self.teacher is not None:
            self.teacher = self.teacher.to(self.device)
        # The forward pass SGD runs through: the model itself, or its DDP wrapper that averages gradients.
        self.ddp: DistributedDataParallel | None = None
        if self.dist.is_distributed:
            # Zero-size heads (no attribute tasks) and terms switched off leave parameters without gradient.
            unused = any(p.numel() == 0 for p in self.model.parameters()) or not cfg.objective.use_covariance
            self.ddp = DistributedDataParallel(self.model, find_unused_parameters=unused)
        params = list(self.model.parameters())
        if cfg.train.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.train.learning_rate)
        else:
            self.optimizer = torch.optim.SGD(params, lr=cfg.train.learning_rate, momentum=0.9, nesterov=True)
        self.covariance = TaskCovariance(2 * self.model.num_points + len(self.tasks), cfg.objective.covariance_ridge)
        self.coefficients = TaskCoefficients(cfg.multitask, len(self.tasks))
        # The un-augmented training faces the early-stopping criterion's training error is measured on;
        # evenly spaced over the split so the subset does not depend on any random state.
        self.coefficient_train_set: FaceDataset | None = None
        if self.coefficients.train_loss_source == UNAUGMENTED_TRAIN_FACES:
            count = min(cfg.multitask.early_stop_train_faces, len(train_faces))
            chosen = np.unique(np.linspace(0, len(train_faces) - 1, count).round().astype(int))
            self.coefficient_train_set = FaceDataset([train_faces[i] for i in chosen], self.tasks, size, "gt")
            self.coefficient_train_set.preload()
        # Uniform running average of the epoch-end weights (train.weight_averaging_from); no batch-norm
        # layers, so the averaged weights need no statistics pass.
        self.averaged: AveragedModel | None = None
        if cfg.train.weight_averaging_from:
            self.averaged = AveragedModel(self.model)
        self.rng = np.random.default_rng(cfg.train.seed)
        self.epoch = 0
        self.step = 0
        self.step_in_epoch = 0
        self.epoch_order: np.ndarray | None = None
        self.period_sums = np.zeros(len(self.tasks) + 1)  # running train losses since last evaluation
        self.period_count = 0
        self.period_auxiliary = 0.0  # running auxiliary term since last evaluation (over the same batches)
        self.best_val_nme = math.inf
        self.history: list[dict[str, Any]] = []
        # The batch of the latest SGD step: what the gradient norms at an evaluation point are measured on.
        self.last_batch: dict[str, torch.Tensor] | None = None
        self.last_good_checkpoint: tuple[Path, int] | None = None  # (file, step) a fault falls back to

    def _init_auxiliary(self, auxiliary_faces: tuple[list, list] | None) -> None:
        """The auxiliary faces' datasets, their derivation matrix and how many join each step (none by default)."""
        cfg = self.cfg
        self.auxiliary_train_set: FaceDataset | None = None
        self.auxiliary_val_set: FaceDataset | None = None
        self.auxiliary_matrix: np.ndarray | None = None  # (Q, P)
        self.auxiliary_derivation: torch.Tensor | None = None  # the same, float32 on the device
        self.auxiliary_per_step = 0
        if auxiliary_faces is None and cfg.data.auxiliary_train:
            auxiliary_faces = split_auxiliary_faces(read_annotations(cfg.data.auxiliary_train), cfg.data)
        if auxiliary_faces is None:
            return
        train_faces, val_faces = auxiliary_faces
        if not train_faces:
            raise ConfigError("data.auxiliary_train: no auxiliary training faces")
        schemes = {f.scheme.name for f in (*train_faces, *val_faces)}
        if len(schemes) != 1:
            raise ConfigError(f"data.auxiliary_train: faces mix landmark schemes {sorted(schemes)}")
        try:
            self.auxiliary_matrix = derivation_matrix(self.scheme, train_faces[0].scheme)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"data.auxiliary_train: {exc.args[0]}") from None
        size = cfg.model.input_size
        self.auxiliary_train_set = FaceDataset(train_faces, (), size, "gt")
        self.auxiliary_train_set.preload()
        if val_faces:
            count = min(AUXILIARY_VALIDATION_FACES, len(val_faces))
            chosen = np.unique(np.linspace(0, len(val_faces) - 1, count).round().astype(int))
            self.auxiliary_val_set = FaceDataset([val_faces[i] for i in chosen], (), size, "gt")
            self.auxiliary_val_set.preload()
        self.auxiliary_derivation = torch.from_numpy(self.auxiliary_matrix).float().to(self.device)
        fraction = cfg.data.auxiliary_fraction
        self.auxiliary_per_step = max(1, round(cfg.train.batch_size * fraction / (1 - fraction)))

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

    # ---- batches ------------------------------------------------------------------------------
    def training_batch(self, global_indices: np.ndarray) -> tuple[dict[str, torch.Tensor], float]:
        """This rank's slice of one global batch, augmented, and the slice's share of the global batch.

        Augmentation parameters are drawn for the whole global batch on every rank, in the order a single
        process draws them (``FaceDataset.batch``), so the random state stays the same on all ranks and a
        run on N processes sees the crops a single-process run sees.

        With auxiliary faces, their indices and augmentations are drawn next, for the whole step, and this
        rank takes its slice of them too (``auxiliary_images``, ``auxiliary_landmarks``,
        ``auxiliary_interocular``). With a distillation teacher, its answers on this rank's crops join the
        batch (``teacher_landmarks``).
        """
        params = [draw_params(self.cfg.augment, self.rng) for _ in global_indices]
        start, stop = self.dist.shard(len(global_indices))
        batch = self.train_set.stack(global_indices[start:stop], params[start:stop])
        if self.auxiliary_train_set is not None:
            chosen = self.rng.integers(0, len(self.auxiliary_train_set), size=self.auxiliary_per_step)
            aux_params = [draw_params(self.cfg.augment, self.rng) for _ in chosen]
            first, last = self.dist.shard(len(chosen))
            part = self.auxiliary_train_set.stack(chosen[first:last], aux_params[first:last])
            batch.update(auxiliary_images=part["images"], auxiliary_landmarks=part["landmarks"],
                         auxiliary_interocular=part["interocular"])
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.teacher is not None:
            batch["teacher_landmarks"] = self.teacher(batch["images"])  # (B, P, 2)
        return batch, (stop - start) / len(global_indices)

    # ---- the three steps ----------------------------------------------------------------------
    def sgd_step(self, batch: dict[str, torch.Tensor], share: float = 1.0) -> dict[str, float]:
        """Step 1: fix Upsilon and lambda, descend E on filters and W.

        ``share``: this rank's fraction of the global batch (1 on a single process). The loss is scaled
        by ``share * world_size`` so that DDP's gradient average is the gradient of the global-batch mean
        even when the slices differ in size.
        """
        cfg = self.cfg
        lr = learning_rate_at(self.step, self.total_steps, cfg.train.warmup_epochs * self.steps_per_epoch,
                              cfg.train.learning_rate, cfg.train.min_learning_rate)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        cov_inv = self.covariance.inverse().float().to(self.device) if cfg.objective.use_covariance else None
        network = self.model if self.ddp is None else DataParallelView(self.ddp)
        coefficients = self.coefficients.tensor().to(self.device)
        terms = tcdcn_objective(network, batch, coefficients, cov_inv, cfg.objective,  # type: ignore[arg-type]
                                self.auxiliary_derivation)
        total = terms["total"]
        # [landmark loss, per-task losses (T), auxiliary term, total] of this batch: over ranks, the global-batch
        # means (exact for the auxiliary term when every rank holds the same share of both kinds of faces).
        auxiliary = terms["auxiliary"].item() if "auxiliary" in terms else 0.0
        batch_losses = np.concatenate([[terms["landmarks"].item()], terms["task_losses"].cpu().numpy(),
                                       [auxiliary, total.item()]])
        if self.dist.is_distributed:
            batch_losses = self.dist.all_reduce_sum(batch_losses * share)
        # Decided on the reduced loss, so all ranks stop together instead of leaving the others waiting.
        if not np.isfinite(batch_losses[-1]):
            raise NonFiniteLossError(f"non-finite loss at epoch {self.epoch + 1}, step {self.step}; "
                                     f"{self._fallback()} (lower train.learning_rate?)")
        self.last_batch = batch
        self.optimizer.zero_grad(set_to_none=True)
        (total * (share * self.dist.world_size) if self.dist.is_distributed else total).backward()
        self.optimizer.step()
        self.step += 1
        self.period_sums += batch_losses[:-2]
        self.period_auxiliary += float(batch_losses[-2])
        self.period_count += 1
        out = {k: float(v.detach()) for k, v in terms.items() if v.ndim == 0}
        out["landmarks"], out["total"] = float(batch_losses[0]), float(batch_losses[-1])
        if "auxiliary" in terms:
            out["auxiliary"] = float(batch_losses[-2])
        out["lr"] = lr
        return out

    def update_covariance(self) -> None:
        """Step 2: Eq. 12."""
        if self.cfg.objective.use_covariance:
            self.covariance.update(self.model.head_weight().detach().cpu())

    def coefficient_train_losses(self) -> np.ndarray:
        """(T,) the training losses the coefficient rule reads: the mean over this period's augmented batches,
        or, for early stopping, the current model's losses on the un-augmented training subset."""
        if self.coefficient_train_set is not None:
            return self.evaluate(self.coefficient_train_set).task_losses
        return self.period_sums[1:] / max(1, self.period_count)

    def update_coefficients(self, val: EvalResult, train_task: np.ndarray | None = None) -> np.ndarray:
        """Step 3: Eq. 13-14 (or early stopping) from training and validation task losses; ``train_task``
        defaults to ``coefficient_train_losses()``."""
        if train_task is None:
            train_task = self.coefficient_train_losses()
        return self.coefficients.update(train_task, val.task_losses)

    def gradient_norms(self, batch: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
        """{"shared" | "landmark_head": {term: L2 norm of the weighted term's gradient}} on ``batch``, with the
        current Upsilon and lambda; parameters, ``.grad`` and the optimiser are left as they are."""
        cfg = self.cfg
        self.model.train()
        cov_inv = self.covariance.inverse().float().to(self.device) if cfg.objective.use_covariance else None
        terms = tcdcn_objective(self.model, batch, self.coefficients.tensor().to(self.device), cov_inv,
                                cfg.objective, self.auxiliary_derivation)
        groups = {"shared": self.model.shared_parameters(),
                  "landmark_head": list(self.model.landmark_head.parameters())}
        return term_gradient_norms(terms, cfg.objective, groups)

    # ---- evaluation ---------------------------------------------------------------------------
    @property
    def task_covariance(self) -> torch.Tensor:
        """Upsilon (M+T, M+T) as the last step 2 left it."""
        return self.covariance.matrix

    def evaluate(self, dataset: FaceDataset, batch_size: int = 512, model: torch.nn.Module | None = None) -> EvalResult:
        """Losses and NME of ``model`` (the one being trained by default) on ``dataset``; under torchrun
        each rank scores its slice and the sums are shared."""
        return score_on(self.model if model is None else model, dataset, self.scheme, len(self.tasks), self.dist,
                        self.device, batch_size)

    def evaluate_auxiliary(self, dataset: FaceDataset | None = None) -> float:
        """NME of the derived points on auxiliary faces (the auxiliary validation faces by default)."""
        dataset = self.auxiliary_val_set if dataset is None else dataset
        if dataset is None or self.auxiliary_matrix is None:
            raise ValueError("no auxiliary faces to score")
        return derived_error_on(self.model, dataset, self.auxiliary_matrix, self.dist, self.device)

    # ---- loop ---------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs``; under torchrun, leaves the process group when done."""
        cfg = self.cfg
        if self.dist.is_main:
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
                batch, share = self.training_batch(idx)
                terms = self.sgd_step(batch, share)
                self.step_in_epoch += 1
                if self.step % cfg.multitask.covariance_interval == 0:
                    self.update_covariance()
                if self.step_in_epoch in eval_steps:
                    self._evaluation_point(terms, time.time() - epoch_start)
                # The epoch-end checkpoint below covers the last step of the epoch.
                if (cfg.train.checkpoint_every_steps and self.step % cfg.train.checkpoint_every_steps == 0
                        and self.step_in_epoch < self.steps_per_epoch):
                    self.save_checkpoint(self.out_dir / "last.pt")
            self.epoch += 1
            self.epoch_order = None
            self.step_in_epoch = 0
            if self.averaged is not None and self.epoch >= cfg.train.weight_averaging_from:
                self.average_weights()
            self.save_checkpoint(self.out_dir / "last.pt")
        summary = {
            "best_val_nme": self.best_val_nme,
            "averaged_val_nme": self.history[-1].get("averaged_val_nme") if self.history else None,
            "epochs": self.epoch,
            "seconds_this_run": time.time() - started,
            # Per task: coefficient updates that left lambda at eps, at its ceiling, at 0 (halted).
            "task_coefficient_counts": dict(zip(self.task_names, self.coefficients.bound_counts())),
        }
        self.dist.barrier()
        self.dist.shutdown()
        return summary

    def check_ranks_agree(self) -> None:
        """Raise ``DistributedError`` unless every rank holds the same Upsilon, lambda and parameters."""
        if not self.dist.is_distributed:
            return
        self.dist.assert_same("task covariance", self.task_covariance, RANK_AGREEMENT_TOLERANCE)
        self.dist.assert_same("task coefficients", self.coefficients.values, RANK_AGREEMENT_TOLERANCE)
        self.dist.assert_same("parameters", parameter_fingerprint(self.model), PARAMETER_AGREEMENT_TOLERANCE)

    def _evaluation_point(self, last_terms: dict[str, float], seconds: float) -> None:
        # Measured before step 3, with the lambda the period's SGD steps descended on.
        norms = self.gradient_norms(self.last_batch) if self.last_batch is not None else None
        val = self.evaluate(self.val_set)
        train_task = self.period_sums / max(1, self.period_count)
        coefficient_train = self.coefficient_train_losses()
        coefficients = self.update_coefficients(val, coefficient_train)
        self.check_ranks_agree()
        record = {
            "epoch": self.epoch + self.step_in_epoch / self.steps_per_epoch,
            "step": self.step,
            "train_landmark_loss": float(train_task[0]),
            "train_task_losses": dict(zip(self.task_names, train_task[1:].tolist())),
            "val_landmark_loss": val.landmark_loss,
            "val_task_losses": dict(zip(self.task_names, val.task_losses.tolist())),
            "val_nme": val.nme,
            "task_coefficients": dict(zip(self.task_names, coefficients.tolist())),
            # The training losses step 3 read, and where from (task_coefficients.CoefficientRule).
            "coefficient_train_task_losses": dict(zip(self.task_names, np.asarray(coefficient_train).tolist())),
            "coefficient_train_loss_source": self.coefficients.train_loss_source,
            "gradient_norms": norms,
            "lr": last_terms.get("lr"),
            "seconds": seconds,
        }
        if self.auxiliary_train_set is not None:
            record["train_auxiliary_loss"] = self.period_auxiliary / max(1, self.period_count)
            if self.auxiliary_val_set is not None:
                record["val_auxiliary_nme"] = self.evaluate_auxiliary()
        self.period_sums[:] = 0
        self.period_auxiliary = 0.0
        self.period_count = 0
        self.history.append(record)
        improved = val.nme < self.best_val_nme
        if improved:
            self.best_val_nme = val.nme
        if not self.dist.is_main:
            return
        self._write_history()
        if improved:
            atomic_save(self.weights(), self.out_dir / "best.pt")
        coeffs = " ".join(f"{n}={c:.2f}" for n, c in zip(self.task_names, coefficients))
        tasks = " ".join(f"{n}={v:.3f}" for n, v in zip(self.task_names, train_task[1:]))
        auxiliary = ""
        if "train_auxiliary_loss" in record:
            auxiliary = f" | aux train {record['train_auxiliary_loss']:.4f}"
            if "val_auxiliary_nme" in record:
                auxiliary += f" val nme {100 * record['val_auxiliary_nme']:.2f}%"
        log.info("epoch %.2f step %d | train lm %.4f %s | val lm %.4f nme %.2f%%%s | lambda %s | %.1fs",
                 record["epoch"], self.step, train_task[0], tasks, val.landmark_loss, 100 * val.nme, auxiliary,
                 coeffs, seconds)
        if self.on_epoch is not None:
            self.on_epoch(record)

    def average_weights(self) -> None:
        """Fold the epoch-end weights into the running average, score it, write RUN/averaged.pt."""
        assert self.averaged is not None
        self.averaged.update_parameters(self.model)
        val = self.evaluate(self.val_set, model=self.averaged.module)
        count = int(self.averaged.n_averaged.item())
        if self.history:  # the epoch's last evaluation point
            self.history[-1].update({"averaged_val_nme": val.nme, "averaged_epochs": count})
        if not self.dist.is_main:
            return
        self._write_history()
        payload = weights_payload(self.averaged.module, self.cfg, self.scheme, self.task_names)  # type: ignore[arg-type]
        payload["averaged_epochs"] = count
        atomic_save(payload, self.out_dir / "averaged.pt")
        log.info("epoch %d | averaged weights of %d epochs: val nme %.2f%%", self.epoch, count, 100 * val.nme)

    def _write_history(self) -> None:
        # Rewritten whole, so a resumed run never repeats the lines logged after its checkpoint; replaced
        # atomically, so a kill while writing leaves the previous complete file.
        atomic_write_text(self.out_dir / "history.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))

    # ---- state --------------------------------------------------------------------------------
    def weights(self) -> dict[str, Any]:
        payload = weights_payload(self.model, self.cfg, self.scheme, self.task_names)
        payload["task_covariance"] = self.task_covariance.clone()
        payload["task_coefficients"] = self.coefficients.state_dict()
        payload["best_val_nme"] = self.best_val_nme
        return payload

    def save_checkpoint(self, path: Path) -> None:
        """Atomically write the full training state (rank 0 only); never a state with non-finite weights."""
        # Checked on every rank (they hold the same parameters), so all of them stop together.
        bad = [name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteLossError(f"non-finite parameter {bad[0]} at epoch {self.epoch + 1}, step {self.step}; "
                                     f"{self._fallback()} (lower train.learning_rate?)")
        self.last_good_checkpoint = (path, self.step)
        if not self.dist.is_main:
            return
        state = self.weights()
        state.update({
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "epoch_order": None if self.epoch_order is None else torch.from_numpy(self.epoch_order.copy()),
            "period_sums": torch.from_numpy(self.period_sums.copy()),
            "period_count": self.period_count,
            "period_auxiliary": self.period_auxiliary,
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
        })
        if self.averaged is not None:
            state["averaged_model"] = self.averaged.state_dict()  # averaged weights and their count
        atomic_save(state, path)

    def _fallback(self) -> str:
        """Where a stopped run can resume from, for error messages."""
        if self.last_good_checkpoint is None:
            return "no checkpoint written yet"
        path, step = self.last_good_checkpoint
        return f"last good checkpoint kept: {path} (step {step})"

    def resume(self, path: str | Path) -> None:
        """Restore the full training state; under torchrun every rank reads the same file."""
        state = read_checkpoint(path)
        if config_to_dict(self.cfg)["model"] != state["config"]["model"]:
            raise CheckpointError(f"{path}: checkpoint's model config differs from the one given")
        if "optimizer" not in state:
            raise CheckpointError(f"{path}: a weights file, not a training checkpoint (no optimiser state)")
        saved_train = state["config"].get("train", {})
        if saved_train.get("optimizer", self.cfg.train.optimizer) != self.cfg.train.optimizer:
            raise CheckpointError(f"{path}: made with train.optimizer={saved_train['optimizer']}, "
                                  f"not {self.cfg.train.optimizer}")
        if saved_train.get("batch_size", self.cfg.train.batch_size) != self.cfg.train.batch_size:
            # The saved position in the epoch counts batches of the old size.
            log.warning("%s: train.batch_size changed from %s to %d; the resumed epoch skips or repeats faces",
                        path, saved_train["batch_size"], self.cfg.train.batch_size)
        try:
            # Check on a copy first: load_state_dict copies the tensors that fit before it raises, so a
            # refused checkpoint would otherwise leave a partly overwritten model.
            copy.deepcopy(self.model).load_state_dict(state["model"], strict=True)
            self.model.load_state_dict(state["model"], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not fit the model ({str(exc).splitlines()[0]})") from None
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: optimiser state does not fit ({exc})") from None
        self.covariance.matrix = state["task_covariance"].to(torch.float64)
        self.coefficients.load_state_dict(state["task_coefficients"])
        self.best_val_nme = float(state["best_val_nme"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.step_in_epoch = int(state["step_in_epoch"])
        order = state["epoch_order"]
        self.epoch_order = None if order is None else order.numpy()
        self.period_sums = state["period_sums"].numpy().copy()
        self.period_count = int(state["period_count"])
        self.period_auxiliary = float(state.get("period_auxiliary", 0.0))  # absent before auxiliary faces
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        self.history = list(state["history"])
        if self.averaged is not None:
            if "averaged_model" in state:
                self.averaged.load_state_dict(state["averaged_model"])
            elif int(state["epoch"]) >= self.cfg.train.weight_averaging_from:
                raise CheckpointError(f"{path}: train.weight_averaging_from={self.cfg.train.weight_averaging_from} "
                                      f"but the checkpoint, at epoch {state['epoch']}, holds no averaged weights")
        self.last_good_checkpoint = (Path(path), self.step)
        if self.dist.is_main:
            log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)
