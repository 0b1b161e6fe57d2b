"""68-point predictors on faces none of them was trained on, scored at the five MTFL points.

    python bench/unseen_five_point.py --out bench/results/unseen_five_point.json \
        [--data ../shared/data/mtfl/testing.txt] [--limit N] [--offset-faces 1000]

The 2,995 AFLW test faces of MTFL are in no training set here, nor in dlib's (the 300-W training set).
Each 68-point prediction is reduced to the five MTFL points through the scheme's derivation matrix (eye
centres = means of the eye contours, nose tip, mouth corners: ``schemes.derivation_matrix``), for
``300w-68pt`` and for dlib's 68-point shape predictor alike, so both carry the same convention offset
against MTFL's eye centres; ``mtfl-5pt`` predicts the five points directly. Boxes: the ground-truth
convention box of the five annotated points for the tcdcn models; dlib gets the rectangle its own
detector would give for that box (as in ``bench/speed.py``). Errors are normalised by the annotated
eye-centre distance (MTFL's protocol), by head pose from MTFL's pose attribute. Each model runs its
shipped default inference. Needs the ``bench`` extra for dlib.

The derived points follow 300-W's conventions, not MTFL's (an eye contour's mean is not MTFL's eye
centre), so each 68-point predictor is also scored after removing its own mean offset per point, in units
of the face box's side, fitted on ``--offset-faces`` MTFL *training* faces (the 5-point model's validation
carve: ``configs/mtfl-5pt.yaml``'s split, never the test faces).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from host import host_facts
from speed import dlib_rectangle, load_dlib

from tcdcn.attributes import POSE_TASKS
from tcdcn.config import load_config
from tcdcn.data.dataset import split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.evaluation.metrics import failure_rate, normalised_face_errors
from tcdcn.geometry import box_from_landmarks
from tcdcn.inference.loading import load_landmark_model
from tcdcn.inference.test_time import test_time_summary
from tcdcn.io.images import load_image, to_grey
from tcdcn.schemes import derivation_matrix, get_scheme

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mtfl" / "testing.txt"
FIVE_POINT_CONFIG = ROOT / "configs" / "mtfl-5pt.yaml"


def pose_of(face) -> str:
    poses = [name for name in POSE_TASKS if face.attributes.get(name) == 1]
    return poses[0] if len(poses) == 1 else "unknown"


def scores(pred: np.ndarray, targets: np.ndarray, poses: list[str], interocular: np.ndarray) -> dict:
    errors = normalised_face_errors(pred, targets, interocular)  # (N,)
    by_pose = {}
    for pose in [*POSE_TASKS, "unknown"]:
        chosen = np.array([p == pose for p in poses])
        if chosen.any():
            by_pose[pose] = {"faces": int(chosen.sum()), "nme": float(errors[chosen].mean()),
                             "failure_rate": failure_rate(errors[chosen])}
    return {"nme": float(errors.mean()), "failure_rate": failure_rate(errors), "by_pose": by_pose}


def box_sides(boxes: list) -> np.ndarray:
    return np.array([b.side for b in boxes], dtype=np.float64)[:, None, None]  # (N, 1, 1)


def mean_offset(pred: np.ndarray, targets: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """(Q, 2) mean of target - prediction per point, in box sides."""
    return ((targets - pred) / sides).mean(axis=0)


def dlib_five_points(greys: list, boxes: list, dlib_parts: tuple, to_five: np.ndarray) -> np.ndarray:
    dlib, model_file = dlib_parts
    predictor = dlib.shape_predictor(model_file)
    out = np.empty((len(greys), to_five.shape[0], 2))
    for i, (grey, box) in enumerate(zip(greys, boxes)):
        shape = predictor(grey, dlib_rectangle(dlib, box, True))
        points = np.array([[shape.part(j).x, shape.part(j).y] for j in range(shape.num_parts)], dtype=np.float64)
        out[i] = to_five @ points
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--dense-model", default="300w-68pt")
    p.add_argument("--five-point-model", default="mtfl-5pt")
    p.add_argument("--limit", type=int, default=0, help="first N faces only (0: all)")
    p.add_argument("--offset-faces", type=int, default=1000,
                   help="MTFL training faces (validation carve) that fit each 68-point predictor's mean offset")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    faces = read_annotations(args.data)
    if args.limit > 0:
        faces = faces[:args.limit]
    five = faces[0].scheme
    targets = np.stack([f.landmarks for f in faces]).astype(np.float64)  # (N, 5, 2)
    interocular = five.interpupil_distance(targets)
    poses = [pose_of(f) for f in faces]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [box_from_landmarks(f.landmarks, five) for f in faces]
    sides = box_sides(boxes)
    # Offset-fitting faces: the 5-point model's validation carve of MTFL training.txt, never the test set.
    config = load_config(FIVE_POINT_CONFIG)
    _, carve = split_faces(read_annotations(config.data.train), config.data)
    fit_faces = carve[:args.offset_faces]
    fit_targets = np.stack([f.landmarks for f in fit_faces]).astype(np.float64)
    fit_greys = [to_grey(load_image(f.image_path)) for f in fit_faces]
    fit_boxes = [box_from_landmarks(f.landmarks, five) for f in fit_faces]
    result: dict = {"faces": len(faces), "data": str(args.data), "box": "gt", "offset_faces": len(fit_faces),
                    "host": host_facts()}

    model = load_landmark_model(args.five_point_model)
    pred = model.predict(greys, boxes).landmarks
    result["five_point_model"] = {"model": args.five_point_model, **test_time_summary(model),
                                  **scores(pred, targets, poses, interocular)}

    def dense_entry(name: str, predict, extra: dict) -> dict:
        pred = predict(greys, boxes)  # (N, 5, 2)
        offset = mean_offset(predict(fit_greys, fit_boxes), fit_targets, box_sides(fit_boxes))  # (5, 2)
        return {"model": name, **extra, **scores(pred, targets, poses, interocular),
                "offset_removed": {"offset_box_sides": offset.round(4).tolist(),
                                   **scores(pred + offset * sides, targets, poses, interocular)}}

    dense = load_landmark_model(args.dense_model)
    to_five = derivation_matrix(dense.scheme, five)  # (5, 68)
    result["dense_model"] = dense_entry(
        args.dense_model, lambda g, b: np.einsum("qp,npc->nqc", to_five, dense.predict(g, b).landmarks),
        test_time_summary(dense))
    dlib_parts = load_dlib()
    if dlib_parts is not None:
        dlib_to_five = derivation_matrix(get_scheme("ibug-68"), five)
        result["dlib"] = dense_entry(Path(dlib_parts[1]).name,
                                     lambda g, b: dlib_five_points(g, b, dlib_parts, dlib_to_five), {})
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    for name in ("five_point_model", "dense_model", "dlib"):
        if name in result:
            r = result[name]
            poses_text = ", ".join(f"{k} {100 * v['nme']:.2f}% ({v['faces']})" for k, v in r["by_pose"].items())
            print(f"{r['model']}: {100 * r['nme']:.2f}%, failures {100 * r['failure_rate']:.1f}%; {poses_text}")
            if "offset_removed" in r:
                o = r["offset_removed"]
                poses_text = ", ".join(f"{k} {100 * v['nme']:.2f}%" for k, v in o["by_pose"].items())
                print(f"  own mean offset removed: {100 * o['nme']:.2f}%, failures {100 * o['failure_rate']:.1f}%; "
                      f"{poses_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
