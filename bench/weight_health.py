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
from tcdcn.models.network import TCDCN, count_multiply_adds, count_parameters
from tcdcn.models.pruning import conv_layers, live_units, pruned


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
    alive = live_units(network, crops)
    layers: list[dict[str, Any]] = []
    named: list[tuple[str, nn.Module]] = [(f"conv{i}", m) for i, m in enumerate(conv_layers(network))]
    for name, module in named + [("fc", network.fc)]:
        # A factored layer's weights are its two parts' (k x 1 and 1 x k); its units, its output channels.
        weight = torch.cat([w.detach().flatten() for n, w in module.named_parameters() if n.endswith("weight")])
        units = network.fc.out_features if name == "fc" else module.out_channels
        layers.append({"layer": name, "weights": weight.numel(), "zero_weights": int((weight == 0).sum()),
                       "units": units, "dead_units": units - len(alive[name])})
    small = pruned(network, alive).eval()
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
