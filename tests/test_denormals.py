"""Denormal weights: none in any shipped file, flushed on load, export and save, and flush-to-zero at run time."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from test_export import random_model

from tcdcn.inference.backends.onnx import OnnxLandmarkModel
from tcdcn.inference.export import export_onnx
from tcdcn.models.checkpoint import atomic_save, model_from_state, read_checkpoint, weights_payload
from tcdcn.models.denormals import (
    FLOAT32_TINY,
    count_denormals,
    denormal_mask,
    flush_array,
    flush_state_dict,
    onnx_denormal_count,
)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "src" / "tcdcn" / "models" / "weights"


def _shipped(suffix: str) -> list[Path]:
    files = sorted(WEIGHTS_DIR.glob(f"*{suffix}"))
    assert files, f"no shipped {suffix} files under {WEIGHTS_DIR}"
    return files


@pytest.mark.parametrize("path", _shipped(".pt"), ids=lambda p: p.name)
def test_shipped_checkpoints_hold_no_denormals(path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert count_denormals(v.numpy() for v in state["model"].values()) == 0


@pytest.mark.parametrize("path", _shipped(".onnx"), ids=lambda p: p.name)
def test_shipped_onnx_graphs_hold_no_denormals(path: Path) -> None:
    assert onnx_denormal_count(onnx.load(str(path))) == 0


# Denormals made from their bits: with flush-to-zero on (any model load turns it on for the process),
# converting 1e-40 to float32 already gives zero. 0x00011700 is 1.0e-40, 0x8000B2A4 is -6.4e-41.
DENORMAL_BITS = (0x00011700, 0x8000B2A4)


def _floats(*bits: int) -> np.ndarray:
    return np.array(bits, dtype=np.uint32).view(np.float32)


def test_flush_array_by_hand() -> None:
    normal = np.array([1e-37, 0.0, 1.0, -FLOAT32_TINY], dtype=np.float32)
    values = np.concatenate([_floats(*DENORMAL_BITS), normal])
    flushed, count = flush_array(values)
    assert count == 2
    np.testing.assert_array_equal(flushed, np.concatenate([np.zeros(2, np.float32), normal]))
    assert values.view(np.uint32)[0] == DENORMAL_BITS[0]  # the input is left alone
    assert not denormal_mask(np.array([1e-40], dtype=np.float64)).any()  # float64 1e-40 is a normal number


def _with_denormals(state: dict, layer: str = "fc.weight", every: int = 3) -> dict:
    """``state`` with every ``every``-th value of ``layer`` replaced by a denormal."""
    out = dict(state)
    weight = state[layer].clone().flatten()
    weight[::every] = torch.from_numpy(_floats(DENORMAL_BITS[0]))
    out[layer] = weight.reshape(state[layer].shape)
    return out


def test_state_dict_flush_keeps_normal_values() -> None:
    state = random_model().network.state_dict()
    dirty = _with_denormals(state)
    flushed, count = flush_state_dict(dirty)
    assert count == math.ceil(state["fc.weight"].numel() / 3)
    assert count_denormals(v.numpy() for v in flushed.values()) == 0
    assert torch.equal(flushed["features.0.weight"], state["features.0.weight"])
    kept = torch.ones(state["fc.weight"].numel(), dtype=torch.bool)
    kept[::3] = False
    kept = kept.reshape(state["fc.weight"].shape)
    assert torch.equal(flushed["fc.weight"][kept], state["fc.weight"][kept])
    assert (flushed["fc.weight"][~kept] == 0).all()


def test_loading_a_checkpoint_flushes_its_denormals_with_unchanged_outputs(tmp_path: Path) -> None:
    model = random_model()
    payload = weights_payload(model.network, model.cfg, model.scheme, model.task_names)
    payload["model"] = _with_denormals(payload["model"])
    path = tmp_path / "dirty.pt"
    atomic_save(payload, path)
    network, *_ = model_from_state(read_checkpoint(path), str(path))
    assert count_denormals(p.detach().numpy() for p in network.parameters()) == 0
    crops = torch.rand(4, 1, 60, 60) * 255
    model.network.load_state_dict(payload["model"])  # the unflushed weights
    with torch.no_grad():
        np.testing.assert_allclose(network(crops)[0].numpy(), model.network(crops)[0].numpy(), atol=1e-6)


def test_saved_weights_and_exports_are_flushed(tmp_path: Path) -> None:
    model = random_model()
    with torch.no_grad():
        model.network.load_state_dict(_with_denormals(model.network.state_dict()))
    payload = weights_payload(model.network, model.cfg, model.scheme, model.task_names)
    assert count_denormals(v.numpy() for v in payload["model"].values()) == 0
    path = export_onnx(model, tmp_path / "dirty.onnx")
    assert onnx_denormal_count(onnx.load(str(path))) == 0


def test_onnx_sessions_treat_denormals_as_zero(tmp_path: Path) -> None:
    path = export_onnx(random_model(), tmp_path / "model.onnx")
    options = OnnxLandmarkModel(path).session.get_session_options()
    assert options.get_session_config_entry("session.set_denormal_as_zero") == "1"


FLUSH_TO_ZERO_AFTER_SESSIONS = """
import torch
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.inference.detectors import FaceDetector
from tcdcn.inference.loading import load_landmark_model

def flush_to_zero_on():
    return bool((torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() == 0.0)

LandmarkModel.load("mtfl-5pt")  # turns flush-to-zero on
before = flush_to_zero_on()
FaceDetector()  # the process's first onnxruntime sessions: these set the thread's state
load_landmark_model("mtfl-5pt", "int8")
print(before, flush_to_zero_on())
"""


def test_package_sessions_leave_torch_flush_to_zero_on() -> None:
    """onnxruntime sets the building thread's flush-to-zero from the session option when it builds a
    session (the first in a process, at least), so a session built without the option turned torch's off:
    the face detector's did. In a fresh process, the package's sessions keep it on."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FLUSH_TO_ZERO_AFTER_SESSIONS], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.split() == ["True", "True"], done.stderr[-2000:]


def test_torch_backend_turns_flush_to_zero_back_on_in_each_call() -> None:
    # Someone else's code (an onnxruntime session built without the option, say) switched it off.
    model = random_model()  # a torch LandmarkModel
    try:
        torch.set_flush_denormal(False)
        assert (torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() != 0.0
        model.run_network(np.zeros((1, 1, 60, 60), dtype=np.float32))
        assert (torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(True)


def _adam_on_decay_only(steps: int) -> torch.Tensor:
    """Weights whose only gradient is an L2 decay, under Adam at the training configs' rate and decay."""
    torch.manual_seed(0)
    weights = torch.nn.Parameter(torch.randn(2000) * 0.05)
    optimiser = torch.optim.Adam([weights], lr=2e-3)
    for _ in range(steps):
        optimiser.zero_grad()
        (5e-4 * weights.pow(2).sum()).backward()
        optimiser.step()
    return weights.detach()


def test_adam_with_l2_decay_makes_denormals_unless_flushed() -> None:
    """The cause the trainer guards against: without flush-to-zero, the decay-only weights end denormal."""
    try:
        torch.set_flush_denormal(False)
        without = _adam_on_decay_only(3000)
        assert torch.set_flush_denormal(True)
        with_ftz = _adam_on_decay_only(3000)
    finally:
        torch.set_flush_denormal(True)
    assert count_denormals([without.numpy()]) > 1000
    assert count_denormals([with_ftz.numpy()]) == 0
