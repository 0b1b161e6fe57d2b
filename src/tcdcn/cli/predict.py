"""``tcdcn predict PATH...``: landmarks on image files, folders, globs and videos.

Writes, per input, an annotated image (``--out``) and a JSON file (or one JSON line per input with
``--jsonl``, or CSV rows with ``--csv``). A bad input, or an input whose outputs cannot be written, is
reported in one line and the run goes on; the exit status is 1 when any input failed. Video is processed
frame by frame with landmark smoothing (One Euro filter) unless ``--no-smooth``.

The output folder is guarded so that no run loses or overwrites data:

* ``--out`` may not be, or lie inside, an input folder, and no input may lie inside ``--out``.
* ``OUT/.tcdcn-predict.lock`` (created exclusively, holding the pid) keeps a second run out while one
  is writing; a lock whose process is gone is taken over.
* Results are kept as inputs complete: each JSON line / CSV rows is written at once, each per-input file
  atomically, and one line per completed input is appended to ``OUT/.tcdcn-predict.tsv``::

      #tcdcn-predict<TAB>format=1<TAB>mode=jsonl<TAB>draw=yes<TAB>model=mtfl-5pt
      <results file size after the input><TAB><output stem><TAB><absolute input path>

  ``--resume`` truncates the results file to the last recorded size (dropping an input written only in
  part) and skips the recorded inputs. Without ``--resume`` a folder holding earlier results is refused
  unless ``--overwrite`` is given.
* SIGTERM and Ctrl-C end the run after the current input, keeping everything completed so far.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from PIL import Image

from ..errors import TcdcnError
from ..inference.api import DEFAULT_MODEL, FaceResult, LandmarkDetector, rescale_face
from ..inference.pipeline import BACKENDS, add_test_time_arguments
from ..io.atomic import atomic_write_bytes, temp_path_for
from ..io.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    MediaInput,
    _has_glob_magic,
    iter_image_paths,
    iter_video_frames,
    media_kind,
)
from ..progress import Progress, add_progress_arguments, progress
from .arguments import int_in

log = logging.getLogger("tcdcn.predict")

LOCK_NAME = ".tcdcn-predict.lock"
PROGRESS_NAME = ".tcdcn-predict.tsv"
PROGRESS_MAGIC = "#tcdcn-predict"
PROGRESS_FORMAT = "1"
RESULT_FILES = {"jsonl": "results.jsonl", "csv": "results.csv"}
CSV_FIXED_COLUMNS = ["input", "frame", "face", "score", "x0", "y0", "x1", "y1"]
# Header fields a resumed run must match: they decide which files exist and the layout of their records.
SHAPING_OPTIONS = ("mode", "draw", "model")


def add_command(subparsers: Any) -> None:
    p = subparsers.add_parser("predict", help="landmarks on images, folders, globs and videos")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image/video files, folders or glob patterns")
    p.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name, checkpoint or .onnx path")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default) and onnx run on onnxruntime, a checkpoint through a temporary ONNX "
                        "export; int8 runs a shipped model's int8 graph; torch runs a checkpoint in torch")
    p.add_argument("--out", default="tcdcn-out",
                   help="output folder, outside every input folder (default: %(default)s)")
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
    p.set_defaults(func=run_predict)


# ------------------------------------------------------------------------------------------ write errors


class _WriteError(Exception):
    """An output of one input could not be written; the run reports it and goes on."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: cannot write ({reason})")
        self.path, self.reason = path, reason


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing ``path`` into a ``_WriteError`` naming it."""
    try:
        yield
    except OSError as exc:
        raise _WriteError(path, _reason(exc)) from None


# ---------------------------------------------------------------------------------------- output safety


def _input_folders(paths: Sequence[str]) -> list[Path]:
    """The folders the inputs are read from: folder arguments and folders a pattern matches."""
    import glob

    folders: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            folders.append(path)
        elif _has_glob_magic(text):
            folders.extend(Path(m) for m in sorted(glob.glob(text, recursive=True)) if Path(m).is_dir())
    return folders


def _check_outside_inputs(out: Path, folders: list[Path], inputs: list[MediaInput],
                          planned: list[Path]) -> None:
    """Refuse an --out that would overwrite inputs or be read back as inputs by a later run."""
    out_real = out.resolve()
    for folder in folders:
        real = folder.resolve()
        if out_real == real:
            raise TcdcnError(f"{out}: output folder is the input folder {folder}; choose an --out outside "
                             "the inputs")
        if real in out_real.parents:
            raise TcdcnError(f"{out}: output folder lies inside the input folder {folder}; choose an --out "
                             "outside the inputs")
    input_paths: dict[Path, Path] = {}
    for item in inputs:
        if item.ok:
            real = item.path.resolve()
            if out_real in real.parents:
                raise TcdcnError(f"{item.path}: input lies inside the output folder {out}; choose an --out "
                                 "that holds no inputs")
            input_paths[real] = item.path
    for target in planned:  # an existing output name may be a link to an input
        source = input_paths.get(target.resolve())
        if source is not None:
            raise TcdcnError(f"{target}: output would replace the input {source}; choose another --out")


def _pid_running(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would end the process there; assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running, under another user
        return True
    except OSError:
        return False
    return True


def _lock_owner(lock: Path) -> tuple[int | None, int | None]:
    """The pid written in ``lock`` and the lock's inode; (None, None) when it is gone."""
    for _ in range(10):  # a lock just created may not hold its pid yet
        try:
            with open(lock, "rb") as fh:
                inode = os.fstat(fh.fileno()).st_ino
                text = fh.read(64).decode("ascii", errors="replace").strip()
        except FileNotFoundError:
            return None, None
        if text.isdigit():
            return int(text), inode
        time.sleep(0.05)
    return 0, inode


class _Lock:
    """``OUT/.tcdcn-predict.lock``: created with O_EXCL, holding the pid; removed on release."""

    def __init__(self, out: Path, notice: Callable[[str], None]) -> None:
        self.path = out / LOCK_NAME
        self.pid = os.getpid()
        if not self._create():
            pid, inode = _lock_owner(self.path)
            if pid is not None and _pid_running(pid):
                raise TcdcnError(f"{out}: another tcdcn predict (pid {pid}) is writing here; wait for it to end "
                                 f"or choose another --out (if pid {pid} is not tcdcn, delete {self.path})")
            if pid is not None:
                try:
                    if os.stat(self.path).st_ino == inode:  # not replaced by a new run meanwhile
                        os.unlink(self.path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise TcdcnError(f"{self.path}: cannot remove a stale lock ({_reason(exc)})") from None
            if not self._create():
                raise TcdcnError(f"{out}: another tcdcn predict is writing here; wait for it to end or choose "
                                 "another --out")
            if pid is not None:
                owner = f"process {pid}" if pid else "a process"
                notice(f"tcdcn: warning: {self.path}: lock left by {owner}, which is no longer running; "
                       "taken over")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise TcdcnError(f"{self.path}: cannot create the lock file ({_reason(exc)})") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{self.pid}\n")
        return True

    def release(self) -> None:
        pid, _ = _lock_owner(self.path)
        if pid == self.pid:  # never remove a lock another run has taken over
            try:
                os.unlink(self.path)
            except OSError:
                pass


# ----------------------------------------------------------------------------------- results and progress


class _AppendFile:
    """A file written only at its end, unbuffered (a killed process loses nothing it wrote), that can
    be cut back to its size before a failed or partial write."""

    def __init__(self, path: Path, header: bytes | None = None, keep: int | None = None) -> None:
        """A new file starting with ``header``, or (``keep``) an existing one cut to ``keep`` bytes."""
        self.path = path
        with _writing(path):
            if keep is None:
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                self.size = 0
            else:
                self.fd = os.open(path, os.O_WRONLY)
                os.ftruncate(self.fd, keep)
                self.size = keep
            os.lseek(self.fd, self.size, os.SEEK_SET)
        if header:
            self.append(header)

    def append(self, data: bytes) -> int:
        """Write ``data`` in full and return the new size; on failure the file is cut back and
        ``_WriteError`` raised."""
        with _writing(self.path):
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError:
                self.cut(self.size)
                raise
        self.size += len(data)
        return self.size

    def cut(self, size: int) -> None:
        try:
            os.ftruncate(self.fd, size)
            os.lseek(self.fd, size, os.SEEK_SET)
            self.size = size
        except OSError:
            pass  # the partial record stays; a resumed run drops it by the recorded size

    def close(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError:
            pass
        os.close(self.fd)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(text: str) -> str:
    table = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(table.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")  # file names that are not UTF-8 stay as they are


@dataclass
class _Done:
    size: int
    stem: str
    key: str
    end: int  # byte offset of the end of this line in the progress file


@dataclass
class _Progress:
    """What an earlier run recorded: its header fields and one entry per completed input."""

    header: dict[str, str] = field(default_factory=dict)
    done: list[_Done] = field(default_factory=list)
    header_end: int = 0


def _read_progress(path: Path) -> _Progress:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TcdcnError(f"{path}: cannot read ({_reason(exc)})") from None
    state = _Progress()
    lines = data.split(b"\n")[:-1]  # only complete lines: the last one may have been cut short by a kill
    if not lines:
        return state
    first = lines[0].decode("utf-8", errors="surrogateescape").split("\t")
    if first[0] != PROGRESS_MAGIC:
        raise TcdcnError(f"{path}: not a tcdcn predict progress file; replace the results with --overwrite")
    state.header = dict(f.split("=", 1) for f in first[1:] if "=" in f)
    if state.header.get("format") != PROGRESS_FORMAT:
        raise TcdcnError(f"{path}: progress file of another format ({state.header.get('format')}); replace the "
                         "results with --overwrite")
    offset = state.header_end = len(lines[0]) + 1
    for number, line in enumerate(lines[1:], start=2):
        offset += len(line) + 1
        fields = line.decode("utf-8", errors="surrogateescape").split("\t")
        if len(fields) != 3 or not fields[0].isdigit():
            raise TcdcnError(f"{path}:{number}: damaged progress line; replace the results with --overwrite")
        size = int(fields[0])
        if state.done and size < state.done[-1].size:
            raise TcdcnError(f"{path}:{number}: damaged progress line (results size goes down); replace the "
                             "results with --overwrite")
        state.done.append(_Done(size, _unescape(fields[1]), _unescape(fields[2]), offset))
    return state


def _progress_header(mode: str, draw: bool, model: str) -> dict[str, str]:
    return {"format": PROGRESS_FORMAT, "mode": mode, "draw": "yes" if draw else "no", "model": model}


def _option_text(key: str, value: str) -> str:
    if key == "mode":
        return {"json": "JSON files", "jsonl": "--jsonl", "csv": "--csv"}.get(value, value)
    if key == "draw":
        return "annotated images" if value == "yes" else "--no-draw"
    return f"--model {value}"


# ------------------------------------------------------------------------------------------------ records


def _faces_record(faces: list[FaceResult]) -> list[dict[str, Any]]:
    return [f.to_dict() for f in faces]


def _csv_header(point_names: Sequence[str], task_names: Sequence[str]) -> list[str]:
    return CSV_FIXED_COLUMNS + [f"{n}_{a}" for n in point_names for a in "xy"] + list(task_names)


def _csv_rows(source: Path, record: dict[str, Any], point_names: Sequence[str],
              task_names: Sequence[str]) -> bytes:
    """CSV rows for one input: one per face, and one with empty face columns for an image or video
    frame without a face (every input and frame shows up)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    width = len(_csv_header(point_names, task_names))
    for frame in record.get("frames", [record]):
        index = frame.get("frame", 0)
        if not frame["faces"]:
            writer.writerow([str(source), index] + [""] * (width - 2))
        for i, face in enumerate(frame["faces"]):
            b = face["box"]
            points = face["landmarks"]
            attributes = face["attributes"]
            writer.writerow([str(source), index, i, face["score"], b["x0"], b["y0"], b["x1"], b["y1"]]
                            + [v for n in point_names for v in points.get(n, ["", ""])]
                            + [attributes.get(t, "") for t in task_names])
    return _encode(buffer.getvalue())


def _unique_stem(path: Path, used: set[str]) -> str:
    """``path``'s stem, or ``stem_2``, ``stem_3``... when taken (compared without case: some file systems
    do not tell ``X.jpg`` from ``x.jpg``)."""
    stem = path.stem
    candidate, k = stem, 1
    while candidate.casefold() in used:
        k += 1
        candidate = f"{stem}_{k}"
    used.add(candidate.casefold())
    return candidate


def _input_key(path: Path) -> str:
    return str(path.resolve())


def _per_input_files(out: Path, stem: str, kind: str | None, mode: str, draw: bool) -> list[Path]:
    files = [out / f"{stem}.json"] if mode == "json" else []
    if draw:
        files.append(out / f"{stem}.mp4" if kind == "video" else out / f"{stem}.jpg")
    return files


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


def _plan(inputs: list[MediaInput], done: dict[str, _Done]) -> _Plan:
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
        key = _input_key(item.path)
        if key in done:
            already += 1
            continue
        stem = _unique_stem(item.path, used)
        owner.setdefault(stem.casefold(), str(item.path))
        if stem != item.path.stem:
            renamed.append((item, stem, owner.get(item.path.stem.casefold(), "?")))
        todo.append((item, stem))
    return _Plan(todo, failed, already, renamed)


def run_predict(args: argparse.Namespace) -> int:
    out = Path(args.out)
    mode = "jsonl" if args.jsonl else "csv" if args.csv else "json"
    draw = not args.no_draw
    inputs = list(iter_image_paths(args.paths))
    fresh = _plan(inputs, {})
    results_path = out / RESULT_FILES[mode] if mode in RESULT_FILES else None
    progress_path = out / PROGRESS_NAME
    planned = [f for item, stem in fresh.todo for f in _per_input_files(out, stem, item.kind, mode, draw)]
    fixed = [out / name for name in (LOCK_NAME, PROGRESS_NAME, *RESULT_FILES.values())]
    _check_outside_inputs(out, _input_folders(args.paths), inputs, planned + fixed)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TcdcnError(f"{out}: cannot create the output folder ({_reason(exc)})") from None
    lock = _Lock(out, lambda text: print(text, file=sys.stderr, flush=True))
    try:
        with _Interruption() as interruption:
            return _run_locked(args, out, mode, draw, inputs, fresh, planned, results_path, progress_path, interruption)
    finally:
        lock.release()


def _existing_results(planned: list[Path], progress_path: Path, results_path: Path | None) -> list[Path]:
    # A folder in the way of an output file is not a result: its input is reported as not writable.
    candidates = [progress_path] + ([results_path] if results_path is not None else []) + planned
    return [p for p in candidates if p.is_file() or p.is_symlink()]


def _remove_earlier_results(out: Path, progress_path: Path, planned: list[Path]) -> None:
    """--overwrite: the earlier run's results (those its progress file names too) and this run's outputs."""
    earlier: list[Path] = []
    if progress_path.is_file():
        try:
            previous = _read_progress(progress_path)
        except TcdcnError:
            previous = _Progress()
        for entry in previous.done:
            earlier.extend(out / f"{entry.stem}{suffix}" for suffix in (".json", ".jpg", ".mp4"))
    for path in [out / name for name in RESULT_FILES.values()] + earlier + planned + [progress_path]:
        if path.is_file() or path.is_symlink():
            try:
                path.unlink()
            except OSError as exc:
                raise TcdcnError(f"{path}: cannot remove an earlier result ({_reason(exc)})") from None


def _run_locked(args: argparse.Namespace, out: Path, mode: str, draw: bool, inputs: list[MediaInput],
                fresh: _Plan, planned: list[Path], results_path: Path | None, progress_path: Path,
                interruption: _Interruption) -> int:
    from ..inference.draw import draw_faces

    header = _progress_header(mode, draw, args.model)
    earlier: _Progress | None = None
    if args.resume and progress_path.is_file():
        earlier = _read_progress(progress_path)
        if earlier.header:
            for key in SHAPING_OPTIONS:
                if earlier.header.get(key) != header[key]:
                    raise TcdcnError(
                        f"{out}: cannot resume with other output options (earlier run: "
                        f"{_option_text(key, earlier.header.get(key, '?'))}, this run: "
                        f"{_option_text(key, header[key])}); use the earlier options, or replace the results "
                        "with --overwrite")
    elif args.overwrite:
        _remove_earlier_results(out, progress_path, planned)
    else:
        existing = _existing_results(planned, progress_path, results_path)
        if existing:
            names = ", ".join(p.name for p in existing[:3]) + (f" and {len(existing) - 3} more"
                                                              if len(existing) > 3 else "")
            hint = ("continue it with --resume, or replace them with --overwrite" if not args.resume
                    else f"{PROGRESS_NAME} is missing, so they cannot be resumed; replace them with --overwrite")
            raise TcdcnError(f"{out}: holds results of an earlier run ({names}); {hint}")

    detector = LandmarkDetector(args.model, backend=args.backend, max_side=args.max_side,
                                mirror_average=args.flip, multi_crop=args.multi_crop,
                                box_refinements=args.box_refinements, max_pixels=args.max_pixels)
    point_names = tuple(detector.model.scheme.point_names)
    task_names = tuple(detector.model.task_names)

    done, results, progress_file = _open_outputs(out, mode, draw, earlier, header, results_path, progress_path,
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
            except (TcdcnError, _WriteError) as exc:
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


def _open_outputs(out: Path, mode: str, draw: bool, earlier: _Progress | None, header: dict[str, str],
                  results_path: Path | None, progress_path: Path, point_names: Sequence[str],
                  task_names: Sequence[str]) -> tuple[dict[str, _Done], _AppendFile | None, _AppendFile]:
    """Open the results file and the progress file, new or (``earlier``) cut back to the last complete
    input; returns the completed inputs by key."""
    kept: list[_Done] = []
    if earlier is not None and earlier.header:
        actual = results_path.stat().st_size if results_path is not None and results_path.is_file() else None
        for entry in earlier.done:
            if results_path is not None and (actual is None or entry.size > actual):
                break  # recorded but not (or no longer) in the results file: done again
            kept.append(entry)
    csv_header = _encode(_csv_row(_csv_header(point_names, task_names))) if mode == "csv" else None
    try:
        if kept:
            progress_file = _AppendFile(progress_path, keep=kept[-1].end)
        elif earlier is not None and earlier.header:
            progress_file = _AppendFile(progress_path, keep=earlier.header_end)
        else:
            progress_file = _AppendFile(progress_path, header=_encode(
                "\t".join([PROGRESS_MAGIC] + [f"{k}={_escape(v)}" for k, v in header.items()]) + "\n"))
        results: _AppendFile | None = None
        if results_path is not None:
            try:
                results = (_AppendFile(results_path, keep=kept[-1].size) if kept
                           else _AppendFile(results_path, header=csv_header))
            except BaseException:
                progress_file.close()
                raise
    except _WriteError as exc:
        raise TcdcnError(str(exc)) from None
    done: dict[str, _Done] = {}
    for entry in kept:
        # A per-input file of a completed input that has gone missing is written again.
        if all(p.is_file() for p in _per_input_files(out, entry.stem, _kind_of(entry.key), mode, draw)):
            done[entry.key] = entry
    return done, results, progress_file


def _kind_of(key: str) -> str:
    return media_kind(key) or "image"


def _csv_row(values: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()


def _process(detector: LandmarkDetector, item: MediaInput, stem: str, out: Path, mode: str, draw: bool,
             smooth: bool, interruption: _Interruption, counter: Progress[Any], draw_faces: Callable[..., np.ndarray],
             results: _AppendFile | None, progress_file: _AppendFile, point_names: Sequence[str],
             task_names: Sequence[str]) -> None:
    """Predict one input and write its outputs: media file and JSON atomically, then its results lines,
    then its progress line (which marks it complete)."""
    if item.kind == "video":
        target = out / f"{stem}.mp4"
        drawn_tmp: Path | None = None
        if draw:
            with _writing(target):
                drawn_tmp = temp_path_for(target, suffix=".mp4")  # OpenCV picks the container by suffix
        try:
            record = _predict_video(detector, item.path, drawn_tmp, target, smooth, interruption, counter)
            if drawn_tmp is not None:
                with _writing(target):
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
            with _writing(target):
                atomic_write_bytes(target, buffer.getvalue(), fsync=False)
        summary = f"{len(found)} face(s)"
    size = before = 0
    # Files are flushed to the kernel, not fsynced one by one: that survives a killed process at little cost.
    if mode == "json":
        target = out / f"{stem}.json"
        with _writing(target):
            atomic_write_bytes(target, _encode(json.dumps(record, indent=1)), fsync=False)
    else:
        assert results is not None
        data = (_encode(json.dumps(record) + "\n") if mode == "jsonl"
                else _csv_rows(item.path, record, point_names, task_names))
        before = results.size
        size = results.append(data)
    try:
        progress_file.append(_encode(f"{size}\t{_escape(stem)}\t{_escape(_input_key(item.path))}\n"))
    except _WriteError:
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
    declared = _video_frame_count(path)
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
                        raise _WriteError(target, "no video encoder for mp4v")
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


def _video_frame_count(path: Path) -> int | None:
    """The frame count the container reports, or None: some streams report 0 or a wrong estimate."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if capture.isOpened() else 0
    finally:
        capture.release()
    return count if count > 0 else None
