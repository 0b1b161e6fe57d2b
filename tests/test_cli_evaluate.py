"""``tcdcn evaluate`` end to end: a briefly trained model scored on 20 real AFLW test faces."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tcdcn.cli import main
from tcdcn.config import config_from_dict
from tcdcn.data.annotation import FaceAnnotation
from tcdcn.models.checkpoint import atomic_save
from tcdcn.training.trainer import Trainer

NUM_FACES = 20
SUMMARY_KEYS = {"n", "nme", "failure_rate", "per_landmark", "attribute_accuracy"}


@pytest.fixture(scope="module")
def model_file(mtfl_train_faces: list[FaceAnnotation], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A narrow 5-point model trained for two steps, saved as a weights file."""
    out = tmp_path_factory.mktemp("cli_model")
    cfg = config_from_dict({
        "model": {"channels": [8, 16, 16, 16], "feature_dim": 64},
        "train": {"epochs": 1, "batch_size": 8, "threads": 1, "warmup_epochs": 0},
    })
    faces = mtfl_train_faces[:16]
    trainer = Trainer(cfg, out, faces=(faces, faces[:8]))
    trainer.fit()
    path = out / "model.pt"
    atomic_save(trainer.weights(), path)
    return path


@pytest.fixture(scope="module")
def test_list(aflw_subset) -> Path:
    """The first NUM_FACES lines of testing.txt in a folder of their own, with AFLW/ linked beside them."""
    return aflw_subset(NUM_FACES)


def test_evaluate_json_prints_one_object(model_file: Path, test_list: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-q", "evaluate", "--model", str(model_file), "--data", str(test_list), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.endswith("\n") and out.count("\n") == 1  # exactly one line: one JSON object
    summary = json.loads(out)
    assert isinstance(summary, dict)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["n"] == NUM_FACES and summary["detected"] == NUM_FACES
    assert 0 < summary["nme"] < 1  # a two-step model is poor but not absurd
    assert 0 <= summary["failure_rate"] <= 1
    assert list(summary["per_landmark"]) == ["left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right"]
    assert set(summary["attribute_accuracy"]) >= {"male", "smiling", "glasses", "pose_class"}
    assert all(0 <= v <= 1 for v in summary["attribute_accuracy"].values())
    assert summary["model"] == str(model_file) and summary["box"] == "image"


def test_evaluate_text_report(model_file: Path, test_list: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-q", "evaluate", "--model", str(model_file), "--data", str(test_list), "--box", "gt"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"({NUM_FACES} faces, box=gt" in out and "mean error (inter-ocular)" in out


def test_evaluate_reports_a_bad_annotation_file_in_one_line(model_file: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("AFLW/x.jpg 1 2 3\n", encoding="utf-8")
    code = main(["-q", "evaluate", "--model", str(model_file), "--data", str(bad), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""  # nothing on stdout for a --json consumer to misread
    assert captured.err.startswith("tcdcn: error: ") and f"{bad}:1" in captured.err
    assert captured.err.count("\n") == 1


def test_evaluate_reports_a_missing_model(test_list: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-q", "evaluate", "--model", str(tmp_path / "none.pt"), "--data", str(test_list)])
    assert code == 2
    assert "none.pt" in capsys.readouterr().err


def test_mirror_averaging_follows_the_model_unless_told(model_file: Path, test_list: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # A checkpoint runs one pass by default; the shipped models run mirror-averaged (their records say so);
    # --flip / --no-flip override either, and the JSON says which ran.
    from tcdcn.inference.backends.torch import LandmarkModel
    from tcdcn.models.registry import SHIPPED

    assert not LandmarkModel.load(model_file).mirror_average
    for name, record in SHIPPED.items():
        assert LandmarkModel.load(name).mirror_average == record.mirror_average
    runs = {}
    for flag in ([], ["--flip"], ["--no-flip"]):
        assert main(["-q", "evaluate", "--model", str(model_file), "--data", str(test_list), "--json", *flag]) == 0
        runs[tuple(flag)] = json.loads(capsys.readouterr().out)
    assert runs[()]["flip"] is False and runs[("--no-flip",)]["flip"] is False and runs[("--flip",)]["flip"] is True
    assert runs[()]["nme"] == runs[("--no-flip",)]["nme"] != runs[("--flip",)]["nme"]
    assert main(["-q", "evaluate", "--model", "mtfl-5pt", "--data", str(test_list), "--json", "--no-flip"]) == 0
    assert json.loads(capsys.readouterr().out)["flip"] is False


def test_evaluate_cli_says_and_switches_multi_crop(model_file: Path, test_list: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tcdcn.models.registry import SHIPPED, STANDARD_MULTI_CROP

    runs = {}
    for model in (str(model_file), "mtfl-5pt"):
        for flag in ([], ["--multi-crop"], ["--no-multi-crop"], ["--grid"]):
            assert main(["-q", "evaluate", "--model", model, "--data", str(test_list), "--json", *flag]) == 0
            runs[model, tuple(flag)] = json.loads(capsys.readouterr().out)
    # A checkpoint runs its box alone unless asked; the shipped 5-point model runs its card's crops (after one
    # box refinement) unless told not to; --grid runs the 3x3 grid on either.
    checkpoint = str(model_file)
    assert runs[checkpoint, ()]["crops_per_face"] == runs[checkpoint, ("--no-multi-crop",)]["crops_per_face"] == 1
    assert runs[checkpoint, ()]["box_refinements"] == 0
    assert runs[checkpoint, ("--multi-crop",)]["crops_per_face"] == len(STANDARD_MULTI_CROP)
    assert runs[checkpoint, ()]["nme"] == runs[checkpoint, ("--no-multi-crop",)]["nme"]
    assert runs["mtfl-5pt", ()]["crops_per_face"] == len(SHIPPED["mtfl-5pt"].multi_crop)
    assert runs["mtfl-5pt", ()]["box_refinements"] == 1
    for model in (checkpoint, "mtfl-5pt"):
        assert runs[model, ("--grid",)]["crops_per_face"] == len(STANDARD_MULTI_CROP)
    assert runs["mtfl-5pt", ("--no-multi-crop",)]["crops_per_face"] == 1
    for model in (checkpoint, "mtfl-5pt"):
        assert runs[model, ("--no-multi-crop",)]["nme"] != runs[model, ("--multi-crop",)]["nme"]
    assert runs["mtfl-5pt", ()]["nme"] == runs["mtfl-5pt", ("--multi-crop",)]["nme"]
    assert main(["-q", "evaluate", "--model", "mtfl-5pt", "--data", str(test_list), "--json",
                 "--box-refinements", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["box_refinements"] == 2
    with pytest.raises(SystemExit) as exit_info:  # one crop plan at a time
        main(["-q", "evaluate", "--model", "mtfl-5pt", "--data", str(test_list), "--grid", "--no-multi-crop"])
    assert exit_info.value.code == 2 and "not allowed with argument --grid" in capsys.readouterr().err


def test_coincident_eyes_are_reported_not_infinity(model_file: Path, test_list: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A face whose two eye centres are annotated on one spot has no normalising distance: it is counted
    as not scorable, named, and the JSON stays strict (no Infinity / NaN)."""
    lines = test_list.read_bytes().splitlines(keepends=True)
    fields = lines[3].split()  # path x1..x5 y1..y5 attributes
    fields[2], fields[7] = fields[1], fields[6]  # right eye := left eye
    lines[3] = b" " + b" ".join(fields) + b"\r\n"
    broken = test_list.parent / "coincident.txt"
    broken.write_bytes(b"".join(lines))
    code = main(["-q", "evaluate", "--model", str(model_file), "--data", str(broken), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert summary["n"] == NUM_FACES and summary["scored"] == NUM_FACES - 1 and summary["unscorable"] == 1
    assert summary["unscorable_examples"][0].endswith(":4")
    assert 0 < summary["nme"] < 1


def test_a_five_point_model_on_five_point_data_only(test_list: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-q", "evaluate", "--model", "300w-68pt", "--data", str(test_list), "--json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "ibug-68 model (68 points) cannot be scored on mtfl-5 annotations (5 points)" in err


def test_evaluate_logs_the_test_time_options_once(model_file: Path, test_list: Path,
                                                 caplog: pytest.LogCaptureFixture,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # A trained checkpoint runs one pass by default; options asked for beyond that are named with the defaults.
    caplog.set_level(logging.INFO, logger="tcdcn")
    assert main(["evaluate", "--model", str(model_file), "--data", str(test_list), "--json", "--no-progress",
                 "--flip"]) == 0
    lines = [r.getMessage() for r in caplog.records if "test-time options" in r.getMessage()]
    assert lines == ["test-time options: flip on, 1 crop(s) per face, 0 box refinements (the model's defaults: "
                     "flip off, 1 crop(s) per face, 0 box refinements)"]
    assert json.loads(capsys.readouterr().out)["flip"] is True
