"""bench/runtimes.py: the runtimes compared with onnxruntime compute the same network, and the profile's counts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MTFL_DIR
from repo_scripts import REPO, load_file_module

sys.path.insert(0, str(REPO / "bench"))  # the bench modules import their neighbours (host, speed)
runtimes = load_file_module(REPO / "bench" / "runtimes.py", "bench_runtimes_under_test")

from tcdcn.inference.loading import load_landmark_model  # noqa: E402


@pytest.fixture(scope="module")
def shipped() -> tuple:
    if not MTFL_DIR.exists():
        pytest.skip(f"shared data not found at {MTFL_DIR}")
    from speed import whole_image_faces

    greys, boxes = whole_image_faces(MTFL_DIR / "testing.txt", 9)
    model = load_landmark_model("mtfl-5pt", backend="onnx")
    crops, _ = model.crops(greys, boxes)
    return model, crops


def test_run_all_covers_every_crop_in_calls_of_the_batch_size() -> None:
    calls: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return x[:, 0, :2, :2].reshape(len(x), 2, 2) + 0.0

    crops = np.arange(5 * 1 * 3 * 3, dtype=np.float32).reshape(5, 1, 3, 3)
    out = runtimes.run_all(run, crops, 2)
    assert calls == [2, 2, 2]  # the last call padded to the batch size
    np.testing.assert_array_equal(out, crops[:, 0, :2, :2])


def test_opencv_and_torch_compute_the_shipped_graphs_function(shipped: tuple) -> None:
    model, crops = shipped
    reference = model.run_network(crops)[0]  # (9, 5, 2)
    for build in (lambda: runtimes.opencv_runners(model.path, [1, 4]),
                  lambda: runtimes.torch_runners("mtfl-5pt", [1, 4])):
        for batch, run in build().items():
            np.testing.assert_allclose(runtimes.run_all(run, crops, batch), reference, atol=1e-4)


def test_a_runtime_not_installed_is_skipped_and_an_unknown_one_refused(
        shipped: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = shipped
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    runners, skipped = runtimes.build_runners(["onnxruntime", "openvino"], "mtfl-5pt", model.path, [1], tmp_path)
    assert list(runners) == ["onnxruntime"] and skipped["openvino"].startswith("not installed")
    with pytest.raises(SystemExit, match="unknown runtime 'tvm'"):
        runtimes.build_runners(["tvm"], "mtfl-5pt", model.path, [1], tmp_path)


def test_the_profile_counts_each_convolutions_multiply_adds(shipped: tuple) -> None:
    model, crops = shipped
    profile = runtimes.profile_onnxruntime(model.path, crops, 2, calls=20)
    convs = [n for n in profile["nodes"] if n["op"] == "Conv"]
    # the shipped float graph: 5x5 stem padded to 24 filters on 60x60 (56x56 out), the factored 5x5 (20 -> 16
    # vertical, 16 -> 32 horizontal, reading the padded 24 channels), 3x3 32 -> 48 (10x10 out), 3x3 48 -> 64 (3x3)
    expected = {2 * 56 * 56 * 24 * 25, 2 * 24 * 28 * 16 * 24 * 5, 2 * 24 * 24 * 32 * 16 * 5,
                2 * 10 * 10 * 48 * 32 * 9, 2 * 3 * 3 * 64 * 48 * 9}
    assert {n["multiply_adds"] for n in convs} == expected
    assert all(n["gmac_per_s"] > 0 for n in convs)
    assert sum(n["share"] for n in profile["nodes"]) == pytest.approx(1.0, abs=1e-3)
