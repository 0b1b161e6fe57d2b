"""The ``tcdcn`` command: train, evaluate, predict (and more sub-commands added by later modules)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .errors import TcdcnError

log = logging.getLogger("tcdcn")


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import Trainer

    cfg = load_config(args.config, args.set)
    trainer = Trainer(cfg, args.out)
    if args.resume:
        trainer.resume(args.resume)
    summary = trainer.fit()
    log.info("done: best validation NME %.2f%% (weights: %s)", 100 * summary["best_val_nme"], f"{args.out}/best.pt")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tcdcn", description="TCDCN facial landmark detection")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--out", required=True, help="run folder: checkpoints (last.pt, best.pt), history.jsonl")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint (e.g. RUN/last.pt)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except TcdcnError as exc:
        print(f"tcdcn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tcdcn: interrupted", file=sys.stderr)
        return 130
