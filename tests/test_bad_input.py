"""Bad input gives one clear line naming the file (and line), never a traceback or a silent result.

Through the Python API (``AnnotationError``, ``ImageError``, ``ConfigError``, ``CheckpointError``) and the
CLI (exit status 2, one ``tcdcn: error:`` line on stderr). Decoding corrupt images is tested in
``test_imageio.py``.

Landmarks outside the image are accepted: the crop replicates the border (``geometry.warp_crop``), the
box convention still holds, and MTFL/300-W contain such faces at image edges; they must not crash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tcdcn.cli import main
from tcdcn.config import Config, ModelConfig, load_config
from tcdcn.data.dataset import FaceDataset
from tcdcn.data.formats import read_annotations, read_mtfl, read_pts_folder
from tcdcn.errors import AnnotationError, CheckpointError, ConfigError, ImageError
from tcdcn.evaluation.protocol import evaluate
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.models.checkpoint import atomic_save, weights_payload
from tcdcn.models.network import TCDCN
from tcdcn.schemes import MTFL_5

REPO_ROOT = Path(__file__).resolve().parents[1]
MTFL_DIR = REPO_ROOT.parent / "shared" / "data" / "mtfl"
GOOD_LINE = "{path} 34.3 47.3 40.4 34.0 45.0 34.8 36.2 46.0 50.8 52.1 1 2 2 3"
TINY_MODEL = ModelConfig(input_size=48, channels=(4, 8, 8, 8), feature_dim=16)


def first_mtfl_image() -> Path:
    listing = MTFL_DIR / "training.txt"
    if not listing.is_file():
        pytest.skip(f"shared data not found at {listing} (expected ../shared/data beside the repository)")
    return MTFL_DIR / listing.read_text().split(maxsplit=1)[0].replace("\\", "/")


def mtfl_file(folder: Path, *lines: str) -> Path:
    path = folder / "faces.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def linked_image(folder: Path) -> str:
    """A real face symlinked into ``folder``; its path relative to the folder."""
    link = folder / "face.jpg"
    link.symlink_to(first_mtfl_image())
    return link.name


def tiny_checkpoint(path: Path, num_tasks: int = 0, model: ModelConfig = TINY_MODEL) -> Path:
    cfg = Config(model=model)
    atomic_save(weights_payload(TCDCN(model, num_tasks), cfg, MTFL_5, ()), path)
    return path


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, require exit status 2, return its single stderr line."""
    code = main(["-q", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tcdcn: error: ") and "Traceback" not in err
    return err


# ---- annotation files ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ("img.jpg 1 2 3", "expected 15 fields"),
        (GOOD_LINE.format(path="img.jpg") + " 7", "found 16"),
        (GOOD_LINE.format(path="img.jpg").replace("40.4", "forty"), "non-numeric"),
        (GOOD_LINE.format(path="img.jpg").replace("40.4", "nan"), "non-finite"),
        (GOOD_LINE.format(path="img.jpg").replace("40.4", "inf"), "non-finite"),
        (GOOD_LINE.format(path="img.jpg")[:-1] + "9", "pose code"),
        (GOOD_LINE.format(path="img.jpg").replace(" 1 2 2 3", " 0 2 2 3"), "male code"),
        (GOOD_LINE.format(path="img.jpg").replace(" 1 2 2 3", " 1.5 2 2 3"), "non-numeric"),
    ],
)
def test_broken_mtfl_line_names_file_and_line(tmp_path: Path, broken: str, reason: str) -> None:
    path = mtfl_file(tmp_path, GOOD_LINE.format(path="img.jpg"), broken)
    with pytest.raises(AnnotationError, match=reason) as info:
        read_mtfl(path)
    assert info.value.line == 2
    assert str(info.value).startswith(f"{path}:2: ")


def test_broken_annotation_file_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_checkpoint(tmp_path / "model.pt")
    data = mtfl_file(tmp_path, GOOD_LINE.format(path="a.jpg"), "a.jpg 1 2")
    err = cli_error(["evaluate", "--model", str(model), "--data", str(data)], capsys)
    assert f"{data}:2" in err and "expected 15 fields" in err


def test_empty_and_binary_annotation_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(AnnotationError, match="no annotations"):
        read_mtfl(empty)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AnnotationError, match="not UTF-8"):
        read_mtfl(binary)
    with pytest.raises(AnnotationError, match="no such file or folder"):
        read_annotations(tmp_path / "absent.txt")


def test_missing_image_names_image_and_annotation_line(tmp_path: Path) -> None:
    image = linked_image(tmp_path)
    faces = read_mtfl(mtfl_file(tmp_path, GOOD_LINE.format(path=image), GOOD_LINE.format(path="gone.jpg")))
    dataset = FaceDataset(faces, (), 48)
    with pytest.raises(ImageError) as info:
        dataset.preload()
    message = str(info.value)
    assert "gone.jpg" in message and f"{tmp_path / 'faces.txt'}:2" in message
    assert len(message.splitlines()) == 1


def test_missing_image_in_evaluate_names_the_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = linked_image(tmp_path)
    data = mtfl_file(tmp_path, GOOD_LINE.format(path=image), GOOD_LINE.format(path="gone.jpg"))
    model = LandmarkModel.load(tiny_checkpoint(tmp_path / "model.pt"))
    with pytest.raises(ImageError, match="gone.jpg"):
        evaluate(model, read_mtfl(data))
    err = cli_error(["evaluate", "--model", str(tmp_path / "model.pt"), "--data", str(data)], capsys)
    assert "gone.jpg" in err


def test_missing_image_in_evaluate_names_the_annotation_line(tmp_path: Path) -> None:
    data = mtfl_file(tmp_path, GOOD_LINE.format(path="gone.jpg"))
    model = LandmarkModel.load(tiny_checkpoint(tmp_path / "model.pt"))
    with pytest.raises(ImageError, match=r"faces\.txt:1"):
        evaluate(model, read_mtfl(data))


def test_points_outside_the_image_are_accepted(tmp_path: Path) -> None:
    image = linked_image(tmp_path)
    # The release image is 150 px; these points reach past both edges.
    outside = f"{image} -20 170 75 -10 160 60 60 160 170 165 1 2 2 3"
    faces = read_mtfl(mtfl_file(tmp_path, outside))
    crop, norm, _, _ = FaceDataset(faces, (), 48).sample(0)
    assert crop.shape == (48, 48) and np.isfinite(crop).all() and np.isfinite(norm).all()
    model = LandmarkModel.load(tiny_checkpoint(tmp_path / "model.pt"))
    report = evaluate(model, faces, box="gt")
    assert report.detected == 1 and np.isfinite(report.face_errors).all()


# ---- .pts ------------------------------------------------------------------------------------------
def write_pts(path: Path, points: np.ndarray, declared: int | None = None) -> None:
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    path.write_text(f"version: 1\nn_points: {len(points) if declared is None else declared}\n{{\n{body}\n}}\n")


def test_pts_with_the_wrong_point_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    (folder / "a.jpg").symlink_to(first_mtfl_image())
    write_pts(folder / "a.pts", np.full((5, 2), 10.0))
    with pytest.raises(AnnotationError, match="expected 68 points, found 5") as info:
        read_pts_folder(folder)
    assert info.value.path == str(folder / "a.pts")
    model = tiny_checkpoint(tmp_path / "model.pt")
    err = cli_error(["evaluate", "--model", str(model), "--data", str(folder)], capsys)
    assert "a.pts" in err and "expected 68 points" in err


def test_pts_header_disagreeing_with_its_body(tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    (folder / "a.jpg").symlink_to(first_mtfl_image())
    write_pts(folder / "a.pts", np.full((67, 2), 10.0), declared=68)
    with pytest.raises(AnnotationError, match="header says 68 points, found 67"):
        read_pts_folder(folder)


# ---- configs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"train": {"epoch": 3}}, "unknown config key.*train.epoch"),
        ({"trian": {"epochs": 3}}, "unknown config key.*trian"),
        ({"train": {"epochs": "three"}}, "train.epochs: expected an integer"),
        ({"train": {"learning_rate": True}}, "train.learning_rate: expected a number"),
        ({"model": {"channels": 20}}, "model.channels: expected a list"),
        ({"train": {"optimizer": "adamw"}}, "train.optimizer"),
        ({"data": {"validation_fraction": 1.5}}, "validation_fraction"),
        ({"train": []}, "train: expected a mapping"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           values: dict, reason: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=reason):
        load_config(path)
    err = cli_error(["train", "--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert str(path) in err
    assert not (tmp_path / "run").exists()  # nothing written for a config that never loaded


def test_unparsable_or_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    assert "not valid YAML" in cli_error(["train", "--config", str(broken), "--out", str(tmp_path / "r")], capsys)
    absent = tmp_path / "absent.yaml"
    assert "cannot read" in cli_error(["train", "--config", str(absent), "--out", str(tmp_path / "r")], capsys)
    bad_override = cli_error(["train", "--config", str(broken), "--out", str(tmp_path / "r"), "--set", "noequals"],
                             capsys)
    assert "not valid YAML" in bad_override or "expected section.key=value" in bad_override


# ---- checkpoints -----------------------------------------------------------------------------------
def test_truncated_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = tiny_checkpoint(tmp_path / "whole.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        LandmarkModel.load(truncated)
    err = cli_error(["evaluate", "--model", str(truncated), "--data", str(tmp_path / "unused.txt")], capsys)
    assert str(truncated) in err and "not a readable checkpoint" in err


def test_checkpoint_of_another_model_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_checkpoint(tmp_path / "other.pt")
    state = torch.load(path, weights_only=True)
    # Weights of a wider network under a config that describes the tiny one.
    state["model"] = TCDCN(ModelConfig(input_size=48, channels=(6, 8, 8, 8), feature_dim=16), 0).state_dict()
    atomic_save(state, path)
    with pytest.raises(CheckpointError, match="do not fit the model shape"):
        LandmarkModel.load(path)
    err = cli_error(["evaluate", "--model", str(path), "--data", str(tmp_path / "unused.txt")], capsys)
    assert str(path) in err and "do not fit the model shape" in err


def test_files_that_are_not_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_ours = tmp_path / "dict.pt"
    torch.save({"weights": torch.zeros(3)}, not_ours)
    assert "not a tcdcn checkpoint" in cli_error(["evaluate", "--model", str(not_ours), "--data", "x"], capsys)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    assert "not a readable checkpoint" in cli_error(["evaluate", "--model", str(text), "--data", "x"], capsys)
    assert "neither a shipped model" in cli_error(
        ["evaluate", "--model", str(tmp_path / "absent.pt"), "--data", "x"], capsys)


def test_resume_from_a_weights_file_or_another_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = linked_image(tmp_path)
    data = mtfl_file(tmp_path, *[GOOD_LINE.format(path=image)] * 8)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"train": str(data), "validation_fraction": 0.25, "tasks": []},
        "model": {"input_size": 48, "channels": [4, 8, 8, 8], "feature_dim": 16},
        "train": {"epochs": 1, "batch_size": 2, "threads": 1},
    }))
    weights_only = tiny_checkpoint(tmp_path / "weights.pt")
    # load_config rejects nothing here; the trainer refuses the file.
    argv = ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--resume", str(weights_only)]
    assert "not a training checkpoint" in cli_error(argv, capsys)
    wider = tiny_checkpoint(tmp_path / "wider.pt", model=ModelConfig(input_size=48, channels=(6, 8, 8, 8),
                                                                      feature_dim=16))
    argv[-1] = str(wider)
    assert "model config differs" in cli_error(argv, capsys)
    # A real training checkpoint, resumed with another optimiser.
    assert main(["-q", "train", "--config", str(config), "--out", str(tmp_path / "adam")]) == 0
    capsys.readouterr()
    argv[-3:] = [str(tmp_path / "sgd"), "--resume", str(tmp_path / "adam" / "last.pt")]
    assert "made with train.optimizer=adam, not sgd" in cli_error([*argv, "--set", "train.optimizer=sgd"], capsys)
    # The finished run's folder is not trained into again unless asked.
    run = tmp_path / "adam"
    before = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt", "history.jsonl")}
    taken = cli_error(["train", "--config", str(config), "--out", str(run)], capsys)
    assert "already holds a training run" in taken and "--resume" in taken and "--overwrite" in taken
    assert {name: (run / name).read_bytes() for name in before} == before
    assert main(["-q", "train", "--config", str(config), "--out", str(run), "--overwrite"]) == 0


@pytest.mark.parametrize("fill", [b"\x00", b"\xff"])
def test_damaged_checkpoint_is_refused(tmp_path: Path, fill: bytes) -> None:
    """A stretch of zeroed or 0xff bytes inside the weights: torch still unpickles the file, the checksum
    does not match."""
    path = tiny_checkpoint(tmp_path / "good.pt")
    LandmarkModel.load(path)  # the intact file loads
    data = bytearray(path.read_bytes())
    weights = torch.load(path, weights_only=True)["model"]["fc.weight"].numpy().tobytes()
    start = bytes(data).find(weights[:64])  # the fc weights' bytes inside the archive
    assert start > 0
    data[start:start + 256] = fill * 256
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"damaged\.pt: damaged checkpoint"):
        LandmarkModel.load(damaged)

