"""A 68-point model against dlib's 68-point shape predictor on the same faces and boxes: mean error
(inter-ocular and inter-pupil), failure rate, per-region errors (contour, brows, nose, eyes, mouth) and
the CED, from the package's pure metric functions for both.

    python bench/dense_vs_dlib.py --model 300w-68pt --split configs/splits/helen-test.txt \
        --out bench/results/dense_vs_dlib.json [--ced bench/results/dense_vs_dlib-ced.png] \
        [--flip --multi-crop --box-refinements 1]

``--split`` lists the faces (image paths relative to ``--data``); the default is the held-out Helen test
split, on which a model must not have been trained or chosen. Boxes: the ground-truth convention box
(``--box gt``); dlib gets the rectangle its own detector would give for that box (the inverse of the
package's dlib box calibration), as in ``bench/speed.py``. Needs the ``bench`` extra for dlib.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from host import host_facts
from speed import dlib_rectangle, load_dlib

from tcdcn.cli.arguments import add_test_time_arguments, apply_test_time_arguments
from tcdcn.data.formats import read_annotations
from tcdcn.evaluation.metrics import auc, ced, failure_rate, normalised_face_errors, per_region_error, point_errors
from tcdcn.geometry import box_from_landmarks
from tcdcn.inference.loading import load_landmark_model
from tcdcn.inference.test_time import test_time_summary
from tcdcn.io.images import load_image, to_grey

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "300w"
SPLIT = Path(__file__).resolve().parents[1] / "configs" / "splits" / "helen-test.txt"


def read_split(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def dlib_landmarks(faces: list, dlib_parts: tuple) -> np.ndarray:
    """(N, 68, 2) dlib predictions on the faces' convention boxes."""
    dlib, model_file = dlib_parts
    predictor = dlib.shape_predictor(model_file)
    out = np.empty((len(faces), 68, 2))
    for i, face in enumerate(faces):
        grey = to_grey(load_image(face.image_path))
        shape = predictor(grey, dlib_rectangle(dlib, box_from_landmarks(face.landmarks, face.scheme), True))
        out[i] = [[shape.part(j).x, shape.part(j).y] for j in range(68)]
    return out


def scores(pred: np.ndarray, faces: list) -> dict:
    scheme = faces[0].scheme
    targets = np.stack([f.landmarks for f in faces]).astype(np.float64)  # (N, 68, 2)
    interocular = scheme.interocular_distance(targets)
    errors = normalised_face_errors(pred, targets, interocular)
    thresholds, fractions = ced(errors, max_error=0.2, steps=41)
    return {"nme_interocular": float(errors.mean()),
            "nme_interpupil": float(normalised_face_errors(pred, targets, scheme.interpupil_distance(targets)).mean()),
            "failure_rate": failure_rate(errors), "auc_at_0.1": auc(errors),
            "per_region": per_region_error(point_errors(pred, targets, interocular), scheme.regions),
            "ced": {"thresholds": thresholds.round(3).tolist(), "fractions": fractions.round(4).tolist()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="300w-68pt")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--split", type=Path, default=SPLIT)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--ced", type=Path, default=None, help="PNG of both predictors' CED (inter-ocular)")
    add_test_time_arguments(p)
    args = p.parse_args(argv)
    wanted = read_split(args.split)
    faces = [f for f in read_annotations(args.data)
             if Path(f.image_path).relative_to(args.data).as_posix() in wanted]
    if len(faces) != len(wanted):
        print(f"{args.split}: {len(wanted)} faces listed, {len(faces)} found under {args.data}", file=sys.stderr)
        return 2
    model = load_landmark_model(args.model)
    apply_test_time_arguments(model, args)
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [box_from_landmarks(f.landmarks, f.scheme) for f in faces]
    pred = model.predict(greys, boxes).landmarks
    result = {"faces": len(faces), "split": str(args.split), "box": "gt", "host": host_facts(),
              "tcdcn": {"model": args.model, **test_time_summary(model), **scores(pred, faces)}}
    dlib_parts = load_dlib()
    if dlib_parts is not None:
        result["dlib"] = {"model": Path(dlib_parts[1]).name, **scores(dlib_landmarks(faces, dlib_parts), faces)}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.ced:
        from tcdcn.evaluation.plots import save_ced_comparison

        args.ced.parent.mkdir(parents=True, exist_ok=True)
        save_ced_comparison({(args.model if name == "tcdcn" else "dlib 68-point predictor"):
                             (np.array(result[name]["ced"]["thresholds"]), np.array(result[name]["ced"]["fractions"]))
                             for name in ("tcdcn", "dlib") if name in result}, args.ced)
    for name in ("tcdcn", "dlib"):
        if name in result:
            r = result[name]
            regions = ", ".join(f"{k} {100 * v:.2f}%" for k, v in r["per_region"].items())
            print(f"{name}: inter-ocular {100 * r['nme_interocular']:.2f}%, "
                  f"inter-pupil {100 * r['nme_interpupil']:.2f}%, failures {100 * r['failure_rate']:.1f}%; {regions}")
            curve = zip(r["ced"]["thresholds"], r["ced"]["fractions"])
            shown = [(t, f) for t, f in curve if round(100 * t, 6) in (2, 3, 4, 6, 8)]
            under = ", ".join(f"{100 * f:.0f}% under {100 * t:.0f}%" for t, f in shown)
            print(f"  CED: {under}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
