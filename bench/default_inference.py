"""Time the shipped models' default inference per face, through ``predict`` on given boxes.

Default inference: one pass on the box (and its mirror image), the box re-framed on those points, then
the 3x3 multi-crop grid and its mirror images (20 crops per face). Images are decoded and converted to
grey beforehand; the timed call is ``model.predict(greys, boxes)`` over ``--limit`` faces (crops built
in the call), best of ``--repeats`` passes, one thread for the network (torch and onnxruntime) and
OpenCV. Faces: ``mtfl-5pt`` on the AFLW test faces (the whole 80x80 image is the box, as
``tcdcn evaluate --box image``), ``300w-68pt`` on the 300-W faces (ground-truth box, 256x256 images).

``--batch-sizes`` also times the network alone on the same faces' grid crops at each crops-per-call
size, for torch and onnxruntime with 1 and 2 threads (the figures behind ``pipeline.TORCH_CROPS_PER_CALL``
and ``ONNX_CROPS_PER_CALL``).

    nice -n 15 .venv/bin/python bench/default_inference.py --out bench/results/default_inference.json
    # an older tree, for a before/after pair (its package first on the path):
    PYTHONPATH=/path/to/old/src nice -n 15 .venv/bin/python bench/default_inference.py --out old.json

Speed figures depend on the machine and its load; the CPU model and the load average are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from host import cpu_model_name

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FACE_SETS = {"mtfl-5pt": (DATA / "mtfl" / "testing.txt", "image"), "300w-68pt": (DATA / "300w", "gt")}
WARMUP_FACES = 16


def single_threaded() -> None:
    """One thread for torch and OpenCV (onnxruntime gets ``threads=1`` per model)."""
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def load_faces(model_name: str, limit: int) -> tuple[list[np.ndarray], list[Any]]:
    """Grey images and face boxes (prepared before timing) for a model's face set."""
    from tcdcn.data.formats import read_annotations
    from tcdcn.geometry import Box, box_from_landmarks
    from tcdcn.io.images import load_image, to_grey

    path, box_mode = FACE_SETS[model_name]
    faces = read_annotations(path)[:limit]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    if box_mode == "image":
        boxes = [Box.whole_image(g.shape[1], g.shape[0]) for g in greys]
    else:
        boxes = [box_from_landmarks(f.landmarks, f.scheme) for f in faces]
    return greys, boxes


def time_predict(model: Any, greys: list[np.ndarray], boxes: list[Any], repeats: int) -> dict[str, float]:
    """ms per face of ``model.predict`` over all faces: best pass and every pass."""
    model.predict(greys[:WARMUP_FACES], boxes[:WARMUP_FACES])
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(greys, boxes)
        passes.append(1000.0 * (time.perf_counter() - start) / len(greys))
    return {"ms_per_face": min(passes), "ms_per_face_passes": passes}


def grid_crops(model: Any, greys: list[np.ndarray], boxes: list[Any]) -> np.ndarray:
    """(N*J, 1, S, S) float32 crops of the model's multi-crop grid on every face (the network's input)."""
    jitters = model.multi_crop or ()
    return np.concatenate([model.crops(greys, [j.apply(b) for b in boxes])[0] for j in jitters])


def time_calls(model: Any, crops: np.ndarray, batch_sizes: list[int], repeats: int) -> dict[str, float]:
    """ms per crop of ``run_network`` over all crops in calls of each size: best of ``repeats`` passes,
    the sizes taken in turn within each pass so that a change of load reaches all of them."""
    best = dict.fromkeys(batch_sizes, np.inf)
    for size in batch_sizes:
        model.run_network(crops[:size])
    for _ in range(repeats):
        for size in batch_sizes:
            start = time.perf_counter()
            for i in range(0, len(crops), size):
                model.run_network(crops[i:i + size])
            best[size] = min(best[size], time.perf_counter() - start)
    return {str(size): 1000.0 * seconds / len(crops) for size, seconds in best.items()}


def batch_sweep(model: Any, backend: str, name: str, crops: np.ndarray, batch_sizes: list[int],
                repeats: int) -> dict[str, dict[str, float]]:
    """Network-only ms/crop by crops per call, with 1 and 2 threads."""
    from tcdcn.inference.loading import load_landmark_model

    results: dict[str, dict[str, float]] = {}
    for threads in (1, 2):
        if backend == "torch":
            import torch

            torch.set_num_threads(threads)
        elif threads > 1:
            model = load_landmark_model(name, backend=backend, threads=threads)
        results[f"{backend}_{threads}_thread"] = time_calls(model, crops, batch_sizes, repeats)
    if backend == "torch":
        torch.set_num_threads(1)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON report path")
    p.add_argument("--models", default="mtfl-5pt,300w-68pt")
    p.add_argument("--backends", default="torch,onnx",
                   help="in this order; torch first, as onnxruntime's denormal flush would stay set on this "
                        "thread and speed up every later torch run")
    p.add_argument("--limit", type=int, default=500, help="faces per model")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-sizes", default="", help="crops-per-call sizes to time the network at (e.g. "
                                                     "32,64,128,256); empty: no sweep")
    p.add_argument("--sweep-crops", type=int, default=2048, help="grid crops per sweep")
    p.add_argument("--no-per-face", action="store_true", help="only the crops-per-call sweep")
    args = p.parse_args()
    single_threaded()
    import tcdcn
    from tcdcn.inference.loading import load_landmark_model

    report: dict[str, Any] = {
        "cpu_model": cpu_model_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "tcdcn_path": str(Path(tcdcn.__file__).parent), "limit": args.limit, "repeats": args.repeats,
        "load_average_start": os.getloadavg(), "per_face": {}, "batch_sweep": {},
    }
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    names = [m for m in args.models.split(",") if m]
    faces = {name: load_faces(name, args.limit) for name in names}
    sweep_crops: dict[str, np.ndarray] = {}
    for backend in [b for b in args.backends.split(",") if b]:
        for name in names:
            greys, boxes = faces[name]
            model = load_landmark_model(name, backend=backend, threads=1)
            if not args.no_per_face:
                passes = model.box_refinements + max(1, len(model.multi_crop))  # crops per face, before mirroring
                row: dict[str, Any] = {"faces": len(greys),
                                       "crops_per_face": passes * (2 if model.mirror_average else 1),
                                       "crops_per_call": (model.crops_per_call or model.default_crops_per_call()
                                                          if hasattr(model, "default_crops_per_call") else None)}
                row.update(time_predict(model, greys, boxes, args.repeats))
                if hasattr(model, "shared_crop_reduction"):
                    model.shared_crop_reduction = False
                    row["exact_crops"] = time_predict(model, greys, boxes, args.repeats)
                report["per_face"][f"{name} {backend}"] = row
                print(f"{name:10s} {backend:6s} {row['ms_per_face']:7.2f} ms/face" + (
                    f"  (per-crop reduction {row['exact_crops']['ms_per_face']:.2f})" if "exact_crops" in row else ""),
                    flush=True)
            if batch_sizes:
                if name not in sweep_crops:
                    sweep_crops[name] = grid_crops(model, greys, boxes)[:args.sweep_crops]
                sweep = batch_sweep(model, backend, name, sweep_crops[name], batch_sizes, args.repeats)
                report["batch_sweep"].setdefault(name, {}).update(sweep)
                for config, by_size in sweep.items():
                    print(f"{name:10s} {config:15s} ms/crop by crops per call: "
                          + "  ".join(f"{k}: {v:.3f}" for k, v in by_size.items()), flush=True)
    report["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['cpu_model']}; load average {report['load_average_start'][0]:.2f} -> "
          f"{report['load_average_end'][0]:.2f}; written {out}")


if __name__ == "__main__":
    main()
