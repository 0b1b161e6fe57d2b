"""bench/validation.py: the validation split it scores, and one part of it."""

from __future__ import annotations

import json

import pytest
from conftest import W300_DIR
from repo_scripts import REPO, load_file_module

validation = load_file_module(REPO / "bench" / "validation.py", "bench_validation_under_test")
ONE_PASS = ["--config", "configs/300w-68pt-transfer.yaml", "--model", "300w-68pt", "--backend", "onnx",
            "--no-flip", "--box-refinements", "0", "--no-multi-crop", "--no-local-stage"]


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    if not W300_DIR.exists():
        pytest.skip(f"shared data not found at {W300_DIR}")
    monkeypatch.chdir(REPO)  # the config's data paths are relative to the repository root


def test_part_keeps_only_the_faces_of_that_subfolder(in_repo: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert validation.main([*ONE_PASS, "--part", "helen"]) == 0
    helen = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert validation.main([*ONE_PASS, "--part", "afw"]) == 0
    afw = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert helen["part"] == "helen" and afw["part"] == "afw"
    assert helen["faces"] + afw["faces"] == 181 and helen["faces"] == 137  # the split of docs/results.md
    assert helen["nme"] != afw["nme"]


def test_an_unknown_part_is_refused(in_repo: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        validation.main([*ONE_PASS, "--part", "lfpw"])
    assert exit_info.value.code == 2
    assert "--part lfpw: no validation faces in" in capsys.readouterr().err


def test_box_image_frames_each_face_by_its_whole_photo(in_repo: None, capsys: pytest.CaptureFixture[str]) -> None:
    five_point = ["--config", "configs/mtfl-5pt.yaml", "--model", "mtfl-5pt", "--backend", "onnx", "--no-flip",
                  "--box-refinements", "0", "--no-multi-crop", "--limit", "40"]
    assert validation.main([*five_point, "--box", "gt"]) == 0
    gt = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert validation.main([*five_point, "--box", "image"]) == 0
    image = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert image["box"] == "image" and image["scored"] == gt["scored"] == 40
    # MTFL's training photos are much larger than the face: the whole photo is a far looser box than the
    # convention's, and the error grows with it
    assert image["nme"] > 1.5 * gt["nme"]
