"""Starting a run from a trained model (``train.init_from``): the paper's transfer of filters (Sec. 3.4).

``train.init_layers: all`` copies the conv filters and the shared fully connected layer and swaps the heads
that do not fit (a landmark head for another number of points, an attribute head for other tasks);
``features`` copies the conv filters only, so the crop size and the representation may differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import Config
from ..errors import CheckpointError
from ..models.checkpoint import model_from_state, read_checkpoint
from ..models.network import TCDCN
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
        for key in ("channels", "kernels"):
            if getattr(src_cfg.model, key) != getattr(cfg.model, key):
                raise CheckpointError(f"{cfg.train.init_from}: model.{key} differs from this config's")
        fresh = TCDCN(cfg.model, len(task_names))
        fresh.features.load_state_dict(model.features.state_dict())
        fresh.train()
        return fresh
    for key in ("input_size", "channels", "kernels", "feature_dim"):
        if getattr(src_cfg.model, key) != getattr(cfg.model, key):
            raise CheckpointError(f"{cfg.train.init_from}: model.{key} differs from this config's "
                                  "(train.init_layers: features copies the conv filters only)")
    if model.num_points != cfg.model.num_points:
        model.reset_landmark_head(cfg.model.num_points)
    if tuple(src_tasks) != tuple(task_names):
        model.reset_attribute_head(len(task_names))
    model.config = cfg.model
    model.train()
    return model
