"""A user's own checkpoint against the shipped model: time per face through ``predict`` on the same faces.

    python bench/checkpoint_speed.py --out bench/results/checkpoint_speed.json [--limit 1000] [--rounds 7]

The shipped ``mtfl-5pt`` weights are loaded twice more as a checkpoint (the ``.pt`` file's path, as a user's
own run would be): with ``--backend auto`` (an int8 graph calibrated at load on the checkpoint's training
split) and ``--backend onnx`` (the float32 graph ``auto`` ran for checkpoints before). All three run the
shipped model's test-time plan (set on the checkpoints, whose own default is one pass) on the AFLW test
faces, whole image as the box, one face per call, one thread; each round times every model once, in turn,
so that load that changes between rounds reaches all of them. Reported: best ms per face, and the median over
rounds of each model's time over the shipped model's. CPU model and load average are recorded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from default_inference import load_faces, single_threaded
from host import host_facts, write_report

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "src" / "tcdcn" / "models" / "weights" / "mtfl-5pt.pt"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON report path")
    p.add_argument("--limit", type=int, default=1000, help="AFLW test faces timed")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    single_threaded()
    from tcdcn.inference.loading import load_landmark_model

    shipped = load_landmark_model("mtfl-5pt")
    models = {"shipped mtfl-5pt (auto)": shipped,
              "checkpoint, auto (int8 calibrated at load)": load_landmark_model(str(CHECKPOINT)),
              "checkpoint, onnx (float32)": load_landmark_model(str(CHECKPOINT), backend="onnx")}
    for model in models.values():
        model.mirror_average, model.multi_crop = shipped.mirror_average, shipped.multi_crop
        model.box_refinements = shipped.box_refinements
    greys, boxes = load_faces("mtfl-5pt", args.limit)
    facts_start = host_facts()

    def pass_ms(model: Any) -> float:
        start = time.perf_counter()
        for grey, box in zip(greys, boxes):
            model.predict([grey], [box])
        return 1000.0 * (time.perf_counter() - start) / len(greys)

    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        pass_ms(model)  # warm-up
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name].append(pass_ms(model))
    reference = times["shipped mtfl-5pt (auto)"]
    rows = {}
    for name, passes in times.items():
        ratios = sorted(t / r for t, r in zip(passes, reference))
        rows[name] = {"graph": models[name].describe_backend(), "ms_per_face_best": round(min(passes), 3),
                      "x_shipped_median": round(ratios[len(ratios) // 2], 3), "ms_per_face_passes": passes}
        print(f"{name:45s} {min(passes):6.3f} ms/face  {rows[name]['x_shipped_median']:.2f}x shipped", flush=True)
    report = {"faces": len(greys), "rounds": args.rounds, "plan": {
        "mirror_average": shipped.mirror_average, "crops": len(shipped.multi_crop),
        "box_refinements": shipped.box_refinements}, "host_start": facts_start, "host_end": host_facts(),
        "models": rows}
    print(f"{facts_start['cpu_model']}; written {write_report(args.out, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
