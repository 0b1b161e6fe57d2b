"""bench/test_time_plans.py: the boxes a plan is scored with."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import MTFL_DIR
from repo_scripts import REPO, load_file_module

sys.path.insert(0, str(REPO / "bench"))  # the bench modules import their neighbours (host, speed)
plans = load_file_module(REPO / "bench" / "test_time_plans.py", "bench_test_time_plans_under_test")


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    if not MTFL_DIR.exists():
        pytest.skip(f"shared data not found at {MTFL_DIR}")
    monkeypatch.chdir(REPO)  # the config's data paths are relative to the repository root


def test_whole_photo_boxes_score_the_split_framed_by_each_photo(
        in_repo: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert plans.main(["--backend", "onnx", "--plans", "diagonal", "--boxes", "gt,image"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["backend"] == "onnx" and "val_nme_detect" not in row
    # version 7's float32 graph (docs/models.md): the whole photo is a far looser box than the convention's
    assert row["val_nme_gt"] == pytest.approx(3.649, abs=0.002)
    assert row["val_nme_image"] == pytest.approx(11.152, abs=0.01)


def test_an_unknown_box_is_refused(in_repo: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        plans.main(["--plans", "diagonal", "--boxes", "gt,whole"])
    assert exit_info.value.code == 2
    assert "--boxes: gt, detect or image" in capsys.readouterr().err
