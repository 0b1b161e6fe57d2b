"""``tcdcn train``: one training run from a YAML config into a run folder."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..errors import TcdcnError

log = logging.getLogger("tcdcn")

# What a run folder holds once training has started; any of them means --out is taken.
RUN_FILES = ("last.pt", "best.pt", "history.jsonl")


def add_command(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train a model from a YAML config")
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--out", required=True, help="run folder: checkpoints (last.pt, best.pt), history.jsonl")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint (e.g. RUN/last.pt)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (without it, an existing run is refused)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable; default: none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``tcdcn train``: refuses a folder holding a run unless ``--resume`` or ``--overwrite`` says what to do."""
    from ..config import load_config
    from ..training.trainer import Trainer

    cfg = load_config(args.config, args.set)
    existing = [name for name in RUN_FILES if (Path(args.out) / name).exists()]
    if existing and not (args.resume or args.overwrite):
        raise TcdcnError(f"{args.out}: already holds a training run ({', '.join(existing)}); continue it with "
                         f"--resume {Path(args.out) / 'last.pt'}, or replace it with --overwrite")
    trainer = Trainer(cfg, args.out)
    if args.resume:
        trainer.resume(args.resume)
    summary = trainer.fit()
    if trainer.dist.is_main:
        log.info("done: best validation NME %.2f%% (weights: %s)", 100 * summary["best_val_nme"], f"{args.out}/best.pt")
    return 0
