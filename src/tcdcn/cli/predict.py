"""``tcdcn predict PATH...``: landmarks on image files, folders, globs and videos.

Writes, per input, an annotated image (``--out``) and a JSON file (or one JSON line per input with
``--jsonl``, or CSV rows with ``--csv``). A bad input, or an input whose outputs cannot be written, is
reported in one line and the run goes on; the exit status is 1 when any input failed. Video is processed
frame by frame with landmark smoothing (One Euro filter) unless ``--no-smooth``.

The output folder is guarded so that no run loses or overwrites data (``tcdcn.io.results``): outputs stay
outside the inputs, a lock keeps a second run out, and results are recorded as inputs complete, so that
``--resume`` continues an interrupted run and ``--overwrite`` replaces an earlier one. SIGTERM and Ctrl-C end the
run after the current input, keeping everything completed so far.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from PIL import Image

from ..errors import BackendError, TcdcnError
from ..inference.api import FaceResult, LandmarkDetector, rescale_face
from ..inference.loading import BACKENDS
from ..inference.test_time import describe_test_time
from ..io.atomic import atomic_write_bytes, temp_path_for
from ..io.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
from ..io.results import (
    LOCK_NAME,
    PROGRESS_NAME,
    RESULT_FILES,
    SHAPING_OPTIONS,
    AppendFile,
    DoneInput,
    OutputLock,
    ProgressLog,
    WriteError,
    check_outside_inputs,
    csv_rows,
    describe_os_error,
    encode_text,
    escape_field,
    existing_results,
    input_folders,
    input_key,
    open_outputs,
    option_text,
    per_input_files,
    progress_header,
    read_progress_log,
    remove_earlier_results,
    unique_stem,
    writing,
)
from ..io.video import MediaInput, declared_frame_count, iter_image_paths, iter_video_frames
from ..models.registry import DEFAULT_MODEL
from ..progress import Progress, progress
from .arguments import BACKEND_HELP, add_progress_arguments, add_test_time_arguments, int_in

log = logging.getLogger("tcdcn.predict")


def add_command(subparsers: Any) -> None:
    p = subparsers.add_parser("predict", help="landmarks on images, folders, globs and videos")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image/video files, folders or glob patterns")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="shipped model name, checkpoint or .onnx path (default %(default)s)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help=BACKEND_HELP)
    p.add_argument("--out", default="tcdcn-out",
                   help="output folder, outside every input folder (default %(default)s)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--jsonl", action="store_true", help="one JSON line per input in OUT/results.jsonl")
    fmt.add_argument("--csv", action="store_true",
                     help="one row per face (one with empty face columns for an image or frame without a "
                          "face) in OUT/results.csv")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue an interrupted run into the same --out, skipping the inputs whose "
                            "results are complete (same output options required)")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the results of an earlier run in --out (without it, or --resume, "
                            "such a folder is refused)")
    p.add_argument("--no-draw", action="store_true", help="do not write annotated images")
    p.add_argument("--no-smooth", action="store_true", help="no temporal smoothing of video landmarks")
    add_test_time_arguments(p)
    p.add_argument("--max-side", type=int_in(1), default=DEFAULT_MAX_SIDE,
                   help="decode images with the long side bounded to this many pixels (default %(default)s)")
    p.add_argument("--max-pixels", type=int_in(1), default=DEFAULT_MAX_PIXELS,
                   help="refuse an image file that would decode to more pixels than this, before decoding "
                        "(default %(default)s)")
    add_progress_arguments(p)
    p.set_defaults(func=run)


def _faces_record(faces: list[FaceResult]) -> list[dict[str, Any]]:
    return [f.to_dict() for f in faces]


# ------------------------------------------------------------------------------------------------ signals


class _Interruption:
    """SIGTERM / SIGINT while inputs are processed: the run ends after the current input (or video frame),
    so no result is left half written. A second signal interrupts at once."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _Interruption:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for name in self.SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None


class _Interrupted(Exception):
    """Raised between video frames once a signal asked the run to end."""


# ---------------------------------------------------------------------------------------------------- run


@dataclass
class _Plan:
    """The inputs left to process, each with its output stem; those that failed to expand; how many an
    earlier run completed; and the inputs whose stem had to be changed."""

    todo: list[tuple[MediaInput, str]]
    failed: list[MediaInput]
    already_done: int
    renamed: list[tuple[MediaInput, str, str]]  # input, its stem, the input that holds the plain stem


def _plan(inputs: list[MediaInput], done: dict[str, DoneInput]) -> _Plan:
    used: set[str] = set()
    owner: dict[str, str] = {}
    for entry in done.values():
        used.add(entry.stem.casefold())
        owner[entry.stem.casefold()] = entry.key
    todo: list[tuple[MediaInput, str]] = []
    failed: list[MediaInput] = []
    renamed: list[tuple[MediaInput, str, str]] = []
    already = 0
    for item in inputs:
        if not item.ok:
            failed.append(item)
            continue
        key = input_key(item.path)
        if key in done:
            already += 1
            continue
        stem = unique_stem(item.path, used)
        owner.setdefault(stem.casefold(), str(item.path))
        if stem != item.path.stem:
            renamed.append((item, stem, owner.get(item.path.stem.casefold(), "?")))
        todo.append((item, stem))
    return _Plan(todo, failed, already, renamed)


def run(args: argparse.Namespace) -> int:
    """``tcdcn predict``: the exit status (1 when an input failed, 128 + the signal number when a signal ended it)."""
    out = Path(args.out)
    mode = "jsonl" if args.jsonl else "csv" if args.csv else "json"
    draw = not args.no_draw
    inputs = list(iter_image_paths(args.paths))
    fresh = _plan(inputs, {})
    results_path = out / RESULT_FILES[mode] if mode in RESULT_FILES else None
    progress_path = out / PROGRESS_NAME
    planned = [f for item, stem in fresh.todo for f in per_input_files(out, stem, item.kind, mode, draw)]
    fixed = [out / name for name in (LOCK_NAME, PROGRESS_NAME, *RESULT_FILES.values())]
    check_outside_inputs(out, input_folders(args.paths), inputs, planned + fixed)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TcdcnError(f"{out}: cannot create the output folder ({describe_os_error(exc)})") from None
    lock = OutputLock(out, lambda text: print(text, file=sys.stderr, flush=True))
    try:
        with _Interruption() as interruption:
            return _run_locked(args, out, mode, draw, inputs, fresh, planned, results_path, progress_path, interruption)
    finally:
        lock.release()


def _run_locked(args: argparse.Namespace, out: Path, mode: str, draw: bool, inputs: list[MediaInput],
                fresh: _Plan, planned: list[Path], results_path: Path | None, progress_path: Path,
                interruption: _Interruption) -> int:
    from ..inference.draw import draw_faces

    header = progress_header(mode, draw, args.model)
    earlier: ProgressLog | None = None
    if args.resume and progress_path.is_file():
        earlier = read_progress_log(progress_path)
        if earlier.header:
            for key in SHAPING_OPTIONS:
                if earlier.header.get(key) != header[key]:
                    raise TcdcnError(
                        f"{out}: cannot resume with other output options (earlier run: "
                        f"{option_text(key, earlier.header.get(key, '?'))}, this run: "
                        f"{option_text(key, header[key])}); use the earlier options, or replace the results "
                        "with --overwrite")
    elif args.overwrite:
        remove_earlier_results(out, progress_path, planned)
    else:
        existing = existing_results(planned, progress_path, results_path)
        if existing:
            names = ", ".join(p.name for p in existing[:3]) + (f" and {len(existing) - 3} more"
                                                              if len(existing) > 3 else "")
            hint = ("continue it with --resume, or replace them with --overwrite" if not args.resume
                    else f"{PROGRESS_NAME} is missing, so they cannot be resumed; replace them with --overwrite")
            raise TcdcnError(f"{out}: holds results of an earlier run ({names}); {hint}")

    try:
        detector = LandmarkDetector(args.model, backend=args.backend, max_side=args.max_side,
                                    mirror_average=args.flip, multi_crop=args.multi_crop,
                                    box_refinements=args.box_refinements, max_pixels=args.max_pixels,
                                    local_stage=args.local_stage)
    except ValueError as exc:  # a test-time switch the model cannot honour
        raise BackendError(f"{args.model}: {exc}") from None
    log.info("backend: %s", detector.model.describe_backend())
    log.info("%s", describe_test_time(detector.model, detector.default_test_time))
    point_names = tuple(detector.model.scheme.point_names)
    task_names = tuple(detector.model.task_names)

    done, results, progress_file = open_outputs(out, mode, draw, earlier, header, results_path, progress_path,
                                                 point_names, task_names)
    plan = _plan(inputs, done) if done else fresh
    failures = len(plan.failed)
    completed = 0
    counter = progress(len(plan.todo), "predict", "file")
    try:
        for item in plan.failed:
            counter.write(f"tcdcn: error: {item.error}")
        if plan.already_done:
            log.info("%s: %d input(s) already done, %d to go", out, plan.already_done, len(plan.todo))
        for item, stem, owner in plan.renamed:
            counter.write(f"tcdcn: warning: {item.path}: written as {stem} ({item.path.stem} is taken by {owner})")
        for item, stem in plan.todo:
            if interruption.requested:
                break
            try:
                _process(detector, item, stem, out, mode, draw, not args.no_smooth, interruption, counter, draw_faces,
                         results, progress_file, point_names, task_names)
                completed += 1
            except (TcdcnError, WriteError) as exc:
                failures += 1
                counter.write(f"tcdcn: error: {exc}")
            except _Interrupted:
                break
            counter.update(1)
        counter.close(completed=not interruption.requested)
    finally:
        counter.close(completed=False)  # after an exception only: closing twice is a no-op
        if results is not None:
            results.close()
        progress_file.close()
    total = len(inputs)
    if interruption.requested:
        assert interruption.signum is not None
        name = signal.Signals(interruption.signum).name
        print(f"tcdcn: interrupted by {name} with {plan.already_done + completed} of {total} input(s) done; "
              f"results so far are kept in {out}; continue with the same command and --resume", file=sys.stderr)
        return 128 + interruption.signum
    if failures:
        print(f"tcdcn: {failures} of {total} input(s) failed", file=sys.stderr)
    return 1 if failures else 0


def _process(detector: LandmarkDetector, item: MediaInput, stem: str, out: Path, mode: str, draw: bool,
             smooth: bool, interruption: _Interruption, counter: Progress[Any], draw_faces: Callable[..., np.ndarray],
             results: AppendFile | None, progress_file: AppendFile, point_names: Sequence[str],
             task_names: Sequence[str]) -> None:
    """Predict one input and write its outputs: media file and JSON atomically, then its results lines,
    then its progress line (which marks it complete)."""
    if item.kind == "video":
        target = out / f"{stem}.mp4"
        drawn_tmp: Path | None = None
        if draw:
            with writing(target):
                drawn_tmp = temp_path_for(target, suffix=".mp4")  # OpenCV picks the container by suffix
        try:
            record = _predict_video(detector, item.path, drawn_tmp, target, smooth, interruption, counter)
            if drawn_tmp is not None:
                with writing(target):
                    os.chmod(drawn_tmp, 0o644)
                    os.replace(drawn_tmp, target)
        finally:
            if drawn_tmp is not None:
                drawn_tmp.unlink(missing_ok=True)
        faces = sum(len(f["faces"]) for f in record["frames"])
        summary = f"{len(record['frames'])} frame(s), {faces} face(s)"
    else:
        rgb, scale, found = detector.detect(item.path)
        record = {"input": str(item.path), "faces": _faces_record(found)}
        if draw:  # drawn on the decoded image, whose size is bounded; encoded first, so a write is all or nothing
            shown = [rescale_face(f, scale) for f in found]
            buffer = io.BytesIO()
            Image.fromarray(draw_faces(rgb, shown)).save(buffer, format="JPEG", quality=92)
            target = out / f"{stem}.jpg"
            with writing(target):
                atomic_write_bytes(target, buffer.getvalue(), fsync=False)
        summary = f"{len(found)} face(s)"
    size = before = 0
    # Files are flushed to the kernel, not fsynced one by one: that survives a killed process at little cost.
    if mode == "json":
        target = out / f"{stem}.json"
        with writing(target):
            atomic_write_bytes(target, encode_text(json.dumps(record, indent=1)), fsync=False)
    else:
        assert results is not None
        data = (encode_text(json.dumps(record) + "\n") if mode == "jsonl"
                else csv_rows(item.path, record, point_names, task_names))
        before = results.size
        size = results.append(data)
    try:
        progress_file.append(encode_text(f"{size}\t{escape_field(stem)}\t{escape_field(input_key(item.path))}\n"))
    except WriteError:
        if results is not None and mode != "json":
            results.cut(before)  # unrecorded lines would be duplicated by a resumed run
        raise
    log.info("%s: %s", item.path, summary)


def _predict_video(detector: LandmarkDetector, path: Path, drawn: Path | None, target: Path, smooth: bool,
                   interruption: _Interruption, counter: Progress[Any]) -> dict[str, Any]:
    """Landmarks on every frame; the annotated video goes to ``drawn`` (a temp file renamed to ``target``
    by the caller once complete)."""
    import cv2

    from ..inference.draw import draw_faces
    from ..inference.smoothing import LandmarkSmoother

    smoother = LandmarkSmoother() if smooth else None
    frames: list[dict[str, Any]] = []
    video_writer = None
    declared = declared_frame_count(path)
    try:
        for frame in progress(iter_video_frames(path), f"predict {path.name}", "frame", total=declared):
            if interruption.requested:
                raise _Interrupted
            faces = detector(frame.image)
            if smoother is not None:
                smoothed = smoother.update([f.landmarks for f in faces], [f.box for f in faces], frame.time_s)
                for f, pts in zip(faces, smoothed):
                    f.landmarks = np.asarray(pts)
            frames.append({"frame": frame.index, "time_s": round(frame.time_s, 4), "faces": _faces_record(faces)})
            if drawn is not None:
                image = draw_faces(frame.image, faces)
                if video_writer is None:
                    h, w = image.shape[:2]
                    video_writer = cv2.VideoWriter(str(drawn), cv2.VideoWriter_fourcc(*"mp4v"), frame.fps, (w, h))
                    if not video_writer.isOpened():
                        raise WriteError(target, "no video encoder for mp4v")
                video_writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    finally:
        if video_writer is not None:
            video_writer.release()
    record: dict[str, Any] = {"input": str(path), "frames": frames}
    if declared is not None and len(frames) < declared:
        counter.write(f"tcdcn: warning: {path}: {len(frames)} of the {declared} frame(s) the file declares could "
                      "be decoded (truncated or damaged file); its results are incomplete")
        record["frames_declared"] = declared
        record["complete"] = False
    return record
