"""Starting a run from a trained model (``train.init_from``): the paper's transfer of filters (Sec. 3.4); and the
trained model a run learns from (``objective.distillation_teacher``).

``train.init_layers: all`` copies the conv filters and the shared fully connected layer and swaps the heads
that do not fit (a landmark head for another number of points, an attribute head for other tasks);
``features`` copies the conv filters only, so the crop size and the representation may differ; the
network may also be wider than the source (as many or more filters per layer): the source's filters fill
each layer's leading channels, reading only the source's channels of the layer below (their weights on the
added input channels start at zero), so those channels compute the source's features at the start and the
added filters start fresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..errors import CheckpointError
from ..models.checkpoint import landmark_shift_from_state, model_from_state, read_checkpoint
from ..models.network import TCDCN, FactoredConv2d
from ..models.registry import resolve_weights_file


def load_pretrained(source: str) -> dict[str, Any]:
    """A checkpoint path or a shipped model name -> its state dict (model, config, scheme, tasks)."""
    return read_checkpoint(resolve_weights_file(source))


def initial_network(cfg: Config, task_names: Sequence[str]) -> TCDCN:
    """The network a run starts from: fresh, or ``train.init_from``'s weights by ``train.init_layers``."""
    if not cfg.train.init_from:
        return TCDCN(cfg.model, len(task_names))
    state = load_pretrained(cfg.train.init_from)
    model, src_cfg, _scheme, src_tasks = model_from_state(state, cfg.train.init_from)
    if cfg.train.init_layers == "features":
        # Conv filters only: they do not depend on the crop size, fc and heads do.
        source_channels, channels = tuple(src_cfg.model.channels), tuple(cfg.model.channels)
        if tuple(src_cfg.model.kernels) != tuple(cfg.model.kernels):
            raise CheckpointError(f"{cfg.train.init_from}: model.kernels differs from this config's")
        if len(source_channels) != len(channels) or any(c < s for c, s in zip(channels, source_channels)):
            raise CheckpointError(f"{cfg.train.init_from}: model.channels {list(source_channels)} cannot fill "
                                  f"this config's {list(channels)} (same layers, as many or more filters each)")
        fresh = TCDCN(cfg.model, len(task_names))
        try:
            copy_filters_into_leading_channels(model, fresh)
        except CheckpointError as exc:
            raise CheckpointError(f"{cfg.train.init_from}: train.init_layers: features: {exc}") from None
        fresh.train()
        return fresh
    for key in ("input_size", "channels", "kernels", "feature_dim", "factor_ranks"):
        if _shape_value(src_cfg.model, key) != _shape_value(cfg.model, key):
            raise CheckpointError(f"{cfg.train.init_from}: model.{key} differs from this config's "
                                  "(train.init_layers: features copies the conv filters only)")
    if model.num_points != cfg.model.num_points:
        model.reset_landmark_head(cfg.model.num_points)
    if tuple(src_tasks) != tuple(task_names):
        model.reset_attribute_head(len(task_names))
    model.config = cfg.model
    model.train()
    return model


def _shape_value(model_cfg: Any, key: str) -> Any:
    """A model key as compared between a source and a run: no factor ranks means rank 0 for every layer."""
    value = getattr(model_cfg, key)
    if key == "factor_ranks":
        return tuple(value) or (0,) * len(model_cfg.channels)
    return tuple(value) if isinstance(value, tuple | list) else value


def copy_filters_into_leading_channels(source: TCDCN, target: TCDCN) -> None:
    """``source``'s conv filters into the leading output channels of ``target``'s (as wide or wider) layers.

    A copied filter's weights on the target's added input channels are set to zero, so the leading channels
    of every layer compute exactly the source's features; equal widths copy the layers whole. A factored
    source layer (``FactoredConv2d``) is copied as the full filters it computes into a full target layer, and
    part by part into a factored target layer of the same shape (rank and widths)."""
    source_convs = [m for m in source.features if isinstance(m, torch.nn.Conv2d | FactoredConv2d)]
    target_convs = [m for m in target.features if isinstance(m, torch.nn.Conv2d | FactoredConv2d)]
    with torch.no_grad():
        for src, dst in zip(source_convs, target_convs):
            if isinstance(dst, FactoredConv2d):  # the source's factored layer of the same shape, part by part
                if not isinstance(src, FactoredConv2d) or src.vertical.weight.shape != dst.vertical.weight.shape \
                        or src.horizontal.weight.shape != dst.horizontal.weight.shape:
                    raise CheckpointError("a factored layer (model.factor_ranks) is filled only from a factored "
                                          "layer of the same rank and widths")
                dst.vertical.weight.copy_(src.vertical.weight)
                dst.horizontal.weight.copy_(src.horizontal.weight)
                dst.horizontal.bias.copy_(src.horizontal.bias)
                continue
            weight = src.full_weight() if isinstance(src, FactoredConv2d) else src.weight  # (C_out, C_in, k, k)
            bias = src.horizontal.bias if isinstance(src, FactoredConv2d) else src.bias
            out_channels, in_channels = weight.shape[:2]
            dst.weight[:out_channels].zero_()
            dst.weight[:out_channels, :in_channels] = weight
            dst.bias[:out_channels] = bias


class DistillationTeacher:
    """A trained landmark network, frozen, whose answers are a second landmark target (``__call__``).

    Its answer on a crop is the mean of its answers on the crop and on the crop's mirror image (the latter
    reflected back, points swapped with their mirror partners), less the mirror calibration folded into its
    head: the labels' own convention, the one a network trained on the labels learns. A calibrated teacher's
    single answers would carry its calibration into the student, reflected on every mirrored training crop.
    """

    def __init__(self, network: TCDCN, flip_index: np.ndarray, shift: np.ndarray | None) -> None:
        self.network = network
        self.flip_index = torch.as_tensor(flip_index, dtype=torch.long)
        # The calibration shift b (P, 2), as in the pipeline: the mirrored pass carries the partner's b
        # reflected, so the average holds (b + reflected partner b) / 2, which is subtracted.
        if shift is None:
            shift = np.zeros((network.num_points, 2))
        held = (shift + shift[flip_index] * np.array([-1.0, 1.0])) / 2  # (P, 2)
        self.held_shift = torch.as_tensor(held, dtype=torch.float32)

    def to(self, device: torch.device) -> DistillationTeacher:
        self.network.to(device)
        self.flip_index = self.flip_index.to(device)
        self.held_shift = self.held_shift.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) crops -> (B, P, 2) normalised landmarks."""
        both, _ = self.network(torch.cat([images, images.flip(-1)]))  # (2B, P, 2)
        plain, mirrored = both[: len(images)], both[len(images):]
        reflected = mirrored[:, self.flip_index] * torch.tensor([-1.0, 1.0], device=mirrored.device)  # (B, P, 2)
        return (plain + reflected) / 2 - self.held_shift


def distillation_teacher(cfg: Config) -> DistillationTeacher | None:
    """``objective.distillation_teacher``'s network, frozen in eval mode, or None when the config names none.

    The teacher sees the student's crops, so its crop size and point count must be the config's.
    """
    source = cfg.objective.distillation_teacher
    if not source:
        return None
    state = load_pretrained(source)
    teacher, teacher_cfg, scheme, _tasks = model_from_state(state, source)
    if teacher_cfg.model.input_size != cfg.model.input_size or teacher.num_points != cfg.model.num_points:
        raise CheckpointError(f"{source}: a distillation teacher needs this config's crop size and points "
                              f"({cfg.model.input_size} px, {cfg.model.num_points} points), not "
                              f"{teacher_cfg.model.input_size} px and {teacher.num_points} points")
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return DistillationTeacher(teacher, np.asarray(scheme.flip_index),
                               landmark_shift_from_state(state, teacher.num_points))
