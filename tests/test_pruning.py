"""Structured pruning (tcdcn.models.pruning) and scripts/prune_model.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from repo_scripts import REPO, load_file_module

from tcdcn.config import ModelConfig
from tcdcn.models.checkpoint import landmark_shift_from_state, model_from_state, read_checkpoint
from tcdcn.models.network import TCDCN, count_multiply_adds
from tcdcn.models.pruning import conv_layers, layer_activity, live_units, pruned, units_by_importance
from tcdcn.models.registry import resolve_weights_file

SMALL = ModelConfig(input_size=60, channels=(6, 8, 10, 12), kernels=(5, 5, 3, 3), feature_dim=16, num_points=5)


def _network(seed: int = 0) -> TCDCN:
    """A random network (some units may happen to be dead on the random crops)."""
    torch.manual_seed(seed)
    network = TCDCN(SMALL, num_tasks=3)
    with torch.no_grad():
        network.landmark_head.weight.normal_(0.0, 0.1)
    return network.eval()


def _crops(n: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 60, 60, generator=torch.Generator().manual_seed(seed)) * 255.0  # (N, 1, S, S)


def _kill(network: TCDCN, layer: str, unit: int) -> None:
    """Make one unit output zero on every input: zero weights, negative bias."""
    module = network.fc if layer == "fc" else conv_layers(network)[int(layer[4:])]
    with torch.no_grad():
        module.weight[unit] = 0.0
        module.bias[unit] = -1.0


def test_removing_dead_units_keeps_the_function() -> None:
    network, crops = _network(), _crops()
    _kill(network, "conv1", 3)
    _kill(network, "conv3", 0)
    _kill(network, "fc", 7)
    alive = live_units(network, crops)
    assert 3 not in alive["conv1"] and 0 not in alive["conv3"] and 7 not in alive["fc"]
    small = pruned(network, alive)
    assert list(small.config.channels) == [len(alive[f"conv{i}"]) for i in range(4)]
    assert small.config.feature_dim == len(alive["fc"]) < SMALL.feature_dim
    with torch.no_grad():
        full, small_out = network(crops), small(crops)
    np.testing.assert_allclose(small_out[0].numpy(), full[0].numpy(), atol=1e-5)  # landmarks (N, P, 2)
    np.testing.assert_allclose(small_out[1].numpy(), full[1].numpy(), atol=1e-5)  # attribute logits (N, T)


def test_keeping_every_unit_is_an_exact_copy() -> None:
    network, crops = _network(), _crops()
    keep = units_by_importance(network, crops, SMALL.channels, SMALL.feature_dim)
    assert all(np.array_equal(idx, np.arange(len(idx))) for idx in keep.values())
    with torch.no_grad():
        np.testing.assert_array_equal(pruned(network, keep)(crops)[0].numpy(), network(crops)[0].numpy())


def test_importance_drops_dead_and_unread_units_first() -> None:
    network, crops = _network(), _crops()
    _kill(network, "conv2", 4)  # never fires
    with torch.no_grad():
        conv_layers(network)[3].weight[:, 6] = 0.0  # conv2 channel 6 fires but nothing reads it
    live = live_units(network, crops)["conv2"]
    assert 4 not in live and 6 in live
    width = len(live) - 1  # the live units that something reads
    keep = units_by_importance(network, crops, (6, 8, width, 12), 16)
    assert len(keep["conv2"]) == width and 4 not in keep["conv2"] and 6 not in keep["conv2"]
    assert list(keep["conv2"]) == sorted(keep["conv2"])  # original order kept


def test_importance_is_mean_output_times_outgoing_norm() -> None:
    network, crops = _network(), _crops()
    mean_fc = layer_activity(network, crops)["fc"][1]  # (D,)
    heads = torch.cat([network.landmark_head.weight, network.attribute_head.weight]).detach()  # (M+T, D)
    importance = mean_fc * heads.norm(dim=0).numpy()
    expected = np.sort(np.argsort(-importance)[:5])
    assert list(units_by_importance(network, crops, SMALL.channels, 5)["fc"]) == list(expected)


@pytest.mark.parametrize("channels, feature_dim", [((6, 8, 10), 16), ((6, 9, 10, 12), 16), ((6, 8, 10, 12), 0)])
def test_impossible_widths_are_refused(channels: tuple[int, ...], feature_dim: int) -> None:
    with pytest.raises(ValueError):
        units_by_importance(_network(), _crops(), channels, feature_dim)


def test_script_writes_a_trainable_checkpoint_without_the_calibration(
        mtfl_train_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked for no change, the copy is the shipped network with its mirror calibration taken out of the
    head; a narrower copy of a full-convolution model (300w-68pt) gets the widths asked for."""
    script = load_file_module(REPO / "scripts" / "prune_model.py", "prune_model_under_test")
    monkeypatch.chdir(REPO)  # the config's data paths are relative to the repository root
    shipped_state = read_checkpoint(resolve_weights_file("mtfl-5pt"))
    shipped, shipped_cfg, _, _ = model_from_state(shipped_state, "mtfl-5pt")
    out = tmp_path / "same.pt"
    assert script.main(["mtfl-5pt", "--faces", "40", "--out", str(out), "--no-score"]) == 0
    copy, cfg, _, _ = model_from_state(read_checkpoint(out), str(out))
    assert copy.config == shipped.config
    shift = landmark_shift_from_state(shipped_state, 5)  # (P, 2): the shipped head's output less the raw network's
    assert shift is not None and np.abs(shift).max() > 0
    crops = _crops(6, seed=3)  # (N, 1, 60, 60)
    with torch.no_grad():
        np.testing.assert_allclose(copy(crops)[0].numpy(), shipped(crops)[0].numpy() - shift[None], atol=1e-5)

    narrow = tmp_path / "narrow.pt"
    assert script.main(["300w-68pt", "--channels", "16,24,32,48", "--feature-dim", "64", "--faces", "40",
                        "--out", str(narrow), "--no-score"]) == 0
    small, small_cfg, _, tasks = model_from_state(read_checkpoint(narrow), str(narrow))
    source, source_cfg, _, source_tasks = model_from_state(read_checkpoint(resolve_weights_file("300w-68pt")),
                                                           "300w-68pt")
    assert list(small_cfg.model.channels) == [16, 24, 32, 48] and small_cfg.model.feature_dim == 64
    assert small.num_points == source.num_points == 68 and tuple(tasks) == tuple(source_tasks)


def test_script_narrows_the_factored_shipped_model(
        mtfl_train_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped mtfl-5pt (second layer factored) pruned to fewer first-layer channels: the copy keeps the
    rank and the widths asked for, and costs fewer multiply-adds."""
    script = load_file_module(REPO / "scripts" / "prune_model.py", "prune_model_factored_under_test")
    monkeypatch.chdir(REPO)
    source = read_checkpoint(resolve_weights_file("mtfl-5pt"))
    network, _, _, _ = model_from_state(source, "mtfl-5pt")
    ranks = tuple(network.config.factor_ranks)
    assert any(ranks)
    out = tmp_path / "narrow.pt"
    widths = (16,) + tuple(network.config.channels[1:])
    assert script.main(["mtfl-5pt", "--channels", ",".join(map(str, widths)), "--faces", "20",
                        "--out", str(out), "--no-score"]) == 0
    copy, cfg, _, _ = model_from_state(read_checkpoint(out), str(out))
    assert tuple(cfg.model.channels) == widths and tuple(cfg.model.factor_ranks) == ranks
    assert count_multiply_adds(copy) < count_multiply_adds(network)
