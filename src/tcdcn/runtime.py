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

import argparse
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
from .geometry import Box, CropJitter, apply_affine, box_from_landmarks, from_normalised, invert_affine
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
    multi_crop: tuple[CropJitter, ...] = ()  # test-time crops averaged; empty: the box alone
    # Re-frame each face this many times on the convention's box of the previous answer's points, so
    # that the last pass sees the face framed as in training whatever the given box's error.
    box_refinements: int = 0
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

        With ``box_refinements`` K > 0, the box alone is predicted K times, each time re-framed on the
        box the face-box convention derives from the previous answer's points, before the last pass
        (which runs ``multi_crop`` when set). With ``multi_crop`` set, each face is cropped once per
        ``CropJitter`` of its box and the landmarks (mapped back to image pixels) and attribute logits
        averaged over the crops. With ``mirror_average`` set, each crop is also run mirrored and the two
        answers averaged (mirrored points put back through the scheme's flip pairs, left/right tasks
        swapped back). All crops of a batch go through the network in one call; ``batch_size`` bounds
        that call's crop count.
        """
        if len(boxes) == 0:
            return Prediction(np.zeros((0, self.scheme.num_points, 2)), np.zeros((0, len(self.task_names))))
        for _ in range(self.box_refinements):
            previous = self._predict_crops(grey_images, boxes, (CropJitter(),), batch_size)
            boxes = [self._refined_box(points, box) for points, box in zip(previous.landmarks, boxes)]
        return self._predict_crops(grey_images, boxes, self.multi_crop or (CropJitter(),), batch_size)

    def _refined_box(self, points: np.ndarray, box: Box) -> Box:
        """The convention's box of predicted ``points`` (P, 2); ``box`` if they are degenerate."""
        try:
            return box_from_landmarks(points, self.scheme)
        except ValueError:
            return box

    def _predict_crops(self, grey_images: Sequence[np.ndarray], boxes: Sequence[Box],
                       jitters: tuple[CropJitter, ...], batch_size: int) -> Prediction:
        """One pass over ``boxes``, each cropped once per jitter (and mirrored when set), averaged."""
        n = len(boxes)
        faces_per_call = max(1, batch_size // (len(jitters) * (2 if self.mirror_average else 1)))
        out_landmarks, out_probabilities = [], []
        for start in range(0, n, faces_per_call):
            part = slice(start, start + faces_per_call)
            crops, inverses = [], []
            for jitter in jitters:
                jitter_crops, jitter_inverses = self.crops(grey_images[part], [jitter.apply(b) for b in boxes[part]])
                crops.append(jitter_crops)
                inverses.append(jitter_inverses)
            normalised, logits = self._run_crops(np.concatenate(crops))  # (J*b, P, 2), (J*b, T)
            crop_px = from_normalised(normalised, self.input_size)  # (J*b, P, 2)
            image_px = np.stack([apply_affine(m, p) for m, p in zip(np.concatenate(inverses), crop_px)])
            b = len(crops[0])
            out_landmarks.append(image_px.reshape(len(jitters), b, *image_px.shape[1:]).mean(axis=0))  # (b, P, 2)
            logits = logits.reshape(len(jitters), b, -1).mean(axis=0)  # (b, T)
            out_probabilities.append(1.0 / (1.0 + np.exp(-logits)))
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


def set_test_time_options(model: CropLandmarkModel, mirror_average: bool | None = None,
                          multi_crop: bool | None = None, box_refinements: int | None = None) -> None:
    """Override a model's test-time defaults (None keeps them). ``multi_crop=True`` keeps the model's
    crops, or gives it the standard grid (``weights.STANDARD_MULTI_CROP``) when it has none; False
    runs the box alone."""
    from .weights import STANDARD_MULTI_CROP

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
    parser.add_argument("--box-refinements", type=int, default=None, metavar="K",
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
        from .weights import apply_test_time_defaults

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

    from .export import export_onnx
    from .inference import LandmarkModel

    with tempfile.TemporaryDirectory() as tmpdir:
        path = export_onnx(LandmarkModel.load(checkpoint), Path(tmpdir) / "model.onnx")
        return OnnxLandmarkModel(path, threads=threads, source=checkpoint)
