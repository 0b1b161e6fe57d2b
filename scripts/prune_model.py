"""Write a narrower or factored copy of a trained model as a checkpoint to train on (``train.init_from``).

    python scripts/prune_model.py RUN/best.pt --channels 20,32,48,64 --feature-dim 128 --out runs/pruned/init.pt
    tcdcn train --config configs/mtfl-5pt.yaml --out runs/pruned-ft --set model.channels=[20,32,48,64] \\
        --set model.feature_dim=128 --set train.init_from=runs/pruned/init.pt
    python scripts/prune_model.py RUN/best.pt --factor-ranks 0,16,0,0 --out runs/factored/init.pt

(the full recipe, with its learning rate and averaging stage: docs/models.md, "Cheaper networks and
distillation").

Keeps the most important channels of each conv layer and units of the fully connected layer
(``tcdcn.models.pruning.units_by_importance``: mean ReLU output times the norm of the weights that read the
unit), measured on crops of the config's training faces (ground-truth boxes; the validation split is left
alone). A mirror calibration folded into a shipped model's landmark head is taken out first, so the copy
predicts in the labels' convention, as a trained checkpoint does. ``--factor-ranks`` then replaces the
chosen layers by rank-r k x 1 and 1 x k pairs (``tcdcn.models.factoring``; the training config then needs
``--set model.factor_ranks=[...]``). Prints the validation error of the source
and of the copy, one pass, ground-truth boxes (``--no-score`` skips it).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from tcdcn.config import config_from_dict, config_to_dict, load_config
from tcdcn.data.dataset import FaceDataset, split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.evaluation.calibration import fold_landmark_offset
from tcdcn.evaluation.metrics import nme, normalised_face_errors
from tcdcn.models.checkpoint import atomic_save, landmark_shift_from_state, model_from_state, weights_payload
from tcdcn.models.factoring import factored
from tcdcn.models.network import TCDCN, count_multiply_adds
from tcdcn.models.pruning import pruned, units_by_importance
from tcdcn.training.transfer import load_pretrained


def parse_widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def one_pass_error(network: TCDCN, dataset: FaceDataset) -> float:
    """Mean normalised error of one pass on ground-truth crops (the trainer's validation figure)."""
    batch = dataset.batch(range(len(dataset)))
    with torch.no_grad():
        predicted = network.eval()(batch["images"])[0].numpy()  # (N, P, 2) in the crop frame
    target = batch["landmarks"].numpy()  # (N, P, 2)
    errors = normalised_face_errors(predicted, target, dataset.scheme.interocular_distance(target),
                                    batch["visible"].numpy())
    return nme(errors)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="shipped model name or checkpoint")
    p.add_argument("--channels", type=parse_widths, help="conv widths to keep, e.g. 16,24,32,48 (default: all)")
    p.add_argument("--feature-dim", type=int, help="fully connected units to keep (default: all)")
    p.add_argument("--factor-ranks", type=parse_widths,
                   help="per conv layer, 0 (whole) or the rank of its k x 1, 1 x k factoring, e.g. 0,16,0,0")
    p.add_argument("--config", default="configs/mtfl-5pt.yaml", help="its training split supplies the crops")
    p.add_argument("--faces", type=int, default=2000, help="training faces that measure importance")
    p.add_argument("--out", required=True)
    p.add_argument("--no-score", action="store_true")
    args = p.parse_args(argv)

    state = load_pretrained(args.source)
    network, source_cfg, scheme, task_names = model_from_state(state, args.source)
    shift = landmark_shift_from_state(state, network.num_points)
    if shift is not None:
        fold_landmark_offset(network, shift)  # back to the labels' convention
    cfg = load_config(args.config)
    train_faces, val_faces = split_faces(read_annotations(cfg.data.train), cfg.data)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(train_faces), size=min(args.faces, len(train_faces)), replace=False)
    train_set = FaceDataset([train_faces[i] for i in chosen], input_size=network.config.input_size, box_mode="gt")
    crops = train_set.batch(range(len(train_set)))["images"]  # (N, 1, S, S)
    channels = args.channels or tuple(network.config.channels)
    feature_dim = args.feature_dim or network.config.feature_dim
    small = network
    try:
        if channels != tuple(network.config.channels) or feature_dim != network.config.feature_dim:
            small = pruned(network, units_by_importance(network, crops, channels, feature_dim))
        if args.factor_ranks:
            small = factored(small, args.factor_ranks)
    except ValueError as exc:  # widths or ranks this network cannot take
        p.error(f"{args.source}: {exc}")
    out_cfg = config_from_dict({**config_to_dict(source_cfg), "model": config_to_dict(small.config)})
    small.config = out_cfg.model
    atomic_save(weights_payload(small, out_cfg, scheme, task_names), args.out)
    print(f"{args.out}: channels {list(out_cfg.model.channels)}, feature_dim {out_cfg.model.feature_dim}, "
          f"factor_ranks {list(out_cfg.model.factor_ranks)}, "
          f"{count_multiply_adds(small) / 1e6:.1f}M multiply-adds (source {count_multiply_adds(network) / 1e6:.1f}M)")
    if not args.no_score:
        val_set = FaceDataset(val_faces, input_size=network.config.input_size, box_mode="gt")
        print(f"validation, one pass, labels' convention: source {100 * one_pass_error(network, val_set):.3f}%, "
              f"copy {100 * one_pass_error(small, val_set):.3f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
