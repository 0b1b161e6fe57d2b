"""Accuracy and cost of test-time plans (box refinement, crops, mirror-averaging) on a validation split.

    python bench/test_time_plans.py [--model mtfl-5pt] [--config configs/mtfl-5pt.yaml] [--backend int8]
        [--plans refined,diagonal,grid] [--boxes gt,detect,image] [--time]
        [--out bench/results/test_time_plans-mtfl-5pt.jsonl]

Each plan is scored on the validation split the config carves from the training data (never a test set),
with ground-truth boxes and with the default face detector's boxes (detections computed once and shared by
every plan), or with ``--boxes`` any of those and the whole photo as the box (``image``). ``--time`` also
times each plan through ``predict``, one face per call on one thread, each pass right after a pass of dlib's
68-point shape predictor on the same faces: the ratio is the median over rounds of plan/dlib, so load that
changes between rounds cancels. A plan counts network crops per face: refinement passes, then the last
pass's crops (twice when mirror-averaged). "diagonal" is the shipped models' default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from host import host_facts

from tcdcn.config import load_config
from tcdcn.data.dataset import split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.data.transforms import box_array
from tcdcn.evaluation.protocol import evaluate
from tcdcn.geometry import CropJitter, box_from_landmarks, grid_jitters
from tcdcn.inference.detectors import FaceDetector
from tcdcn.inference.loading import BACKENDS, load_landmark_model
from tcdcn.inference.pipeline import CropLandmarkModel, Prediction
from tcdcn.io.images import load_image, to_grey

DIAGONAL = (CropJitter(0.02, 0.02), CropJitter(-0.02, -0.02))


@dataclass(frozen=True)
class Plan:
    """A test-time plan: ``refinements`` re-framing passes (mirrored with ``mirror_refinements``), then the
    last pass on ``crops`` (the box alone when empty), mirror-averaged with ``mirror``."""

    refinements: int
    crops: tuple[CropJitter, ...]
    mirror: bool
    mirror_refinements: bool = False

    @property
    def crops_per_face(self) -> int:
        return (self.refinements * (2 if self.mirror_refinements else 1)
                + max(1, len(self.crops)) * (2 if self.mirror else 1))


# Every plan but "box" and "grid-unrefined" re-frames once; all but "diagonal-unmirrored" mirror-average the last
# pass. Crops are moved by fractions of the box side: the diagonal pair 0.02 both ways, the grid 0.04.
PLANS = {
    "box": Plan(0, (), True),
    "refined": Plan(1, (), True),
    "refined-mirrored-refinement": Plan(1, (), True, mirror_refinements=True),
    "diagonal": Plan(1, DIAGONAL, True),
    "diagonal-unmirrored": Plan(1, DIAGONAL, False),
    "centre-diagonal": Plan(1, ((CropJitter(),) + DIAGONAL), True),
    "x4": Plan(1, tuple(CropJitter(dx * 0.02, dy * 0.02) for dx, dy in ((1, 1), (-1, 1), (1, -1), (-1, -1))), True),
    "grid": Plan(1, grid_jitters(0.04), True),
    "grid-mirrored-refinement": Plan(1, grid_jitters(0.04), True, mirror_refinements=True),
    "grid-unrefined": Plan(0, grid_jitters(0.04), True),
}


def run_plan(model: CropLandmarkModel, plan: Plan) -> None:
    """Set ``model`` to run ``plan`` through its ``predict``."""
    model.mirror_average, model.multi_crop = plan.mirror, plan.crops
    model.box_refinements = 0 if plan.mirror_refinements else plan.refinements
    model.__dict__.pop("predict", None)
    if not plan.mirror_refinements:
        return
    # The former pipeline: refinement passes mirror-averaged as well (for the comparison only).
    plain_predict = type(model).predict

    def predict(grey_images: Any, boxes: Any, batch_size: int | None = None) -> Prediction:
        rows = box_array(boxes)  # (F, 3)
        for _ in range(plan.refinements):
            previous = model._predict_crops(grey_images, rows, (CropJitter(),), 256, mirror=True)
            rows = model._refined_boxes(previous.landmarks, rows)
        return plain_predict(model, grey_images, rows, batch_size)  # predict takes (F, 3) rows as boxes

    model.predict = predict  # type: ignore[method-assign]


def time_plans(model: CropLandmarkModel, plans: dict[str, Plan], faces: list[Any],
               repeats: int) -> dict[str, dict[str, float]]:
    """Per face through ``predict`` (one face per call), each plan's pass timed right after a pass of dlib's
    predictor over the same faces, ``repeats`` rounds: the best ms per face of each, and the median over
    rounds of the plan/dlib ratio (robust to load that changes between rounds)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from speed import dlib_predictor_on_boxes

    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [box_from_landmarks(f.landmarks, f.scheme) for f in faces]

    def pass_ms(call: Any) -> float:
        start = time.perf_counter()
        for i in range(len(greys)):
            call(i)
        return 1000.0 * (time.perf_counter() - start) / len(greys)

    predictor, rects = dlib_predictor_on_boxes(boxes, "--time")

    def reference(i: int) -> Any:
        return predictor(greys[i], rects[i])

    pass_ms(reference)  # warm-up
    results: dict[str, dict[str, float]] = {}
    for name, plan in plans.items():
        run_plan(model, plan)

        def run(i: int) -> Any:
            return model.predict([greys[i]], [boxes[i]])

        pass_ms(run)  # warm-up
        plan_ms, dlib_ms = [], []
        for _ in range(repeats):
            dlib_ms.append(pass_ms(reference))
            plan_ms.append(pass_ms(run))
        ratios = sorted(p / d for p, d in zip(plan_ms, dlib_ms))
        results[name] = {"ms_per_face": min(plan_ms), "dlib_ms_per_face": min(dlib_ms),
                         "x_dlib_median": ratios[len(ratios) // 2]}
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtfl-5pt")
    p.add_argument("--config", default="configs/mtfl-5pt.yaml", help="the config whose validation split is scored")
    p.add_argument("--backend", choices=BACKENDS, default="int8")
    p.add_argument("--plans", default=",".join(PLANS), help=f"comma-separated, of: {', '.join(PLANS)}")
    p.add_argument("--boxes", default="gt,detect",
                   help="comma-separated, of: gt (the convention's box on the labels), detect (the default "
                        "detector's), image (the whole photo, as AFLW's --box image); default %(default)s")
    p.add_argument("--time", action="store_true", help="also time each plan against dlib's predictor")
    p.add_argument("--time-faces", type=int, default=300, help="validation faces timed")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per plan")
    p.add_argument("--out", default="", help="append one JSON line per plan to this file")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.plans.split(",") if n.strip()]
    unknown = [n for n in names if n not in PLANS]
    if unknown:
        p.error(f"unknown plan(s): {unknown}")
    plans = {n: PLANS[n] for n in names}
    boxes = [b.strip() for b in args.boxes.split(",") if b.strip()]
    if not boxes or any(b not in ("gt", "detect", "image") for b in boxes):
        p.error(f"--boxes: gt, detect or image, got {args.boxes!r}")
    cfg = load_config(args.config)
    _, val_faces = split_faces(read_annotations(cfg.data.train), cfg.data)
    model = load_landmark_model(args.model, args.backend)
    face_detector = FaceDetector()
    detections: dict[str, list[Any]] = {}

    def detector(rgb: np.ndarray) -> list[Any]:
        key = hashlib.sha1(rgb.tobytes()).hexdigest()
        if key not in detections:
            detections[key] = [d.box for d in face_detector(rgb)]
        return detections[key]

    rows = []
    for name, plan in plans.items():
        run_plan(model, plan)
        row: dict[str, Any] = {"plan": name, "crops_per_face": plan.crops_per_face}
        for box in boxes:
            summary = evaluate(model, val_faces, box=box, detector=detector if box == "detect" else None).summary()
            row[f"val_nme_{box}"] = round(100 * summary["nme"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.time:
        times = time_plans(model, plans, val_faces[:args.time_faces], args.repeats)
        for row in rows:
            row.update({key: round(value, 3) for key, value in times[row["plan"]].items()})
    facts = {"model": args.model, "backend": args.backend, "config": args.config, **host_facts()}
    for row in rows:
        row.update(facts)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
