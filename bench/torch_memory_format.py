"""The torch network in NCHW against channels-last memory order: inference, a training step, and where the time goes.

    python bench/torch_memory_format.py [--model mtfl-5pt] [--threads 1,2] [--batches 1,4,64] [--train-batch 64]
        [--repeats 5] [--out bench/results/torch_memory_format.json]

``models.network.TCDCN`` keeps its filters channels-last, so that every activation is; this bench builds the
model's network both ways (the NCHW twin: ``.to(memory_format=torch.contiguous_format)``) and times, per thread
count: inference on real crops (the first MTFL training faces with their ground-truth boxes) at each batch size,
ms per crop; one training step (forward, a least-squares landmark loss and a logistic attribute loss against the
faces' labels, backward, an Adam step) on ``--train-batch`` crops, ms per step; the largest difference between the
two layouts' outputs and gradients; and torch's profile of one inference batch of ``--train-batch`` crops, the
share of its time in max-pooling.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from host import host_facts, write_report

from tcdcn.data.formats import read_annotations
from tcdcn.geometry import apply_affines, box_from_landmarks, invert_affines, to_normalised
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.io.images import load_image, to_grey
from tcdcn.models.network import TCDCN


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtfl-5pt", help="shipped name or checkpoint")
    p.add_argument("--data", default="../shared/data/mtfl/training.txt", help="faces the crops are cut from")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batches", default="1,4,64")
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed passes (the best is reported)")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)

    model = LandmarkModel.load(args.model)
    batches = [int(b) for b in args.batches.split(",") if b]
    faces = read_annotations(args.data)[:max(max(batches), args.train_batch)]
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [box_from_landmarks(f.landmarks, model.scheme) for f in faces]
    crops, matrices = model.crops(greys, boxes)  # (N, 1, S, S), crop -> image
    image_points = np.stack([f.landmarks for f in faces])  # (N, P, 2)
    targets = to_normalised(apply_affines(invert_affines(matrices), image_points), model.input_size)  # (N, P, 2)
    labels = np.zeros((len(faces), len(model.task_names)), np.float32)  # attributes: the loss's cost, not its value
    channels_last = model.network
    nchw = copy.deepcopy(channels_last).to(memory_format=torch.contiguous_format)
    layouts = {"nchw": nchw, "channels_last": channels_last}
    agreement = compare(layouts, torch.from_numpy(crops[:args.train_batch]))

    rows = []
    for threads in [int(t) for t in args.threads.split(",") if t]:
        torch.set_num_threads(threads)
        for name, network in layouts.items():
            row: dict[str, Any] = {"layout": name, "threads": threads}
            network.eval()
            with torch.inference_mode():
                for batch in batches:
                    x = torch.from_numpy(crops[:batch])
                    row[f"ms_per_crop_batch_{batch}"] = round(best_ms(partial(network, x), args.repeats) / batch, 4)
            step = training_step(network, torch.from_numpy(crops[:args.train_batch]),
                                 torch.from_numpy(targets[:args.train_batch]).float(),
                                 torch.from_numpy(labels[:args.train_batch]))
            row["ms_per_training_step"] = round(best_ms(step, args.repeats), 2)
            row["max_pool_share"] = max_pool_share(network, torch.from_numpy(crops[:args.train_batch]))
            rows.append(row)
            print(json.dumps(row))
    report = {"model": args.model, "data": args.data, "train_batch": args.train_batch, "repeats": args.repeats,
              "layouts": rows, "agreement": agreement, "torch": torch.__version__, **host_facts()}
    print(json.dumps({"agreement": agreement}))
    if args.out:
        print(f"written: {write_report(args.out, report)}")
    return 0


def best_ms(call: Callable[[], Any], repeats: int, calls: int = 20) -> float:
    call()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return 1000.0 * best


def training_step(network: TCDCN, crops: torch.Tensor, targets: torch.Tensor,
                  labels: torch.Tensor) -> Callable[[], None]:
    """One optimiser step's work on a copy of ``network`` (the timed network is left as it was)."""
    trained = copy.deepcopy(network).train()
    optimiser = torch.optim.Adam(trained.parameters(), lr=1e-4)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        landmarks, logits = trained(crops)  # (B, P, 2), (B, T)
        loss = (landmarks - targets).square().sum(dim=(1, 2)).mean()
        if logits.shape[1]:
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        optimiser.step()

    return step


def compare(layouts: dict[str, TCDCN], crops: torch.Tensor) -> dict[str, float]:
    """Largest output and (relative) gradient difference between the layouts on the same crops."""
    outputs, gradients = {}, {}
    for name, network in layouts.items():
        twin = copy.deepcopy(network).train()
        landmarks, logits = twin(crops)
        (landmarks.square().sum() + logits.square().sum()).backward()
        outputs[name] = torch.cat([landmarks.flatten(1), logits], dim=1).detach()
        gradients[name] = [p.grad.detach().clone() for p in twin.parameters()]
    a, b = layouts
    relative = max(float((ga - gb).abs().max() / (gb.abs().max() + 1e-30))
                   for ga, gb in zip(gradients[a], gradients[b]))
    return {"max_output_difference": float((outputs[a] - outputs[b]).abs().max()),
            "max_relative_gradient_difference": relative}


def max_pool_share(network: TCDCN, crops: torch.Tensor) -> float:
    """The share of torch's CPU time in max-pooling over a few inference calls on ``crops``."""
    from torch.profiler import ProfilerActivity, profile

    network.eval()
    with torch.inference_mode():
        network(crops)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                network(crops)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    pooled = sum(e.self_cpu_time_total for e in events if "max_pool" in e.key)
    return round(pooled / total, 3) if total else 0.0


if __name__ == "__main__":
    raise SystemExit(main())
