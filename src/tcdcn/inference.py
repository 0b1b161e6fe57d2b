"""Running a trained model on faces: crops from boxes, network, landmarks back in image pixels.

``LandmarkModel`` is the network with its preprocessing; ``predict(images, boxes)`` is the one path
used by evaluation, the CLI and the Python API, so all of them share the face-box convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import model_from_state, read_checkpoint
from .config import Config
from .data.transforms import make_crop
from .geometry import Box, apply_affine, from_normalised, invert_affine
from .model import TCDCN
from .schemes import LandmarkScheme
from .weights import resolve_weights_file


@dataclass
class Prediction:
    landmarks: np.ndarray  # (N, P, 2) image pixels
    attribute_probabilities: np.ndarray  # (N, T)


class LandmarkModel:
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
        network, cfg, scheme, tasks = model_from_state(read_checkpoint(path), str(name_or_path))
        return cls(network, cfg, scheme, tasks, str(name_or_path))

    def crops(self, grey_images: Sequence[np.ndarray], boxes: Sequence[Box]) -> tuple[np.ndarray, np.ndarray]:
        """(N, 1, S, S) float32 crops and (N, 2, 3) crop->image matrices."""
        crops, inverses = [], []
        for image, box in zip(grey_images, boxes, strict=True):
            crop, _, matrix = make_crop(image, box, self.input_size)
            crops.append(crop)
            inverses.append(invert_affine(matrix))
        return np.stack(crops)[:, None], np.stack(inverses)

    def run_network(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,1,S,S) crops -> normalised landmarks (N,P,2) and attribute logits (N,T)."""
        with torch.inference_mode():
            landmarks, logits = self.network(torch.from_numpy(crops))
        return landmarks.numpy(), logits.numpy()

    def predict(self, grey_images: Sequence[np.ndarray], boxes: Sequence[Box], batch_size: int = 256) -> Prediction:
        """Landmarks in image pixels and attribute probabilities for one box per image."""
        n = len(boxes)
        if n == 0:
            return Prediction(np.zeros((0, self.scheme.num_points, 2)), np.zeros((0, len(self.task_names))))
        out_lm, out_p = [], []
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            crops, inverses = self.crops(grey_images[sl], boxes[sl])
            norm, logits = self.run_network(crops)
            crop_px = from_normalised(norm, self.input_size)  # (b, P, 2)
            out_lm.append(np.stack([apply_affine(m, p) for m, p in zip(inverses, crop_px)]))
            out_p.append(1.0 / (1.0 + np.exp(-logits)))
        return Prediction(np.concatenate(out_lm), np.concatenate(out_p))
