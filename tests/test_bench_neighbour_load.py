"""bench/neighbour_load.py: the load processes, the timing plan and the summary's arithmetic."""

from __future__ import annotations

import os
import sys

import pytest
from repo_scripts import REPO, load_file_module

sys.path.insert(0, str(REPO / "bench"))  # the bench modules import their neighbours (host, speed)
neighbour_load = load_file_module(REPO / "bench" / "neighbour_load.py", "bench_neighbour_load_under_test")


def test_summary_medians_and_ratios_by_hand() -> None:
    times = {"idle": {"tcdcn": [1.0, 1.2, 1.1], "dlib": [2.0, 2.0, 4.0]},
             "memory": {"tcdcn": [1.5, 1.3], "dlib": [3.0, 5.2]}}
    idle, memory = neighbour_load.summarise(times)
    assert idle["load"] == "idle" and idle["tcdcn_ms_per_face"] == 1.1 and idle["dlib_ms_per_face"] == 2.0
    assert idle["x_dlib_median"] == 0.5  # ratios 0.5, 0.6, 0.275 -> median 0.5
    assert idle["tcdcn_ms_range"] == [1.0, 1.2] and idle["dlib_ms_range"] == [2.0, 4.0]
    assert memory["tcdcn_ms_per_face"] == 1.4 and memory["dlib_ms_per_face"] == 4.1  # even counts: the mean of two
    assert memory["x_dlib_median"] == 0.375  # ratios 0.5 and 0.25


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_load_runs_on_its_cpu_while_inside_and_ends_after() -> None:
    cpu = sorted(os.sched_getaffinity(0))[1]
    with neighbour_load.LoadProcess("import time\nwhile True:\n    time.sleep(0.01)\n", cpu) as load:
        assert load.process is not None and load.process.poll() is None
        assert os.sched_getaffinity(load.process.pid) == {cpu}
    assert load.process.poll() is not None
    with neighbour_load.LoadProcess(None, cpu) as idle:  # no load: no process
        assert idle.process is None


def test_a_load_that_fails_at_once_is_an_error() -> None:
    cpu = sorted(os.sched_getaffinity(0))[0]
    with pytest.raises(RuntimeError, match="ended at once"):
        with neighbour_load.LoadProcess("raise SystemExit(3)", cpu):
            pass


def test_every_load_gets_alternating_passes_of_both_predictors_in_every_round(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(neighbour_load.LOAD_PROGRAMS, "memory", "import time\nwhile True:\n    time.sleep(0.01)\n")
    monkeypatch.setattr(neighbour_load, "SETTLE_S", 0.05)
    order: list[str] = []
    calls = {"tcdcn": lambda i: order.append("tcdcn") if i == 0 else None,
             "dlib": lambda i: order.append("dlib") if i == 0 else None}
    times = neighbour_load.measure(calls, 3, ["idle", "memory"], rounds=2, load_cpu=sorted(os.sched_getaffinity(0))[-1])
    passes = neighbour_load.PASSES_PER_ROUND * 2
    assert {load: {name: len(v) for name, v in by.items()} for load, by in times.items()} == \
        {"idle": {"tcdcn": passes, "dlib": passes}, "memory": {"tcdcn": passes, "dlib": passes}}
    assert order[2:] == ["tcdcn", "dlib"] * (2 * 2 * neighbour_load.PASSES_PER_ROUND)  # after one warm-up pass each
    assert all(t > 0 for by in times.values() for v in by.values() for t in v)


def test_an_unknown_load_and_a_single_cpu_are_refused(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        neighbour_load.main(["--loads", "idle,disk"])
    assert "unknown load disk" in capsys.readouterr().err
    monkeypatch.setattr(neighbour_load.os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(SystemExit, match="needs two CPUs"):
        neighbour_load.main(["--loads", "idle"])
