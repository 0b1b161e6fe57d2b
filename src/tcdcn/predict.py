"""``tcdcn predict PATH...``: landmarks on image files, folders, globs and videos.

Writes, per input, an annotated image (``--out``) and a JSON file (or one JSON line per input with
``--jsonl``, or a CSV row per face with ``--csv``). A bad input is reported in one line and the run goes
on; the exit status is 1 when any input failed. Video is processed frame by frame with landmark
smoothing (One Euro filter) unless ``--no-smooth``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from .api import DEFAULT_MODEL, FaceResult, LandmarkDetector, rescale_face
from .errors import TcdcnError
from .imageio import iter_image_paths, iter_video_frames
from .progress import add_progress_arguments, progress
from .runtime import BACKENDS, add_test_time_arguments

log = logging.getLogger("tcdcn.predict")


def add_command(subparsers: Any) -> None:
    p = subparsers.add_parser("predict", help="landmarks on images, folders, globs and videos")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image/video files, folders or glob patterns")
    p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name, checkpoint or .onnx path")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default) and onnx run on onnxruntime, a checkpoint through a temporary ONNX "
                        "export; int8 runs a shipped model's int8 graph; torch runs a checkpoint in torch")
    p.add_argument("--out", default="tcdcn-out", help="output folder (default: %(default)s)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--jsonl", action="store_true", help="one JSON line per input in OUT/results.jsonl")
    fmt.add_argument("--csv", action="store_true", help="one row per face in OUT/results.csv")
    p.add_argument("--no-draw", action="store_true", help="do not write annotated images")
    p.add_argument("--no-smooth", action="store_true", help="no temporal smoothing of video landmarks")
    add_test_time_arguments(p)
    p.add_argument("--max-side", type=int, default=4096, help="decode images with the long side bounded")
    add_progress_arguments(p)
    p.set_defaults(func=run_predict)


class _Writer:
    """JSON files, JSON lines or CSV rows, one call per processed input."""

    def __init__(self, out: Path, mode: str) -> None:
        self.out, self.mode = out, mode
        self._fh: TextIO | None = None
        self._csv: Any = None
        if mode == "jsonl":
            self._fh = open(out / "results.jsonl", "w", encoding="utf-8")
        elif mode == "csv":
            self._fh = open(out / "results.csv", "w", encoding="utf-8", newline="")
            self._csv = csv.writer(self._fh)

    def write(self, source: Path, record: dict[str, Any], stem: str) -> None:
        if self.mode == "json":
            (self.out / f"{stem}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        elif self.mode == "jsonl":
            assert self._fh is not None
            self._fh.write(json.dumps(record) + "\n")
        else:
            for frame in record.get("frames", [record]):
                for i, face in enumerate(frame["faces"]):
                    if self._csv_header_needed():
                        names = list(face["landmarks"])
                        self._csv.writerow(["input", "frame", "face", "score", "x0", "y0", "x1", "y1"]
                                           + [f"{n}_{a}" for n in names for a in "xy"]
                                           + list(face["attributes"]))
                    b = face["box"]
                    self._csv.writerow([str(source), frame.get("frame", 0), i, face["score"],
                                        b["x0"], b["y0"], b["x1"], b["y1"]]
                                       + [v for xy in face["landmarks"].values() for v in xy]
                                       + list(face["attributes"].values()))

    def _csv_header_needed(self) -> bool:
        needed = not getattr(self, "_header_done", False)
        self._header_done = True
        return needed

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _unique_stem(path: Path, used: set[str]) -> str:
    stem = path.stem
    candidate, k = stem, 1
    while candidate in used:
        k += 1
        candidate = f"{stem}_{k}"
    used.add(candidate)
    return candidate


def _faces_record(faces: list[FaceResult]) -> list[dict[str, Any]]:
    return [f.to_dict() for f in faces]


def run_predict(args: argparse.Namespace) -> int:
    from .draw import draw_faces

    detector = LandmarkDetector(args.model, backend=args.backend, max_side=args.max_side,
                                mirror_average=args.flip, multi_crop=args.multi_crop,
                                box_refinements=args.box_refinements)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mode = "jsonl" if args.jsonl else "csv" if args.csv else "json"
    writer = _Writer(out, mode)
    inputs = list(iter_image_paths(args.paths))
    failures = 0
    used: set[str] = set()
    counter = progress(len(inputs), "predict", "file")
    try:
        for item in inputs:
            if not item.ok:
                failures += 1
                counter.write(f"tcdcn: error: {item.error}")
                counter.update(1)
                continue
            stem = _unique_stem(item.path, used)
            try:
                if item.kind == "video":
                    record = _predict_video(detector, item.path, out, stem, not args.no_draw, not args.no_smooth)
                else:
                    rgb, scale, faces = detector.detect(item.path)
                    record = {"input": str(item.path), "faces": _faces_record(faces)}
                    if not args.no_draw:  # drawn on the decoded image, whose size is bounded
                        shown = [rescale_face(f, scale) for f in faces]
                        Image.fromarray(draw_faces(rgb, shown)).save(out / f"{stem}.jpg", quality=92)
                writer.write(item.path, record, stem)
                log.info("%s: %d face(s)", item.path, len(record.get("faces", record.get("frames", []))))
            except TcdcnError as exc:
                failures += 1
                counter.write(f"tcdcn: error: {exc}")
            counter.update(1)
        counter.close()
    finally:
        writer.close()
        counter.close(completed=False)  # after an exception only: closing twice is a no-op
    if failures:
        print(f"tcdcn: {failures} of {len(inputs)} input(s) failed", file=sys.stderr)
    return 1 if failures else 0


def _predict_video(detector: LandmarkDetector, path: Path, out: Path, stem: str, draw: bool,
                   smooth: bool) -> dict[str, Any]:
    import cv2

    from .draw import draw_faces
    from .smoothing import LandmarkSmoother

    smoother = LandmarkSmoother() if smooth else None
    frames: list[dict[str, Any]] = []
    video_writer = None
    try:
        for frame in progress(iter_video_frames(path), f"predict {path.name}", "frame",
                              total=_video_frame_count(path)):
            faces = detector(frame.image)
            if smoother is not None:
                smoothed = smoother.update([f.landmarks for f in faces], [f.box for f in faces], frame.time_s)
                for f, pts in zip(faces, smoothed):
                    f.landmarks = np.asarray(pts)
            frames.append({"frame": frame.index, "time_s": round(frame.time_s, 4), "faces": _faces_record(faces)})
            if draw:
                drawn = draw_faces(frame.image, faces)
                if video_writer is None:
                    h, w = drawn.shape[:2]
                    video_writer = cv2.VideoWriter(str(out / f"{stem}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                                   frame.fps, (w, h))
                video_writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    finally:
        if video_writer is not None:
            video_writer.release()
    return {"input": str(path), "frames": frames}


def _video_frame_count(path: Path) -> int | None:
    """The frame count the container reports, or None: some streams report 0 or a wrong estimate."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if capture.isOpened() else 0
    finally:
        capture.release()
    return count if count > 0 else None
