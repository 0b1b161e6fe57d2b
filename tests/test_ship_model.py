"""scripts/ship_model.py: a training checkpoint becomes a slim shipped .pt plus its ONNX twin."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from repo_scripts import load_file_module

from tcdcn.config import Config
from tcdcn.errors import CheckpointError
from tcdcn.inference.backends.onnx import OnnxLandmarkModel
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.models.checkpoint import atomic_save, weights_payload
from tcdcn.models.network import TCDCN
from tcdcn.models.registry import SHIPPED, STANDARD_MULTI_CROP, read_card, sha256_of
from tcdcn.schemes import get_scheme

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ship_model.py"


def _load_script() -> ModuleType:
    return load_file_module(SCRIPT, "ship_model")


def test_ship_model_writes_slim_weights_and_a_matching_onnx_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    cfg = Config()
    network = TCDCN(cfg.model, 2)
    with torch.no_grad():
        network.landmark_head.weight.normal_(0.0, 0.05)
    state = weights_payload(network, cfg, get_scheme("mtfl-5"), ("male", "smiling"))
    state["optimizer"] = {"not": "shipped"}  # what a training checkpoint carries besides the weights
    atomic_save(state, tmp_path / "best.pt")
    (tmp_path / "src" / "tcdcn" / "models" / "weights").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)

    assert _load_script().main(["best.pt", "toy"]) == 0

    pt_file, onnx_file = Path("src/tcdcn/models/weights/toy.pt"), Path("src/tcdcn/models/weights/toy.onnx")
    printed = capsys.readouterr().out
    assert f"sha256={sha256_of(pt_file)}" in printed and f"onnx_sha256={sha256_of(onnx_file)}" in printed
    assert "optimizer" not in torch.load(pt_file, weights_only=True)
    crops = np.random.default_rng(0).uniform(0, 255, (3, 1, 60, 60)).astype(np.float32)
    torch_points, _ = LandmarkModel.load(pt_file).run_network(crops)
    onnx_points, _ = OnnxLandmarkModel(onnx_file).run_network(crops)
    np.testing.assert_allclose(onnx_points, torch_points, atol=1e-4)


def test_ship_model_to_writes_a_slim_checkpoint_outside_the_package(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config()
    network = TCDCN(cfg.model, 2)
    state = weights_payload(network, cfg, get_scheme("mtfl-5"), ("male", "smiling"))
    state["optimizer"] = {"not": "shipped"}
    atomic_save(state, tmp_path / "best.pt")
    monkeypatch.chdir(tmp_path)  # no src/tcdcn/models/weights here: --to must not need the repository

    assert _load_script().main(["best.pt", "candidate", "--to", "candidate.pt"]) == 0

    written = torch.load(tmp_path / "candidate.pt", weights_only=True)
    assert "optimizer" not in written and not Path("src").exists()
    for key, value in network.state_dict().items():
        torch.testing.assert_close(written["model"][key], value)


def test_ship_model_refuses_to_run_outside_the_repository_root(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        _load_script().main(["best.pt", "toy"])
    assert exc.value.code == 2


def test_ship_model_mirror_calibration_folds_the_validation_offset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        mtfl_train_file: Path) -> None:
    torch.manual_seed(0)
    cfg = Config()
    network = TCDCN(cfg.model, 0)
    with torch.no_grad():
        network.landmark_head.weight.normal_(0.0, 0.05)
    atomic_save(weights_payload(network, cfg, get_scheme("mtfl-5"), ()), tmp_path / "best.pt")
    (tmp_path / "src" / "tcdcn" / "models" / "weights").mkdir(parents=True)
    (tmp_path / "val.yaml").write_text(
        f"data:\n  train: {mtfl_train_file}\n  validation_fraction: 0.005\n  split_seed: 3\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    assert _load_script().main(["best.pt", "toy", "--mirror-calibration", "val.yaml"]) == 0

    assert "mirror calibration:" in capsys.readouterr().out
    shipped = torch.load("src/tcdcn/models/weights/toy.pt", weights_only=True)
    record = shipped["mirror_calibration"]
    assert record["validation_faces"] == 50 and len(record["offset_x"]) == 5
    bias_shift = (network.landmark_head.bias.detach() - shipped["model"]["landmark_head.bias"]).reshape(5, 2)
    np.testing.assert_allclose(bias_shift[:, 0].numpy(), record["offset_x"], atol=1e-6)
    np.testing.assert_allclose(bias_shift[:, 1].numpy(), 0.0, atol=1e-7)
    # Both runtimes know the shift, so test-time mirroring keeps it (tests/test_calibration.py).
    expected_shift = np.stack([-np.asarray(record["offset_x"]), np.zeros(5)], axis=1)
    np.testing.assert_allclose(LandmarkModel.load("src/tcdcn/models/weights/toy.pt").landmark_shift, expected_shift)
    np.testing.assert_allclose(OnnxLandmarkModel("src/tcdcn/models/weights/toy.onnx").landmark_shift, expected_shift,
                               atol=1e-7)


def test_ship_model_writes_the_model_card_and_keeps_figures_only_for_the_same_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config()
    for seed, name in ((0, "first.pt"), (1, "second.pt")):
        torch.manual_seed(seed)
        network = TCDCN(cfg.model, 2)
        with torch.no_grad():
            network.landmark_head.weight.normal_(0.0, 0.05)
        atomic_save(weights_payload(network, cfg, get_scheme("mtfl-5"), ("male", "smiling")), tmp_path / name)
    weights = tmp_path / "src" / "tcdcn" / "models" / "weights"
    weights.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    script = _load_script()

    assert script.main(["first.pt", "toy"]) == 0
    card_file = weights / "toy.json"
    card = read_card(card_file)
    assert card.name == "toy" and card.scheme == "mtfl-5" and card.input_size == 60
    assert card.sha256 == sha256_of(weights / "toy.pt") and card.onnx_sha256 == sha256_of(weights / "toy.onnx")
    assert card.int8_onnx_file == "" and card.calibration == "" and card.figures == ()
    assert card.mirror_average and card.box_refinements == 1 and card.multi_crop == STANDARD_MULTI_CROP
    assert card.auto_backend == "onnx"  # no int8 graph: "auto" runs the float one

    raw = json.loads(card_file.read_text(encoding="utf-8"))
    raw["figures"] = [{"name": "val_nme", "value": 0.05, "what": "validation", "command": "tcdcn evaluate ..."}]
    raw["training_data"] = "described by hand"
    card_file.write_text(json.dumps(raw), encoding="utf-8")
    assert script.main(["first.pt", "toy"]) == 0  # the same weights again: the figures still hold
    assert read_card(card_file).metrics == {"val_nme": 0.05}

    assert script.main(["second.pt", "toy"]) == 0  # other weights: their figures are yet to be measured
    card = read_card(card_file)
    assert card.figures == () and card.training_data == "described by hand"
    assert card.sha256 == sha256_of(weights / "toy.pt")


def test_shipped_cards_name_their_files_and_a_command_for_every_figure() -> None:
    for name, card in SHIPPED.items():
        assert card.card.name == f"{name}.json" and card.path().is_file()
        assert card.path("onnx").is_file() and card.path("int8_onnx").is_file()
        assert card.figures and all(f.command and f.what for f in card.figures), name


@pytest.mark.parametrize("change", ["not json", "format", "missing key", "multi_crop", "auto_backend",
                                    "auto_backend int8 without int8 file"])
def test_a_malformed_model_card_is_refused_naming_the_file(tmp_path: Path, change: str) -> None:
    raw = json.loads(SHIPPED["mtfl-5pt"].card.read_text(encoding="utf-8"))
    if change == "format":
        raw["format"] = "something-else"
    elif change == "missing key":
        del raw["scheme"]
    elif change == "multi_crop":
        raw["test_time_defaults"]["multi_crop"] = {"grid": 3}
    elif change == "auto_backend":
        raw["auto_backend"] = "torch"
    elif change == "auto_backend int8 without int8 file":
        raw["auto_backend"] = "int8"
        del raw["files"]["int8_onnx"]
    path = tmp_path / "broken.json"
    path.write_text("{" if change == "not json" else json.dumps(raw), encoding="utf-8")
    with pytest.raises(CheckpointError, match="broken.json"):
        read_card(path)


@pytest.mark.parametrize("auto_backend", ["onnx", "int8"])
def test_auto_runs_a_shipped_model_on_the_graph_its_card_names(monkeypatch: pytest.MonkeyPatch,
                                                                auto_backend: str) -> None:
    from dataclasses import replace

    from tcdcn.inference.loading import load_landmark_model

    record = SHIPPED["mtfl-5pt"]
    monkeypatch.setitem(SHIPPED, "mtfl-5pt", replace(record, auto_backend=auto_backend))
    monkeypatch.setattr("tcdcn.inference.loading.this_cpu_int8_pays", lambda: True)  # tests/test_int8_cpu_rule.py
    model = load_landmark_model("mtfl-5pt", "auto")
    expected = record.int8_onnx_file if auto_backend == "int8" else record.onnx_file
    assert model.describe_backend() == f"onnxruntime, {expected}"
    assert load_landmark_model("mtfl-5pt", "onnx").describe_backend() == f"onnxruntime, {record.onnx_file}"
    assert load_landmark_model("mtfl-5pt", "int8").describe_backend() == f"onnxruntime, {record.int8_onnx_file}"


def test_set_test_time_defaults_rewrites_the_graphs_metadata_and_the_card(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The script changes what the files run by default, never their weights; figures that ran with the old
    default inference are dropped, those with their own switches (or named by --keep) stay."""
    import shutil

    from tcdcn.geometry import CropJitter
    from tcdcn.inference.export import read_metadata

    weights = tmp_path / "src" / "tcdcn" / "models" / "weights"
    weights.mkdir(parents=True)
    record = SHIPPED["mtfl-5pt"]
    for name in (record.card.name, record.onnx_file, record.int8_onnx_file, record.file):
        shutil.copy(record.card.parent / name, weights / name)
    raw = json.loads((weights / record.card.name).read_text(encoding="utf-8"))
    raw["figures"] = [
        {"name": "default", "value": 0.05, "what": "x", "command": "tcdcn evaluate --model mtfl-5pt --data D"},
        {"name": "own", "value": 0.06, "what": "x",
         "command": "tcdcn evaluate --model mtfl-5pt --data D --box-refinements 0 --no-multi-crop"},
        {"name": "named", "value": 0.07, "what": "x", "command": "python scripts/ship_model.py ..."}]
    (weights / record.card.name).write_text(json.dumps(raw), encoding="utf-8")
    graph_before = OnnxLandmarkModel(weights / record.onnx_file)
    crops = np.random.default_rng(0).uniform(0, 255, (2, 1, 60, 60)).astype(np.float32)
    monkeypatch.chdir(tmp_path)
    script = load_file_module(SCRIPT.with_name("set_test_time_defaults.py"), "set_test_time_defaults")

    assert script.main(["mtfl-5pt", "--crop=0.03,0.0", "--crop=-0.03,0.0", "--box-refinements", "2", "--no-mirror",
                        "--auto-backend", "onnx", "--keep", "named"]) == 0
    card = read_card(weights / record.card.name)
    assert card.multi_crop == (CropJitter(0.03, 0.0), CropJitter(-0.03, 0.0))
    assert (card.box_refinements, card.mirror_average, card.auto_backend) == (2, False, "onnx")
    assert [f.name for f in card.figures] == ["own", "named"]
    for name in (record.onnx_file, record.int8_onnx_file):
        metadata = json.loads(read_metadata(weights / name)["test_time"])
        assert metadata == {"mirror_average": False, "multi_crop": {"crops": [[0.03, 0.0, 1.0], [-0.03, 0.0, 1.0]]},
                            "box_refinements": 2}
    assert card.onnx_sha256 == sha256_of(weights / record.onnx_file)
    graph_after = OnnxLandmarkModel(weights / record.onnx_file)
    np.testing.assert_array_equal(graph_after.run_network(crops)[0], graph_before.run_network(crops)[0])
    assert (graph_after.box_refinements, graph_after.mirror_average) == (2, False)
