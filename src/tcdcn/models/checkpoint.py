"""Checkpoints and shipped weight files: atomic writes, strict, checked loads.

Every file written by ``atomic_save`` carries ``content_sha256``, a digest of everything else in it
(tensor bytes, numbers, strings), which ``read_checkpoint`` verifies: a file with a damaged stretch that
torch still unpickles is refused instead of being trained on or run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attributes import tasks_by_name
from ..config import Config, ConfigError, config_from_dict, config_to_dict
from ..errors import CheckpointError
from ..io.atomic import atomic_write_with
from ..schemes import LandmarkScheme, get_scheme
from .denormals import flush_state_dict
from .network import TCDCN

CHECKSUM_KEY = "content_sha256"


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` to ``digest`` in a fixed order: dict keys sorted, tensors by dtype, shape and bytes."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:  # numbers, strings, None, bools: repr is exact for floats
        digest.update(f"V{type(value).__name__}:{value!r}".encode())


def content_digest(state: dict[str, Any]) -> str:
    """sha256 over a checkpoint's contents, ``content_sha256`` itself left out."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return digest.hexdigest()


def atomic_save(obj: Any, path: str | Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``.

    A crash or a full disk during the write leaves the previous file untouched. A dict is written with
    its ``content_sha256`` (``content_digest``), which ``read_checkpoint`` verifies.
    """
    if isinstance(obj, dict):
        obj = {**obj, CHECKSUM_KEY: content_digest(obj)}
    atomic_write_with(path, lambda fh: torch.save(obj, fh), mkdir=True)


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
    expected = state.pop(CHECKSUM_KEY, None)
    if expected is not None and content_digest(state) != expected:
        raise CheckpointError(f"{p}: damaged checkpoint (its contents do not match the checksum it was written "
                              "with); use another copy, e.g. RUN/best.pt or an earlier RUN/last.pt")
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


def landmark_shift_from_state(state: dict, num_points: int) -> np.ndarray | None:
    """The (P, 2) normalised shift a mirror calibration folded into the head (``-offset_x`` in x), or None."""
    record = state.get("mirror_calibration")
    if not record:
        return None
    offset_x = np.asarray(record["offset_x"], dtype=np.float64)
    if offset_x.shape != (num_points,):
        raise CheckpointError(f"mirror_calibration has {offset_x.size} offsets for {num_points} points")
    return np.stack([-offset_x, np.zeros_like(offset_x)], axis=1)
