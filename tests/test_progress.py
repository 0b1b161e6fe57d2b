"""Progress reports on stderr: plain periodic lines off a terminal, tqdm on one, nothing on stdout."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tcdcn import progress as progress_module
from tcdcn.cli import main
from tcdcn.evaluation import protocol as evaluate_module
from tcdcn.progress import configure, progress
from tcdcn.studies import grid as studies

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "astronaut.jpg"
NUM_FACES = 30
# "evaluate: 10/30 faces (33%), 250 faces/s, eta 0.1s" and the like
PERIODIC = re.compile(r"^(?P<desc>[^:]+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<pct>\d+)%\), "
                      r"(?P<rate>[\d.]+) \w+/s, eta ")


@pytest.fixture(autouse=True)
def _restore_settings() -> Iterator[None]:
    saved = (progress_module._settings.enabled, progress_module._settings.interval_s)
    yield
    configure(enabled=saved[0], interval_s=saved[1])


def fake_clock(step: float = 1.0) -> Callable[[], float]:
    """A clock that moves ``step`` seconds per reading, so rates and intervals do not depend on timing."""
    now = [0.0]

    def read() -> float:
        value = now[0]
        now[0] += step
        return value

    return read


# ---- the helper ---------------------------------------------------------------------------------------
def test_plain_lines_give_done_total_rate_and_eta_then_a_final_line(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(10, "evaluate", "face", enabled=True, tty=False, interval_s=0, clock=fake_clock()) as shown:
        shown.update(3)  # read at t=1: 3 faces in 1 s
        shown.update(4)  # t=2: 7 faces in 2 s
        shown.update(3)  # all done: no periodic line, the final one follows
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "evaluate: 3/10 faces (30%), 3.0 faces/s, eta 2.3s",
        "evaluate: 7/10 faces (70%), 3.5 faces/s, eta 0.9s",
        "evaluate: 10/10 faces (100%), 3.3 faces/s, done in 3.0s",  # closed at t=3
    ]


def test_plain_lines_come_at_most_once_per_interval(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(100, "predict", "file", enabled=True, tty=False, interval_s=10, clock=fake_clock()) as shown:
        for _ in range(25):  # readings at t=1..25: lines at t=10 and t=20 only
            shown.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert [m.group("done") for m in map(PERIODIC.match, lines[:-1]) if m] == ["10", "20"]
    assert len(lines) == 3
    assert lines[-1].startswith("predict: 25/100 files (25%)") and "done in" in lines[-1]


def test_the_interval_setting_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    configure(enabled=True, interval_s=0)
    with progress(4, "study", "run", tty=False, clock=fake_clock()) as shown:
        shown.update(1)
    assert capsys.readouterr().err.splitlines()[0].startswith("study: 1/4 runs (25%)")
    configure(interval_s=1000)
    with progress(4, "study", "run", tty=False, clock=fake_clock()) as shown:
        shown.update(1)
    assert len(capsys.readouterr().err.splitlines()) == 1  # the final line only


def test_wrapping_an_iterable_counts_items_and_reports_an_early_end(capsys: pytest.CaptureFixture[str]) -> None:
    seen = list(progress(["a", "b", "c"], "predict", "file", enabled=True, tty=False, interval_s=60,
                         clock=fake_clock()))
    assert seen == ["a", "b", "c"]
    assert capsys.readouterr().err.startswith("predict: 3/3 files (100%)")
    with pytest.raises(RuntimeError):
        for item in progress(["a", "b", "c"], "predict", "file", enabled=True, tty=False, interval_s=60,
                             clock=fake_clock()):
            if item == "b":
                raise RuntimeError("broken input")
    err = capsys.readouterr().err
    assert err.startswith("predict: 1/3 files (33%)") and "ended early" in err


def test_slow_units_and_unknown_totals_read_naturally(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(None, "predict clip.mp4", "frame", enabled=True, tty=False, interval_s=0,
                  clock=fake_clock()) as shown:
        shown.update(30)
    assert capsys.readouterr().err.splitlines()[0] == "predict clip.mp4: 30 frames, 30 frames/s"
    with progress(3, "study", "run", enabled=True, tty=False, interval_s=0, clock=fake_clock(600.0)) as shown:
        shown.update(1)
    assert capsys.readouterr().err.splitlines()[0] == "study: 1/3 runs (33%), 10m00s/run, eta 20m00s"


def test_disabled_progress_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    configure(enabled=False)
    with progress(10, "evaluate", "face", tty=False, interval_s=0) as shown:
        shown.update(10)
    assert capsys.readouterr() == ("", "")


def test_stdout_is_refused_and_a_terminal_gets_a_bar(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    with pytest.raises(ValueError, match="stderr"):
        progress(10, "evaluate", "face", stream=sys.stdout)
    terminal = io.StringIO()
    with progress(10, "evaluate", "face", enabled=True, tty=True, stream=terminal) as shown:
        shown.update(10)
    assert "10/10" in terminal.getvalue() and "face/s" in terminal.getvalue()
    assert capsys.readouterr().out == ""


# ---- the commands --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def test_list(aflw_subset) -> Path:
    """The first NUM_FACES lines of testing.txt in a folder of their own, with AFLW/ linked beside them."""
    return aflw_subset(NUM_FACES)


def test_evaluate_reports_each_batch_on_stderr_and_keeps_stdout_json(
        test_list: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate_module, "DEFAULT_BATCH_SIZE", 10)  # three batches of the 30 faces
    code = main(["evaluate", "--data", str(test_list), "--json", "--no-flip", "--no-multi-crop",
                 "--box-refinements", "0", "--progress-interval", "0"])
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out)["n"] == NUM_FACES
    lines = [line for line in captured.err.splitlines() if line.startswith("evaluate: ")]
    periodic = [m for m in map(PERIODIC.match, lines) if m]
    assert [(m.group("done"), m.group("total")) for m in periodic] == [("10", "30"), ("20", "30")]
    assert all(float(m.group("rate")) > 0 for m in periodic)
    assert lines[-1].startswith("evaluate: 30/30 faces (100%)") and "done in" in lines[-1]


@pytest.mark.parametrize("switch", [["--no-progress"], ["-q"]])
def test_evaluate_progress_can_be_switched_off(test_list: Path, switch: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "--data", str(test_list), "--json", "--no-flip", "--no-multi-crop",
            "--box-refinements", "0", "--progress-interval", "0"]
    code = main(switch + argv if switch == ["-q"] else argv + switch)
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out)["n"] == NUM_FACES
    assert "evaluate: " not in captured.err


def _tiny_video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    if not writer.isOpened():
        pytest.skip("OpenCV here cannot write mp4v video")
    for k in range(frames):
        writer.write(np.full((48, 64, 3), 20 * k, np.uint8))
    writer.release()
    return path


def test_predict_reports_files_and_video_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(EXAMPLE, inputs / "a.jpg")
    shutil.copy(EXAMPLE, inputs / "b.jpg")
    _tiny_video(inputs / "c.mp4", 5)
    code = main(["predict", str(inputs), "--out", str(tmp_path / "out"), "--jsonl", "--no-draw",
                 "--progress-interval", "0"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out == ""
    err = captured.err.splitlines()
    assert [m.group("done") for m in map(PERIODIC.match, err) if m and m.group("desc") == "predict"] == ["1", "2"]
    assert any(line.startswith("predict: 3/3 files (100%)") and "done in" in line for line in err)
    # The frame count comes from the container before decoding.
    assert any(line.startswith("predict c.mp4: 5/5 frames (100%)") and "done in" in line for line in err)


def test_predict_no_progress_keeps_the_error_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(EXAMPLE, inputs / "a.jpg")
    (inputs / "b.jpg").write_text("not an image")
    code = main(["predict", str(inputs), "--out", str(tmp_path / "out"), "--no-draw", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "predict: " not in err
    assert sum(line.startswith("tcdcn: error:") and "b.jpg" in line for line in err.splitlines()) == 1


def test_study_grid_counts_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "base.yaml").write_text((REPO / "configs/studies/base.yaml").read_text(encoding="utf-8"))
    (tmp_path / "grid.yaml").write_text(
        "base_config: base.yaml\nseeds: [0, 1]\ntrain_subset: 50\nvariants:\n"
        "  - {name: fld_only, label: FLD only, group: none, overrides: {data: {tasks: []}}}\n"
        "attribute_variants: [fld_only]\nscheme_variants: []\n", encoding="utf-8")
    study = studies.load_study(tmp_path / "grid.yaml", root=tmp_path)

    def fake_evaluate(best: Path, faces: Any) -> dict[str, Any]:
        return {"test": {"nme": 0.05, "failure_rate": 0.1}, "point_names": ["p"], "per_landmark": [0.05],
                "face_errors": [0.05], "task_covariance": None}

    monkeypatch.setattr(studies, "load_faces", lambda study, cfg: studies.StudyFaces([], [], []))
    monkeypatch.setattr(studies, "train_run", lambda cfg, run_dir, faces: run_dir / "best.pt")
    monkeypatch.setattr(studies, "evaluate_run", fake_evaluate)
    configure(enabled=True, interval_s=0)
    assert studies.run_grid(study, tmp_path / "runs", tmp_path / "results") == []
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.startswith("study: ")]
    assert [m.group("done") for m in map(PERIODIC.match, lines) if m] == ["1"]
    assert lines[-1].startswith("study: 2/2 runs (100%)") and "done in" in lines[-1]
