"""ONNX export, int8 quantisation, the torch-free runtime and the ``export`` sub-command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tcdcn.attributes import tasks_by_name
from tcdcn.cli.export import add_command
from tcdcn.config import Config, config_to_dict, load_config
from tcdcn.data.dataset import FaceDataset, split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.errors import BackendError, CheckpointError
from tcdcn.inference.backends.onnx import OnnxLandmarkModel
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.inference.export import (
    INT8_AGREEMENT_LIMIT,
    INT8_CHECK_FACES,
    PADDING_METADATA,
    export_onnx,
    face_crops,
    int8_disagreement,
    quantize_int8,
    read_metadata,
    unpad_first_layer,
)
from tcdcn.inference.loading import load_landmark_model
from tcdcn.models.network import TCDCN
from tcdcn.schemes import get_scheme

PARITY_TOLERANCE = 1e-4  # max abs difference, normalised coordinates and logits
INT8_LANDMARK_TOLERANCE = 0.05  # max abs difference in [-1, 1] crop coordinates (~1.5 px of 60)
INT8_MEAN_TOLERANCE = 0.01
TASKS = ("male", "smiling", "glasses", "pose_frontal")
TEST_FACES = 64
CALIBRATION_FACES = 64
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHIPPED_MTFL_CHECKPOINT = Path(__file__).resolve().parents[1] / "src" / "tcdcn" / "models" / "weights" / "mtfl-5pt.pt"


def random_model(seed: int = 0, **model_fields: Any) -> LandmarkModel:
    """A freshly initialised network with non-zero heads (the landmark head starts at zero);
    ``model_fields`` override the default ``ModelConfig``."""
    torch.manual_seed(seed)
    cfg = Config()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model_fields))
    network = TCDCN(cfg.model, len(tasks_by_name(TASKS)))
    with torch.no_grad():
        network.landmark_head.weight.normal_(0.0, 0.05)
        network.landmark_head.bias.normal_(0.0, 0.1)
    return LandmarkModel(network.eval(), cfg, get_scheme("mtfl-5"), TASKS, source="random-init")


@pytest.fixture(scope="module")
def test_crops(mtfl_test_faces: list) -> np.ndarray:
    """(N, 1, 60, 60) crops of AFLW test faces, whole image = box (the test protocol)."""
    dataset = FaceDataset(mtfl_test_faces[:TEST_FACES], box_mode="image")
    return dataset.batch(range(len(dataset)))["images"].numpy()


@pytest.fixture(scope="module")
def train_crops(mtfl_train_faces: list) -> np.ndarray:
    dataset = FaceDataset(mtfl_train_faces[:CALIBRATION_FACES], box_mode="gt")
    return dataset.batch(range(len(dataset)))["images"].numpy()


@pytest.fixture(scope="module")
def model_and_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[LandmarkModel, Path]:
    model = random_model()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "random.onnx")
    return model, path


def test_float_export_matches_torch_on_real_crops(model_and_onnx, test_crops) -> None:
    model, path = model_and_onnx
    onnx_model = OnnxLandmarkModel(path, threads=1)
    torch_lm, torch_logits = model.run_network(test_crops)
    onnx_lm, onnx_logits = onnx_model.run_network(test_crops)
    assert onnx_lm.shape == (len(test_crops), 5, 2) and onnx_logits.shape == (len(test_crops), len(TASKS))
    assert np.abs(torch_lm).max() > 0.05  # the heads are not trivially zero: parity means something
    assert np.abs(onnx_lm - torch_lm).max() < PARITY_TOLERANCE
    assert np.abs(onnx_logits - torch_logits).max() < PARITY_TOLERANCE


def test_dynamic_batch_sizes(model_and_onnx, test_crops) -> None:
    model, path = model_and_onnx
    onnx_model = OnnxLandmarkModel(path, threads=1)
    for n in (1, 3, 17):
        lm, logits = onnx_model.run_network(test_crops[:n])
        assert lm.shape == (n, 5, 2) and logits.shape == (n, len(TASKS))
        assert np.abs(lm - model.run_network(test_crops[:n])[0]).max() < PARITY_TOLERANCE


def test_predict_matches_torch_in_image_pixels(model_and_onnx, mtfl_test_faces) -> None:
    model, path = model_and_onnx
    onnx_model = OnnxLandmarkModel(path, threads=1)
    dataset = FaceDataset(mtfl_test_faces[:8], box_mode="image")
    greys = [dataset.image(i) for i in range(len(dataset))]
    boxes = [dataset.box(i) for i in range(len(dataset))]
    a, b = model.predict(greys, boxes), onnx_model.predict(greys, boxes, batch_size=3)
    assert b.landmarks.shape == (8, 5, 2)
    assert np.abs(a.landmarks - b.landmarks).max() < 80 * PARITY_TOLERANCE  # crop -> 80 px image scale
    assert np.abs(a.attribute_probabilities - b.attribute_probabilities).max() < PARITY_TOLERANCE
    empty = onnx_model.predict([], [])
    assert empty.landmarks.shape == (0, 5, 2)


def test_trained_checkpoint_parity(tmp_path, test_crops) -> None:
    # The shipped checkpoint: trained weights, whose activations are far from a random network's.
    model = LandmarkModel.load("mtfl-5pt")
    onnx_model = OnnxLandmarkModel(export_onnx(model, tmp_path / "mtfl-5pt.onnx"), threads=1)
    for a, b in zip(model.run_network(test_crops), onnx_model.run_network(test_crops)):
        assert np.abs(a - b).max() < PARITY_TOLERANCE


def test_metadata_round_trip(model_and_onnx) -> None:
    model, path = model_and_onnx
    meta = read_metadata(path)
    assert meta["scheme"] == "mtfl-5"
    assert json.loads(meta["tasks"]) == list(TASKS)
    assert int(meta["input_size"]) == 60
    assert json.loads(meta["config"]) == config_to_dict(model.cfg)
    assert meta["source"] == "random-init"
    onnx_model = OnnxLandmarkModel(path)
    assert onnx_model.scheme is get_scheme("mtfl-5")
    assert onnx_model.task_names == TASKS and onnx_model.input_size == 60


def test_bare_network_export_needs_matching_task_names(tmp_path) -> None:
    network = random_model().network
    path = export_onnx(network, tmp_path / "bare.onnx", task_names=TASKS)
    assert OnnxLandmarkModel(path).task_names == TASKS
    with pytest.raises(Exception, match="task names"):
        export_onnx(network, tmp_path / "bad.onnx", task_names=("male",))


def test_factored_network_exports_with_parity(test_crops, train_crops, tmp_path) -> None:
    """A network with a factored layer (model.factor_ranks) runs the same in ONNX, float32 and int8."""
    model = random_model(factor_ranks=(0, 12, 0, 0))
    float_path = export_onnx(model, tmp_path / "factored.onnx")
    ops = [n.op_type for n in __import__("onnx").load(str(float_path)).graph.node]
    assert ops.count("Conv") == 5  # the factored layer is two convolutions
    onnx_model = OnnxLandmarkModel(float_path, threads=1)
    for a, b in zip(model.run_network(test_crops), onnx_model.run_network(test_crops)):
        assert np.abs(a - b).max() < PARITY_TOLERANCE
    int8_model = OnnxLandmarkModel(quantize_int8(float_path, tmp_path / "factored.int8.onnx", train_crops), threads=1)
    out, _ = int8_model.run_network(test_crops)
    ref, _ = onnx_model.run_network(test_crops)
    assert np.abs(out - ref).max() < INT8_LANDMARK_TOLERANCE


def first_layer_weights(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first convolution's filters and biases and the filters of the convolution after its pool."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    first, second = [n for n in graph.node if n.op_type == "Conv"][:2]
    return inits[first.input[1]], inits[first.input[2]], inits[second.input[1]]


@pytest.mark.parametrize("factor_ranks", [(), (0, 12, 0, 0)])
def test_float_export_pads_the_first_layer_with_zero_channels(factor_ranks, test_crops, tmp_path) -> None:
    model = random_model(factor_ranks=factor_ranks)  # 20 first-layer channels
    padded = export_onnx(model, tmp_path / "padded.onnx")
    plain = export_onnx(model, tmp_path / "plain.onnx", pad_channels=0)
    weight, bias, reader = first_layer_weights(padded)
    plain_weight, plain_bias, plain_reader = first_layer_weights(plain)
    assert plain_weight.shape[0] == 20 and weight.shape[0] == 24 and reader.shape[1] == 24
    assert np.array_equal(weight[:20], plain_weight) and np.array_equal(bias[:20], plain_bias)
    assert np.array_equal(reader[:, :20], plain_reader)
    assert not weight[20:].any() and not bias[20:].any() and not reader[:, 20:].any()
    assert json.loads(read_metadata(padded)[PADDING_METADATA]) == {"channels": 20, "padded_to": 24}
    assert PADDING_METADATA not in read_metadata(plain)
    plain_out, padded_out = (OnnxLandmarkModel(f).run_network(test_crops) for f in (plain, padded))
    for a, b in zip(plain_out, padded_out):
        assert np.abs(a - b).max() < PARITY_TOLERANCE


def test_a_first_layer_on_the_channel_block_is_left_alone(tmp_path) -> None:
    path = export_onnx(random_model(channels=(16, 48, 64, 80)), tmp_path / "sixteen.onnx")
    assert first_layer_weights(path)[0].shape[0] == 16
    assert PADDING_METADATA not in read_metadata(path)


def test_unpadding_restores_the_trained_first_layer(tmp_path) -> None:
    import onnx

    model = random_model()
    padded = onnx.load(str(export_onnx(model, tmp_path / "padded.onnx")))
    assert unpad_first_layer(padded) == 4 and unpad_first_layer(padded) == 0
    onnx.save(padded, str(tmp_path / "unpadded.onnx"))
    for a, b in zip(first_layer_weights(tmp_path / "unpadded.onnx"),
                    first_layer_weights(export_onnx(model, tmp_path / "plain.onnx", pad_channels=0))):
        assert np.array_equal(a, b)


def test_int8_graph_of_a_padded_export_is_the_unpadded_ones(test_crops, train_crops, tmp_path) -> None:
    model = random_model()
    from_padded = quantize_int8(export_onnx(model, tmp_path / "padded.onnx"), tmp_path / "a.int8.onnx", train_crops)
    from_plain = quantize_int8(export_onnx(model, tmp_path / "plain.onnx", pad_channels=0), tmp_path / "b.int8.onnx",
                               train_crops)
    assert PADDING_METADATA not in read_metadata(from_padded)
    a, b = OnnxLandmarkModel(from_padded).run_network(test_crops), OnnxLandmarkModel(from_plain).run_network(test_crops)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_shipped_float_graphs_carry_the_padded_first_layer() -> None:
    from tcdcn.models.registry import SHIPPED

    for card in SHIPPED.values():
        weight, bias, _ = first_layer_weights(card.path("onnx"))
        padding = json.loads(read_metadata(card.path("onnx"))[PADDING_METADATA])
        assert weight.shape[0] % 8 == 0 and weight.shape[0] == padding["padded_to"]
        assert not weight[padding["channels"]:].any() and not bias[padding["channels"]:].any()


def test_int8_runs_and_stays_close_to_float(model_and_onnx, test_crops, train_crops, tmp_path) -> None:
    _, float_path = model_and_onnx
    int8_path = quantize_int8(float_path, tmp_path / "int8.onnx", train_crops)
    float_model, int8_model = OnnxLandmarkModel(float_path, threads=1), OnnxLandmarkModel(int8_path, threads=1)
    ops = {n.op_type for n in __import__("onnx").load(str(int8_path)).graph.node}
    assert "QuantizeLinear" in ops  # it really is quantised
    ref, _ = float_model.run_network(test_crops)
    out, logits = int8_model.run_network(test_crops)
    assert np.isfinite(out).all() and np.isfinite(logits).all()
    assert np.abs(out - ref).max() < INT8_LANDMARK_TOLERANCE
    assert np.abs(out - ref).mean() < INT8_MEAN_TOLERANCE
    meta = read_metadata(int8_path)
    assert meta["scheme"] == "mtfl-5" and json.loads(meta["quantization"])["weights"] == "int8"


def test_bad_onnx_file_is_a_checkpoint_error(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(CheckpointError, match="bad.onnx"):
        OnnxLandmarkModel(bad)
    with pytest.raises(CheckpointError, match="no such"):
        OnnxLandmarkModel(tmp_path / "missing.onnx")


def test_load_landmark_model_backends(model_and_onnx, tmp_path) -> None:
    model, onnx_path = model_and_onnx
    assert isinstance(load_landmark_model(onnx_path), OnnxLandmarkModel)
    with pytest.raises(BackendError):
        load_landmark_model(onnx_path, backend="torch")
    with pytest.raises(BackendError):
        load_landmark_model(onnx_path, backend="tensorflow")
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": model.network.state_dict(), "config": config_to_dict(model.cfg), "scheme": "mtfl-5",
                "tasks": list(TASKS)}, checkpoint)
    in_torch = load_landmark_model(checkpoint, backend="torch")
    assert isinstance(in_torch, LandmarkModel)
    # onnx runs a checkpoint on onnxruntime, through a temporary float export, with the same answers
    exported = load_landmark_model(checkpoint, backend="onnx")
    assert isinstance(exported, OnnxLandmarkModel) and exported.task_names == TASKS
    assert exported.path.name == "model.onnx" and "quantization" not in exported.metadata
    crops = np.random.default_rng(0).uniform(0, 255, (3, 1, 60, 60)).astype(np.float32)
    np.testing.assert_allclose(exported.run_network(crops)[0], in_torch.run_network(crops)[0], atol=1e-4)
    with pytest.raises(BackendError, match="tcdcn export --int8"):
        load_landmark_model(checkpoint, backend="int8")


def shipped_checkpoint_with_data(tmp_path: Path, train: str) -> Path:
    """The shipped ``mtfl-5pt`` weights as a user's checkpoint whose config names ``train`` as its training list."""
    shipped = LandmarkModel.load(str(SHIPPED_MTFL_CHECKPOINT))
    cfg = dataclasses.replace(shipped.cfg, data=dataclasses.replace(shipped.cfg.data, train=train))
    checkpoint = tmp_path / "own.pt"
    torch.save({"model": shipped.network.state_dict(), "config": config_to_dict(cfg), "scheme": "mtfl-5",
                "tasks": list(shipped.task_names)}, checkpoint)
    return checkpoint


def test_auto_runs_a_checkpoint_on_an_int8_graph_calibrated_on_its_training_faces(
        tmp_path, caplog, monkeypatch) -> None:
    monkeypatch.setattr("tcdcn.inference.loading.this_cpu_int8_pays", lambda: True)  # a CPU where int8 pays
    checkpoint = shipped_checkpoint_with_data(tmp_path, str(SHARED_DATA / "mtfl" / "training.txt"))
    with caplog.at_level(logging.INFO, logger="tcdcn"):
        model = load_landmark_model(checkpoint)
    assert model.path.name == "model.int8.onnx" and "quantization" in model.metadata
    assert "runs an int8 graph calibrated on 500 of its training faces" in caplog.text
    assert "Increased scale" not in caplog.text  # the quantiser's per-channel lines stay quiet
    in_float = load_landmark_model(checkpoint, backend="onnx")
    # The load-time check's own faces: the graph it kept agrees with float32 within the limit there.
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "mtfl-5pt.yaml")
    _, val_faces = split_faces(read_annotations(SHARED_DATA / "mtfl" / "training.txt"), cfg.data)
    check = face_crops(val_faces, INT8_CHECK_FACES, 60)
    assert int8_disagreement(in_float, model, check) <= INT8_AGREEMENT_LIMIT
    # The shipped int8 graph (the same weights, quantised by ship_model.py) passes the same check.
    shipped = load_landmark_model("mtfl-5pt", backend="int8")
    assert int8_disagreement(in_float, shipped, check) <= INT8_AGREEMENT_LIMIT


def test_auto_runs_a_checkpoint_in_float_without_its_training_faces(tmp_path, caplog, monkeypatch) -> None:
    monkeypatch.setattr("tcdcn.inference.loading.this_cpu_int8_pays", lambda: True)  # a CPU where int8 pays
    checkpoint = shipped_checkpoint_with_data(tmp_path, str(tmp_path / "moved" / "training.txt"))
    with caplog.at_level(logging.INFO, logger="tcdcn"):
        model = load_landmark_model(checkpoint)
    assert model.path.name == "model.onnx" and "quantization" not in model.metadata
    assert "runs the float32 graph; its training faces cannot calibrate an int8 one" in caplog.text
    assert "training.txt" in caplog.text


def test_auto_runs_a_checkpoint_in_float_where_int8_does_not_pay(tmp_path, caplog, monkeypatch) -> None:
    monkeypatch.setattr("tcdcn.inference.loading.this_cpu_int8_pays", lambda: False)  # x86 without VNNI
    checkpoint = shipped_checkpoint_with_data(tmp_path, str(SHARED_DATA / "mtfl" / "training.txt"))
    with caplog.at_level(logging.INFO, logger="tcdcn"):
        model = load_landmark_model(checkpoint)
    assert model.path.name == "model.onnx" and "quantization" not in model.metadata
    assert "int8 is slower on a CPU without VNNI" in caplog.text
    assert "calibrated on" not in caplog.text  # nothing was quantised


def test_auto_keeps_float_when_the_int8_graph_moves_the_landmarks(tmp_path, caplog, monkeypatch) -> None:
    import tcdcn.inference.export as export_module

    monkeypatch.setattr("tcdcn.inference.loading.this_cpu_int8_pays", lambda: True)  # a CPU where int8 pays
    monkeypatch.setattr(export_module, "INT8_AGREEMENT_LIMIT", 0.0)  # any int8 round-off now counts as too much
    checkpoint = shipped_checkpoint_with_data(tmp_path, str(SHARED_DATA / "mtfl" / "training.txt"))
    with caplog.at_level(logging.INFO, logger="tcdcn"):
        model = load_landmark_model(checkpoint)
    assert model.path.name == "model.onnx"
    assert "an int8 one moved its landmarks by" in caplog.text and "(limit 0.00%)" in caplog.text


def test_shipped_int8_backend_runs_the_shipped_int8_graph() -> None:
    model = load_landmark_model("mtfl-5pt", backend="int8")
    assert isinstance(model, OnnxLandmarkModel) and model.path.name == "mtfl-5pt.int8.onnx"
    assert "quantization" in model.metadata
    assert model.mirror_average and model.box_refinements == 1  # the shipped test-time defaults


TORCH_FREE_SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # any "import torch" now raises ImportError
    import numpy as np
    from tcdcn.inference.loading import load_landmark_model, torch_available
    from tcdcn.geometry import Box
    assert not torch_available()
    model = load_landmark_model(sys.argv[1])
    grey = np.random.default_rng(0).integers(0, 255, (80, 80), dtype=np.uint8)
    pred = model.predict([grey, grey], [Box.whole_image(80, 80)] * 2)
    assert pred.landmarks.shape == (2, 5, 2), pred.landmarks.shape
    assert np.isfinite(pred.landmarks).all()
    try:
        load_landmark_model(sys.argv[2])
    except Exception as exc:
        assert type(exc).__name__ == "BackendError", exc
    else:
        raise AssertionError("a .pt checkpoint loaded without torch")
    assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
    print("ok", model.scheme.name)
""")


def test_runtime_works_without_torch(model_and_onnx, tmp_path) -> None:
    _, onnx_path = model_and_onnx
    result = subprocess.run([sys.executable, "-c", TORCH_FREE_SCRIPT, str(onnx_path), str(tmp_path / "x.pt")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok mtfl-5"


def test_export_command(model_and_onnx, tmp_path) -> None:
    model, _ = model_and_onnx
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": model.network.state_dict(), "config": config_to_dict(model.cfg), "scheme": "mtfl-5",
                "tasks": list(TASKS)}, checkpoint)
    parser = argparse.ArgumentParser(prog="tcdcn")
    add_command(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli.onnx"
    args = parser.parse_args(["export", "--model", str(checkpoint), "--format", "onnx", "--out", str(out)])
    assert args.func(args) == 0
    assert read_metadata(out)["source"] == str(checkpoint)
    crops = np.random.default_rng(1).uniform(0, 255, (4, 1, 60, 60)).astype(np.float32)
    assert np.abs(OnnxLandmarkModel(out).run_network(crops)[0] - model.run_network(crops)[0]).max() < PARITY_TOLERANCE
    assert first_layer_weights(out)[0].shape[0] == 24  # padded by default
    plain = tmp_path / "plain.onnx"
    args = parser.parse_args(["export", "--model", str(checkpoint), "--out", str(plain), "--pad-channels", "0"])
    assert args.func(args) == 0
    assert first_layer_weights(plain)[0].shape[0] == 20 and PADDING_METADATA not in read_metadata(plain)
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--model", str(checkpoint), "--format", "tflite", "--out", str(out)])


def test_float_graph_standardises_in_one_node(model_and_onnx) -> None:
    # The standardisation is one LayerNormalization node (fast at batch 1), not a chain of reductions.
    _, float_path = model_and_onnx
    ops = [n.op_type for n in __import__("onnx").load(str(float_path)).graph.node]
    assert ops.count("LayerNormalization") == 1 and "ReduceMean" not in ops and "Sqrt" not in ops


def test_qoperator_int8_keeps_the_conv_trunk_in_uint8(model_and_onnx, train_crops, tmp_path) -> None:
    # Between the first quantised convolution and the shared fc layer nothing may go back to float:
    # a DequantizeLinear there would be a wasted dequantise/requantise pair per layer.
    _, float_path = model_and_onnx
    int8_path = quantize_int8(float_path, tmp_path / "int8-qop.onnx", train_crops, quant_format="qoperator")
    ops = [n.op_type for n in __import__("onnx").load(str(int8_path)).graph.node]
    trunk = ops[ops.index("QLinearConv"):ops.index("QGemm")]
    assert trunk.count("QLinearConv") == 4 and trunk.count("MaxPool") == 3
    assert "DequantizeLinear" not in trunk and "Relu" not in trunk


def test_shipped_models_run_mirror_averaged_on_both_backends() -> None:
    from tcdcn.inference.loading import load_landmark_model
    from tcdcn.models.registry import SHIPPED

    for name, record in SHIPPED.items():
        for backend in ("torch", "onnx"):
            assert load_landmark_model(name, backend=backend).mirror_average == record.mirror_average, (name, backend)


# ---- the space-to-depth stem of the int8 graph ------------------------------------------------------------
def _run_graph(graph, crops: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: crops})


@pytest.mark.parametrize("first_kernel", [5, 4])
def test_space_to_depth_stem_computes_the_same_function(first_kernel, test_crops, tmp_path) -> None:
    import onnx

    from tcdcn.inference.export import space_to_depth_stem

    model = random_model(seed=first_kernel, kernels=(first_kernel, 5, 3, 3))
    # as quantize_int8 rewrites it: the first layer as trained (unpad_first_layer)
    graph = onnx.load(str(export_onnx(model, tmp_path / "float.onnx", pad_channels=0)))
    reference = _run_graph(graph, test_crops)
    assert space_to_depth_stem(graph)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("SpaceToDepth") == 1 and ops.count("MaxPool") == 2 and ops.count("ReduceMax") == 1
    first_conv = next(n for n in graph.graph.node if n.op_type == "Conv")
    weight = next(t for t in graph.graph.initializer if t.name == first_conv.input[1])
    assert list(weight.dims) == [4 * model.cfg.model.channels[0], 4, first_kernel // 2 + 1, first_kernel // 2 + 1]
    for before, after in zip(reference, _run_graph(graph, test_crops)):
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-5)


def test_space_to_depth_stem_leaves_other_graphs_alone(tmp_path) -> None:
    import onnx

    from tcdcn.inference.export import space_to_depth_stem

    # An odd input side: its 2x2 blocks do not tile the crop, so the stem does not apply.
    model = random_model(input_size=61)
    graph = onnx.load(str(export_onnx(model, tmp_path / "odd.onnx")))
    before = graph.SerializeToString()
    assert not space_to_depth_stem(graph)
    assert graph.SerializeToString() == before


def test_int8_graph_uses_the_stem_and_stays_in_uint8(model_and_onnx, train_crops, test_crops, tmp_path) -> None:
    import onnx

    _, float_path = model_and_onnx
    stem = quantize_int8(float_path, tmp_path / "stem.onnx", train_crops)
    plain = quantize_int8(float_path, tmp_path / "plain.onnx", train_crops, stem="plain")
    assert json.loads(read_metadata(stem)["quantization"])["stem"] == "space_to_depth"
    assert json.loads(read_metadata(plain)["quantization"])["stem"] == "plain"
    # What onnxruntime runs: the QDQ pairs fused into uint8 kernels from the input's quantisation to
    # the fc layer, the phase max included; no float convolution and no dequantise/requantise pair.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(stem), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node]
    trunk = ops[ops.index("QuantizeLinear"):ops.index("QGemm")]
    assert trunk.count("QLinearConv") == 4 and "ReduceMax" in trunk and "SpaceToDepth" not in trunk
    assert "DequantizeLinear" not in trunk and "Conv" not in trunk
    float_model = OnnxLandmarkModel(float_path, threads=1)
    reference, _ = float_model.run_network(test_crops)
    for path in (stem, plain):
        out, _ = OnnxLandmarkModel(path, threads=1).run_network(test_crops)
        assert np.abs(out - reference).mean() < INT8_MEAN_TOLERANCE
    with pytest.raises(Exception, match="stem"):
        quantize_int8(float_path, tmp_path / "x.onnx", train_crops, stem="wide")


def test_exported_shipped_model_runs_like_the_shipped_model(mtfl_test_faces, tmp_path) -> None:
    # The shipped model's test-time defaults travel in the .onnx metadata: the exported file runs the same
    # box refinement, crops and mirror-averaging, and so gives the same landmarks as the shipped float graph.
    from tcdcn.cli import main
    from tcdcn.inference.test_time import test_time_summary
    from tcdcn.models.registry import SHIPPED, multi_crop_spec

    out = tmp_path / "mtfl-5pt.onnx"
    assert main(["-q", "export", "--model", "mtfl-5pt", "--out", str(out)]) == 0
    record = SHIPPED["mtfl-5pt"]
    assert json.loads(read_metadata(out)["test_time"]) == {
        "mirror_average": record.mirror_average, "multi_crop": multi_crop_spec(record.multi_crop),
        "box_refinements": record.box_refinements}
    shipped, exported = load_landmark_model("mtfl-5pt", "onnx"), load_landmark_model(out)
    assert isinstance(exported, OnnxLandmarkModel)
    assert (exported.mirror_average, exported.multi_crop, exported.box_refinements) == (
        record.mirror_average, record.multi_crop, record.box_refinements)
    assert test_time_summary(exported) == test_time_summary(shipped) == {
        "flip": True, "crops_per_face": len(record.multi_crop), "box_refinements": 1, "local_stage": False}
    dataset = FaceDataset(mtfl_test_faces[:6], box_mode="image")
    greys = [dataset.image(i) for i in range(len(dataset))]
    boxes = [dataset.box(i) for i in range(len(dataset))]
    a, b = shipped.predict(greys, boxes), exported.predict(greys, boxes)
    assert np.abs(a.landmarks - b.landmarks).max() < 80 * PARITY_TOLERANCE
    assert np.abs(a.attribute_probabilities - b.attribute_probabilities).max() < PARITY_TOLERANCE


def test_checkpoint_runs_one_pass_unless_its_config_says_otherwise(tmp_path) -> None:
    from tcdcn.config import InferenceConfig

    plain = random_model()
    checkpoint = tmp_path / "plain.pt"
    torch.save({"model": plain.network.state_dict(), "config": config_to_dict(plain.cfg), "scheme": "mtfl-5",
                "tasks": list(TASKS)}, checkpoint)
    for backend in ("torch", "auto"):
        model = load_landmark_model(checkpoint, backend=backend)
        assert (model.mirror_average, model.multi_crop, model.box_refinements) == (False, (), 0), backend
    cfg = dataclasses.replace(plain.cfg, inference=InferenceConfig(True, 0.05, 2))
    configured = tmp_path / "configured.pt"
    torch.save({"model": plain.network.state_dict(), "config": config_to_dict(cfg), "scheme": "mtfl-5",
                "tasks": list(TASKS)}, configured)
    for backend in ("torch", "auto"):
        model = load_landmark_model(configured, backend=backend)
        assert model.mirror_average and len(model.multi_crop) == 9 and model.box_refinements == 2, backend
        assert abs(model.multi_crop[1].dx) == pytest.approx(0.05)


def test_onnx_file_without_test_time_metadata_runs_one_pass(model_and_onnx, tmp_path) -> None:
    import onnx

    _, path = model_and_onnx
    graph = onnx.load(str(path))
    kept = [p for p in graph.metadata_props if p.key != "test_time"]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    older = tmp_path / "older.onnx"
    onnx.save(graph, str(older))
    model = OnnxLandmarkModel(older)
    assert (model.mirror_average, model.multi_crop, model.box_refinements) == (False, (), 0)
    bad = tmp_path / "bad-test-time.onnx"
    graph.metadata_props.add(key="test_time", value=json.dumps({"multi_crop": {"grid": 3}}))
    onnx.save(graph, str(bad))
    with pytest.raises(CheckpointError, match="multi_crop"):
        OnnxLandmarkModel(bad)
