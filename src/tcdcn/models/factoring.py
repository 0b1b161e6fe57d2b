"""Factoring a trained network's convolutions: each chosen k x k layer becomes a k x 1 convolution to r
channels followed by a 1 x k one (``FactoredConv2d``), initialised from the trained filters by a truncated
singular value decomposition (Jaderberg, Vedaldi and Zisserman 2014, "scheme 2").

The k x k filters of a layer, arranged as a matrix with rows (input channel, kernel row) and columns (output
channel, kernel column), are exactly a sum of products of a vertical and a horizontal filter; keeping the r
largest singular values gives the rank-r pair closest in Frobenius norm. The second convolution holds
most of the network's multiply-adds, and factoring it cuts them by about k * C_out / (r * (C_in + C_out)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .network import TCDCN, FactoredConv2d


def factor_filters(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C_out, C_in, k, k) filters -> the closest rank-``rank`` pair: vertical (r, C_in, k, 1) and horizontal
    (C_out, r, 1, k) filters, whose composition is the truncated decomposition of ``weight``."""
    out_channels, in_channels, k, k2 = weight.shape
    if k != k2:
        raise ValueError(f"square filters expected, got {k}x{k2}")
    if not 0 < rank <= min(in_channels * k, out_channels * k):
        raise ValueError(f"rank must be in 1..{min(in_channels * k, out_channels * k)}, got {rank}")
    matrix = weight.permute(1, 2, 0, 3).reshape(in_channels * k, out_channels * k)  # rows (i, y), cols (o, x)
    left, singular, right = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = singular[:rank].sqrt()  # split each singular value evenly between the two factors
    vertical = (left[:, :rank] * root).T.reshape(rank, in_channels, k, 1)  # (r, C_in, k, 1)
    horizontal = (root[:, None] * right[:rank]).reshape(rank, out_channels, k).permute(1, 0, 2)  # (C_out, r, k)
    return vertical.to(weight.dtype), horizontal.unsqueeze(2).to(weight.dtype)  # (C_out, r, 1, k)


def factored(network: TCDCN, ranks: Sequence[int]) -> TCDCN:
    """A copy of ``network`` whose conv layer i is factored at rank ``ranks[i]`` (0: kept whole, as is a
    layer factored already). The other layers and the heads are copied unchanged."""
    cfg = network.config
    if len(ranks) != len(cfg.channels):
        raise ValueError(f"one rank per conv layer expected ({len(cfg.channels)}), got {len(ranks)}")
    old_ranks = tuple(cfg.factor_ranks) or (0,) * len(ranks)
    new_ranks = tuple(old if old else new for old, new in zip(old_ranks, ranks))
    copy = TCDCN(type(cfg)(**{**cfg.__dict__, "factor_ranks": new_ranks}), network.num_tasks)
    source_state = network.state_dict()
    with torch.no_grad():
        for index, (source, target) in enumerate(zip(network.features, copy.features)):
            if isinstance(source, nn.Conv2d) and isinstance(target, FactoredConv2d):
                vertical, horizontal = factor_filters(source.weight, target.rank)
                target.vertical.weight.copy_(vertical)
                target.horizontal.weight.copy_(horizontal)
                target.horizontal.bias.copy_(source.bias)
            else:
                prefix = f"features.{index}."
                target.load_state_dict({k[len(prefix):]: v for k, v in source_state.items() if k.startswith(prefix)})
        for name in ("fc", "landmark_head", "attribute_head"):
            getattr(copy, name).load_state_dict(getattr(network, name).state_dict())
    return copy.train(network.training)
