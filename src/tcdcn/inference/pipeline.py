"""Torch-free inference with onnxruntime, and the choice of backend.

``OnnxLandmarkModel`` has the interface of ``tcdcn.inference.LandmarkModel`` (``scheme``,
``task_names``, ``input_size``, ``crops``, ``run_network``, ``predict``) but runs an ONNX file written
by ``tcdcn.export``; the file's metadata says the scheme, tasks and crop size. Nothing here imports
torch, at module level or on the ONNX code path, so ``predict`` works where torch is not installed
(the crop and the mapping back to image pixels are the same geometry/transforms functions the torch
path uses).

``load_landmark_model(name_or_path, backend)`` picks the backend: "auto" (the default) runs every
model on onnxruntime, the faster backend for this network (a shipped model name loads its shipped
``.onnx`` twin; a checkpoint is exported to a temporary ONNX graph first); "torch" runs a checkpoint
in torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..attributes import AttributeTask
from ..cli.arguments import int_in
from ..data.transforms import box_array, make_jittered_crops
from ..errors import CheckpointError, TcdcnError
from ..geometry import BOX_SCALE, Box, CropJitter, apply_affines, box_from_landmarks, from_normalised, invert_affines
from ..schemes import LandmarkScheme, get_scheme

BACKENDS = ("auto", "torch", "onnx", "int8")
MAX_BOX_REFINEMENTS = 10  # each is a full pass; answers stop moving after one or two
ONNX_FORMAT_NAME = "tcdcn-onnx"  # the "format" metadata value tcdcn.export writes
# Faces whose crops are built together (bounded memory); evaluation streams faces in blocks this size.
DEFAULT_BATCH_SIZE = 256
# Crops per network call (mirror images included) when predict gets no batch_size, from
# bench/default_inference.py --batch-sizes on the grid crops: torch on one thread was fastest at 32-64
# (128-256: 20-35% more per crop, the activations leave the cache), torch on two threads at 256 (half
# the time per crop of 64: each layer's thread hand-off is paid per call); onnxruntime was within 2%
# from 32 to 256 on one thread and fastest at 256 on two.
TORCH_ONE_THREAD_CROPS_PER_CALL = 64
TORCH_CROPS_PER_CALL = 256
ONNX_CROPS_PER_CALL = 256


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
    multi_crop: tuple[CropJitter, ...] = ()  # test-time crops averaged; empty: the box alone
    # Re-frame each face this many times on the convention's box of the previous answer's points, so
    # that the last pass sees the face framed as in training whatever the given box's error.
    box_refinements: int = 0
    # (P, 2) normalised shift folded into the landmark head after training (tcdcn.calibration), or None.
    # Mirror-averaging must put it back on the mirrored pass, which otherwise applies it mirrored.
    landmark_shift: np.ndarray | None = None
    # Crops per network call when ``predict`` gets no ``batch_size``; None: ``default_crops_per_call``.
    crops_per_call: int | None = None
    # The multi-crop grid's crops of a face share one area reduction (geometry.warp_shifted_crops); False
    # reduces once per crop, bit for bit the crops of data.transforms.make_crop, at a higher cost.
    shared_crop_reduction: bool = True

    def crops(self, grey_images: Sequence[np.ndarray], boxes: Sequence[Box]) -> tuple[np.ndarray, np.ndarray]:
        """(N, 1, S, S) float32 crops and (N, 2, 3) crop->image matrices (as LandmarkModel.crops)."""
        if len(grey_images) != len(boxes):
            raise ValueError(f"{len(grey_images)} images for {len(boxes)} boxes")
        crops, matrices = make_jittered_crops(grey_images, boxes, self.input_size, (CropJitter(),))  # (N, 1, S, S)
        return crops.astype(np.float32), invert_affines(matrices[:, 0])

    def run_network(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def default_crops_per_call(self) -> int:
        """The torch backend's call size, by torch's thread count (the onnxruntime backend overrides it)."""
        torch = sys.modules.get("torch")  # loaded by the torch backend; never imported here
        threads = torch.get_num_threads() if torch is not None else 1
        return TORCH_ONE_THREAD_CROPS_PER_CALL if threads == 1 else TORCH_CROPS_PER_CALL

    def predict(self, grey_images: Sequence[np.ndarray], boxes: Sequence[Box],
                batch_size: int | None = None) -> Prediction:
        """Landmarks in image pixels and attribute probabilities for one box per image.

        With ``box_refinements`` K > 0, the box alone is predicted K times, each time re-framed on the
        box the face-box convention derives from the previous answer's points, before the last pass
        (which runs ``multi_crop`` when set). With ``multi_crop`` set, each face is cropped once per
        ``CropJitter`` of its box and the landmarks (mapped back to image pixels) and attribute logits
        averaged over the crops. With ``mirror_average`` set, each crop is also run mirrored and the two
        answers averaged (mirrored points put back through the scheme's flip pairs, left/right tasks
        swapped back). ``grey_images[i]`` holds face ``i``; faces of one image may share one array (it
        is never copied). The crops of all faces go through the network in calls of at most
        ``batch_size`` crops, mirror images included (None: ``crops_per_call``, else the backend's
        ``default_crops_per_call``).
        """
        if len(grey_images) != len(boxes):
            raise ValueError(f"{len(grey_images)} images for {len(boxes)} boxes")
        if len(boxes) == 0:
            return Prediction(np.zeros((0, self.scheme.num_points, 2)), np.zeros((0, len(self.task_names))))
        per_call = batch_size or self.crops_per_call or self.default_crops_per_call()
        box_rows = box_array(boxes)  # (F, 3)
        for _ in range(self.box_refinements):
            previous = self._predict_crops(grey_images, box_rows, (CropJitter(),), per_call)
            box_rows = self._refined_boxes(previous.landmarks, box_rows)
        return self._predict_crops(grey_images, box_rows, self.multi_crop or (CropJitter(),), per_call)

    def _refined_box(self, points: np.ndarray, box: Box) -> Box:
        """The convention's box of predicted ``points`` (P, 2); ``box`` if they are degenerate."""
        try:
            return box_from_landmarks(points, self.scheme)
        except ValueError:
            return box

    def _refined_boxes(self, points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``_refined_box`` of every face at once: points (F, P, 2), boxes (F, 3) -> (F, 3)."""
        five = self.scheme.five_points(np.asarray(points, dtype=np.float64))  # (F, 5, 2)
        lo, hi = five.min(axis=1), five.max(axis=1)  # (F, 2)
        extent = (hi - lo).max(axis=1)  # (F,)
        refined = np.concatenate([(lo + hi) / 2.0, extent[:, None] * BOX_SCALE], axis=1)  # (F, 3)
        usable = np.isfinite(extent) & (extent > 0)
        return np.where(usable[:, None], refined, boxes)

    def _predict_crops(self, grey_images: Sequence[np.ndarray], boxes: np.ndarray,
                       jitters: tuple[CropJitter, ...], batch_size: int) -> Prediction:
        """One pass over ``boxes`` (F, 3), each cropped once per jitter (and mirrored when set), averaged."""
        size, n_jitters = self.input_size, len(jitters)
        per_call = max(1, batch_size // (2 if self.mirror_average else 1))  # crops before their mirror images
        out_landmarks, out_probabilities = [], []
        for start in range(0, len(boxes), DEFAULT_BATCH_SIZE):
            part = slice(start, start + DEFAULT_BATCH_SIZE)
            crops, matrices = make_jittered_crops(grey_images[part], boxes[part], size, jitters,
                                                  self.shared_crop_reduction)  # (b, J, S, S), (b, J, 2, 3)
            b = len(crops)
            flat = crops.reshape(b * n_jitters, 1, size, size)  # (b*J, 1, S, S), face-major
            outputs = [self._run_crops(flat[i:i + per_call].astype(np.float32))
                       for i in range(0, len(flat), per_call)]
            normalised = np.concatenate([o[0] for o in outputs]).reshape(b, n_jitters, -1, 2)  # (b, J, P, 2)
            logits = np.concatenate([o[1] for o in outputs]).reshape(b, n_jitters, -1)  # (b, J, T)
            image_px = apply_affines(invert_affines(matrices), from_normalised(normalised, size))  # (b, J, P, 2)
            out_landmarks.append(image_px.mean(axis=1))  # (b, P, 2)
            out_probabilities.append(1.0 / (1.0 + np.exp(-logits.mean(axis=1))))  # (b, T)
        return Prediction(np.concatenate(out_landmarks), np.concatenate(out_probabilities))

    def _run_crops(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,1,S,S) crops -> normalised landmarks (N,P,2) and logits (N,T), mirror-averaged when set."""
        if not self.mirror_average:
            return self.run_network(crops)
        # One network call on the crops and their mirror images (cheaper than two calls).
        both, both_logits = self.run_network(with_mirror_images(crops))  # (2N, P, 2)
        normalised, mirrored = both[:len(crops)], both[len(crops):]
        logits, mirrored_logits = both_logits[:len(crops)], both_logits[len(crops):]
        unmirrored = mirrored[:, self.scheme.flip_index] * np.array([-1.0, 1.0], np.float32)
        if self.landmark_shift is not None:
            # The mirrored pass carries shift b of the mirror partner, reflected: (-b_f.x, b_f.y);
            # replace it with b so both passes estimate the same calibrated points.
            partner = self.landmark_shift[self.scheme.flip_index]  # (P, 2)
            unmirrored = unmirrored + self.landmark_shift + partner * np.array([1.0, -1.0])
        return (normalised + unmirrored) / 2, (logits + mirrored_logits[:, self._task_flip_index()]) / 2

    def _task_flip_index(self) -> list[int]:
        from ..attributes import ALL_TASKS, flip_permutation

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
        # Denormal activations or weights (a user's own export) cost some x86 CPUs many times the time.
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
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

    def default_crops_per_call(self) -> int:
        return ONNX_CROPS_PER_CALL

    def run_network(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,1,S,S) crops -> normalised landmarks (N,P,2) and attribute logits (N,T)."""
        feed = {self.input_name: np.ascontiguousarray(crops, dtype=np.float32)}
        landmarks, logits = self.session.run(self.output_names, feed)
        return landmarks, logits


def set_test_time_options(model: CropLandmarkModel, mirror_average: bool | None = None,
                          multi_crop: bool | None = None, box_refinements: int | None = None) -> None:
    """Override a model's test-time defaults (None keeps them). ``multi_crop=True`` keeps the model's
    crops, or gives it the standard grid (``weights.STANDARD_MULTI_CROP``) when it has none; False
    runs the box alone."""
    from ..models.registry import STANDARD_MULTI_CROP

    if box_refinements is not None:
        if box_refinements < 0:
            raise ValueError(f"box_refinements must be >= 0, got {box_refinements}")
        model.box_refinements = box_refinements
    if mirror_average is not None:
        model.mirror_average = mirror_average
    if multi_crop is not None:
        model.multi_crop = (model.multi_crop or STANDARD_MULTI_CROP) if multi_crop else ()


def add_test_time_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line switches of ``set_test_time_options`` (``--flip``, ``--multi-crop``,
    ``--box-refinements``); each left unset keeps the model's default."""
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="average each face with its mirror image, one network call on both (default: the "
                             "model's choice, on for the shipped models, off for checkpoints and exported files)")
    parser.add_argument("--multi-crop", action=argparse.BooleanOptionalAction, default=None,
                        help="average the predictions of a 3x3 grid of slightly moved face boxes (default: the "
                             "model's choice, on for the shipped models, off for checkpoints and exported files)")
    parser.add_argument("--box-refinements", type=int_in(0, MAX_BOX_REFINEMENTS), default=None, metavar="K",
                        help="re-frame each face K times on the box of its predicted points before the last "
                             "pass (default: the model's choice, 1 for the shipped models, 0 for files)")


def apply_test_time_arguments(model: CropLandmarkModel, args: argparse.Namespace) -> None:
    """``set_test_time_options`` from the switches ``add_test_time_arguments`` added."""
    set_test_time_options(model, args.flip, args.multi_crop, args.box_refinements)


def test_time_summary(model: CropLandmarkModel) -> dict[str, Any]:
    """The test-time options a model ran with, as reports record them."""
    return {"flip": model.mirror_average, "crops_per_face": max(1, len(model.multi_crop)),
            "box_refinements": model.box_refinements}


def with_mirror_images(crops: np.ndarray) -> np.ndarray:
    """(N, 1, S, S) crops -> (2N, 1, S, S): the crops, then their mirror images (one network batch)."""
    return np.concatenate([crops, crops[..., ::-1]])


def shipped_onnx_file(name: str, int8: bool = False) -> Path | None:
    """The ``.onnx`` twin of a shipped model (same folder and stem as its .pt), or with ``int8`` its
    ``.int8.onnx`` twin, checksum verified; None when the name is not a shipped model."""
    from ..models.registry import SHIPPED, sha256_of

    record = SHIPPED.get(name)
    if record is None:
        return None
    path = record.path().with_suffix(".int8.onnx" if int8 else ".onnx")
    if not path.is_file():
        raise CheckpointError(f"{path}: shipped model {name!r} has no {'int8 ' if int8 else ''}ONNX file in this "
                              "installation (export one with `tcdcn export`)")
    expected = record.int8_onnx_sha256 if int8 else record.onnx_sha256
    if expected and sha256_of(path) != expected:
        raise CheckpointError(f"{path}: sha256 does not match the expected {expected[:12]}...")
    return path


def load_landmark_model(name_or_path: str | Path, backend: str = "auto", threads: int = 0) -> Any:
    """A landmark model on the chosen backend: ``LandmarkModel`` (torch) or ``OnnxLandmarkModel``.

    "auto" runs inference on onnxruntime, the faster backend for this network on every CPU measured
    (``bench/speed.py``): an ``.onnx`` file directly, a shipped name through its shipped ``.onnx``
    twin, a checkpoint through a temporary ONNX export (this needs torch, and keeps the checkpoint's
    test-time options). "onnx" is the same. "int8" runs a shipped name's int8 graph (a checkpoint needs
    ``tcdcn export --int8`` first). "torch" runs the checkpoint in torch. ``threads`` applies to
    onnxruntime only.
    """
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    text = str(name_or_path)
    if text.lower().endswith(".onnx"):
        if backend == "torch":
            raise BackendError(f"{text}: an ONNX file runs on the onnx backend, not torch")
        return OnnxLandmarkModel(text, threads=threads, source=text)
    has_torch = torch_available()
    if backend == "torch":
        if not has_torch:
            raise BackendError(f"{text}: backend 'torch' asked for but torch is not installed")
        from .backends.torch import LandmarkModel

        return LandmarkModel.load(text)
    shipped = shipped_onnx_file(text, int8=backend == "int8")
    if backend == "int8" and shipped is None:
        raise BackendError(f"{text}: backend 'int8' runs a shipped model's int8 graph or an .onnx file; for a "
                           "checkpoint, make one with `tcdcn export --int8` and pass its path")
    if shipped is not None:
        from ..models.registry import apply_test_time_defaults

        model = OnnxLandmarkModel(shipped, threads=threads, source=text)
        apply_test_time_defaults(model, text)
        return model
    if not has_torch:
        raise BackendError(f"{text}: a torch checkpoint needs torch; without it, pass an .onnx file "
                           "(made with `tcdcn export`) or a shipped model name")
    return _export_and_load(text, threads)


def _export_and_load(checkpoint: str, threads: int) -> OnnxLandmarkModel:
    """Export a checkpoint to a temporary ONNX file and open it (the session keeps the graph in memory)."""
    import tempfile

    from .backends.torch import LandmarkModel
    from .export import export_onnx

    torch_model = LandmarkModel.load(checkpoint)
    with tempfile.TemporaryDirectory() as tmpdir:
        path = export_onnx(torch_model, Path(tmpdir) / "model.onnx")
        model = OnnxLandmarkModel(path, threads=threads, source=checkpoint)
    model.mirror_average = torch_model.mirror_average
    model.multi_crop = torch_model.multi_crop
    model.box_refinements = torch_model.box_refinements
    return model
