"""The local stage's network (torch) and its ONNX export; the geometry and the runtime are
``tcdcn.inference.local_stage``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data.patches import PatchGeometry

TRUNK_FEATURES = 48 * 4 * 4  # the trunk's output for a 48x48 patch
HEAD_UNITS = 128


class LocalStageNetwork(nn.Module):
    """A convolutional trunk shared by every patch; per patch group, a head on [trunk features, the group's
    first-stage points in patch sides] -> the group's residuals in patch sides. The last layers start at zero:
    an untrained stage returns the first stage's points."""

    def __init__(self, geometry: PatchGeometry) -> None:
        super().__init__()
        if geometry.patch_size != 48:
            raise ValueError(f"the local stage's trunk takes 48x48 patches, got {geometry.patch_size}")
        self.groups = tuple(tuple(group) for _, group in geometry.scheme.patch_groups)
        self.num_points = geometry.scheme.num_points
        self.patch_size = geometry.patch_size
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # 48 -> 44 -> 22
            nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),  # 20 -> 10
            nn.Conv2d(32, 48, 3), nn.ReLU(), nn.MaxPool2d(2),  # 8 -> 4
            nn.Flatten(),
        )
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(TRUNK_FEATURES + 2 * len(group), HEAD_UNITS), nn.ReLU(),
                          nn.Linear(HEAD_UNITS, 2 * len(group)))
            for group in self.groups)
        # Heads answer group by group; this puts the points back in the scheme's order (not saved: it follows
        # from the scheme).
        self.register_buffer("order", torch.tensor([i for group in self.groups for i in group]).argsort(),
                             persistent=False)
        for head in self.heads:
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
        self.to(memory_format=torch.channels_last)  # as models.network.TCDCN: torch's fast CPU layout

    def forward(self, patches: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        b, g = patches.shape[:2]  # (B, G, S, S)
        flat = patches.reshape(b * g, 1, self.patch_size, self.patch_size)  # (B*G, 1, S, S)
        features = self.trunk(flat).reshape(b, g, -1)  # (B, G, F)
        parts = []
        for k, group in enumerate(self.groups):
            x = torch.cat([features[:, k], relative[:, list(group)].reshape(b, -1)], dim=1)  # (B, F + 2n)
            parts.append(self.heads[k](x).reshape(b, len(group), 2))
        return torch.cat(parts, dim=1)[:, self.order]  # (B, P, 2) in the scheme's order


def export_local_stage(network: LocalStageNetwork, geometry: PatchGeometry, path: str | Path,
                       opset: int = 17) -> Path:
    """Write the stage as ONNX with its geometry in the metadata (``LocalStage`` reads both)."""
    import onnx

    from .denormals import flush_onnx_initializers

    path = Path(path)
    network = network.eval()
    groups = len(geometry.sides)
    example = (torch.zeros(1, groups, geometry.patch_size, geometry.patch_size),
               torch.zeros(1, geometry.scheme.num_points, 2))
    torch.onnx.export(network, example, str(path), input_names=["patches", "relative"], output_names=["residual"],
                      dynamic_axes={"patches": {0: "faces"}, "relative": {0: "faces"}, "residual": {0: "faces"}},
                      opset_version=opset, dynamo=False)
    model = onnx.load(str(path))
    flush_onnx_initializers(model)  # denormal weights cost some x86 CPUs many times the time
    for key, value in geometry.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path
