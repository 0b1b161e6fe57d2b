"""The torch networks keep channels-last filters (torch's fast CPU layout) and compute what NCHW ones compute."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from tcdcn.config import ModelConfig
from tcdcn.data.patches import PatchGeometry
from tcdcn.inference.export import export_onnx
from tcdcn.models.local_stage import LocalStageNetwork
from tcdcn.models.network import TCDCN
from tcdcn.schemes import IBUG_68

CHANNELS_LAST = torch.channels_last


def activation_layouts(network: torch.nn.Module, *inputs: torch.Tensor) -> dict[str, bool]:
    """Whether each 4-d conv, ReLU and max-pool output of ``network`` is stored channels-last (and not also NCHW)."""
    seen: dict[str, bool] = {}

    def record(name: str, out: torch.Tensor) -> None:
        if out.dim() == 4:  # the heads' ReLUs act on (B, D) features
            seen[name] = out.is_contiguous(memory_format=CHANNELS_LAST) and not out.is_contiguous()

    layers = torch.nn.Conv2d | torch.nn.ReLU | torch.nn.MaxPool2d
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: record(name, out))
             for name, m in network.named_modules() if isinstance(m, layers)]
    with torch.no_grad():
        network(*inputs)
    for hook in hooks:
        hook.remove()
    return seen


def nchw_twin(network: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(network).to(memory_format=torch.contiguous_format)


def outputs_and_gradients(network: torch.nn.Module, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    network = copy.deepcopy(network).train()
    out = network(*inputs)
    flat = torch.cat([o.flatten(1) for o in out], dim=1) if isinstance(out, tuple) else out.flatten(1)
    (flat.square().sum()).backward()
    return flat.detach(), [p.grad.clone() for p in network.parameters()]


@pytest.mark.parametrize("ranks", [(), (0, 16, 0, 0)], ids=["plain", "factored"])
def test_tcdcn_activations_are_channels_last_and_compute_the_nchw_function(ranks: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    network = TCDCN(replace(ModelConfig(), factor_ranks=ranks), num_tasks=8)
    for m in network.modules():  # non-zero heads, so that every parameter gets a gradient
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.05)
    crops = torch.rand(6, 1, 60, 60) * 255
    layouts = activation_layouts(network, crops)
    assert layouts and all(layouts.values()), layouts
    assert not any(activation_layouts(nchw_twin(network), crops).values())
    out, grads = outputs_and_gradients(network, crops)
    twin_out, twin_grads = outputs_and_gradients(nchw_twin(network), crops)
    torch.testing.assert_close(out, twin_out, rtol=1e-5, atol=1e-5)
    for g, tg in zip(grads, twin_grads):
        torch.testing.assert_close(g, tg, rtol=1e-4, atol=1e-4 * float(tg.abs().max()))


def test_state_dicts_load_across_layouts() -> None:
    torch.manual_seed(1)
    source = nchw_twin(TCDCN(ModelConfig(), num_tasks=8))
    loaded = TCDCN(ModelConfig(), num_tasks=8)
    loaded.load_state_dict(source.state_dict())
    assert all(activation_layouts(loaded, torch.rand(2, 1, 60, 60)).values())  # the layout stays the model's
    crops = torch.rand(3, 1, 60, 60) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(crops), source(crops), rtol=1e-5, atol=1e-5)


def test_the_exported_graph_does_not_depend_on_the_layout(tmp_path: Path) -> None:
    torch.manual_seed(2)
    network = TCDCN(ModelConfig(), num_tasks=8)
    graphs = [onnx.load(str(export_onnx(n, tmp_path / f"{name}.onnx", scheme="mtfl-5",
                                        task_names=[f"t{i}" for i in range(8)])))
              for name, n in (("channels_last", network), ("nchw", nchw_twin(network)))]
    assert [n.op_type for n in graphs[0].graph.node] == [n.op_type for n in graphs[1].graph.node]
    weights = [{t.name: numpy_helper.to_array(t) for t in g.graph.initializer} for g in graphs]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        np.testing.assert_array_equal(weights[0][name], weights[1][name])


def test_local_stage_activations_are_channels_last_and_compute_the_nchw_function() -> None:
    torch.manual_seed(3)
    geometry = PatchGeometry(IBUG_68, 128, 48, tuple(24.0 for _ in IBUG_68.patch_groups))
    network = LocalStageNetwork(geometry)
    for head in network.heads:  # the last layers start at zero; give them weights to compare
        torch.nn.init.normal_(head[-1].weight, std=0.05)
    patches = torch.rand(2, len(geometry.sides), 48, 48)
    relative = torch.rand(2, IBUG_68.num_points, 2)
    assert all(activation_layouts(network, patches, relative).values())
    out, grads = outputs_and_gradients(network, patches, relative)
    twin_out, twin_grads = outputs_and_gradients(nchw_twin(network), patches, relative)
    torch.testing.assert_close(out, twin_out, rtol=1e-5, atol=1e-5)
    for g, tg in zip(grads, twin_grads):
        torch.testing.assert_close(g, tg, rtol=1e-4, atol=1e-4 * float(tg.abs().max()) + 1e-12)
