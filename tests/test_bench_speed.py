"""bench/speed.py: a run without dlib's predictor, the reference of every ratio, is refused before timing."""

from __future__ import annotations

import sys

import pytest
from repo_scripts import REPO, load_file_module


def test_missing_dlib_is_refused_before_any_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    speed = load_file_module(REPO / "bench" / "speed.py", "bench_speed_under_test")
    monkeypatch.setattr(speed, "load_dlib", lambda: None)
    # A test list that does not exist: reaching the data would raise something else than the refusal.
    with pytest.raises(SystemExit, match=r"dlib's 68-point predictor is missing .*--no-dlib"):
        speed.main(["--test", str(REPO / "no-such-list.txt")])
    sys.modules.pop("bench_speed_under_test", None)
