"""The ``tcdcn`` command: ``train``, ``evaluate``, ``predict``, ``export`` and ``study``.

Each command lives in its own module (``cli/train.py``, ...) with ``add_command(subparsers)``, which declares its
arguments, and ``run(args)``, which returns the exit status. ``main`` is the one place where errors become one
line on stderr and an exit status: 2 for an error a user can act on (``TcdcnError``, a file that cannot be read
or written), 130 for Ctrl-C, 3 for a defect (``TCDCN_DEBUG=1`` shows its traceback). Command modules import
only what their arguments need at module level; the work (torch, training, studies) is imported when a command
runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import TcdcnError
from ..version import __version__
from . import evaluate, export, predict, study, train
from .arguments import OneLineParser, configure_from_arguments

# In the order ``tcdcn --help`` lists them.
COMMANDS = (train, evaluate, predict, export, study)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="tcdcn", description="TCDCN facial landmark detection")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    parser.add_argument("--version", action="version", version=f"tcdcn {__version__}",
                        help="print the version (tcdcn X.Y.Z) and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    # Set on every call: in-process callers (tests, scripts) must not inherit a previous call's settings.
    configure_from_arguments(args)
    try:
        return int(args.func(args))
    except TcdcnError as exc:
        print(f"tcdcn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tcdcn: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file the command writes or reads outside the checked paths
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"tcdcn: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a defect: still one line, the traceback on request
        if os.environ.get("TCDCN_DEBUG"):
            raise
        print(f"tcdcn: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(set TCDCN_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 3
