"""Speed and accuracy of the landmark stage: tcdcn on torch, onnxruntime float and int8, and dlib.

On the same faces (by default the 2,995 AFLW test faces of MTFL, whole image = face box), for each
backend:

- (a) ms per face, one thread, batch 1 (the landmark network only: crops are prepared beforehand);
- (b) faces per second with all cores at the best batch size among ``--batch-sizes``;
- (c) mean error (inter-ocular NME, eye-centre distance for the 5 MTFL points) and failure rate (>10%)
  through the full ``predict`` path (crop from image + box, network, back to image pixels).

It also times the full per-image pipeline (decode, face detection with ``tcdcn.inference.detectors.FaceDetector``
when that module is importable, landmarks) on ``--pipeline-images`` images.

dlib (``pip install 'tcdcn[bench]'``: dlib-bin and face-recognition-models) runs its 68-point shape
predictor on the same images; its five points are the means of points 36-41 and 42-47 (eyes), 30
(nose tip), 48 and 54 (mouth corners). dlib's predictor was trained on its HOG detector's boxes, so the package's
face box is mapped to a dlib-style rectangle with the inverse of ``tcdcn.inference.detectors``' dlib box
calibration (measured on MTFL *training* faces); a second dlib row uses the whole image as rectangle.

The int8 models are calibrated on MTFL *training* faces (never test faces).

    nice -n 15 python bench/speed.py                       # full run, writes bench/results/speed.{md,json}
    nice -n 15 python bench/speed.py --limit 300           # quick look during development

Speed figures depend on the machine and its load; the load average is recorded in the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from host import cpu_model_name, cpu_signature, flush_to_zero_enabled

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_TEST = DATA / "mtfl" / "testing.txt"
DEFAULT_TRAIN = DATA / "mtfl" / "training.txt"
DEFAULT_OUT = REPO / "bench" / "results" / "speed"
DEFAULT_BATCH_SIZES = (1, 16, 64, 256, 1024)
# dlib 68-point indices that give the five MTFL points (image-left eye first).
DLIB_FIVE_POINT_GROUPS = (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,))
WARMUP_CALLS = 20
TARGET_MS_PER_FACE = 0.5
TARGET_FACES_PER_SECOND = 3000.0

RunNetwork = Callable[[np.ndarray], Any]


# --------------------------------------------------------------------------------------------- timing

def time_batch1(run: RunNetwork, crops: np.ndarray, repeats: int) -> dict[str, Any]:
    """ms per face calling ``run`` on one crop at a time over all crops, ``repeats`` passes.

    ``ms_per_face`` is the mean of the best pass (as ``timeit`` advises and as the throughput figures
    do: other processes on the host only ever add time); every pass's mean and the median call over all
    passes are kept beside it.
    """
    for i in range(min(WARMUP_CALLS, len(crops))):
        run(crops[i:i + 1])
    per_call = np.empty((max(1, repeats), len(crops)))
    for r in range(per_call.shape[0]):
        for i in range(len(crops)):
            t0 = time.perf_counter()
            run(crops[i:i + 1])
            per_call[r, i] = time.perf_counter() - t0
    pass_means = 1000.0 * per_call.mean(axis=1)
    return {"ms_per_face": float(pass_means.min()), "ms_per_face_passes": [float(m) for m in pass_means],
            "ms_median": 1000.0 * float(np.median(per_call))}


def with_mirror(run: RunNetwork) -> RunNetwork:
    """``run`` on each batch of crops together with their mirror images (one call, twice the batch)."""
    from tcdcn.inference.pipeline import with_mirror_images

    return lambda crops: run(with_mirror_images(crops))


def predicting(model: Any, greys: list[np.ndarray], boxes: list[Any]) -> RunNetwork:
    """A runner over face indices (an (B,) array): ``model.predict`` on those faces, crops made in the call."""
    return lambda ids: model.predict([greys[k] for k in ids], [boxes[k] for k in ids])


def time_throughput(run: RunNetwork, crops: np.ndarray, batch_sizes: list[int], repeats: int) -> dict[str, Any]:
    """Faces per second over all crops for each batch size (best of ``repeats`` passes)."""
    rates: dict[str, float] = {}
    for bs in batch_sizes:
        run(crops[:bs])  # warm-up (allocations for this batch shape)
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            for s in range(0, len(crops), bs):
                run(crops[s:s + bs])
            best = min(best, time.perf_counter() - start)
        rates[str(bs)] = len(crops) / best
    best_bs = max(rates, key=lambda k: rates[k])
    return {"faces_per_second": rates[best_bs], "best_batch": int(best_bs), "by_batch": rates}


# ------------------------------------------------------------------------------------------- accuracy

def error_summary(pred_five: np.ndarray, target_five: np.ndarray, scheme: Any) -> dict[str, float]:
    from tcdcn.evaluation.metrics import DEFAULT_FAILURE_THRESHOLD, failure_rate, nme, per_face_error, point_errors

    errors = per_face_error(point_errors(pred_five, target_five, scheme.interocular_distance(target_five)))
    return {"nme": nme(errors), "failure_rate": failure_rate(errors, DEFAULT_FAILURE_THRESHOLD)}


# ------------------------------------------------------------------------------------------------ dlib

def load_dlib() -> tuple[Any, str] | None:
    """dlib and the path of shape_predictor_68_face_landmarks.dat, or None when either is missing."""
    import importlib.util

    try:
        import dlib  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        import face_recognition_models  # type: ignore[import-not-found]

        return dlib, face_recognition_models.pose_predictor_model_location()
    except ImportError:
        # face_recognition_models imports pkg_resources, gone from recent setuptools: find the file directly.
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            return None
        model_file = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
        return (dlib, str(model_file)) if model_file.is_file() else None


def dlib_rectangle(dlib: Any, box: Any, calibrated: bool) -> Any:
    """The package's convention box -> dlib.rectangle: inverse of the dlib box calibration, or the box
    itself."""
    cx, cy, side = box.cx, box.cy, box.side
    if calibrated:
        from tcdcn.inference.detectors import CALIBRATIONS

        cal = CALIBRATIONS["dlib"]
        side = box.side / cal.scale
        cx, cy = box.cx - cal.dx * side, box.cy - cal.dy * side
    # A w-pixel rectangle at x covers [x - 0.5, x + w - 0.5] (tcdcn.inference.detectors' convention).
    width = max(1, round(side))
    left, top = round(cx - (width - 1) / 2.0), round(cy - (width - 1) / 2.0)
    return dlib.rectangle(int(left), int(top), int(left + width - 1), int(top + width - 1))


def whole_image_faces(data: str | Path, limit: int) -> tuple[list[np.ndarray], list[Any]]:
    """The grey images of the first ``limit`` faces of an annotation list and a ``Box`` framing each by its
    whole image (the speed benches' faces)."""
    from tcdcn.data.formats import read_annotations
    from tcdcn.geometry import Box
    from tcdcn.io.images import load_image, to_grey

    faces = read_annotations(data)[:limit]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    return greys, [Box.whole_image(g.shape[1], g.shape[0]) for g in greys]


def dlib_predictor_on_boxes(boxes: list, needed_by: str) -> tuple[Any, list]:
    """dlib's 68-point predictor and the calibrated dlib rectangle of each convention box, for timing it on
    the same faces as tcdcn; exits naming ``needed_by`` when dlib is not installed."""
    dlib_parts = load_dlib()
    if dlib_parts is None:
        raise SystemExit(f"{needed_by} needs dlib (pip install 'tcdcn[bench]')")
    dlib, model_file = dlib_parts
    return dlib.shape_predictor(model_file), [dlib_rectangle(dlib, b, True) for b in boxes]


def dlib_five_points(shape: Any) -> np.ndarray:
    pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], float)  # (68, 2)
    return np.stack([pts[list(g)].mean(axis=0) for g in DLIB_FIVE_POINT_GROUPS])  # (5, 2)


# ------------------------------------------------------------------------------------------- main run

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_model = "mtfl-5pt"
    p.add_argument("--model", default=default_model, help="checkpoint or shipped name (default %(default)s)")
    p.add_argument("--test", default=str(DEFAULT_TEST), help="annotation list timed and scored")
    p.add_argument("--train", default=str(DEFAULT_TRAIN), help="training list for int8 calibration")
    p.add_argument("--calibration-faces", type=int, default=500)
    p.add_argument("--limit", type=int, default=0, help="use only the first N test faces (0 = all)")
    p.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for the all-cores rows")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed passes over all faces, per backend and batch size (the best is reported)")
    p.add_argument("--no-mirror-rows", dest="mirror_rows", action="store_false",
                   help="skip the mirror-averaged rows")
    p.add_argument("--no-default-rows", dest="default_rows", action="store_false",
                   help="skip the default-inference rows (predict with the model's test-time options)")
    p.add_argument("--int8-formats", default="qdq,qdq-plain,qoperator",
                   help="int8 variants to build and time: qdq, qdq-plain (no space-to-depth stem), qoperator")
    p.add_argument("--torch-variants", default="eager,jit",
                   help="eager, jit (traced+frozen); the network keeps channels-last filters either way")
    p.add_argument("--pipeline-images", type=int, default=300, help="images for the full-pipeline timing")
    p.add_argument("--no-dlib", action="store_true",
                   help="time without dlib's predictor (the reference every ratio divides by)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output stem: writes STEM.md and STEM.json")
    return p.parse_args(argv)


def torch_runner(model: Any, variant: str, example: np.ndarray) -> RunNetwork:
    import torch

    network = model.network.eval()
    if variant == "eager":
        return model.run_network
    if variant == "jit":
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(network, torch.from_numpy(example[:2])).eval())

        def run_jit(crops: np.ndarray) -> Any:
            with torch.inference_mode():
                return traced(torch.from_numpy(crops))
        return run_jit
    raise ValueError(f"unknown torch variant {variant!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Checked before any timing: without the reference the report has no ratios, the figures it exists for.
    dlib_parts = None if args.no_dlib else load_dlib()
    if dlib_parts is None and not args.no_dlib:
        raise SystemExit("bench/speed.py: dlib's 68-point predictor is missing (pip install -e '.[bench]'), "
                         "or pass --no-dlib to time without it")
    import torch

    from tcdcn.data.formats import read_annotations
    from tcdcn.geometry import Box
    from tcdcn.inference.backends.onnx import OnnxLandmarkModel
    from tcdcn.inference.backends.torch import LandmarkModel
    from tcdcn.inference.export import calibration_crops, export_onnx, quantize_int8
    from tcdcn.io.images import load_image, to_grey

    load_start = os.getloadavg()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    faces = read_annotations(args.test)
    if args.limit:
        faces = faces[:args.limit]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [Box.whole_image(g.shape[1], g.shape[0]) for g in greys]
    data_scheme = faces[0].scheme
    targets = np.stack([data_scheme.five_points(f.landmarks.astype(np.float64)) for f in faces])  # (N, 5, 2)

    torch_model = LandmarkModel.load(args.model)
    if torch_model.scheme.num_points != 5:
        print(f"{args.model}: bench compares 5-point models; got {torch_model.scheme.name}", file=sys.stderr)
        return 2
    # The network rows time and score one pass on prepared crops; mirror-averaged rows run each crop with
    # its mirror image in one call; default-inference rows run predict with the model's test-time options.
    default_mirror, default_crops = torch_model.mirror_average, torch_model.multi_crop
    default_refinements = torch_model.box_refinements
    torch_model.mirror_average, torch_model.multi_crop, torch_model.box_refinements = False, (), 0
    crops, _ = torch_model.crops(greys, boxes)  # (N, 1, S, S), prepared once for every backend
    face_ids = np.arange(len(faces))
    rows: list[dict[str, Any]] = []

    def tcdcn_row(name: str, single: RunNetwork, multi: RunNetwork, predictor: Any,
                  set_threads: Callable[[int], None] | None = None, face_crops: np.ndarray = crops,
                  face_batch_sizes: list[int] = batch_sizes) -> None:
        print(f"timing {name} ...", file=sys.stderr)
        if set_threads:
            set_threads(1)
        lat = time_batch1(single, face_crops, args.repeats)
        if set_threads:
            set_threads(args.threads)
        thr = time_throughput(multi, face_crops, face_batch_sizes, args.repeats)
        row: dict[str, Any] = {"backend": name, **lat, **thr}
        if predictor is not None:
            pred = predictor.predict(greys, boxes).landmarks
            row.update(error_summary(pred, targets, torch_model.scheme))
        rows.append(row)

    for variant in [v for v in args.torch_variants.split(",") if v]:
        runner = torch_runner(torch_model, variant, crops)
        tcdcn_row(f"tcdcn torch ({variant})", runner, runner, torch_model if variant == "eager" else None,
                  torch.set_num_threads)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmpdir:
        float_file = export_onnx(torch_model, Path(tmpdir) / "float.onnx")
        onnx_files = {"tcdcn onnxruntime float32": float_file}
        calib = calibration_crops(args.train, args.calibration_faces, torch_model.input_size)
        for variant in [f for f in args.int8_formats.split(",") if f]:
            # "qdq" and "qoperator" with their default first layer; "qdq-plain": QDQ without the
            # space-to-depth stem (tcdcn.export.space_to_depth_stem), to show what the stem buys.
            fmt, _, plain = variant.partition("-")
            label = {"qdq": "qdq, space-to-depth stem"}.get(variant, variant)
            onnx_files[f"tcdcn onnxruntime int8 ({label})"] = quantize_int8(
                float_file, Path(tmpdir) / f"int8-{variant}.onnx", calib, quant_format=fmt,
                stem="plain" if plain else "")
        sizes = {name: path.stat().st_size for name, path in onnx_files.items()}
        for name, path in onnx_files.items():
            single = OnnxLandmarkModel(path, threads=1)
            multi = OnnxLandmarkModel(path, threads=args.threads)
            tcdcn_row(name, single.run_network, multi.run_network, single)
            rows[-1]["file_bytes"] = sizes[name]
            if args.mirror_rows:
                mirrored = OnnxLandmarkModel(path, threads=1)
                mirrored.mirror_average = True
                tcdcn_row(f"{name}, mirror-averaged (crop + mirror in one call)", with_mirror(single.run_network),
                          with_mirror(multi.run_network), mirrored)
            if args.default_rows and (default_crops or default_refinements) and ("float" in name or "stem" in name):
                # The shipped default through predict (crops made in the call): the box refined on the first
                # answer's points (plain crop), then every box of the multi-crop set, each with its mirror image.
                default = OnnxLandmarkModel(path, threads=1)
                default_multi = OnnxLandmarkModel(path, threads=args.threads)
                for m in (default, default_multi):
                    m.mirror_average, m.multi_crop = default_mirror, default_crops
                    m.box_refinements = default_refinements
                passes = default_refinements + max(1, len(default_crops)) * (2 if default_mirror else 1)
                tcdcn_row(f"{name}, default inference through predict ({default_refinements} box refinement(s), "
                          f"{max(1, len(default_crops))} boxes{', mirrored' if default_mirror else ''}: "
                          f"{passes} network crops per face)",
                          predicting(default, greys, boxes), predicting(default_multi, greys, boxes), default,
                          face_crops=face_ids, face_batch_sizes=[b for b in batch_sizes if b <= 64])
        pipeline_onnx = OnnxLandmarkModel(float_file, threads=1)
        pipeline_onnx.mirror_average = torch_model.mirror_average = default_mirror
        pipeline_onnx.multi_crop = torch_model.multi_crop = default_crops
        pipeline_onnx.box_refinements = torch_model.box_refinements = default_refinements
        pipeline = time_pipeline(faces[:args.pipeline_images], pipeline_onnx, torch_model)
        pipeline["mirror_average"] = default_mirror
        pipeline["crops_per_face"] = max(1, len(default_crops))
        pipeline["box_refinements"] = default_refinements

    dlib_note = ""
    if dlib_parts is None:
        dlib_note = "dlib skipped (--no-dlib)"
    else:
        rows += dlib_rows(dlib_parts, greys, boxes, targets, torch_model.scheme, args.repeats)

    report = {
        "model": args.model, "test": str(args.test), "faces": len(faces), "threads_all_cores": args.threads,
        "batch_sizes": batch_sizes, "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "cpu": cpu_model_name(), "cpu_signature": cpu_signature(),
        "cpu_count": os.cpu_count(), "flush_to_zero": flush_to_zero_enabled(),
        "torch": torch.__version__, "onnxruntime": _version("onnxruntime"), "rows": rows,
        "pipeline": pipeline, "notes": [n for n in (dlib_note,) if n],
        "targets": {"ms_per_face_single_thread": TARGET_MS_PER_FACE, "faces_per_second_all_cores":
                    TARGET_FACES_PER_SECOND},
    }
    reference = next((r for r in rows if r["backend"].startswith("dlib")), None)
    for row in rows:  # speed as a ratio to dlib's predictor timed in the same run: comparable across hosts
        row["x_dlib"] = row["ms_per_face"] / reference["ms_per_face"] if reference else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
    markdown = to_markdown(report)
    out.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


def dlib_rows(dlib_parts: tuple[Any, str], greys: list[np.ndarray], boxes: list[Any], targets: np.ndarray,
              scheme: Any, repeats: int) -> list[dict[str, Any]]:
    dlib, model_file = dlib_parts
    predictor = dlib.shape_predictor(model_file)
    try:
        import tcdcn.inference.detectors  # noqa: F401  (the box calibration lives there)
        modes = [("calibrated box", True), ("whole image", False)]
    except ImportError:
        modes = [("whole image", False)]
    rows = []
    for label, calibrated in modes:
        print(f"timing dlib ({label}) ...", file=sys.stderr)
        rects = [dlib_rectangle(dlib, b, calibrated) for b in boxes]
        for i in range(min(WARMUP_CALLS, len(greys))):
            predictor(greys[i], rects[i])
        five = np.empty((len(greys), 5, 2))
        per_call = np.empty((max(1, repeats), len(greys)))
        for r in range(per_call.shape[0]):  # passes as for tcdcn; the best pass is reported
            for i, (grey, rect) in enumerate(zip(greys, rects)):
                t0 = time.perf_counter()
                shape = predictor(grey, rect)
                per_call[r, i] = time.perf_counter() - t0
                five[i] = dlib_five_points(shape)  # outside the timed call
        pass_means = 1000.0 * per_call.mean(axis=1)
        ms = float(pass_means.min())
        rows.append({
            "backend": f"dlib 68-pt shape predictor ({label})", "ms_per_face": ms,
            "ms_per_face_passes": [float(m) for m in pass_means],
            "ms_median": 1000.0 * float(np.median(per_call)), "faces_per_second": 1000.0 / ms,
            "best_batch": 1, "by_batch": {}, "single_thread_only": True,
            **error_summary(five, targets, scheme),
        })
    return rows


def time_pipeline(faces: list[Any], onnx_model: Any, torch_model: Any) -> dict[str, Any]:
    """Per-image ms for decode, detection and landmarks (single thread), over ``faces``' images."""
    import torch

    from tcdcn.geometry import Box
    from tcdcn.io.images import load_image, to_grey

    torch.set_num_threads(1)
    try:
        from tcdcn.inference.detectors import FaceDetector

        detector: Any = FaceDetector()
    except Exception as exc:  # the detect module is optional here: report without it
        detector, detect_note = None, f"no detection row ({type(exc).__name__}: {exc})"
    else:
        detect_note = f"tcdcn.inference.detectors.FaceDetector() ({detector.backend} backend)"
    stages = {"decode": 0.0, "detect": 0.0, "landmarks_onnx": 0.0, "landmarks_torch": 0.0}
    found = 0
    for face in faces:
        t0 = time.perf_counter()
        rgb = load_image(face.image_path)
        grey = to_grey(rgb)
        t1 = time.perf_counter()
        boxes = [d.box for d in detector(rgb)] if detector is not None else []
        t2 = time.perf_counter()
        found += bool(boxes)
        if not boxes:  # still time the landmark stage, on the whole-image box
            boxes = [Box.whole_image(grey.shape[1], grey.shape[0])]
        onnx_model.predict([grey] * len(boxes), boxes)
        t3 = time.perf_counter()
        torch_model.predict([grey] * len(boxes), boxes)
        t4 = time.perf_counter()
        stages["decode"] += t1 - t0
        stages["detect"] += t2 - t1
        stages["landmarks_onnx"] += t3 - t2
        stages["landmarks_torch"] += t4 - t3
    n = max(len(faces), 1)
    ms = {k: 1000.0 * v / n for k, v in stages.items()}
    return {"images": len(faces), "ms_per_image": ms, "detected_images": found, "detector": detect_note,
            "total_onnx_ms": ms["decode"] + ms["detect"] + ms["landmarks_onnx"],
            "total_torch_ms": ms["decode"] + ms["detect"] + ms["landmarks_torch"]}


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def to_markdown(report: dict[str, Any]) -> str:
    la0, la1 = report["load_average_start"], report["load_average_end"]
    lines = [
        f"# Landmark-stage speed and accuracy ({report['faces']} faces of {Path(report['test']).parent.name}"
        f"/{Path(report['test']).name}, whole image = face box)",
        "",
        f"Model `{report['model']}`; CPU {report['cpu']} x{report['cpu_count']} "
        f"({report.get('cpu_signature', 'signature not recorded')}; flush-to-zero "
        f"{'on' if report.get('flush_to_zero') else 'off'}); torch {report['torch']}, "
        f"onnxruntime {report['onnxruntime']}. Load average (1/5/15 min) at start "
        f"{la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}, at end {la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f}.",
        "",
        f"Targets: <= {TARGET_MS_PER_FACE} ms/face single-thread; >= {TARGET_FACES_PER_SECOND:,.0f} faces/s on all "
        f"cores ({report['threads_all_cores']} threads); lower mean error than dlib.",
        "",
        "| backend | ms/face, 1 thread, batch 1: best pass (median call) | x dlib (same run) "
        "| faces/s, all cores (best batch) | NME (inter-ocular) | failure >10% |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        nme = f"{100 * r['nme']:.2f}%" if "nme" in r else "same as eager"
        fail = f"{100 * r['failure_rate']:.2f}%" if "failure_rate" in r else ""
        rate = (f"{r['faces_per_second']:,.0f} (1 thread, no batching)" if r.get("single_thread_only")
                else f"{r['faces_per_second']:,.0f} (batch {r['best_batch']})")
        ratio = f"{r['x_dlib']:.2f}x" if r.get("x_dlib") is not None else "no dlib row"
        lines.append(f"| {r['backend']} | {r['ms_per_face']:.3f} ({r['ms_median']:.3f}) | {ratio} | {rate} | {nme} "
                     f"| {fail} |")
    lines += ["", "Faces/s by batch size (all cores):", "",
              "| backend | " + " | ".join(str(b) for b in report["batch_sizes"]) + " |",
              "|---|" + "---|" * len(report["batch_sizes"])]
    for r in report["rows"]:
        if r["by_batch"]:
            rates = [f"{r['by_batch'][str(b)]:,.0f}" if str(b) in r["by_batch"] else "" for b in report["batch_sizes"]]
            lines.append(f"| {r['backend']} | " + " | ".join(rates) + " |")
    p = report["pipeline"]
    ms = p["ms_per_image"]
    lines += [
        "",
        f"Full pipeline per image, 1 thread ({p['images']} images; detector: {p['detector']}; "
        f"faces found in {p['detected_images']}; landmarks "
        f"{'mirror-averaged' if p.get('mirror_average') else 'one pass'}, {p.get('crops_per_face', 1)} "
        f"box crop(s) per face, {p.get('box_refinements', 0)} box refinement(s): the model default):",
        "",
        "| stage | ms/image |",
        "|---|---|",
        f"| decode (file -> RGB + grey) | {ms['decode']:.2f} |",
        f"| face detection | {ms['detect']:.2f} |",
        f"| landmarks, onnxruntime float32 (crop + network + mapping) | {ms['landmarks_onnx']:.2f} |",
        f"| landmarks, torch | {ms['landmarks_torch']:.2f} |",
        f"| total with onnxruntime | {p['total_onnx_ms']:.2f} |",
        f"| total with torch | {p['total_torch_ms']:.2f} |",
    ]
    if report["notes"]:
        lines += [""] + [f"Note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
