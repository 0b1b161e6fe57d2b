"""How much of a trained network is alive: zero weights per layer, and units that never fire on real faces.

For each conv layer: the weights that are exactly zero (after the denormal flush every shipped file gets),
and the output channels whose ReLU output is zero at every position for every validation face (dead
channels). For the fully connected layer: units zero on every face. Then the network with its dead
channels and units removed is built and checked to give the same outputs (it is the same function),
and its parameter and multiply-add counts are reported: what pruning the dead parts would save.

    python bench/weight_health.py --model mtfl-5pt --config configs/mtfl-5pt.yaml --out bench/results/weight_health.json

``--time`` also exports both networks to ONNX and times them with onnxruntime, one thread, one crop per
call, over the validation crops (best of 3 passes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from host import host_facts
from torch import nn

from tcdcn.config import load_config
from tcdcn.data.dataset import FaceDataset, split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.models.denormals import zero_fraction
from tcdcn.models.network import TCDCN, count_multiply_adds, count_parameters, standardise


def layer_activity(network: TCDCN, crops: torch.Tensor) -> dict[str, np.ndarray]:
    """Per conv layer and for fc: the largest ReLU output of each channel/unit over all faces and positions."""
    peaks: dict[str, np.ndarray] = {}
    x = standardise(crops, tuple(crops.shape[1:]))  # (N, 1, S, S)
    conv_index = 0
    with torch.no_grad():
        for module in network.features:
            x = module(x)
            if isinstance(module, nn.ReLU):
                peaks[f"conv{conv_index}"] = x.amax(dim=(0, 2, 3)).numpy()  # (C,)
                conv_index += 1
        features = torch.relu(network.fc(x.flatten(1)))  # (N, D)
    peaks["fc"] = features.amax(dim=0).numpy()  # (D,)
    return peaks


def pruned(network: TCDCN, alive: dict[str, np.ndarray]) -> TCDCN:
    """The same function without dead conv channels and fc units (their outputs are always zero)."""
    convs = [m for m in network.features if isinstance(m, nn.Conv2d)]
    keep = [np.flatnonzero(alive[f"conv{i}"]) for i in range(len(convs))]
    cfg = network.config
    small_cfg = type(cfg)(**{**cfg.__dict__, "channels": [len(k) for k in keep],
                             "feature_dim": int(alive["fc"].sum())})
    small = TCDCN(small_cfg, network.num_tasks)
    small_convs = [m for m in small.features if isinstance(m, nn.Conv2d)]
    previous = np.arange(1)
    with torch.no_grad():
        for conv, target, kept in zip(convs, small_convs, keep):
            target.weight.copy_(conv.weight[kept][:, previous])
            target.bias.copy_(conv.bias[kept])
            previous = kept
        s = network.feature_map_size
        columns = (previous[:, None] * s * s + np.arange(s * s)[None, :]).ravel()  # fc inputs of live channels
        units = np.flatnonzero(alive["fc"])
        small.fc.weight.copy_(network.fc.weight[units][:, columns])
        small.fc.bias.copy_(network.fc.bias[units])
        for head, small_head in ((network.landmark_head, small.landmark_head),
                                 (network.attribute_head, small.attribute_head)):
            small_head.weight.copy_(head.weight[:, units])
            small_head.bias.copy_(head.bias)
    return small.eval()


def onnx_latency(network: TCDCN, model: LandmarkModel, crops: np.ndarray, passes: int = 3) -> float:
    """Mean ms per crop of ``network`` exported to ONNX, one thread, one crop per call, best of ``passes``."""
    import tempfile
    import time

    from tcdcn.inference.backends.onnx import OnnxLandmarkModel
    from tcdcn.inference.export import export_onnx

    with tempfile.TemporaryDirectory() as tmpdir:
        path = export_onnx(network, Path(tmpdir) / "net.onnx", scheme=model.scheme.name, task_names=model.task_names)
        runner = OnnxLandmarkModel(path, threads=1)
    for crop in crops[:16]:  # warm-up
        runner.run_network(crop[None])
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for crop in crops:
            runner.run_network(crop[None])
        best = min(best, (time.perf_counter() - start) / len(crops))
    return 1000.0 * best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtfl-5pt")
    p.add_argument("--config", default="configs/mtfl-5pt.yaml", help="the model's training config (its "
                   "validation split supplies the faces)")
    p.add_argument("--out", default="", help="JSON report (printed in any case)")
    p.add_argument("--time", action="store_true", help="also time both networks in onnxruntime (1 thread)")
    args = p.parse_args(argv)
    model = LandmarkModel.load(args.model)
    network = model.network
    cfg = load_config(args.config)
    _, val_faces = split_faces(read_annotations(cfg.data.train), cfg.data)
    dataset = FaceDataset(val_faces, input_size=model.input_size, box_mode="gt")
    crops = dataset.batch(range(len(dataset)))["images"]  # (N, 1, S, S)
    peaks = layer_activity(network, crops)
    alive = {name: peak > 0 for name, peak in peaks.items()}
    layers: list[dict[str, Any]] = []
    named = [(f"conv{i}", m) for i, m in enumerate(m for m in network.features if isinstance(m, nn.Conv2d))]
    for name, module in named + [("fc", network.fc)]:
        weight = module.weight.detach()
        layers.append({"layer": name, "weights": weight.numel(), "zero_weights": int((weight == 0).sum()),
                       "units": len(alive[name]), "dead_units": int((~alive[name]).sum())})
    small = pruned(network, alive)
    with torch.no_grad():
        full_out = network(crops)[0]
        small_out = small(crops)[0]
    zeros, total = zero_fraction(network.state_dict())
    report = {
        "model": args.model, "validation_faces": len(val_faces), "host": host_facts(),
        "parameters": total, "zero_parameters": zeros, "zero_fraction": zeros / total,
        "layers": layers,
        "pruned": {"channels": small.config.channels, "feature_dim": small.config.feature_dim,
                   "parameters": count_parameters(small), "multiply_adds": count_multiply_adds(small),
                   "multiply_adds_full": count_multiply_adds(network),
                   "max_landmark_difference": float((full_out - small_out).abs().max())},
    }
    if args.time:
        report["ms_per_crop_onnxruntime_1_thread"] = {
            "full": onnx_latency(network, model, crops.numpy()), "pruned": onnx_latency(small, model, crops.numpy())}
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
