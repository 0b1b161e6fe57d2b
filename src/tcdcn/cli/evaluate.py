"""``tcdcn evaluate``: a model scored on an annotated set by the paper's protocol."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ..inference.loading import BACKENDS
from ..models.registry import DEFAULT_MODEL
from .arguments import BACKEND_HELP, add_progress_arguments, add_test_time_arguments, apply_test_time_arguments

log = logging.getLogger("tcdcn.evaluate")


def add_command(subparsers: Any) -> None:
    p = subparsers.add_parser("evaluate", help="score a model on an annotated set (paper protocol)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="shipped model name, checkpoint or .onnx path (default %(default)s)")
    p.add_argument("--data", required=True,
                   help="MTFL-format annotation file, or a folder of images with 68-point .pts files")
    p.add_argument("--box", choices=("image", "gt", "detect"), default="image",
                   help="face box: whole image (AFLW test protocol), from ground truth, or face detector "
                        "(default %(default)s)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help=BACKEND_HELP)
    add_test_time_arguments(p)
    p.add_argument("--ced", metavar="PNG", help="write the cumulative error distribution (PNG + .csv)")
    add_progress_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``tcdcn evaluate``: the summary as text, or as one JSON object with ``--json``."""
    from ..data.formats import read_annotations
    from ..evaluation.plots import require_matplotlib
    from ..evaluation.protocol import evaluate
    from ..inference.loading import load_landmark_model
    from ..inference.test_time import describe_test_time, test_time_summary
    from ..io.atomic import check_writable

    if args.ced:  # checked before the run, whose results would otherwise be lost at the end
        require_matplotlib("--ced (the CED figure)")
        check_writable(Path(args.ced))
        check_writable(Path(args.ced).with_suffix(".csv"))
    model = load_landmark_model(args.model, args.backend)
    defaults = test_time_summary(model)
    # None keeps the model's defaults (mirror-averaging on for the shipped models, multi-crop for mtfl-5pt)
    apply_test_time_arguments(model, args)
    log.info("backend: %s", model.describe_backend())
    log.info("%s", describe_test_time(model, defaults))
    faces = read_annotations(args.data)
    detector = None
    if args.box == "detect":
        from ..inference.detectors import FaceDetector

        face_detector = FaceDetector()
        detector = lambda rgb: [d.box for d in face_detector(rgb)]  # noqa: E731
    report = evaluate(model, faces, args.box, detector)
    summary = report.summary()
    summary["model"] = args.model
    summary["backend"] = model.describe_backend()
    summary.update(test_time_summary(model))
    summary["data"] = str(args.data)
    if args.ced:
        report.write_ced(args.ced, label=f"{args.model} ({args.box} box)")
        summary["ced"] = str(args.ced)
    if args.json:
        print(json.dumps(summary, allow_nan=False))
        return 0

    def percent(value: float | None) -> str:
        return "n/a (no face scored)" if value is None else f"{100 * value:.2f}%"

    unscored = f", {summary['unscorable']} not scorable" if summary["unscorable"] else ""
    print(f"model {args.model} on {args.data} ({summary['n']} faces, box={args.box}, "
          f"{summary['detected']} with a box{unscored})")
    print(f"  mean error (inter-ocular): {percent(summary['nme'])}")
    if model.scheme.outer_eye_corners is not None:
        print(f"  mean error (inter-pupil):  {percent(summary['nme_interpupil'])}")
    print(f"  failure rate (>{100 * report.failure_threshold:.0f}%): {percent(summary['failure_rate'])}")
    print("  per landmark: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in summary["per_landmark"].items()
                                         if v is not None))
    if summary["attribute_accuracy"]:
        print("  attribute accuracy: " + ", ".join(f"{k} {100 * v:.1f}%"
                                                  for k, v in summary["attribute_accuracy"].items()))
    return 0
