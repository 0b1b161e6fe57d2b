"""The landmark network on other inference runtimes: what the onnxruntime backend is measured against.

    python bench/runtimes.py [--model mtfl-5pt] [--limit 300] [--batches 1,4] [--repeats 7] [--profile]
        [--out bench/results/runtimes.json]

The crops are the first ``--limit`` faces of ``--data`` (the AFLW test set by default) framed by their whole
image, cut as the package cuts them (one crop per face, float32). Every runtime runs the model's float32
network on one thread:

- ``onnxruntime``: the model's float32 graph as ``tcdcn`` runs it (``OnnxLandmarkModel``; a shipped model's
  file, its first layer padded to the channel block);
- ``torch``: the torch backend's network, eager, ``torch.inference_mode``;
- ``opencv-dnn``: the same ONNX file through ``cv2.dnn`` (OpenCV's own CPU backend);
- ``openvino`` (when ``openvino`` is installed): the same ONNX file, CPU plugin, latency hint, f32 precision,
  compiled once per batch size;
- ``litert-xnnpack`` (when ``tensorflow`` and ``ai_edge_litert`` are installed): the same ONNX graph rebuilt
  node by node in TensorFlow (NHWC), converted to a .tflite model and run by LiteRT's interpreter, which
  delegates the float network to XNNPACK.

``pip install openvino tensorflow-cpu ai-edge-litert`` adds the optional runtimes (a few hundred MB; the package
needs none of them). A runtime that is not installed or cannot read the graph is skipped, with the reason in the
report. Each runtime's landmarks on the crops are compared with onnxruntime's (largest difference
in normalised crop coordinates: a runtime computing something else would show). Rounds interleave dlib's
68-point predictor (the same faces, its own convention's box) and every runtime at every batch size; reported per
runtime and batch: the best ms per crop over rounds and the median over rounds of its time over dlib's per face.

``--profile`` adds onnxruntime's own per-node times for the graph at each batch size, with each convolution's
multiply-adds and the rate it ran at (how close the network runs to the core's arithmetic peak).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from host import host_facts, write_report

from tcdcn.inference.backends.onnx import OnnxLandmarkModel
from tcdcn.inference.loading import load_landmark_model

Runner = Callable[[np.ndarray], np.ndarray]  # (B, 1, S, S) float32 crops -> (B, P, 2) normalised landmarks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtfl-5pt",
                   help="shipped name or float32 .onnx file (a checkpoint: `tcdcn export` it first; torch then "
                        "runs only for a shipped name)")
    p.add_argument("--data", default="../shared/data/mtfl/testing.txt")
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--batches", default="1,4", help="crops per call (the default inference makes calls of 1 and 4)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    p.add_argument("--runtimes", default="onnxruntime,torch,opencv-dnn,openvino,litert-xnnpack",
                   help="those not installed are skipped and named in the report")
    p.add_argument("--profile", action="store_true", help="also onnxruntime's per-node times")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from speed import dlib_predictor_on_boxes, whole_image_faces

    greys, boxes = whole_image_faces(args.data, args.limit)
    onnx_model = load_landmark_model(args.model, backend="onnx")
    graph = onnx_model.path if isinstance(onnx_model, OnnxLandmarkModel) else None
    if graph is None or not graph.is_file():  # a checkpoint's graph is a temporary export, gone by now
        raise SystemExit(f"{args.model}: no float32 ONNX file to give the other runtimes; `tcdcn export` it first")
    crops, _ = onnx_model.crops(greys, boxes)  # (N, 1, S, S) float32
    batches = [int(b) for b in args.batches.split(",") if b]
    predictor, rects = dlib_predictor_on_boxes(boxes, "bench/runtimes.py")

    with tempfile.TemporaryDirectory() as tmpdir:
        runners, skipped = build_runners(args.runtimes.split(","), args.model, graph, batches, Path(tmpdir))
        reference = onnx_model.run_network(crops)[0]  # (N, P, 2)
        difference = {name: float(np.abs(run_all(runners[name][batches[0]], crops, batches[0]) - reference).max())
                      for name in runners}
        times: dict[Any, list[float]] = defaultdict(list)

        def dlib_pass() -> float:
            start = time.perf_counter()
            for grey, rect in zip(greys, rects):
                predictor(grey, rect)
            return 1000.0 * (time.perf_counter() - start) / len(greys)

        dlib_pass()
        for runner_set in runners.values():
            for batch, run in runner_set.items():
                time_per_crop(run, crops, batch)  # warm-up
        for _ in range(args.repeats):
            times["dlib"].append(dlib_pass())
            for name, runner_set in runners.items():
                for batch, run in runner_set.items():
                    times[(name, batch)].append(time_per_crop(run, crops, batch))

    rows = []
    for (name, batch), values in ((k, v) for k, v in times.items() if k != "dlib"):
        ratios = sorted(t / d for t, d in zip(values, times["dlib"]))
        rows.append({"runtime": name, "batch": batch, "ms_per_crop": round(min(values), 4),
                     "ms_per_crop_median": round(float(np.median(values)), 4),
                     "x_dlib_median": round(ratios[len(ratios) // 2], 3),
                     "max_difference_from_onnxruntime": difference[name], "version": runtime_version(name)})
        print(f"{name:>15} batch {batch}: {min(values):.4f} ms per crop (median {np.median(values):.4f}), "
              f"{rows[-1]['x_dlib_median']:.2f}x dlib's time per face; landmarks within {difference[name]:.1e} of "
              "onnxruntime's")
    print(f"dlib 68-point predictor: {min(times['dlib']):.3f} ms per face (median {np.median(times['dlib']):.3f})")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    report: dict[str, Any] = {
        "model": args.model, "graph": graph.name, "data": args.data, "crops": len(crops), "repeats": args.repeats,
        "box": "whole image", "threads": 1, "dlib_ms_per_face": round(min(times["dlib"]), 4),
        "dlib_ms_per_face_median": round(float(np.median(times["dlib"])), 4), "runtimes": rows,
        "skipped": skipped, **host_facts()}
    if args.profile:
        report["onnxruntime_profile"] = {str(b): profile_onnxruntime(graph, crops, b) for b in batches}
        for batch, nodes in report["onnxruntime_profile"].items():
            print(f"onnxruntime nodes, batch {batch}:")
            for node in nodes["nodes"]:
                rate = f", {node['gmac_per_s']:.1f} G multiply-adds/s" if "gmac_per_s" in node else ""
                print(f"  {node['op']:>20} {node['name'][:40]:<40} {node['us_per_call']:8.1f} us "
                      f"({100 * node['share']:.1f}%){rate}")
    if args.out:
        print(f"written: {write_report(args.out, report)}")
    return 0


def run_all(run: Runner, crops: np.ndarray, batch: int) -> np.ndarray:
    """``run`` over all crops in calls of ``batch`` (a last short call padded with repeats of its first crop)."""
    outputs = []
    for start in range(0, len(crops), batch):
        part = crops[start:start + batch]
        if len(part) < batch:
            part = np.concatenate([part, np.repeat(part[:1], batch - len(part), axis=0)])
        outputs.append(run(part)[:len(crops) - start])
    return np.concatenate(outputs)


def time_per_crop(run: Runner, crops: np.ndarray, batch: int) -> float:
    """ms per crop of one pass over the whole calls of ``batch`` crops."""
    calls = [np.ascontiguousarray(crops[s:s + batch]) for s in range(0, len(crops) - batch + 1, batch)]
    start = time.perf_counter()
    for part in calls:
        run(part)
    return 1000.0 * (time.perf_counter() - start) / (len(calls) * batch)


def build_runners(names: list[str], model: str, graph: Path, batches: list[int],
                  tmpdir: Path) -> tuple[dict[str, dict[int, Runner]], dict[str, str]]:
    """Each runtime's runner per batch size, and why the runtimes that could not be built were skipped."""
    builders: dict[str, Callable[[], dict[int, Runner]]] = {
        "onnxruntime": lambda: onnxruntime_runners(graph, batches),
        "torch": lambda: torch_runners(model, batches),
        "opencv-dnn": lambda: opencv_runners(graph, batches),
        "openvino": lambda: openvino_runners(graph, batches),
        "litert-xnnpack": lambda: litert_runners(graph, batches, tmpdir),
    }
    runners, skipped = {}, {}
    for name in names:
        if name not in builders:
            raise SystemExit(f"unknown runtime {name!r}; known: {', '.join(builders)}")
        try:
            runners[name] = builders[name]()
        except ImportError as exc:
            skipped[name] = f"not installed ({exc.name or exc})"
        except Exception as exc:  # each runtime raises its own types for a graph it cannot read
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            skipped[name] = f"cannot run the graph ({reason})"
    return runners, skipped


def onnxruntime_runners(graph: Path, batches: list[int]) -> dict[int, Runner]:
    model = OnnxLandmarkModel(graph, threads=1)
    return {b: (lambda x: model.run_network(x)[0]) for b in batches}


def torch_runners(model: str, batches: list[int]) -> dict[int, Runner]:
    import torch

    from tcdcn.inference.backends.torch import LandmarkModel

    torch.set_num_threads(1)
    network = LandmarkModel.load(model).network.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(x))[0].numpy()

    return {b: run for b in batches}


def opencv_runners(graph: Path, batches: list[int]) -> dict[int, Runner]:
    import cv2

    cv2.setNumThreads(1)
    net = cv2.dnn.readNetFromONNX(str(graph))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    names = list(net.getUnconnectedOutLayersNames())

    def run(x: np.ndarray) -> np.ndarray:
        net.setInput(x)
        outputs = net.forward(names)
        return next(o for o in outputs if o.ndim == 3)  # (B, P, 2): the landmarks output

    return {b: run for b in batches}


def openvino_runners(graph: Path, batches: list[int]) -> dict[int, Runner]:
    import openvino as ov

    core = ov.Core()
    runners = {}
    for batch in batches:
        model = core.read_model(str(graph))
        model.reshape({model.inputs[0].get_any_name(): [batch, *model.inputs[0].get_partial_shape()[1:]]})
        compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        landmarks = next(o for o in compiled.outputs if "landmarks" in o.get_names())
        runners[batch] = lambda x, r=request, out=landmarks: r.infer({0: x})[out]
    return runners


def litert_runners(graph: Path, batches: list[int], tmpdir: Path) -> dict[int, Runner]:
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    proto = onnx.load(str(graph))
    runners = {}
    for batch in batches:
        function = tensorflow_function(tf, proto, batch)
        flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([function]).convert()
        path = tmpdir / f"{graph.stem}-b{batch}.tflite"
        path.write_bytes(flatbuffer)
        interpreter = Interpreter(model_path=str(path), num_threads=1)  # XNNPACK: LiteRT's default CPU delegate
        interpreter.allocate_tensors()
        source = interpreter.get_input_details()[0]["index"]
        landmarks = next(d["index"] for d in interpreter.get_output_details() if len(d["shape"]) == 3)

        def run(x: np.ndarray, it: Any = interpreter, i: int = source, o: int = landmarks) -> np.ndarray:
            it.set_tensor(i, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))  # NCHW -> NHWC (B, S, S, 1)
            it.invoke()
            return it.get_tensor(o)

        runners[batch] = run
    return runners


def tensorflow_function(tf: Any, proto: Any, batch: int) -> Any:
    """The ONNX graph's nodes as a TensorFlow function on NHWC tensors, for the ops ``tcdcn export`` writes
    (LayerNormalization over the crop, Conv, Relu, MaxPool, Flatten, Gemm, Reshape, Constant)."""
    import onnx
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            weights[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    source = proto.graph.input[0]
    size = [d.dim_value for d in source.type.tensor_type.shape.dim][2:]
    outputs = [o.name for o in proto.graph.output]

    def attribute(node: Any, name: str, default: Any = None) -> Any:
        found = [onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name]
        return found[0] if found else default

    @tf.function(input_signature=[tf.TensorSpec([batch, *size, 1], tf.float32)])
    def run(crops: Any) -> Any:
        values: dict[str, Any] = {source.name: crops}
        chw_order: dict[str, tuple[int, ...]] = {}  # flattened NHWC tensors: their (C, H, W) shape
        for node in proto.graph.node:
            op, ins = node.op_type, list(node.input)
            if op == "Constant":
                continue
            if op == "LayerNormalization":
                x = values[ins[0]]
                mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
                variance = tf.reduce_mean(tf.square(x - mean), axis=[1, 2, 3], keepdims=True)
                y = (x - mean) * tf.math.rsqrt(variance + attribute(node, "epsilon", 1e-5))
                scale, shift = (weights[name] for name in ins[1:3])  # (C, H, W) or broadcastable
                if np.any(scale != 1) or np.any(shift != 0):
                    y = y * np.moveaxis(np.broadcast_to(scale, (1, *size)), 0, -1) + np.moveaxis(
                        np.broadcast_to(shift, (1, *size)), 0, -1)
                values[node.output[0]] = y
            elif op == "Conv":
                kernel = np.ascontiguousarray(weights[ins[1]].transpose(2, 3, 1, 0))  # OIHW -> HWIO
                y = tf.nn.conv2d(values[ins[0]], kernel, attribute(node, "strides", [1, 1]), "VALID")
                values[node.output[0]] = y + weights[ins[2]] if len(ins) > 2 and ins[2] else y
            elif op == "Relu":
                values[node.output[0]] = tf.nn.relu(values[ins[0]])
            elif op == "MaxPool":
                values[node.output[0]] = tf.nn.max_pool2d(values[ins[0]], attribute(node, "kernel_shape"),
                                                          attribute(node, "strides"), "VALID")
            elif op == "Flatten":
                x = values[ins[0]]
                height, width, channels = x.shape[1:]
                values[node.output[0]] = tf.reshape(x, [batch, height * width * channels])
                chw_order[node.output[0]] = (channels, height, width)
            elif op == "Gemm":
                matrix = weights[ins[1]]
                if attribute(node, "transB", 0):
                    matrix = matrix.T  # (in, out)
                if ins[0] in chw_order:  # rows in ONNX's (C, H, W) order -> the NHWC flatten's (H, W, C)
                    channels, height, width = chw_order[ins[0]]
                    matrix = matrix.reshape(channels, height, width, -1).transpose(1, 2, 0, 3).reshape(
                        channels * height * width, -1)
                values[node.output[0]] = tf.matmul(values[ins[0]], np.ascontiguousarray(matrix)) + weights[ins[2]]
            elif op == "Reshape":
                values[node.output[0]] = tf.reshape(values[ins[0]], [batch, *weights[ins[1]].tolist()[1:]])
            else:
                raise ValueError(f"tensorflow_function: no translation for ONNX op {op}")
        return [values[name] for name in outputs]

    return run.get_concrete_function()


def runtime_version(name: str) -> str:
    modules = {"onnxruntime": "onnxruntime", "torch": "torch", "opencv-dnn": "cv2", "openvino": "openvino",
               "litert-xnnpack": "ai_edge_litert"}
    module = sys.modules.get(modules[name])
    return str(getattr(module, "__version__", "")) if module else ""


def profile_onnxruntime(graph: Path, crops: np.ndarray, batch: int, calls: int = 2000) -> dict[str, Any]:
    """onnxruntime's per-node kernel times for ``calls`` calls of ``batch`` crops on one thread, each node's share,
    and for convolutions their multiply-adds per call and rate."""
    import onnx
    import onnxruntime as ort

    from tcdcn.models.denormals import cpu_session_options

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(graph)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.value_info}
    weights = {t.name: list(t.dims) for t in proto.graph.initializer}
    multiply_adds = {}
    for node in proto.graph.node:
        if node.op_type == "Conv":
            out_channels, in_channels, kh, kw = weights[node.input[1]]
            height, width = shapes[node.output[0]][2:]
            multiply_adds[node.output[0]] = batch * height * width * out_channels * in_channels * kh * kw
    with tempfile.TemporaryDirectory() as tmpdir:
        options = cpu_session_options(1)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmpdir) / "profile")
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(crops[:batch])}
        for _ in range(calls):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    total: dict[tuple[str, str], float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            total[(event["name"].removesuffix("_kernel_time"), event["args"].get("op_name", ""))] += event["dur"]
    overall = sum(total.values())
    nodes = []
    for (name, op), microseconds in sorted(total.items(), key=lambda kv: -kv[1]):
        row: dict[str, Any] = {"name": name, "op": op, "us_per_call": round(microseconds / calls, 2),
                               "share": round(microseconds / overall, 4)}
        # Fused nodes are named after their last output (a Conv fused with its Relu: the Relu's output).
        conv_output = next((o for o in multiply_adds if name.startswith(o) or name.startswith(_relu_of(proto, o))),
                           None) if op == "Conv" else None
        if conv_output is not None:
            row["multiply_adds"] = multiply_adds[conv_output]
            row["gmac_per_s"] = round(multiply_adds[conv_output] / (microseconds / calls) / 1e3, 2)
        nodes.append(row)
    return {"us_per_call": round(overall / calls, 2), "nodes": nodes}


def _relu_of(proto: Any, output: str) -> str:
    """The output of the Relu reading ``output`` (onnxruntime names a Conv+Relu fusion after it), else ``output``."""
    return next((n.output[0] for n in proto.graph.node if n.op_type == "Relu" and n.input[0] == output), output)


if __name__ == "__main__":
    raise SystemExit(main())
