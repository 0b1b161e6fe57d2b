"""The torch backend: a trained checkpoint run with torch on the CPU.

``LandmarkModel.predict(images, boxes)`` (crops from boxes, network, landmarks back in image pixels;
shared with the ONNX backend through ``pipeline.CropLandmarkModel``) is the one path used by evaluation,
the CLI and the Python API, so all of them share the face-box convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ...config import Config
from ...models.checkpoint import landmark_shift_from_state, model_from_state, read_checkpoint
from ...models.denormals import enable_flush_to_zero
from ...models.network import TCDCN
from ...models.registry import apply_test_time_defaults, resolve_weights_file
from ...schemes import LandmarkScheme
from ..pipeline import CropLandmarkModel


class LandmarkModel(CropLandmarkModel):
    """A trained TCDCN with its scheme, tasks and crop size, on the CPU with torch."""

    def __init__(self, network: TCDCN, cfg: Config, scheme: LandmarkScheme, task_names: Sequence[str],
                 source: str = "") -> None:
        self.network = network.eval()
        self.cfg = cfg
        self.scheme = scheme
        self.task_names = tuple(task_names)
        self.input_size = cfg.model.input_size
        self.source = source

    @classmethod
    def load(cls, name_or_path: str | Path) -> LandmarkModel:
        path = resolve_weights_file(str(name_or_path))
        enable_flush_to_zero()  # denormal activations slow some x86 CPUs many times (tcdcn.models.denormals)
        state = read_checkpoint(path)
        network, cfg, scheme, tasks = model_from_state(state, str(name_or_path))
        model = cls(network, cfg, scheme, tasks, str(name_or_path))
        model.landmark_shift = landmark_shift_from_state(state, scheme.num_points)
        apply_test_time_defaults(model, name_or_path, cfg)
        return model

    def describe_backend(self) -> str:
        return "torch"

    def run_network(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,1,S,S) crops -> normalised landmarks (N,P,2) and attribute logits (N,T)."""
        # Again per call: an onnxruntime session built since (another library's, say) may have switched the
        # thread's flush-to-zero off (tcdcn.models.denormals.cpu_session_options); the call costs well under
        # a microsecond.
        enable_flush_to_zero()
        with torch.inference_mode():
            landmarks, logits = self.network(torch.from_numpy(crops))
        return landmarks.numpy(), logits.numpy()
