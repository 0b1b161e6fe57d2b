"""Structured pruning: a narrower TCDCN that keeps chosen conv channels and fc units of a trained one.

Training with the filter decay leaves many units of the last layers dead (their ReLU output is zero on
every face), so removing them changes no output (``live_units``). Keeping fewer units than are alive
(``units_by_importance``) changes the function; the narrower network is then a starting point for more
training, cheaper to run than the source (the second convolution holds most of the multiply-adds).
Factored layers (``models.factoring``) are narrowed like whole ones and keep their rank: their k x 1 part
loses the input channels the previous layer dropped, their 1 x k part the output channels not kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from .network import TCDCN, FactoredConv2d, standardise

ConvLayer = nn.Conv2d | FactoredConv2d


def conv_layers(network: TCDCN) -> list[ConvLayer]:
    """The network's conv layers, whole (``nn.Conv2d``) or factored (``FactoredConv2d``), in order."""
    return [m for m in network.features if isinstance(m, ConvLayer)]


def layer_filters(layer: ConvLayer) -> torch.Tensor:
    """The k x k filters a conv layer computes (C_out, C_in, k, k): a factored layer's product of its parts."""
    return layer.full_weight() if isinstance(layer, FactoredConv2d) else layer.weight


def layer_activity(network: TCDCN, crops: torch.Tensor) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per conv layer (``conv0``...) and for ``fc``: each channel's / unit's (largest, mean) ReLU output over
    all crops (N, 1, S, S) and positions, as two (C,) arrays."""
    activity: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    x = standardise(crops, tuple(crops.shape[1:]))  # (N, 1, S, S)
    conv_index = 0
    with torch.no_grad():
        for module in network.features:
            x = module(x)
            if isinstance(module, nn.ReLU):
                activity[f"conv{conv_index}"] = (x.amax(dim=(0, 2, 3)).numpy(), x.mean(dim=(0, 2, 3)).numpy())  # (C,)
                conv_index += 1
        features = torch.relu(network.fc(x.flatten(1)))  # (N, D)
    activity["fc"] = (features.amax(dim=0).numpy(), features.mean(dim=0).numpy())  # (D,)
    return activity


def live_units(network: TCDCN, crops: torch.Tensor) -> dict[str, np.ndarray]:
    """Indices of the channels / units whose output is non-zero on some crop, per layer."""
    return {name: np.flatnonzero(peak > 0) for name, (peak, _) in layer_activity(network, crops).items()}


def _outgoing_norms(network: TCDCN) -> dict[str, np.ndarray]:
    """Per layer, the L2 norm of the weights that read each of its channels / units (the next layer's)."""
    convs = conv_layers(network)
    norms: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for i, reader in enumerate(convs[1:]):
            norms[f"conv{i}"] = layer_filters(reader).pow(2).sum(dim=(0, 2, 3)).sqrt().numpy()  # (C_i,)
        s = network.feature_map_size
        fc_in = network.fc.weight.reshape(network.fc.out_features, convs[-1].out_channels, s * s)  # (D, C, s*s)
        norms[f"conv{len(convs) - 1}"] = fc_in.pow(2).sum(dim=(0, 2)).sqrt().numpy()  # (C,)
        heads = torch.cat([network.landmark_head.weight, network.attribute_head.weight], dim=0)  # (M+T, D)
        norms["fc"] = heads.pow(2).sum(dim=0).sqrt().numpy()  # (D,)
    return norms


def units_by_importance(network: TCDCN, crops: torch.Tensor, channels: tuple[int, ...] | list[int],
                        feature_dim: int) -> dict[str, np.ndarray]:
    """The ``channels[i]`` most important channels of each conv layer and ``feature_dim`` fc units, in their
    original order. A unit's importance is its mean ReLU output on ``crops`` times the norm of the weights
    that read it: about how much the next layer's input moves without it. Dead units score zero."""
    convs = conv_layers(network)
    if len(channels) != len(convs):
        raise ValueError(f"channels has {len(channels)} widths for {len(convs)} conv layers")
    widths = {f"conv{i}": int(c) for i, c in enumerate(channels)} | {"fc": int(feature_dim)}
    activity = layer_activity(network, crops)
    norms = _outgoing_norms(network)
    keep: dict[str, np.ndarray] = {}
    for name, width in widths.items():
        available = len(norms[name])
        if not 1 <= width <= available:
            raise ValueError(f"{name}: cannot keep {width} of {available} units")
        importance = activity[name][1] * norms[name]  # (C,)
        keep[name] = np.sort(np.argsort(-importance, kind="stable")[:width])
    return keep


def pruned(network: TCDCN, keep: Mapping[str, np.ndarray]) -> TCDCN:
    """A copy of ``network`` with only the ``keep`` channels of each conv layer and units of fc (indices per
    layer name, as ``live_units`` and ``units_by_importance`` give); the heads keep all their outputs."""
    convs = conv_layers(network)
    kept = [np.asarray(keep[f"conv{i}"], dtype=np.int64) for i in range(len(convs))]
    units = np.asarray(keep["fc"], dtype=np.int64)
    cfg = network.config
    small_cfg = type(cfg)(**{**cfg.__dict__, "channels": [len(k) for k in kept], "feature_dim": len(units)})
    small = TCDCN(small_cfg, network.num_tasks)
    previous = np.arange(1)  # the grey input channel
    with torch.no_grad():
        for conv, target, channels in zip(convs, conv_layers(small), kept):
            if isinstance(conv, FactoredConv2d) and isinstance(target, FactoredConv2d):
                target.vertical.weight.copy_(conv.vertical.weight[:, previous])  # (r, C_prev_kept, k, 1)
                target.horizontal.weight.copy_(conv.horizontal.weight[channels])  # (C_kept, r, 1, k)
                target.horizontal.bias.copy_(conv.horizontal.bias[channels])
            elif isinstance(conv, nn.Conv2d) and isinstance(target, nn.Conv2d):
                target.weight.copy_(conv.weight[channels][:, previous])  # (C_kept, C_prev_kept, k, k)
                target.bias.copy_(conv.bias[channels])
            else:  # the copy's config keeps the source's factor_ranks, so the kinds always match
                raise AssertionError("pruned copy and source differ in which layers are factored")
            previous = channels
        s = network.feature_map_size
        columns = (previous[:, None] * s * s + np.arange(s * s)[None, :]).ravel()  # fc inputs of kept channels
        small.fc.weight.copy_(network.fc.weight[units][:, columns])
        small.fc.bias.copy_(network.fc.bias[units])
        for head, small_head in ((network.landmark_head, small.landmark_head),
                                 (network.attribute_head, small.attribute_head)):
            small_head.weight.copy_(head.weight[:, units])
            small_head.bias.copy_(head.bias)
    return small.train(network.training)
