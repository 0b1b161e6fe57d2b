"""Factored convolutions (model.factor_ranks, tcdcn.models.factoring) and scripts/prune_model.py --factor-ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from repo_scripts import REPO, load_file_module
from test_pruning import _crops, _network

from tcdcn.config import ModelConfig, config_from_dict, config_to_dict, load_config
from tcdcn.errors import CheckpointError, ConfigError
from tcdcn.models.checkpoint import model_from_state, read_checkpoint
from tcdcn.models.factoring import factor_filters, factored
from tcdcn.models.network import TCDCN, FactoredConv2d, count_multiply_adds, standardise
from tcdcn.models.pruning import conv_layers, live_units, pruned, units_by_importance
from tcdcn.training.transfer import copy_filters_into_leading_channels, initial_network


def test_full_rank_factoring_computes_the_same_function() -> None:
    network, crops = _network(), _crops()
    # Full rank of layer 1 (8 filters of 6 x 5 x 5): min(6 * 5, 8 * 5) = 30; layer 2: min(8 * 3, 10 * 3) = 24.
    copy = factored(network, [0, 30, 24, 0]).eval()
    assert isinstance(copy.features[3], FactoredConv2d) and isinstance(copy.features[6], FactoredConv2d)
    with torch.no_grad():
        for a, b in zip(network(crops), copy(crops)):
            np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-4)


def test_truncation_error_is_the_discarded_singular_values() -> None:
    """Eckart-Young: the rank-r pair's error in Frobenius norm is the root sum of squares of the dropped
    singular values of the (C_in * k) x (C_out * k) arrangement."""
    weight = torch.randn(8, 6, 5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    singular = torch.linalg.svdvals(weight.permute(1, 2, 0, 3).reshape(30, 40))
    layer = FactoredConv2d(6, 8, 5, rank=7).double()
    vertical, horizontal = factor_filters(weight, 7)
    assert vertical.shape == (7, 6, 5, 1) and horizontal.shape == (8, 7, 1, 5)
    with torch.no_grad():
        layer.vertical.weight.copy_(vertical)
        layer.horizontal.weight.copy_(horizontal)
    with torch.no_grad():
        error = (layer.full_weight() - weight).norm()
    assert float(error) == pytest.approx(float(singular[7:].pow(2).sum().sqrt()), rel=1e-9)


def test_a_separable_filter_needs_rank_one() -> None:
    column, row = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 4.0, -1.0])
    weight = torch.outer(column, row).reshape(1, 1, 3, 3)  # (C_out, C_in, k, k)
    vertical, horizontal = factor_filters(weight, 1)
    layer = FactoredConv2d(1, 1, 3, rank=1)
    with torch.no_grad():
        layer.vertical.weight.copy_(vertical)
        layer.horizontal.weight.copy_(horizontal)
        np.testing.assert_allclose(layer.full_weight().numpy(), weight.numpy(), atol=1e-6)


def test_multiply_adds_of_a_factored_network_by_hand() -> None:
    cfg = ModelConfig(channels=(20, 32, 48, 64), kernels=(5, 5, 3, 3), feature_dim=128, num_points=5,
                      factor_ranks=(0, 16, 0, 0))
    network = TCDCN(cfg, num_tasks=8)
    expected = (56 * 56 * 20 * 25  # conv 1 on 60 x 60
                + 24 * 28 * 16 * 20 * 5  # 5 x 1, 20 -> 16, on the pooled 28 x 28
                + 24 * 24 * 32 * 16 * 5  # 1 x 5, 16 -> 32
                + 10 * 10 * 48 * 32 * 9 + 3 * 3 * 64 * 48 * 9  # conv 3 on 12 x 12, conv 4 on 5 x 5
                + 576 * 128 + 128 * 10 + 128 * 8)  # fc, heads
    assert count_multiply_adds(network) == expected == 5_825_024


@pytest.mark.parametrize("ranks", [(0, 16, 0), (0, -1, 0, 0)])
def test_bad_ranks_are_refused_by_the_config(ranks: tuple[int, ...]) -> None:
    base = config_to_dict(load_config(REPO / "configs" / "mtfl-5pt.yaml"))
    base["model"]["factor_ranks"] = list(ranks)
    with pytest.raises(ConfigError, match="factor_ranks"):
        config_from_dict(base)


def test_impossible_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="rank"):
        factored(_network(), [0, 31, 0, 0])  # more than min(6 * 5, 8 * 5)


def test_pruning_a_factored_network_keeps_its_ranks_and_the_function_of_live_units() -> None:
    """Channels of the layer before a factored one leave its k x 1 part's inputs; a factored layer's own
    channels leave its 1 x k part's outputs; the rank stays. Dead channels go without changing the outputs."""
    network, crops = factored(_network(), [0, 4, 5, 0]).eval(), _crops()
    with torch.no_grad():
        first = conv_layers(network)[0]
        first.weight[2], first.bias[2] = 0.0, -1.0  # conv0 channel 2 never fires (read by factored conv1)
        second = conv_layers(network)[1]
        assert isinstance(second, FactoredConv2d)
        second.horizontal.weight[5], second.horizontal.bias[5] = 0.0, -1.0  # conv1 channel 5 never fires
    alive = live_units(network, crops)
    assert 2 not in alive["conv0"] and 5 not in alive["conv1"]
    small = pruned(network, alive).eval()
    assert tuple(small.config.factor_ranks) == (0, 4, 5, 0)
    small_second = conv_layers(small)[1]
    assert isinstance(small_second, FactoredConv2d) and small_second.rank == 4
    assert small_second.vertical.weight.shape[1] == len(alive["conv0"])  # (r, C0 kept, k, 1)
    assert small_second.horizontal.weight.shape[0] == len(alive["conv1"])  # (C1 kept, r, 1, k)
    with torch.no_grad():
        for full, copy in zip(network(crops), small(crops)):
            np.testing.assert_allclose(copy.numpy(), full.numpy(), atol=1e-5)


def test_importance_reads_a_factored_reader_through_its_full_filters() -> None:
    """A conv0 channel that the factored conv1 never reads (zero k x 1 weights on it) scores zero."""
    network, crops = factored(_network(), [0, 4, 0, 0]).eval(), _crops()
    with torch.no_grad():
        conv_layers(network)[1].vertical.weight[:, 1] = 0.0  # (r, C0, k, 1): conv0 channel 1 is unread
    keep = units_by_importance(network, crops, (5, 8, 10, 12), 16)
    assert 1 not in keep["conv0"] and len(keep["conv0"]) == 5


def test_script_factors_the_shipped_model_into_a_trainable_checkpoint(
        mtfl_train_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_file_module(REPO / "scripts" / "prune_model.py", "prune_model_factoring_under_test")
    monkeypatch.chdir(REPO)
    out = tmp_path / "factored.pt"
    assert script.main(["300w-68pt", "--factor-ranks", "0,16,0,0", "--faces", "20", "--out", str(out),
                        "--no-score"]) == 0
    network, cfg, _, _ = model_from_state(read_checkpoint(out), str(out))
    assert tuple(cfg.model.factor_ranks) == (0, 16, 0, 0)
    assert isinstance(network.features[3], FactoredConv2d) and network.features[3].rank == 16
    # A layer factored already keeps its rank; the others are factored as asked.
    again = tmp_path / "again.pt"
    assert script.main([str(out), "--factor-ranks", "0,8,24,0", "--faces", "20", "--out", str(again),
                        "--no-score"]) == 0
    assert tuple(model_from_state(read_checkpoint(again), str(again))[1].model.factor_ranks) == (0, 16, 24, 0)
    # The checkpoint starts a run whose config names the same ranks, and no other.
    run_cfg = config_to_dict(cfg)  # the source's own training config, with the copy's model section
    run_cfg["train"].update(init_layers="all")
    run_cfg["train"]["init_from"] = str(out)
    started = initial_network(config_from_dict(run_cfg), cfg.data.tasks)
    torch.testing.assert_close(started.features[3].vertical.weight, network.features[3].vertical.weight)
    run_cfg["model"]["factor_ranks"] = []
    with pytest.raises(CheckpointError, match="factor_ranks"):
        initial_network(config_from_dict(run_cfg), cfg.data.tasks)


def test_features_transfer_copies_a_factored_layer_as_its_full_filters() -> None:
    """init_layers: features from a factored network into a wider full one: the leading channels of every
    layer compute the source's features (the 300-W transfer recipe from a factored 5-point model)."""
    source = factored(_network(), [0, 4, 5, 0])
    wider = TCDCN(ModelConfig(input_size=60, channels=(8, 10, 12, 14), kernels=(5, 5, 3, 3), feature_dim=16,
                              num_points=68), num_tasks=3).eval()
    copy_filters_into_leading_channels(source, wider)
    x_source = x_wide = standardise(_crops(3), (1, 60, 60))  # (N, 1, 60, 60)
    with torch.no_grad():
        for src_module, module in zip(source.features, wider.features):
            x_source, x_wide = src_module(x_source), module(x_wide)
            torch.testing.assert_close(x_wide[:, :x_source.shape[1]], x_source, rtol=0, atol=1e-4)


def test_features_transfer_fills_a_factored_layer_part_by_part_at_another_crop_size(tmp_path: Path) -> None:
    """init_layers: features from a factored network into one factored alike at a smaller crop: the
    parts are copied as they are (no refactoring), the fc layer starts fresh for the new map size, and a
    factored layer of another rank or width is refused in one line."""
    from tcdcn.models.checkpoint import atomic_save, weights_payload
    from tcdcn.schemes import get_scheme

    cfg = load_config(REPO / "configs" / "mtfl-5pt.yaml")
    source_model = dict(input_size=60, channels=(6, 8, 10, 12), kernels=(5, 5, 3, 3), feature_dim=16,
                        num_points=5, factor_ranks=(0, 4, 0, 0))
    source = TCDCN(ModelConfig(**source_model), num_tasks=len(cfg.data.tasks)).eval()
    source_cfg = config_to_dict(cfg)
    source_cfg["model"] = {**source_cfg["model"], **source_model}
    path = tmp_path / "source.pt"
    atomic_save(weights_payload(source, config_from_dict(source_cfg), get_scheme("mtfl-5"), tuple(cfg.data.tasks)),
                path)
    run_cfg = config_to_dict(cfg)
    run_cfg["model"] = {**run_cfg["model"], **source_model, "input_size": 52}
    run_cfg["train"].update(init_from=str(path), init_layers="features")
    started = initial_network(config_from_dict(run_cfg), cfg.data.tasks)
    assert started.feature_map_size == 2 and started.fc.in_features == 12 * 2 * 2
    for part in ("vertical", "horizontal"):
        torch.testing.assert_close(getattr(started.features[3], part).weight, getattr(source.features[3], part).weight,
                                   rtol=0, atol=0)
    torch.testing.assert_close(started.features[0].weight, source.features[0].weight, rtol=0, atol=0)
    for changed in ({"factor_ranks": (0, 5, 0, 0)}, {"channels": (6, 9, 10, 12)}, {"channels": (7, 8, 10, 12)}):
        run_cfg["model"] = {**run_cfg["model"], **source_model, "input_size": 52, **changed}
        with pytest.raises(CheckpointError, match="factored layer"):
            initial_network(config_from_dict(run_cfg), cfg.data.tasks)
