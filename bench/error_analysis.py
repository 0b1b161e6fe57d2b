"""Where a 5-point model's error comes from: error by head pose and the mean signed offset per point.

    python bench/error_analysis.py --model mtfl-5pt --data ../shared/data/mtfl/testing.txt --box image
    python bench/error_analysis.py --validation configs/mtfl-5pt.yaml --box gt   # the held-out training faces

Offsets are (prediction - annotation) / inter-ocular distance, averaged over faces: a value far from 0
at every point is a systematic shift (a framing or annotation-convention difference), not noise.
``nme_without_mean_offset`` says how much of the error that shift is: the error after subtracting the
mean pixel offset, which is fitted on the evaluated faces themselves. It is a diagnostic only; no model
or reported result applies it (fitting it on a test set would be tuning on the test set).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from tcdcn.cli.arguments import add_test_time_arguments, apply_test_time_arguments
from tcdcn.config import load_config
from tcdcn.data.dataset import split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.evaluation.metrics import failure_rate, per_face_error, point_errors
from tcdcn.geometry import Box, box_from_landmarks
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.inference.test_time import test_time_summary
from tcdcn.io.images import load_image, to_grey

POSES = ("pose_left_profile", "pose_left", "pose_frontal", "pose_right", "pose_right_profile")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtfl-5pt")
    p.add_argument("--data", default="../shared/data/mtfl/testing.txt")
    p.add_argument("--validation", metavar="CONFIG", default="",
                   help="analyse the validation split this config carves from its training data instead of --data")
    p.add_argument("--box", choices=("image", "gt"), default="image")
    add_test_time_arguments(p)
    args = p.parse_args(argv)
    model = LandmarkModel.load(args.model)
    apply_test_time_arguments(model, args)
    if args.validation:
        cfg = load_config(args.validation)
        _, faces = split_faces(read_annotations(cfg.data.train), cfg.data)
    else:
        faces = read_annotations(args.data)
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [Box.whole_image(g.shape[1], g.shape[0]) if args.box == "image"
             else box_from_landmarks(f.landmarks, f.scheme) for g, f in zip(greys, faces)]
    pred = model.predict(greys, boxes).landmarks  # (N, 5, 2)
    target = np.stack([f.scheme.five_points(f.landmarks.astype(np.float64)) for f in faces])  # (N, 5, 2)
    iod = model.scheme.interocular_distance(target)
    face_err = per_face_error(point_errors(pred, target, iod))
    offsets = ((pred - target) / iod[:, None, None]).mean(axis=0)  # (5, 2)
    mean_shift = (pred - target).mean(axis=(0, 1))  # (2,) pixels, over faces and points
    shifted_err = per_face_error(point_errors(pred - mean_shift, target, iod))
    out: dict[str, object] = {
        "n": len(faces),
        **test_time_summary(model),
        "nme": float(face_err.mean()),
        "failure_rate": failure_rate(face_err),
        "mean_offset_pixels": [round(float(v), 3) for v in mean_shift],
        # Comparable across data sets whose images differ in size: the shift over inter-ocular distance.
        "mean_offset_interocular": [round(float(v), 4) for v in offsets.mean(axis=0)],
        "nme_without_mean_offset": round(float(shifted_err.mean()), 4),
        "failure_rate_without_mean_offset": round(failure_rate(shifted_err), 4),
        "mean_offset_per_point": {n: [round(float(x), 4), round(float(y), 4)]
                                  for n, (x, y) in zip(model.scheme.point_names, offsets)},
    }
    if all(all(t in f.attributes for t in POSES) for f in faces):
        pose = np.array([[f.attributes[t] for t in POSES] for f in faces]).argmax(axis=1)
        out["nme_by_pose"] = {t.removeprefix("pose_"): {"n": int((pose == k).sum()),
                                                       "nme": round(float(face_err[pose == k].mean()), 4)}
                              for k, t in enumerate(POSES) if (pose == k).any()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
