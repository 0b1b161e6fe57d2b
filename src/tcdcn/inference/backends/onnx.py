"""The onnxruntime backend: a TCDCN exported to ONNX (``tcdcn.inference.export``), run without torch.

``OnnxLandmarkModel`` has the interface of ``backends.torch.LandmarkModel`` (``scheme``, ``task_names``,
``input_size``, ``crops``, ``run_network``, ``predict``); the file's metadata says the scheme, tasks, crop
size and test-time defaults (``test_time``: mirror-averaging, multi-crop, box refinements), so the .onnx file
alone is a complete model and runs as the model it was exported from. Nothing here imports torch, at module
level or on the ONNX code path.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BackendError, CheckpointError
from ...models.denormals import cpu_session_options
from ...models.registry import apply_options_record, verify_sha256
from ...schemes import LandmarkScheme, get_scheme
from ..local_stage import LocalStage
from ..pipeline import ONNX_CROPS_PER_CALL, CropLandmarkModel

# Written into metadata_props by tcdcn.inference.export; bump the version when the graph's contract (inputs,
# outputs, metadata keys) changes. 2: the ``test_time`` key (files of version 1 run one pass).
FORMAT_NAME = "tcdcn-onnx"
FORMAT_VERSION = "2"
log = logging.getLogger("tcdcn")


class OnnxLandmarkModel(CropLandmarkModel):
    """A TCDCN exported to ONNX, run by onnxruntime on the CPU.

    ``threads``: onnxruntime intra-op threads; 1 by default: this network is too small to gain from more
    (0.585 ms per crop on one thread against 0.661 on two at 256 crops per call, ``bench/default_inference.py``)
    and spinning pool threads slow everything else on a loaded machine; 0 means onnxruntime's own choice
    (one per physical core).
    ``optimization``: onnxruntime graph optimisation level ("disable", "basic", "extended", "all").
    """

    def __init__(self, path: str | Path, threads: int = 1, optimization: str = "all", source: str = "") -> None:
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
        # Denormal activations or weights (a user's own export) cost some x86 CPUs many times the time.
        options = cpu_session_options(threads)
        options.graph_optimization_level = levels[optimization]
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{self.path}: not a readable ONNX model ({reason})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{self.path}: not a tcdcn ONNX export (metadata 'format' is "
                                  f"{self.metadata.get('format')!r}, expected {FORMAT_NAME!r})")
        try:
            self.scheme: LandmarkScheme = get_scheme(self.metadata["scheme"])
            self.task_names: tuple[str, ...] = tuple(json.loads(self.metadata["tasks"]))
            self.input_size = int(self.metadata["input_size"])
            self.config: dict[str, Any] = json.loads(self.metadata.get("config", "{}"))
            if "landmark_shift" in self.metadata:
                self.landmark_shift = np.asarray(json.loads(self.metadata["landmark_shift"]), dtype=np.float64)
            # The exported model's test-time defaults travel with it; a file without them (exported before they
            # were written) runs one pass on the box alone.
            test_time = json.loads(self.metadata.get("test_time", "{}"))
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: bad tcdcn metadata ({exc})") from None
        apply_options_record(self, test_time, f"{self.path}: metadata")
        self._open_local_stage(threads)
        self.source = source or self.metadata.get("source", str(self.path))
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _open_local_stage(self, threads: int) -> None:
        """The local stage the metadata's ``local_stage`` record names (``tcdcn export`` of a model that has one
        writes it beside the graph), checksum verified; a file that is not there is logged and the model runs
        without it."""
        if "local_stage" not in self.metadata:
            return
        try:
            record = json.loads(self.metadata["local_stage"])
            path = self.path.parent / str(record["file"])
            expected, use = str(record.get("sha256", "")), bool(record.get("use", True))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: bad local_stage metadata ({exc})") from None
        if not path.is_file():
            log.warning("%s: the local stage it names (%s) is not beside it; running the first stage only",
                        self.path, path.name)
            return
        self.local_stage = LocalStage(verify_sha256(path, expected), threads=threads)
        self.use_local_stage = use

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> OnnxLandmarkModel:
        return cls(path, threads=threads)

    def describe_backend(self) -> str:
        return f"onnxruntime, {self.path.name}"

    def default_crops_per_call(self) -> int:
        return ONNX_CROPS_PER_CALL

    def run_network(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,1,S,S) crops -> normalised landmarks (N,P,2) and attribute logits (N,T)."""
        feed = {self.input_name: np.ascontiguousarray(crops, dtype=np.float32)}
        landmarks, logits = self.session.run(self.output_names, feed)
        return landmarks, logits
