"""The TCDCN network (Fig. 2): four conv layers, three max-pools, one shared fully connected
representation, then linear heads for landmarks and attribute tasks.

``forward_features`` gives the shared representation x (dimension D); the heads are one linear map
W = [W_M, W_T] (stored as two ``nn.Linear`` so the landmark head can be swapped to N points for
transfer, ``reset_landmark_head``).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig

# Added to the variance under the square root: sqrt(1e-10) = 1e-5 grey levels, far below any real
# image's spread (crops are 0..255), so it only matters for a constant crop.
STANDARDISE_EPS = 1e-10


def standardise(images: torch.Tensor, image_shape: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Per-image zero mean, unit (unbiased) variance: the paper's input normalisation.

    Written as one ``layer_norm`` over (C, H, W), with its scale set to turn the biased variance it
    divides by into the unbiased one: the exported ONNX graph then holds a single LayerNormalization
    node (a fused kernel) instead of eight element-wise nodes, which costs time on every call at batch 1.
    ``image_shape`` (C, H, W) may be given as plain numbers (the model passes its input size) so that
    export traces no shape arithmetic. A constant image maps to zeros (the epsilon keeps the division
    finite).
    """
    shape = tuple(images.shape[1:]) if image_shape is None else image_shape
    pixels = math.prod(shape)
    unbiased_scale = torch.full(shape, math.sqrt((pixels - 1) / pixels), dtype=images.dtype,
                                device=images.device)  # (C, H, W)
    return F.layer_norm(images, shape, weight=unbiased_scale, eps=STANDARDISE_EPS)  # (B, C, H, W)


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """nn.Linear that also allows zero outputs (no attribute tasks) without torch's init warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(in_features, out_features)


class FactoredConv2d(nn.Module):
    """A k x k convolution as a k x 1 one to ``rank`` channels followed by a 1 x k one to ``out_channels``
    (no non-linearity between: a rank-``rank`` approximation of the full filters, Jaderberg et al. 2014).
    Multiply-adds on an H x W input: k * rank * (in_channels * H' * W + out_channels * H' * W') against
    k * k * in_channels * out_channels * H' * W' (H' = H - k + 1, W' = W - k + 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, rank: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.rank = in_channels, out_channels, rank
        self.kernel_size = (kernel_size, kernel_size)
        self.vertical = nn.Conv2d(in_channels, rank, (kernel_size, 1), bias=False)
        self.horizontal = nn.Conv2d(rank, out_channels, (1, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.horizontal(self.vertical(x))  # (B, C_in, H, W) -> (B, r, H-k+1, W) -> (B, C_out, H-k+1, W-k+1)

    def full_weight(self) -> torch.Tensor:
        """The equivalent k x k filters (C_out, C_in, k, k)."""
        vertical = self.vertical.weight[:, :, :, 0]  # (r, C_in, k)
        horizontal = self.horizontal.weight[:, :, 0, :]  # (C_out, r, k)
        return torch.einsum("riy,orx->oiyx", vertical, horizontal)  # (C_out, C_in, k, k)


def _conv(in_channels: int, out_channels: int, kernel_size: int, rank: int) -> nn.Module:
    if rank > 0:
        return FactoredConv2d(in_channels, out_channels, kernel_size, rank)
    return nn.Conv2d(in_channels, out_channels, kernel_size)


class TCDCN(nn.Module):
    def __init__(self, config: ModelConfig, num_tasks: int) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_ch, size = 1, config.input_size
        ranks = tuple(config.factor_ranks) or (0,) * len(config.channels)
        for i, (out_ch, k, rank) in enumerate(zip(config.channels, config.kernels, ranks)):
            layers += [_conv(in_ch, out_ch, k, rank), nn.ReLU(inplace=True)]
            size = size - k + 1
            if i < len(config.channels) - 1:  # three 2x2 pools between four conv layers
                layers.append(nn.MaxPool2d(2))
                size //= 2
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.feature_map_size = size
        self.fc = nn.Linear(in_ch * size * size, config.feature_dim)
        self.landmark_head = nn.Linear(config.feature_dim, 2 * config.num_points)
        self.attribute_head = _linear(config.feature_dim, num_tasks)
        nn.init.zeros_(self.landmark_head.weight)
        nn.init.zeros_(self.landmark_head.bias)
        # Filters in channels-last order make every activation channels-last, which torch's CPU kernels run
        # far faster than NCHW, its NCHW max-pool most of all (bench/torch_memory_format.py). The function is the
        # same (gradients within 1e-6), exported graphs are byte for byte the same, and state dicts load into
        # either layout.
        self.to(memory_format=torch.channels_last)

    @property
    def num_points(self) -> int:
        return self.landmark_head.out_features // 2

    @property
    def num_tasks(self) -> int:
        return self.attribute_head.out_features

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) raw grey crops -> (B, D) shared representation."""
        x = self.features(standardise(images, (1, self.config.input_size, self.config.input_size)))  # (B, C, s, s)
        return torch.relu(self.fc(x.flatten(1)))  # (B, D)

    def forward_heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        landmarks = self.landmark_head(features).reshape(-1, self.num_points, 2)  # (B, P, 2) in [-1, 1]
        attribute_logits = self.attribute_head(features)  # (B, T)
        return landmarks, attribute_logits

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_heads(self.forward_features(images))

    def head_weight(self) -> torch.Tensor:
        """W = [W_M, W_T] in R^{D x (M+T)}: one column per landmark coordinate and per task."""
        return torch.cat([self.landmark_head.weight, self.attribute_head.weight], dim=0).t()  # (D, M+T)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The layers every task reads (conv filters and the fully connected layer, weights and biases)."""
        return [*self.features.parameters(), *self.fc.parameters()]

    def filters(self) -> list[torch.Tensor]:
        """The filters K (conv and fully connected weights) that tr(K K^T) decays."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Conv2d)] + [self.fc.weight]

    def reset_landmark_head(self, num_points: int) -> None:
        """Swap the landmark head for one with ``num_points`` points (5 -> 68 transfer)."""
        self.landmark_head = nn.Linear(self.config.feature_dim, 2 * num_points)
        nn.init.zeros_(self.landmark_head.weight)
        nn.init.zeros_(self.landmark_head.bias)
        self.config = type(self.config)(**{**self.config.__dict__, "num_points": num_points})

    def reset_attribute_head(self, num_tasks: int) -> None:
        self.attribute_head = _linear(self.config.feature_dim, num_tasks)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_multiply_adds(model: TCDCN) -> int:
    """Multiply-adds of one forward pass (conv and linear layers)."""
    total = 0
    size = model.config.input_size
    for m in model.features:
        if isinstance(m, FactoredConv2d):
            k = m.kernel_size[0]
            total += (size - k + 1) * size * m.rank * m.in_channels * k  # the k x 1 part
            size = size - k + 1
            total += size * size * m.out_channels * m.rank * k  # the 1 x k part
        elif isinstance(m, nn.Conv2d):
            size = size - m.kernel_size[0] + 1
            total += size * size * m.out_channels * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.MaxPool2d):
            size //= 2
    for lin in (model.fc, model.landmark_head, model.attribute_head):
        total += lin.in_features * lin.out_features
    return total
