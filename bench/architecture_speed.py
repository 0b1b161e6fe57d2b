"""What a network shape costs as an int8 graph: time per crop of untrained networks of several shapes.

    python bench/architecture_speed.py --out bench/results/architecture_speed.json [--rounds 5]

Speed depends on the shape only, not on the weights, so each shape is a freshly initialised TCDCN (landmark
head made non-zero), exported and quantised as ``tcdcn export --int8`` does (QDQ, space-to-depth stem),
calibrated on crops of MTFL validation faces, then timed on those crops at 1 and 4 crops per call (the
default inference's two calls), one thread, best of ``--rounds`` rounds with every shape timed in each round.
Accuracy is not measured here: a shape is only worth training if it is fast enough to matter.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from host import host_facts, write_report

from tcdcn.config import ModelConfig, load_config
from tcdcn.data.dataset import split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.inference.backends.onnx import OnnxLandmarkModel
from tcdcn.inference.export import export_onnx, face_crops, quantize_int8
from tcdcn.models.network import TCDCN, count_multiply_adds

REPO = Path(__file__).resolve().parents[1]
# (channels, kernels, feature_dim[, factor_ranks]) per shape; the first is the paper's. The "live units" shape
# is mtfl-5pt version 5 without its dead units (bench/weight_health.py); the "pruned" ones keep fewer of its
# units (scripts/prune_model.py); "factored" ones replace a k x k layer by a rank-r k x 1, 1 x k pair.
SHAPES: dict[str, tuple] = {
    "paper": ((20, 48, 64, 80), (5, 5, 3, 3), 256),
    "narrow": ((16, 32, 48, 64), (5, 5, 3, 3), 256),
    "narrow second layer": ((20, 32, 64, 80), (5, 5, 3, 3), 256),
    "3x3 second layer": ((20, 48, 64, 80), (5, 3, 3, 3), 256),
    "narrow, 3x3 second layer": ((16, 32, 48, 64), (5, 3, 3, 3), 256),
    "live units of mtfl-5pt": ((20, 38, 42, 47), (5, 5, 3, 3), 96),
    "pruned (20, 24, 40, 48)": ((20, 24, 40, 48), (5, 5, 3, 3), 96),
    "pruned (16, 24, 32, 48)": ((16, 24, 32, 48), (5, 5, 3, 3), 96),
    "pruned (16, 16, 32, 48)": ((16, 16, 32, 48), (5, 5, 3, 3), 96),
    "mtfl-5pt version 6 (20, 32, 48, 64)": ((20, 32, 48, 64), (5, 5, 3, 3), 128),
    "version 6, second layer rank 24": ((20, 32, 48, 64), (5, 5, 3, 3), 128, (0, 24, 0, 0)),
    "version 6, second layer rank 20": ((20, 32, 48, 64), (5, 5, 3, 3), 128, (0, 20, 0, 0)),
    "version 6, second layer rank 16": ((20, 32, 48, 64), (5, 5, 3, 3), 128, (0, 16, 0, 0)),
    "version 6, ranks 16 and 24": ((20, 32, 48, 64), (5, 5, 3, 3), 128, (0, 16, 24, 0)),
}
TASKS = 8  # the shipped 5-point model's attribute outputs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON report path")
    p.add_argument("--config", default=str(REPO / "configs" / "mtfl-5pt.yaml"), help="its validation split "
                   "supplies the crops")
    p.add_argument("--faces", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    _, val_faces = split_faces(read_annotations(cfg.data.train), cfg.data)
    crops = face_crops(val_faces, args.faces, cfg.model.input_size)  # (N, 1, S, S)
    runners: dict[str, OnnxLandmarkModel] = {}
    multiply_adds: dict[str, int] = {}
    folder = Path(tempfile.mkdtemp())
    for i, (name, (channels, kernels, feature_dim, *ranks)) in enumerate(SHAPES.items()):
        network = TCDCN(ModelConfig(input_size=cfg.model.input_size, channels=channels, kernels=kernels,
                                    feature_dim=feature_dim, factor_ranks=ranks[0] if ranks else ()), TASKS)
        with torch.no_grad():
            network.landmark_head.weight.normal_(0.0, 0.05)
        multiply_adds[name] = count_multiply_adds(network)
        graph = export_onnx(network.eval(), folder / f"{i}.onnx", scheme="mtfl-5",
                            task_names=[f"task{t}" for t in range(TASKS)])
        runners[name] = OnnxLandmarkModel(quantize_int8(graph, folder / f"{i}.int8.onnx", crops), threads=1)
    best = {(name, size): np.inf for name in runners for size in (1, 4)}
    for runner in runners.values():
        for crop in crops[:30]:  # warm-up
            runner.run_network(crop[None])
    facts = host_facts()
    for _ in range(args.rounds):
        for name, runner in runners.items():
            for size in (1, 4):
                start = time.perf_counter()
                for i in range(0, len(crops), size):
                    runner.run_network(crops[i:i + size])
                best[(name, size)] = min(best[(name, size)], (time.perf_counter() - start) / len(crops))
    rows = {}
    for name, (channels, kernels, feature_dim, *ranks) in SHAPES.items():
        rows[name] = {"channels": list(channels), "kernels": list(kernels), "feature_dim": feature_dim,
                      "factor_ranks": list(ranks[0] if ranks else ()),
                      "multiply_adds": multiply_adds[name],
                      "ms_per_crop_1": round(1000 * best[(name, 1)], 4),
                      "ms_per_crop_4": round(1000 * best[(name, 4)], 4)}
        print(f"{name:36s} {multiply_adds[name] / 1e6:5.1f}M multiply-adds  {rows[name]['ms_per_crop_1']:.3f} ms/crop "
              f"(1 per call)  {rows[name]['ms_per_crop_4']:.3f} (4 per call)", flush=True)
    report = {"faces": len(crops), "rounds": args.rounds, "host_start": facts, "host_end": host_facts(),
              "shapes": rows}
    print(f"{facts['cpu_model']}; written {write_report(args.out, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
