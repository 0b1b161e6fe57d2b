"""What 68 points cost against 5: both shipped models' default inference per face, on the same faces and
boxes, with dlib's 68-point shape predictor timed in the same rounds.

    python bench/dense_cost.py --out bench/results/dense_cost.json [--faces 300] [--repeats 9]
        [--flip/--no-flip --multi-crop/--no-multi-crop --box-refinements K --local-stage/--no-local-stage]
        [--stage-mirror]

Faces: the first ``--faces`` of the 300-W faces in ``../shared`` (full-size photos, as a user's), framed by
the ground-truth convention box; one face per ``predict`` call, one thread, each model's default backend
and test-time plan (the test-time switches change the 68-point model's). Each round times a pass of dlib, then
the 5-point model, then the 68-point model over all faces; the ratios are medians over rounds of the per-round
ratios (robust to load that changes between rounds), the ms figures the best pass of each. Needs the ``bench``
extra for dlib.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host import host_facts
from speed import dlib_predictor_on_boxes

from tcdcn.cli.arguments import add_test_time_arguments, apply_test_time_arguments
from tcdcn.data.formats import read_annotations
from tcdcn.geometry import box_from_landmarks
from tcdcn.inference.loading import load_landmark_model
from tcdcn.inference.test_time import test_time_summary
from tcdcn.io.images import load_image, to_grey

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "300w"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--five-point-model", default="mtfl-5pt")
    p.add_argument("--dense-model", default="300w-68pt")
    p.add_argument("--faces", type=int, default=300)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", type=Path, default=None)
    add_test_time_arguments(p)
    p.add_argument("--stage-mirror", action="store_true", help="mirror-average the 68-point model's local stage")
    args = p.parse_args(argv)
    if args.faces < 1 or args.repeats < 1:
        p.error("--faces and --repeats must be at least 1")
    faces = read_annotations(args.data)[:args.faces]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [box_from_landmarks(f.landmarks, f.scheme) for f in faces]
    five = load_landmark_model(args.five_point_model)
    dense = load_landmark_model(args.dense_model)
    apply_test_time_arguments(dense, args)
    if args.stage_mirror and dense.local_stage is not None:
        dense.local_stage.mirror_average = True
    predictor, rects = dlib_predictor_on_boxes(boxes, "bench/dense_cost.py")

    calls: dict[str, Callable[[int], Any]] = {
        "dlib": lambda i: predictor(greys[i], rects[i]),
        "five_point": lambda i: five.predict([greys[i]], [boxes[i]]),
        "dense": lambda i: dense.predict([greys[i]], [boxes[i]]),
    }

    def pass_ms(call: Callable[[int], Any]) -> float:
        start = time.perf_counter()
        for i in range(len(greys)):
            call(i)
        return 1000.0 * (time.perf_counter() - start) / len(greys)

    for call in calls.values():  # warm-up
        pass_ms(call)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            times[name].append(pass_ms(call))
    rounds = range(args.repeats)
    result = {
        "faces": len(faces), "data": str(args.data), "repeats": args.repeats, "host": host_facts(),
        "five_point_model": {"model": args.five_point_model, "backend": five.describe_backend(),
                             **test_time_summary(five)},
        "dense_model": {"model": args.dense_model, "backend": dense.describe_backend(), **test_time_summary(dense),
                        "stage_mirror": bool(dense.local_stage is not None and dense.local_stage.mirror_average)},
        "best_ms_per_face": {name: min(values) for name, values in times.items()},
        "median_dense_over_five_point": median([times["dense"][r] / times["five_point"][r] for r in rounds]),
        "median_five_point_over_dlib": median([times["five_point"][r] / times["dlib"][r] for r in rounds]),
        "median_dense_over_dlib": median([times["dense"][r] / times["dlib"][r] for r in rounds]),
        "ms_per_face_by_round": times,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    best = result["best_ms_per_face"]
    print(f"{result['host']['cpu_model']}: best ms per face: dlib {best['dlib']:.3f}, "
          f"{args.five_point_model} {best['five_point']:.3f}, {args.dense_model} {best['dense']:.3f}; "
          f"medians over rounds: {args.dense_model}/{args.five_point_model} "
          f"{result['median_dense_over_five_point']:.2f}x, {args.five_point_model}/dlib "
          f"{result['median_five_point_over_dlib']:.2f}x, {args.dense_model}/dlib "
          f"{result['median_dense_over_dlib']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
