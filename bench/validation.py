"""Score a model on the validation split its config carves from the training data (never the test set).

    python bench/validation.py --config configs/mtfl-5pt.yaml --model mtfl-5pt [--box gt|detect|image]
        [--backend auto|onnx|int8|torch] [--flip] [--multi-crop] [--box-refinements K]
        [--split validation|train] [--part SUBFOLDER] [--limit N]

``--split train`` scores the faces the model was trained on instead (the first ``--limit`` of them), to
tell a model that cannot fit its training faces from one that fits them and does not generalise.

The split is the one ``Trainer`` uses (``data.validation_fraction``, ``data.split_seed``); faces are
framed with the ground-truth box convention (``--box gt``, as during training) or by the default face
detector (``--box detect``: the detection nearest the ground truth; a face not found counts as a failure), or
by the whole image (``--box image``, as ``tcdcn evaluate``'s default on the AFLW test images).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tcdcn.cli.arguments import add_test_time_arguments, apply_test_time_arguments
from tcdcn.config import load_config
from tcdcn.data.dataset import split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.evaluation.protocol import evaluate
from tcdcn.geometry import box_from_landmarks
from tcdcn.inference.detectors import FaceDetector
from tcdcn.inference.loading import BACKENDS, load_landmark_model
from tcdcn.inference.test_time import test_time_summary
from tcdcn.schemes import LandmarkScheme


def interocular_crop_pixels(landmarks: np.ndarray, scheme: LandmarkScheme, input_size: int) -> float:
    """The normalising distance in crop pixels (what an error of 1% is on the network's input); NaN for a face
    whose points give no box."""
    try:
        side = box_from_landmarks(landmarks, scheme).side
    except ValueError:
        return float("nan")
    return float(scheme.interocular_distance(landmarks[None])[0]) / side * input_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/mtfl-5pt.yaml")
    p.add_argument("--model", default="mtfl-5pt")
    p.add_argument("--box", choices=("gt", "detect", "image"), default="gt")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--split", choices=("validation", "train"), default="validation")
    p.add_argument("--limit", type=int, default=0, help="score the first N faces of the split (0: all)")
    p.add_argument("--part", default="", help="only the faces in this subfolder of the training data (e.g. "
                   "helen of 300-W)")
    add_test_time_arguments(p)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    train_faces, val_faces = split_faces(read_annotations(cfg.data.train), cfg.data)
    faces = val_faces if args.split == "validation" else train_faces
    if args.part:
        root = Path(cfg.data.train).resolve()
        root = root if root.is_dir() else root.parent
        faces = [f for f in faces if Path(f.image_path).resolve().relative_to(root).parts[0] == args.part]
        if not faces:
            p.error(f"--part {args.part}: no {args.split} faces in {root / args.part}")
    if args.limit > 0:
        faces = faces[: args.limit]
    model = load_landmark_model(args.model, args.backend)
    apply_test_time_arguments(model, args)
    detector = None
    if args.box == "detect":
        face_detector = FaceDetector()
        detector = lambda rgb: [d.box for d in face_detector(rgb)]  # noqa: E731
    interocular = [interocular_crop_pixels(f.landmarks, model.scheme, model.input_size) for f in faces]
    summary = evaluate(model, faces, box=args.box, detector=detector).summary()
    summary.update(model=args.model, config=args.config, backend=args.backend, split=args.split,
                   part=args.part or None, faces=len(faces),
                   interocular_crop_pixels=float(np.nanmean(interocular)) if faces else None,
                   detector=face_detector.backend if detector else None, **test_time_summary(model))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
