"""Checkpoints and shipped weight files: atomic writes, strict, checked loads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .attributes import tasks_by_name
from .config import Config, ConfigError, config_from_dict, config_to_dict
from .denormals import flush_state_dict
from .errors import CheckpointError
from .model import TCDCN
from .schemes import LandmarkScheme, get_scheme


def atomic_save(obj: Any, path: str | Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``.

    A crash or a full disk during the write leaves the previous file untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt archives
        raise CheckpointError(f"{p}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{p}: not a tcdcn checkpoint (missing 'model' or 'config')")
    return state


def model_from_state(state: dict[str, Any], source: str) -> tuple[TCDCN, Config, LandmarkScheme, tuple[str, ...]]:
    """Rebuild the model a checkpoint describes and load its weights strictly."""
    try:
        cfg = config_from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{source}: bad config inside checkpoint ({exc})") from None
    task_names = tuple(state.get("tasks", cfg.data.tasks))
    scheme = get_scheme(state.get("scheme", cfg.data.scheme))
    model = TCDCN(cfg.model, len(tasks_by_name(task_names)))
    # Denormal weights (older checkpoints, other trainers) change no output but slow some CPUs many times.
    weights, _ = flush_state_dict(state["model"])
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{source}: weights do not fit the model shape ({' '.join(first[:2])[:200]})") from None
    model.eval()
    return model, cfg, scheme, task_names


def weights_payload(model: TCDCN, cfg: Config, scheme: LandmarkScheme, task_names: tuple[str, ...]) -> dict[str, Any]:
    weights, _ = flush_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})
    return {
        "model": weights,
        "config": config_to_dict(cfg),
        "scheme": scheme.name,
        "tasks": list(task_names),
    }
