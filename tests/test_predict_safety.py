"""`tcdcn predict` never loses or overwrites data: inputs, concurrent runs, kills, write errors, resume."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tcdcn.cli import main
from tcdcn.io.results import LOCK_NAME, PROGRESS_NAME

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
FAST = ["-q", "--no-progress"]  # global -q first, --no-progress after the sub-command

# Runs `tcdcn` with every image taking at least 0.4 s, so a signal can be sent partway through a batch.
SLOW_MAIN = """
import sys, time
from tcdcn.inference.api import LandmarkDetector
_detect = LandmarkDetector.detect
def _slow(self, image):
    time.sleep(0.4)
    return _detect(self, image)
LandmarkDetector.detect = _slow
from tcdcn.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def predict(*args: str | Path) -> int:
    return main(["-q", "predict", *map(str, args), "--no-progress"])


def photos(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in names]
    for path in paths:
        shutil.copy(EXAMPLE, path)
    return paths


def jsonl_inputs(out: Path) -> list[str]:
    """Input names of results.jsonl, each line parsed (a damaged line fails the test)."""
    return [Path(json.loads(line)["input"]).name for line in (out / "results.jsonl").read_text().splitlines()]


def progress_records(out: Path) -> list[list[str]]:
    lines = (out / PROGRESS_NAME).read_text().splitlines()
    assert lines[0].startswith("#tcdcn-predict\t")
    return [line.split("\t") for line in lines[1:]]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("tcdcn: error:")]


# ------------------------------------------------------------------------------------ inputs are safe


@pytest.mark.parametrize("where", ["same", "inside"])
def test_out_at_or_inside_an_input_folder_is_refused_and_the_input_is_untouched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    (photo,) = photos(tmp_path / "in", ["x.jpg"])
    before = photo.read_bytes()
    out = tmp_path / "in" if where == "same" else tmp_path / "in" / "results"
    assert predict(tmp_path / "in", "--out", out) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("tcdcn: error:") and str(out) in line and str(tmp_path / "in") in line
    assert photo.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["x.jpg"]


def test_an_input_inside_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (photo,) = photos(tmp_path / "out", ["x.jpg"])
    before = photo.read_bytes()
    assert predict(photo, "--out", tmp_path / "out") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("tcdcn: error:") and str(photo) in line and str(tmp_path / "out") in line
    assert photo.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.jpg"]


# ------------------------------------------------------------------------------------------------- lock


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (photo,) = photos(tmp_path / "in", ["x.jpg"])
    out = tmp_path / "out"
    out.mkdir()
    running = os.getppid()  # alive for the whole test
    (out / LOCK_NAME).write_text(f"{running}\n")
    assert predict(photo, "--out", out, "--jsonl") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("tcdcn: error:") and f"pid {running}" in line and str(out) in line
    assert (out / LOCK_NAME).read_text() == f"{running}\n"  # the other run's lock is left alone
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_a_stale_lock_is_taken_over_and_removed_at_the_end(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (photo,) = photos(tmp_path / "in", ["x.jpg"])
    out = tmp_path / "out"
    out.mkdir()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    (out / LOCK_NAME).write_text(f"{ended.pid}\n")
    assert predict(photo, "--out", out, "--jsonl", "--no-draw") == 0
    notices = [line for line in capsys.readouterr().err.splitlines() if "no longer running" in line]
    assert len(notices) == 1 and str(ended.pid) in notices[0]
    assert not (out / LOCK_NAME).exists()
    assert jsonl_inputs(out) == ["x.jpg"]


# -------------------------------------------------------------------------------- earlier results, resume


def test_a_rerun_is_refused_without_resume_and_replaces_with_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = photos(tmp_path / "in", ["a.jpg", "b.jpg"])
    out = tmp_path / "out"
    assert predict(*inputs, "--out", out, "--jsonl", "--no-draw") == 0
    first = (out / "results.jsonl").read_bytes()
    capsys.readouterr()
    assert predict(*inputs, "--out", out, "--jsonl", "--no-draw") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert str(out) in line and "--resume" in line and "--overwrite" in line
    assert (out / "results.jsonl").read_bytes() == first
    assert not (out / LOCK_NAME).exists()
    assert predict(*inputs, "--out", out, "--jsonl", "--no-draw", "--overwrite") == 0
    assert jsonl_inputs(out) == ["a.jpg", "b.jpg"]
    assert len(progress_records(out)) == 2


def test_per_input_files_of_an_earlier_run_are_not_replaced_without_overwrite(tmp_path: Path) -> None:
    (photo,) = photos(tmp_path / "in", ["x.jpg"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.json").write_text("kept")
    assert predict(photo, "--out", out, "--no-draw") == 2
    assert (out / "x.json").read_text() == "kept"
    assert predict(photo, "--out", out, "--no-draw", "--overwrite") == 0
    assert len(json.loads((out / "x.json").read_text())["faces"]) >= 1


def test_resume_drops_a_partly_written_input_and_writes_each_input_once(tmp_path: Path) -> None:
    inputs = photos(tmp_path / "in", ["a.jpg", "b.jpg", "c.jpg"])
    out = tmp_path / "out"
    assert predict(*inputs, "--out", out, "--jsonl", "--no-draw") == 0
    complete = (out / "results.jsonl").read_bytes()
    progress = (out / PROGRESS_NAME).read_bytes()
    # As left by a kill during the second input: its line half written, its progress line cut short.
    first_line_end = complete.index(b"\n") + 1
    (out / "results.jsonl").write_bytes(complete[:first_line_end + 40])
    header_and_first = b"".join(progress.splitlines(keepends=True)[:2])
    (out / PROGRESS_NAME).write_bytes(header_and_first + b"12")
    assert predict(*inputs, "--out", out, "--jsonl", "--no-draw", "--resume") == 0
    assert jsonl_inputs(out) == ["a.jpg", "b.jpg", "c.jpg"]
    assert (out / "results.jsonl").read_bytes()[:first_line_end] == complete[:first_line_end]
    assert [r[1] for r in progress_records(out)] == ["a", "b", "c"]


def test_resume_refuses_another_output_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (photo,) = photos(tmp_path / "in", ["x.jpg"])
    out = tmp_path / "out"
    assert predict(photo, "--out", out, "--jsonl", "--no-draw") == 0
    capsys.readouterr()
    assert predict(photo, "--out", out, "--csv", "--no-draw", "--resume") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--jsonl" in line and "--csv" in line and "--overwrite" in line
    assert not (out / "results.csv").exists()


def _slow_run(inputs: list[Path], out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SLOW_MAIN, "-q", "predict", *map(str, inputs), "--out", str(out),
                             "--jsonl", "--no-draw", "--no-progress", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_records(out: Path, count: int, proc: subprocess.Popen[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        path = out / PROGRESS_NAME
        if path.is_file() and path.read_text().count("\n") >= count + 1:
            return
        if proc.poll() is not None:
            pytest.fail(f"predict ended before {count} inputs were done: {proc.communicate()[1]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"fewer than {count} inputs done in {timeout_s} s")


def test_resume_after_sigkill_gives_one_complete_record_per_input(tmp_path: Path) -> None:
    inputs = photos(tmp_path / "in", [f"p{i}.jpg" for i in range(6)])
    out = tmp_path / "out"
    proc = _slow_run(inputs, out)
    _wait_for_records(out, 2, proc)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done_before = len(progress_records(out))
    assert 2 <= done_before < 6
    assert (out / LOCK_NAME).exists()  # a killed run cannot remove it; the next run takes it over
    assert predict(*inputs, "--out", out, "--jsonl", "--no-draw", "--resume") == 0
    assert jsonl_inputs(out) == [p.name for p in inputs]
    assert len(progress_records(out)) == 6
    assert not (out / LOCK_NAME).exists()


def test_sigterm_keeps_complete_lines_removes_the_lock_and_exits_143(tmp_path: Path) -> None:
    inputs = photos(tmp_path / "in", [f"p{i}.jpg" for i in range(6)])
    out = tmp_path / "out"
    proc = _slow_run(inputs, out)
    _wait_for_records(out, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    (line,) = [line for line in err.splitlines() if "SIGTERM" in line]
    assert "--resume" in line and "of 6 input(s)" in line
    names = jsonl_inputs(out)
    assert 2 <= len(names) < 6 and names == [p.name for p in inputs[:len(names)]]
    assert len(progress_records(out)) == len(names)
    assert not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------------------------------ write errors


def test_a_write_error_is_reported_for_its_input_and_the_batch_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = photos(tmp_path / "in", ["x.jpg", "y.jpg", "z.jpg"])
    out = tmp_path / "out"
    (out / "y.json").mkdir(parents=True)  # a folder in the way of an output file
    assert predict(*inputs, "--out", out, "--no-draw") == 1
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert str(out / "y.json") in line and "cannot write" in line
    assert "Traceback" not in err and "1 of 3 input(s) failed" in err
    for name in ("x.json", "z.json"):
        assert len(json.loads((out / name).read_text())["faces"]) >= 1
    assert sorted(p.name for p in out.iterdir()) == [PROGRESS_NAME, "x.json", "y.json", "z.json"]  # no temp left
    assert [r[1] for r in progress_records(out)] == ["x", "z"]


# --------------------------------------------------------------------------------------- CSV, names, video


def test_csv_has_a_header_and_a_row_for_an_image_without_a_face(tmp_path: Path) -> None:
    (photo,) = photos(tmp_path / "in", ["face.jpg"])
    grey = tmp_path / "in" / "grey.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(grey)
    out = tmp_path / "out"
    assert predict(photo, grey, "--out", out, "--csv", "--no-draw") == 0
    header, *rows = list(csv.reader((out / "results.csv").open()))
    assert header[:8] == ["input", "frame", "face", "score", "x0", "y0", "x1", "y1"]
    assert header[8:18] == [f"{n}_{a}" for n in ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")
                            for a in "xy"]
    assert {"male", "smiling", "glasses"} <= set(header[18:])
    assert all(len(row) == len(header) for row in rows)
    (empty,) = [row for row in rows if row[0] == str(grey)]
    assert empty[1] == "0" and set(empty[2:]) == {""}
    assert any(row[0] == str(photo) and row[2] == "0" for row in rows)


def test_a_renamed_output_is_reported_naming_both_inputs(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (first,) = photos(tmp_path / "a", ["x.jpg"])
    (second,) = photos(tmp_path / "b", ["x.jpg"])
    out = tmp_path / "out"
    assert predict(first, second, "--out", out, "--no-draw") == 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "x_2" in line]
    assert str(first) in line and str(second) in line
    assert json.loads((out / "x.json").read_text())["input"] == str(first)
    assert json.loads((out / "x_2.json").read_text())["input"] == str(second)


def test_a_truncated_video_is_reported_and_marked_incomplete(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    import cv2

    video = tmp_path / "in" / "clip.avi"
    video.parent.mkdir()
    face = cv2.cvtColor(np.asarray(Image.open(EXAMPLE).convert("RGB").resize((128, 128))), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 128))
    for i in range(20):
        writer.write(np.roll(face, i, axis=1))  # distinct frames: similar sizes, no duplicate-frame shortcuts
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[:len(data) // 2])
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="tcdcn.predict")
    assert main(["predict", str(video), "--out", str(out), "--no-draw", "--no-progress"]) == 0
    record = json.loads((out / "clip.json").read_text())
    decoded = len(record["frames"])
    assert 0 < decoded < 20
    assert record["frames_declared"] == 20 and record["complete"] is False
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert str(video) in warning and f"{decoded} of the 20" in warning
    faces = sum(len(f["faces"]) for f in record["frames"])
    assert f"{decoded} frame(s), {faces} face(s)" in caplog.text
