"""``tcdcn export``: a model as an ONNX graph (float, or int8 by static quantisation) for torch-free inference."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from ..inference.export import (
    DEFAULT_CALIBRATION_FACES,
    DEFAULT_OPSET,
    FLOAT_CHANNEL_BLOCK,
    SUPPORTED_OPSETS,
    ExportError,
)
from .arguments import int_in

log = logging.getLogger("tcdcn")


def add_command(subparsers: Any) -> None:
    """``tcdcn export --model NAME_OR_PATH --format onnx [--int8] --out PATH``."""
    p = subparsers.add_parser("export", help="export a model to ONNX (optionally int8) for torch-free inference")
    p.add_argument("--model", required=True, help="shipped model name or checkpoint path")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="output format (default %(default)s)")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int_in(*SUPPORTED_OPSETS), default=DEFAULT_OPSET,
                   help=f"ONNX opset, {SUPPORTED_OPSETS[0]}..{SUPPORTED_OPSETS[1]} (default %(default)s)")
    p.add_argument("--pad-channels", type=int_in(0, 64), default=FLOAT_CHANNEL_BLOCK,
                   help="pad the float graph's first layer with zero channels to a multiple of this, the same "
                        "function that onnxruntime runs faster on AVX2 cores (default %(default)s; 0: the layer "
                        "as trained, e.g. for another runtime)")
    p.add_argument("--int8", action="store_true",
                   help="write the int8 graph instead of the float32 one (a shipped model's own; for a "
                        "checkpoint, static quantisation calibrated on training faces)")
    p.add_argument("--calibration-data", default=None,
                   help="annotation list or folder of TRAINING faces for int8 calibration (default: none for a "
                        "shipped model, whose int8 graph ships in the package; the checkpoint's data.train)")
    p.add_argument("--calibration-faces", type=int_in(1), default=DEFAULT_CALIBRATION_FACES,
                   help="number of calibration faces (default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``tcdcn export``: a float graph, or with ``--int8`` a quantised one (a shipped model's own int8 graph
    when nothing asks for another calibration)."""
    from ..inference.backends.torch import LandmarkModel
    from ..inference.export import calibration_crops, export_onnx, quantize_int8, write_model_file
    from ..inference.loading import shipped_onnx_file

    out = Path(args.out)
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: the output file should end in .onnx")
    model = LandmarkModel.load(args.model)
    if not args.int8:
        export_onnx(model, out, opset=args.opset, pad_channels=args.pad_channels)
        log.info("wrote %s (float32)", out)
        return _with_local_stage(args.model, out, bool(model.use_local_stage))
    if args.calibration_data is None and args.opset == DEFAULT_OPSET:
        shipped = shipped_onnx_file(args.model, int8=True)
        if shipped is not None:  # calibrated on the model's training faces when it was shipped
            write_model_file(shipped.read_bytes(), out)
            log.info("wrote %s (the shipped int8 graph of %s)", out, args.model)
            return _with_local_stage(args.model, out, bool(model.use_local_stage))
    calibration_file = Path(args.calibration_data or model.cfg.data.train)
    if not calibration_file.exists():
        raise ExportError(f"{calibration_file}: calibration faces not found (--calibration-data: an annotation "
                          "list or folder of training faces)")
    crops = calibration_crops(calibration_file, args.calibration_faces, model.input_size)
    with tempfile.TemporaryDirectory() as tmpdir:
        float_file = export_onnx(model, Path(tmpdir) / "float.onnx", opset=args.opset)
        quantize_int8(float_file, out, crops)
    log.info("wrote %s (int8, calibrated on %d training faces)", out, len(crops))
    return _with_local_stage(args.model, out, bool(model.use_local_stage))


def _with_local_stage(name: str, out: Path, use: bool) -> int:
    """A shipped model's local stage beside the exported graph (``export.attach_local_stage``); 0."""
    from ..inference.export import attach_local_stage
    from ..models.registry import SHIPPED

    record = SHIPPED.get(name)
    if record is not None and record.local_stage_file:
        stage = attach_local_stage(out, record.path("local_stage"), use=use)
        log.info("wrote %s (its local stage, %s by default)", stage, "on" if use else "off")
    return 0
