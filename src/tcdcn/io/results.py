"""The output folder of ``tcdcn predict``: result files, the lock, the progress file and output safety.

Nothing written here is ever lost or overwritten by accident:

* ``check_outside_inputs`` refuses an output folder that is, or lies inside, an input folder, and inputs that lie
  inside the output folder.
* ``OUT/.tcdcn-predict.lock`` (``OutputLock``, created exclusively, holding the pid) keeps a second run out while
  one is writing; a lock whose process is gone is taken over.
* Results are kept as inputs complete: each JSON line / CSV rows is written at once (``AppendFile``), each
  per-input file atomically, and one line per completed input is appended to ``OUT/.tcdcn-predict.tsv``::

      #tcdcn-predict<TAB>format=1<TAB>mode=jsonl<TAB>draw=yes<TAB>model=mtfl-5pt
      <results file size after the input><TAB><output stem><TAB><absolute input path>

  A resumed run truncates the results file to the last recorded size (dropping an input written only in part)
  and skips the recorded inputs (``open_outputs``).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TcdcnError
from .video import MediaInput, has_glob_magic, media_kind

LOCK_NAME = ".tcdcn-predict.lock"
PROGRESS_NAME = ".tcdcn-predict.tsv"
PROGRESS_MAGIC = "#tcdcn-predict"
PROGRESS_FORMAT = "1"
RESULT_FILES = {"jsonl": "results.jsonl", "csv": "results.csv"}
CSV_FIXED_COLUMNS = ["input", "frame", "face", "score", "x0", "y0", "x1", "y1"]
# Header fields a resumed run must match: they decide which files exist and the layout of their records.
SHAPING_OPTIONS = ("mode", "draw", "model")


# ------------------------------------------------------------------------------------------ write errors


class WriteError(Exception):
    """An output of one input could not be written; the run reports it and goes on."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: cannot write ({reason})")
        self.path, self.reason = path, reason


def describe_os_error(exc: OSError) -> str:
    """The short reason of an ``OSError`` for a one-line message."""
    return exc.strerror or str(exc) or type(exc).__name__


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing ``path`` into a ``WriteError`` naming it."""
    try:
        yield
    except OSError as exc:
        raise WriteError(path, describe_os_error(exc)) from None


# ---------------------------------------------------------------------------------------- output safety


def input_folders(paths: Sequence[str]) -> list[Path]:
    """The folders the inputs are read from: folder arguments and folders a pattern matches."""
    import glob

    folders: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            folders.append(path)
        elif has_glob_magic(text):
            folders.extend(Path(m) for m in sorted(glob.glob(text, recursive=True)) if Path(m).is_dir())
    return folders


def check_outside_inputs(out: Path, folders: list[Path], inputs: list[MediaInput],
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


class OutputLock:
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
                    raise TcdcnError(f"{self.path}: cannot remove a stale lock ({describe_os_error(exc)})") from None
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
            raise TcdcnError(f"{self.path}: cannot create the lock file ({describe_os_error(exc)})") from None
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


# ------------------------------------------------------------------------------- results and progress files


class AppendFile:
    """A file written only at its end, unbuffered (a killed process loses nothing it wrote), that can
    be cut back to its size before a failed or partial write."""

    def __init__(self, path: Path, header: bytes | None = None, keep: int | None = None) -> None:
        """A new file starting with ``header``, or (``keep``) an existing one cut to ``keep`` bytes."""
        self.path = path
        with writing(path):
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
        ``WriteError`` raised."""
        with writing(self.path):
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


def escape_field(text: str) -> str:
    """``text`` with backslash, tab and line breaks escaped, for one field of the progress file."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def unescape_field(text: str) -> str:
    """The inverse of ``escape_field``."""
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


def encode_text(text: str) -> bytes:
    """UTF-8, with file names that are not UTF-8 kept as they were read (surrogate escapes)."""
    return text.encode("utf-8", errors="surrogateescape")


@dataclass
class DoneInput:
    """One line of the progress file: an input whose outputs are complete."""

    size: int
    stem: str
    key: str
    end: int  # byte offset of the end of this line in the progress file


@dataclass
class ProgressLog:
    """What an earlier run recorded: its header fields and one entry per completed input."""

    header: dict[str, str] = field(default_factory=dict)
    done: list[DoneInput] = field(default_factory=list)
    header_end: int = 0


def read_progress_log(path: Path) -> ProgressLog:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TcdcnError(f"{path}: cannot read ({describe_os_error(exc)})") from None
    state = ProgressLog()
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
        state.done.append(DoneInput(size, unescape_field(fields[1]), unescape_field(fields[2]), offset))
    return state


def progress_header(mode: str, draw: bool, model: str) -> dict[str, str]:
    """The header fields of a progress file: its format and the options that shape the outputs."""
    return {"format": PROGRESS_FORMAT, "mode": mode, "draw": "yes" if draw else "no", "model": model}


def option_text(key: str, value: str) -> str:
    """A shaping option as the command line spells it, for messages."""
    if key == "mode":
        return {"json": "JSON files", "jsonl": "--jsonl", "csv": "--csv"}.get(value, value)
    if key == "draw":
        return "annotated images" if value == "yes" else "--no-draw"
    return f"--model {value}"


# ------------------------------------------------------------------------------------------------ records


def csv_header(point_names: Sequence[str], task_names: Sequence[str]) -> list[str]:
    """The CSV columns: input, frame, face, score, box, then x and y of each point, then each task, then
    head_pose. The columns are those of the JSON record: no attribute column for a model without attribute
    tasks, and head_pose always (empty where the JSON has null: a model without pose tasks)."""
    return CSV_FIXED_COLUMNS + [f"{n}_{a}" for n in point_names for a in "xy"] + list(task_names) + ["head_pose"]


def csv_rows(source: Path, record: dict[str, Any], point_names: Sequence[str],
              task_names: Sequence[str]) -> bytes:
    """CSV rows for one input: one per face, and one with empty face columns for an image or video
    frame without a face (every input and frame shows up)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    width = len(csv_header(point_names, task_names))
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
                            + [attributes.get(t, "") for t in task_names]
                            + [face.get("head_pose") or ""])
    return encode_text(buffer.getvalue())


def unique_stem(path: Path, used: set[str]) -> str:
    """``path``'s stem, or ``stem_2``, ``stem_3``... when taken (compared without case: some file systems
    do not tell ``X.jpg`` from ``x.jpg``)."""
    stem = path.stem
    candidate, k = stem, 1
    while candidate.casefold() in used:
        k += 1
        candidate = f"{stem}_{k}"
    used.add(candidate.casefold())
    return candidate


def input_key(path: Path) -> str:
    """How the progress file names an input: its absolute, resolved path."""
    return str(path.resolve())


def per_input_files(out: Path, stem: str, kind: str | None, mode: str, draw: bool) -> list[Path]:
    """The files one input writes besides the shared results file: its JSON and its annotated image or video."""
    files = [out / f"{stem}.json"] if mode == "json" else []
    if draw:
        files.append(out / f"{stem}.mp4" if kind == "video" else out / f"{stem}.jpg")
    return files


def existing_results(planned: list[Path], progress_path: Path, results_path: Path | None) -> list[Path]:
    """The outputs of an earlier run that this run would write over."""
    # A folder in the way of an output file is not a result: its input is reported as not writable.
    candidates = [progress_path] + ([results_path] if results_path is not None else []) + planned
    return [p for p in candidates if p.is_file() or p.is_symlink()]


def remove_earlier_results(out: Path, progress_path: Path, planned: list[Path]) -> None:
    """--overwrite: the earlier run's results (those its progress file names too) and this run's outputs."""
    earlier: list[Path] = []
    if progress_path.is_file():
        try:
            previous = read_progress_log(progress_path)
        except TcdcnError:
            previous = ProgressLog()
        for entry in previous.done:
            earlier.extend(out / f"{entry.stem}{suffix}" for suffix in (".json", ".jpg", ".mp4"))
    for path in [out / name for name in RESULT_FILES.values()] + earlier + planned + [progress_path]:
        if path.is_file() or path.is_symlink():
            try:
                path.unlink()
            except OSError as exc:
                raise TcdcnError(f"{path}: cannot remove an earlier result ({describe_os_error(exc)})") from None


def open_outputs(out: Path, mode: str, draw: bool, earlier: ProgressLog | None, header: dict[str, str],
                  results_path: Path | None, progress_path: Path, point_names: Sequence[str],
                  task_names: Sequence[str]) -> tuple[dict[str, DoneInput], AppendFile | None, AppendFile]:
    """Open the results file and the progress file, new or (``earlier``) cut back to the last complete
    input; returns the completed inputs by key."""
    kept: list[DoneInput] = []
    if earlier is not None and earlier.header:
        actual = results_path.stat().st_size if results_path is not None and results_path.is_file() else None
        for entry in earlier.done:
            if results_path is not None and (actual is None or entry.size > actual):
                break  # recorded but not (or no longer) in the results file: done again
            kept.append(entry)
    header_row = encode_text(csv_row(csv_header(point_names, task_names))) if mode == "csv" else None
    try:
        if kept:
            progress_file = AppendFile(progress_path, keep=kept[-1].end)
        elif earlier is not None and earlier.header:
            progress_file = AppendFile(progress_path, keep=earlier.header_end)
        else:
            progress_file = AppendFile(progress_path, header=encode_text(
                "\t".join([PROGRESS_MAGIC] + [f"{k}={escape_field(v)}" for k, v in header.items()]) + "\n"))
        results: AppendFile | None = None
        if results_path is not None:
            try:
                results = (AppendFile(results_path, keep=kept[-1].size) if kept
                           else AppendFile(results_path, header=header_row))
            except BaseException:
                progress_file.close()
                raise
    except WriteError as exc:
        raise TcdcnError(str(exc)) from None
    done: dict[str, DoneInput] = {}
    for entry in kept:
        # A per-input file of a completed input that has gone missing is written again.
        if all(p.is_file() for p in per_input_files(out, entry.stem, _kind_of(entry.key), mode, draw)):
            done[entry.key] = entry
    return done, results, progress_file


def _kind_of(key: str) -> str:
    return media_kind(key) or "image"


def csv_row(values: list[str]) -> str:
    """One CSV line, quoted as the csv module quotes."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()
