"""What padding the float graph's first layer with zero channels buys (``tcdcn.inference.export.pad_first_layer``).

    python bench/first_layer_padding.py [--model mtfl-5pt] [--pads 0,8,16] [--limit 300] [--repeats 7]
        [--out bench/results/first_layer_padding.json]

The model's float32 graph is exported once per padding multiple (0: as trained; 8: the exporter's default;
16); each graph runs the model's default inference through ``predict``, one face per call on one thread, on
the first ``--limit`` AFLW test faces framed by their whole image (as ``bench/speed.py``'s default-inference
row). Rounds interleave dlib's 68-point predictor and every graph on the same faces; reported per graph: the
best ms per face, the median over rounds of its time over dlib's, and the largest difference of its landmarks
from the unpadded graph's (the padded graphs compute the same function).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from host import host_facts, write_report

from tcdcn.inference.backends.onnx import OnnxLandmarkModel
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.inference.export import export_onnx


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtfl-5pt")
    p.add_argument("--data", default="../shared/data/mtfl/testing.txt")
    p.add_argument("--pads", default="0,8,16", help="padding multiples to compare (0: the first layer as trained)")
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from speed import dlib_predictor_on_boxes, whole_image_faces

    greys, boxes = whole_image_faces(args.data, args.limit)
    predictor, rects = dlib_predictor_on_boxes(boxes, "bench/first_layer_padding.py")
    torch_model = LandmarkModel.load(args.model)
    pads = [int(v) for v in args.pads.split(",") if v]

    def pass_ms(call: Any) -> float:
        start = time.perf_counter()
        for i in range(len(greys)):
            call(i)
        return 1000.0 * (time.perf_counter() - start) / len(greys)

    with tempfile.TemporaryDirectory() as tmpdir:
        graphs: dict[int, OnnxLandmarkModel] = {}
        channels: dict[int, int] = {}
        for pad in pads:
            path = export_onnx(torch_model, Path(tmpdir) / f"pad{pad}.onnx", pad_channels=pad)
            graphs[pad] = OnnxLandmarkModel(path, threads=1, source=str(args.model))
            channels[pad] = first_layer_channels(path)
        landmarks = {pad: np.stack([m.predict([g], [b]).landmarks[0] for g, b in zip(greys, boxes)])
                     for pad, m in graphs.items()}  # each (N, P, 2)
        times: dict[Any, list[float]] = {"dlib": [], **{pad: [] for pad in pads}}
        runs: dict[Any, Any] = {"dlib": lambda i: predictor(greys[i], rects[i])}
        for pad, m in graphs.items():
            runs[pad] = lambda i, m=m: m.predict([greys[i]], [boxes[i]])
        for call in runs.values():
            pass_ms(call)  # warm-up
        for _ in range(args.repeats):
            for key, call in runs.items():
                times[key].append(pass_ms(call))
    reference = landmarks[pads[0]]
    rows = []
    for pad in pads:
        ratios = sorted(t / d for t, d in zip(times[pad], times["dlib"]))
        rows.append({"pad_multiple": pad, "first_layer_channels": channels[pad],
                     "ms_per_face": round(min(times[pad]), 4), "x_dlib_median": round(ratios[len(ratios) // 2], 3),
                     "max_landmark_difference_px": float(np.abs(landmarks[pad] - reference).max())})
        print(f"pad {pad:>2} ({channels[pad]} channels): {min(times[pad]):.3f} ms per face, "
              f"{rows[-1]['x_dlib_median']:.2f}x dlib, landmarks differ by at most "
              f"{rows[-1]['max_landmark_difference_px']:.2e} px")
    print(f"dlib 68-point predictor: {min(times['dlib']):.3f} ms per face")
    report = {"model": args.model, "data": args.data, "faces": len(greys), "repeats": args.repeats,
              "box": "whole image", "inference": "the model's default, one face per call, 1 thread",
              "dlib_ms_per_face": round(min(times["dlib"]), 4), "graphs": rows, **host_facts()}
    if args.out:
        print(f"written: {write_report(args.out, report)}")
    return 0


def first_layer_channels(path: Path) -> int:
    import onnx

    graph = onnx.load(str(path)).graph
    conv = next(n for n in graph.node if n.op_type == "Conv")
    weight = next(t for t in graph.initializer if t.name == conv.input[1])
    return int(weight.dims[0])


if __name__ == "__main__":
    raise SystemExit(main())
