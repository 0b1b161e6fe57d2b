"""Torch-free inference with onnxruntime, and the choice of backend.

``OnnxLandmarkModel`` has the interface of ``tcdcn.inference.LandmarkModel`` (``scheme``,
``task_names``, ``input_size``, ``crops``, ``run_network``, ``predict``) but runs an ONNX file written
by ``tcdcn.export``; the file's metadata says the scheme, tasks and crop size. Nothing here imports
torch, at module level or on the ONNX code path, so ``predict`` works where torch is not installed
(the crop and the mapping back to image pixels are the same geometry/transforms functions the torch
path uses).

``load_landmark_model(name_or_path, backend)`` picks the backend: an ``.onnx`` path runs on
onnxruntime; "auto" uses torch when it is installed and onnxruntime otherwise (a shipped model name
then loads its shipped ``.onnx`` twin).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .attributes import AttributeTask
from .data.transforms import make_crop
from .errors import CheckpointError, TcdcnError
from .geometry import Box, apply_affine, from_normalised, invert_affine
from .schemes import LandmarkScheme, get_scheme

BACKENDS = ("auto", "torch", "onnx")
ONNX_FORMAT_NAME = "tcdcn-onnx"  # the "format" metadata value tcdcn.export writes
DEFAULT_BATCH_SIZE = 256


class BackendError(TcdcnError, RuntimeError):
    """A backend that is unknown, not installed, or cannot run the given model file."""


@dataclass
class Prediction:
    """What every backend's ``predict`` returns."""

    landmarks: np.ndarray  # (N, P, 2) image pixels
    attribute_probabilities: np.ndarray  # (N, T)


def torch_available() -> bool:
    """Whether ``import torch`` can succeed, without importing it (it takes seconds)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ValueError, ImportError):  # a broken or blocked torch entry in sys.modules
        return False


class CropLandmarkModel:
    """The torch-free half of a landmark model: crops from (image, box) and landmarks back in image
    pixels around ``run_network``, which subclasses provide (``inference.LandmarkModel`` with torch,
    ``OnnxLandmarkModel`` with onnxruntime). ``scheme``, ``task_names`` and ``input_size`` are set by
    the subclass.
    """

    scheme: LandmarkScheme
    task_names: tuple[str, ...]
    input_size: int
    mirror_average: bool = False  # also run each face mirrored and average (test-time flip)
    # (P, 2) normalised shift folded into the landmark head after training (tcdcn.calibration), or None.
    # Mirror-averaging must put it back on the mirrored pass, which otherwise applies it mirrored.
    landmark_shift: np.ndarray | None = None

    def crops(self, grey_images: Sequence[np.ndarray], boxes: Sequence[Box]) -> tuple[np.ndarray, np.ndarray]:
        """(N, 1, S, S) float32 crops and (N, 2, 3) crop->image matrices (as LandmarkModel.crops)."""
        crops, inverses = [], []
        for image, box in zip(grey_images, boxes, strict=True):
            crop, _, matrix = make_crop(image, box, self.input_size)
            crops.append(crop)
            inverses.append(invert_affine(matrix))
        return np.stack(crops)[:, None], np.stack(inverses)

    def run_network(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def predict(self, grey_images: Sequence[np.ndarray], boxes: Sequence[Box],
                batch_size: int = DEFAULT_BATCH_SIZE) -> Prediction:
        """Landmarks in image pixels and attribute probabilities for one box per image.

        With ``mirror_average`` set, each crop is also run mirrored and the two answers averaged
        (mirrored points put back through the scheme's flip pairs, left/right tasks swapped back).
        """
        n = len(boxes)
        if n == 0:
            return Prediction(np.zeros((0, self.scheme.num_points, 2)), np.zeros((0, len(self.task_names))))
        out_landmarks, out_probabilities = [], []
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            crops, inverses = self.crops(grey_images[part], boxes[part])
            if self.mirror_average:
                # One network call on the crops and their mirror images (cheaper than two calls).
                both, both_logits = self.run_network(with_mirror_images(crops))  # (2b, P, 2)
                normalised, mirrored = both[:len(crops)], both[len(crops):]
                logits, mirrored_logits = both_logits[:len(crops)], both_logits[len(crops):]
                unmirrored = mirrored[:, self.scheme.flip_index] * np.array([-1.0, 1.0], np.float32)
                if self.landmark_shift is not None:
                    # The mirrored pass carries shift b of the mirror partner, reflected: (-b_f.x, b_f.y);
                    # replace it with b so both passes estimate the same calibrated points.
                    partner = self.landmark_shift[self.scheme.flip_index]  # (P, 2)
                    unmirrored = unmirrored + self.landmark_shift + partner * np.array([1.0, -1.0])
                normalised = (normalised + unmirrored) / 2
                logits = (logits + mirrored_logits[:, self._task_flip_index()]) / 2
            else:
                normalised, logits = self.run_network(crops)
            crop_px = from_normalised(normalised, self.input_size)  # (b, P, 2)
            out_landmarks.append(np.stack([apply_affine(m, p) for m, p in zip(inverses, crop_px)]))
            out_probabilities.append(1.0 / (1.0 + np.exp(-logits)))
        return Prediction(np.concatenate(out_landmarks), np.concatenate(out_probabilities))

    def _task_flip_index(self) -> list[int]:
        from .attributes import ALL_TASKS, flip_permutation

        tasks = tuple(ALL_TASKS.get(name) or AttributeTask(name, "other") for name in self.task_names)
        return flip_permutation(tasks)


class OnnxLandmarkModel(CropLandmarkModel):
    """A TCDCN exported to ONNX, run by onnxruntime on the CPU.

    ``threads``: onnxruntime intra-op threads (0 = its default, one per physical core).
    ``optimization``: onnxruntime graph optimisation level ("disable", "basic", "extended", "all").
    """

    def __init__(self, path: str | Path, threads: int = 0, optimization: str = "all", source: str = "") -> None:
        import onnxruntime as ort

        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if optimization not in levels:
            raise BackendError(f"optimization must be one of {sorted(levels)}, got {optimization!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1  # the graph is a chain: no parallel branches to run
        options.graph_optimization_level = levels[optimization]
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{self.path}: not a readable ONNX model ({reason})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("format") != ONNX_FORMAT_NAME:
            raise CheckpointError(f"{self.path}: not a tcdcn ONNX export (metadata 'format' is "
                                  f"{self.metadata.get('format')!r}, expected {ONNX_FORMAT_NAME!r})")
        try:
            self.scheme: LandmarkScheme = get_scheme(self.metadata["scheme"])
            self.task_names: tuple[str, ...] = tuple(json.loads(self.metadata["tasks"]))
            self.input_size = int(self.metadata["input_size"])
            self.config: dict[str, Any] = json.loads(self.metadata.get("config", "{}"))
            if "landmark_shift" in self.metadata:
                self.landmark_shift = np.asarray(json.loads(self.metadata["landmark_shift"]), dtype=np.float64)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: bad tcdcn metadata ({exc})") from None
        self.source = source or self.metadata.get("source", str(self.path))
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    @classmethod
    def load(cls, path: str | Path, threads: int = 0) -> OnnxLandmarkModel:
        return cls(path, threads=threads)

    def run_network(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,1,S,S) crops -> normalised landmarks (N,P,2) and attribute logits (N,T)."""
        feed = {self.input_name: np.ascontiguousarray(crops, dtype=np.float32)}
        landmarks, logits = self.session.run(self.output_names, feed)
        return landmarks, logits


def with_mirror_images(crops: np.ndarray) -> np.ndarray:
    """(N, 1, S, S) crops -> (2N, 1, S, S): the crops, then their mirror images (one network batch)."""
    return np.concatenate([crops, crops[..., ::-1]])


def shipped_onnx_file(name: str) -> Path | None:
    """The ``.onnx`` twin of a shipped model (same folder and stem as its .pt), checksum verified
    when the weights record carries ``onnx_sha256``; None when the name is not a shipped model."""
    from .weights import SHIPPED, sha256_of

    record = SHIPPED.get(name)
    if record is None:
        return None
    path = record.path().with_suffix(".onnx")
    if not path.is_file():
        raise CheckpointError(f"{path}: shipped model {name!r} has no ONNX file in this installation "
                              "(install torch, or export one with `tcdcn export`)")
    expected = getattr(record, "onnx_sha256", "")
    if expected and sha256_of(path) != expected:
        raise CheckpointError(f"{path}: sha256 does not match the expected {expected[:12]}...")
    return path


def load_landmark_model(name_or_path: str | Path, backend: str = "auto", threads: int = 0) -> Any:
    """A landmark model on the chosen backend: ``LandmarkModel`` (torch) or ``OnnxLandmarkModel``.

    "auto": an ``.onnx`` file runs on onnxruntime; anything else on torch when installed, otherwise on
    onnxruntime (shipped names use their shipped ``.onnx``). "onnx" with a checkpoint exports it to a
    temporary ONNX file first (this needs torch). ``threads`` applies to onnxruntime only.
    """
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    text = str(name_or_path)
    is_onnx_file = text.lower().endswith(".onnx")
    if is_onnx_file:
        if backend == "torch":
            raise BackendError(f"{text}: an ONNX file runs on the onnx backend, not torch")
        return OnnxLandmarkModel(text, threads=threads, source=text)
    has_torch = torch_available()
    if backend == "torch" or (backend == "auto" and has_torch):
        if not has_torch:
            raise BackendError(f"{text}: backend 'torch' asked for but torch is not installed")
        from .inference import LandmarkModel

        return LandmarkModel.load(text)
    shipped = shipped_onnx_file(text)
    if shipped is not None:
        from .weights import default_mirror_average

        model = OnnxLandmarkModel(shipped, threads=threads, source=text)
        model.mirror_average = default_mirror_average(text)
        return model
    if not has_torch:
        raise BackendError(f"{text}: a torch checkpoint needs torch; without it, pass an .onnx file "
                           "(made with `tcdcn export`) or a shipped model name")
    return _export_and_load(text, threads)


def _export_and_load(checkpoint: str, threads: int) -> OnnxLandmarkModel:
    """Export a checkpoint to a temporary ONNX file and open it (the session keeps the graph in memory)."""
    import tempfile

    from .export import export_onnx
    from .inference import LandmarkModel

    with tempfile.TemporaryDirectory() as tmpdir:
        path = export_onnx(LandmarkModel.load(checkpoint), Path(tmpdir) / "model.onnx")
        return OnnxLandmarkModel(path, threads=threads, source=checkpoint)
