"""Score a model on the validation split its config carves from the training data (never the test set).

    python bench/validation.py --config configs/mtfl-5pt.yaml --model mtfl-5pt [--flip] [--multi-crop]

The split is the one ``Trainer`` uses (``data.validation_fraction``, ``data.split_seed``); faces are
framed with the ground-truth box convention, as during training.
"""

from __future__ import annotations

import argparse
import json

from tcdcn.cli.arguments import add_test_time_arguments, apply_test_time_arguments
from tcdcn.config import load_config
from tcdcn.data.dataset import split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.evaluation.protocol import evaluate
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.inference.test_time import test_time_summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/mtfl-5pt.yaml")
    p.add_argument("--model", default="mtfl-5pt")
    add_test_time_arguments(p)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    _, val_faces = split_faces(read_annotations(cfg.data.train), cfg.data)
    model = LandmarkModel.load(args.model)
    apply_test_time_arguments(model, args)
    summary = evaluate(model, val_faces, box="gt").summary()
    summary.update(model=args.model, config=args.config, **test_time_summary(model))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
