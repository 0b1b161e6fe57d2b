"""Whether a shipped int8 graph answers as it was scored on this CPU: int8 against float32, with and without
onnxruntime's exact uint8 x uint8 path.

    python bench/int8_exactness.py --out bench/results/int8_exactness-HOST.json [--model mtfl-5pt] [--faces 500]

On x86-64 CPUs without VNNI, onnxruntime multiplies uint8 activations by int8 weights with VPMADDUBSW, whose
16-bit pair sums saturate; the session option ``session.x64quantprecision`` converts such products to an
exact uint8 x uint8 path, at a cost in time. This bench runs the model's float32 graph and its int8 graph
twice (onnxruntime's default session; ``x64quantprecision`` on, as the package runs it without VNNI)
on crops of the MTFL validation faces (ground-truth boxes),
and reports each int8 session's distance from the float32 landmarks (mean and largest per face, in % of the
inter-ocular distance, the unit of every error figure) and each session's time per crop (one thread, one
crop per call, best of ``--rounds`` passes). With VNNI the two int8 sessions should agree; without it the
default session drifts further from float32 and from the answers the graph was scored with.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from host import host_facts, write_report

from tcdcn.config import load_config
from tcdcn.cpu import this_cpu_int8_exact
from tcdcn.data.dataset import split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.evaluation.metrics import normalised_face_errors
from tcdcn.inference.export import face_crops
from tcdcn.inference.loading import shipped_onnx_file
from tcdcn.schemes import get_scheme

REPO = Path(__file__).resolve().parents[1]


def session(path: Path, exact_int8: bool) -> Any:
    """A one-thread session on ``path``; ``exact_int8`` switches onnxruntime's exact uint8 x uint8 path on
    (the package's sessions do so only on CPUs without VNNI: ``tcdcn.models.denormals.cpu_session_options``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.add_session_config_entry("session.x64quantprecision", "1" if exact_int8 else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def landmarks_and_time(sess: Any, crops: np.ndarray, rounds: int) -> tuple[np.ndarray, float]:
    """(N, P, 2) landmarks of ``crops`` one per call, and the best pass's ms per crop."""
    name = sess.get_inputs()[0].name
    points = np.concatenate([sess.run(["landmarks"], {name: crops[i:i + 1]})[0] for i in range(len(crops))])
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(len(crops)):
            sess.run(["landmarks"], {name: crops[i:i + 1]})
        best = min(best, (time.perf_counter() - start) / len(crops) * 1e3)
    return points, best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON report path")
    p.add_argument("--model", default="mtfl-5pt", help="a shipped model with an int8 graph")
    p.add_argument("--config", default=str(REPO / "configs" / "mtfl-5pt.yaml"),
                   help="its validation split supplies the crops")
    p.add_argument("--faces", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    cfg = load_config(args.config)
    _, val_faces = split_faces(read_annotations(cfg.data.train), cfg.data)
    crops = face_crops(val_faces, args.faces, cfg.model.input_size, seed=1)  # (N, 1, S, S)
    float_file = shipped_onnx_file(args.model)
    int8_file = shipped_onnx_file(args.model, int8=True)
    assert float_file is not None and int8_file is not None, f"{args.model} is not a shipped model"
    scheme = get_scheme(cfg.data.scheme)

    reference, float_ms = landmarks_and_time(session(float_file, False), crops, args.rounds)
    distance = scheme.interocular_distance(reference)  # (N,)
    report: dict[str, Any] = {"host": host_facts(), "int8_exact_by_flags": this_cpu_int8_exact(),
                              "model": args.model, "faces": len(crops), "rounds": args.rounds,
                              "float32_ms_per_crop": round(float_ms, 4), "int8": {}}
    for label, exact in (("onnxruntime default", False), ("x64quantprecision on", True)):
        points, ms = landmarks_and_time(session(int8_file, exact), crops, args.rounds)
        per_face = normalised_face_errors(points, reference, distance)  # (N,)
        report["int8"][label] = {"mean_distance_pct": round(100 * float(per_face.mean()), 4),
                                 "largest_distance_pct": round(100 * float(per_face.max()), 4),
                                 "ms_per_crop": round(ms, 4)}
        print(f"int8, {label}: {100 * per_face.mean():.3f}% mean, {100 * per_face.max():.2f}% largest "
              f"distance from float32; {ms:.3f} ms per crop (float32 {float_ms:.3f})")
    print(f"{report['host']['cpu_model']} ({report['host']['cpu_signature']}); written "
          f"{write_report(args.out, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
