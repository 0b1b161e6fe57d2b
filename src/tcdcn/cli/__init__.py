"""The ``tcdcn`` command: train, evaluate, predict (and more sub-commands added by later modules)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import TcdcnError
from ..progress import configure_from_arguments
from .arguments import OneLineParser

log = logging.getLogger("tcdcn")

# What a run folder holds once training has started; any of them means --out is taken.
RUN_FILES = ("last.pt", "best.pt", "history.jsonl")

# Modules that add their own sub-command with ``add_command(subparsers)``.
_COMMAND_MODULES = ("cli.predict", "inference.export", "studies.grid")


def _cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training.trainer import Trainer

    cfg = load_config(args.config, args.set)
    existing = [name for name in RUN_FILES if (Path(args.out) / name).exists()]
    if existing and not (args.resume or args.overwrite):
        raise TcdcnError(f"{args.out}: already holds a training run ({', '.join(existing)}); continue it with "
                         f"--resume {Path(args.out) / 'last.pt'}, or replace it with --overwrite")
    trainer = Trainer(cfg, args.out)
    if args.resume:
        trainer.resume(args.resume)
    summary = trainer.fit()
    if trainer.dist.is_main:
        log.info("done: best validation NME %.2f%% (weights: %s)", 100 * summary["best_val_nme"], f"{args.out}/best.pt")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from ..data.formats import read_annotations
    from ..evaluation.protocol import evaluate
    from ..inference.pipeline import apply_test_time_arguments, load_landmark_model, test_time_summary
    from ..io.atomic import check_writable

    if args.ced:  # checked before the run, whose results would otherwise be lost at the end
        check_writable(Path(args.ced))
        check_writable(Path(args.ced).with_suffix(".csv"))
    model = load_landmark_model(args.model, args.backend)
    # None keeps the model's defaults (mirror-averaging on for the shipped models, multi-crop for mtfl-5pt)
    apply_test_time_arguments(model, args)
    faces = read_annotations(args.data)
    detector = None
    if args.box == "detect":
        from ..inference.detectors.face_detector import FaceDetector

        face_detector = FaceDetector()
        detector = lambda rgb: [d.box for d in face_detector(rgb)]  # noqa: E731
    report = evaluate(model, faces, args.box, detector)
    summary = report.summary()
    summary["model"] = args.model
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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="tcdcn", description="TCDCN facial landmark detection")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--out", required=True, help="run folder: checkpoints (last.pt, best.pt), history.jsonl")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint (e.g. RUN/last.pt)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (without it, an existing run is refused)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    p.set_defaults(func=_cmd_train)

    from ..inference.pipeline import BACKENDS, add_test_time_arguments
    from ..progress import add_progress_arguments

    p = sub.add_parser("evaluate", help="score a model on an annotated set (paper protocol)")
    p.add_argument("--model", default="mtfl-5pt",
                   help="shipped model name, checkpoint or .onnx path (default %(default)s)")
    p.add_argument("--data", required=True,
                   help="MTFL-format annotation file, or a folder of images with 68-point .pts files")
    p.add_argument("--box", choices=("image", "gt", "detect"), default="image",
                   help="face box: whole image (AFLW test protocol), from ground truth, or face detector")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default) and onnx run on onnxruntime, a checkpoint through a temporary ONNX "
                        "export; int8 runs a shipped model's int8 graph; torch runs a checkpoint in torch")
    add_test_time_arguments(p)
    p.add_argument("--ced", metavar="PNG", help="write the cumulative error distribution (PNG + .csv)")
    add_progress_arguments(p)
    p.set_defaults(func=_cmd_evaluate)

    for module in _COMMAND_MODULES:
        importlib.import_module(f"tcdcn.{module}").add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    # Set on every call: in-process callers (tests, scripts) must not inherit a previous call's settings.
    configure_from_arguments(args)
    try:
        return int(args.func(args))
    except TcdcnError as exc:
        print(f"tcdcn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tcdcn: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file the command writes or reads outside the checked paths
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"tcdcn: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a defect: still one line, the traceback on request
        if os.environ.get("TCDCN_DEBUG"):
            raise
        print(f"tcdcn: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(set TCDCN_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 3
