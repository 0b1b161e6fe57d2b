"""Where the int8 network's time goes: onnxruntime's per-node profile, with and without the stem.

    python bench/profile_int8.py [--model mtfl-5pt] [--calls 1000]

Builds the int8 QDQ graph as ``bench/speed.py`` does (calibrated on MTFL training faces), once with
``tcdcn.export.space_to_depth_stem`` and once without, runs each at batch 1 on one thread with
onnxruntime's profiler on, and prints the mean kernel time per node (microseconds per call; the
profiler itself adds a few microseconds per node, so the totals exceed the benchmark's times).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.inference.export import DEFAULT_CALIBRATION_FACES, calibration_crops, export_onnx, quantize_int8

DEFAULT_TRAIN = Path("../shared/data/mtfl/training.txt")


def node_profile(path: Path, crops: np.ndarray, calls: int) -> list[tuple[str, float]]:
    """(node [op], mean us per call) sorted by time, from onnxruntime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for i in range(calls):
        session.run(None, {name: crops[i % len(crops)][None]})
    profile = Path(session.end_profiling())
    totals: dict[str, float] = collections.defaultdict(float)
    counts: collections.Counter[str] = collections.Counter()
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            key = f"{event['name'][:-len('_kernel_time')]} [{event['args'].get('op_name', '')}]"
            totals[key] += event["dur"]
            counts[key] += 1
    os.unlink(profile)
    return sorted(((k, v / counts[k]) for k, v in totals.items()), key=lambda kv: -kv[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtfl-5pt")
    p.add_argument("--train", default=str(DEFAULT_TRAIN), help="training list for int8 calibration")
    p.add_argument("--calls", type=int, default=1000)
    args = p.parse_args(argv)
    model = LandmarkModel.load(args.model)
    calib = calibration_crops(args.train, DEFAULT_CALIBRATION_FACES, model.input_size)
    with tempfile.TemporaryDirectory() as tmpdir:
        float_file = export_onnx(model, Path(tmpdir) / "float.onnx")
        for stem in ("space_to_depth", "plain"):
            path = quantize_int8(float_file, Path(tmpdir) / f"int8-{stem}.onnx", calib, stem=stem)
            rows = node_profile(path, calib, args.calls)
            print(f"\nint8 QDQ, stem {stem}: {sum(t for _, t in rows):.1f} us per call in kernels")
            for node, us in rows:
                print(f"{us:8.1f} us  {node}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
