"""Loading a landmark model on the chosen backend: a shipped model name, a checkpoint or an ONNX file.

``load_landmark_model(name_or_path, backend)``: "auto" (the default) runs every model on onnxruntime, the faster
backend for this network (a shipped model name loads the graph its card's ``auto_backend`` names, its int8 graph
where that scored as the float one on validation, else its ``.onnx`` twin; a checkpoint is exported to a
temporary ONNX graph first, and quantised to int8 where that agrees with float32: ``_quantised_twin``), int8
only where it pays on this CPU (``cpu.int8_pays``: not on x86-64 without VNNI); "onnx"
runs the float graph; "int8" runs a shipped model's int8 graph; "torch" runs a checkpoint in torch.
Nothing here imports torch unless the torch backend or a checkpoint asks for it.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..cpu import this_cpu_int8_pays
from ..errors import BackendError, CheckpointError, TcdcnError
from ..models.registry import SHIPPED, apply_test_time_defaults, verify_sha256
from .backends.onnx import OnnxLandmarkModel
from .local_stage import LocalStage
from .pipeline import CropLandmarkModel

if TYPE_CHECKING:
    from ..config import Config

BACKENDS = ("auto", "torch", "onnx", "int8")
INT8_DOES_NOT_PAY = "%s: runs the float32 graph: int8 is slower on a CPU without VNNI (--backend int8 runs it)"
log = logging.getLogger("tcdcn")


def torch_available() -> bool:
    """Whether ``import torch`` can succeed, without importing it (it takes seconds)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ValueError, ImportError):  # a broken or blocked torch entry in sys.modules
        return False


def shipped_onnx_file(name: str, int8: bool = False) -> Path | None:
    """The ``.onnx`` twin of a shipped model, or with ``int8`` its ``.int8.onnx`` twin (as its model card names
    them), checksum verified; None when the name is not a shipped model."""
    record = SHIPPED.get(name)
    if record is None:
        return None
    kind = "int8 ONNX" if int8 else "ONNX"
    if not (record.int8_onnx_file if int8 else record.onnx_file):
        raise CheckpointError(f"{record.card}: shipped model {name!r} lists no {kind} file (export one with "
                              "`tcdcn export`)")
    path = record.path("int8_onnx" if int8 else "onnx")
    if not path.is_file():
        raise CheckpointError(f"{path}: shipped model {name!r} has no {kind} file in this installation (export one "
                              "with `tcdcn export`)")
    return verify_sha256(path, record.int8_onnx_sha256 if int8 else record.onnx_sha256)


def shipped_local_stage(name: str, threads: int = 1) -> LocalStage | None:
    """The local stage a shipped model's card names (checksum verified), or None (not shipped, or none)."""
    record = SHIPPED.get(name)
    if record is None or not record.local_stage_file:
        return None
    path = record.path("local_stage")
    if not path.is_file():
        raise CheckpointError(f"{path}: shipped model {name!r} has no local-stage file in this installation")
    return LocalStage(verify_sha256(path, record.local_stage_sha256), threads=threads)


def load_landmark_model(name_or_path: str | Path, backend: str = "auto", threads: int = 1) -> CropLandmarkModel:
    """A landmark model on the chosen backend: ``LandmarkModel`` (torch) or ``OnnxLandmarkModel``.

    "auto" runs inference on onnxruntime, the faster backend for this network on every CPU measured
    (``bench/speed.py``): an ``.onnx`` file directly, a shipped name through the shipped graph its card's
    ``auto_backend`` names (int8 or float; float where int8 does not pay on this CPU, ``cpu.int8_pays``), a
    checkpoint through a temporary ONNX export (this needs torch, and keeps the checkpoint's test-time options),
    on int8 where it pays and ``_quantised_twin`` finds that usable; an ``.onnx``
    file runs the test-time options its metadata records (``tcdcn export`` writes the exported model's).
    "onnx" runs a shipped name's float32 graph. "int8" runs a shipped name's int8 graph (a checkpoint needs
    ``tcdcn export --int8`` first). "torch" runs the
    checkpoint in torch. ``threads`` applies to onnxruntime only.
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

        torch_model = LandmarkModel.load(text)
        torch_model.local_stage = shipped_local_stage(text, threads)
        return torch_model
    record = SHIPPED.get(text)
    if backend == "auto" and record is not None:
        backend = record.auto_backend
        if backend == "int8" and not this_cpu_int8_pays():
            log.info(INT8_DOES_NOT_PAY, text)
            backend = "onnx"
    shipped = shipped_onnx_file(text, int8=backend == "int8")
    if backend == "int8" and shipped is None:
        raise BackendError(f"{text}: backend 'int8' runs a shipped model's int8 graph or an .onnx file; for a "
                           "checkpoint, make one with `tcdcn export --int8` and pass its path")
    if shipped is not None:
        model = OnnxLandmarkModel(shipped, threads=threads, source=text)
        apply_test_time_defaults(model, text)
        model.local_stage = shipped_local_stage(text, threads)
        return model
    if not has_torch:
        raise BackendError(f"{text}: a torch checkpoint needs torch; without it, pass an .onnx file "
                           "(made with `tcdcn export`) or a shipped model name")
    int8 = backend == "auto" and this_cpu_int8_pays()
    if backend == "auto" and not int8:
        log.info(INT8_DOES_NOT_PAY, text)
    return _export_and_load(text, threads, int8=int8)


def _export_and_load(checkpoint: str, threads: int, int8: bool) -> OnnxLandmarkModel:
    """Export a checkpoint to a temporary ONNX file and open it (the session keeps the graph in memory); with
    ``int8``, the int8 graph ``_quantised_twin`` makes of it where that one is usable."""
    import tempfile

    from .backends.torch import LandmarkModel
    from .export import export_onnx

    torch_model = LandmarkModel.load(checkpoint)
    with tempfile.TemporaryDirectory() as tmpdir:
        path = export_onnx(torch_model, Path(tmpdir) / "model.onnx")
        # The graph's metadata carries the checkpoint's test-time defaults (export_metadata).
        model = OnnxLandmarkModel(path, threads=threads, source=checkpoint)
        quantised = _quantised_twin(torch_model.cfg, model, Path(tmpdir), threads, checkpoint) if int8 else None
        return model if quantised is None else quantised


def _quantised_twin(cfg: Config, float_model: OnnxLandmarkModel, folder: Path, threads: int,
                    checkpoint: str) -> OnnxLandmarkModel | None:
    """An int8 graph of ``float_model`` calibrated on the checkpoint's training faces (its config's training
    split), used when its landmarks agree with the float graph's on its validation faces
    (``export.INT8_AGREEMENT_LIMIT``): the speed of a shipped model for a user's own checkpoint. None, with
    a log line saying why, when the faces cannot be read or the graphs disagree."""
    from ..data.dataset import split_faces
    from ..data.formats import read_annotations
    from .export import (
        DEFAULT_CALIBRATION_FACES,
        INT8_AGREEMENT_LIMIT,
        INT8_CHECK_FACES,
        face_crops,
        int8_disagreement,
        quantize_int8,
    )

    try:
        train_faces, val_faces = split_faces(read_annotations(cfg.data.train), cfg.data)
    except (TcdcnError, OSError) as exc:
        log.info("%s: runs the float32 graph; its training faces cannot calibrate an int8 one (%s)", checkpoint,
                 str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    size = float_model.input_size
    calibration = face_crops(train_faces, DEFAULT_CALIBRATION_FACES, size)
    check = face_crops(val_faces or train_faces, INT8_CHECK_FACES, size)
    path = quantize_int8(float_model.path, folder / "model.int8.onnx", calibration)
    quantised = OnnxLandmarkModel(path, threads=threads, source=checkpoint)
    disagreement = int8_disagreement(float_model, quantised, check)
    if disagreement > INT8_AGREEMENT_LIMIT:
        log.info("%s: runs the float32 graph; an int8 one moved its landmarks by %.2f%% of the inter-ocular "
                 "distance on %d validation faces (limit %.2f%%)", checkpoint, 100 * disagreement, len(check),
                 100 * INT8_AGREEMENT_LIMIT)
        return None
    log.info("%s: runs an int8 graph calibrated on %d of its training faces (landmarks within %.2f%% of the "
             "inter-ocular distance of the float32 graph's on %d validation faces; --backend onnx runs float32)",
             checkpoint, len(calibration), 100 * disagreement, len(check))
    return quantised
