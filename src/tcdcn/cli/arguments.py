"""Command-line arguments shared by the commands: checked number types (each refuses an out-of-range value with
one line naming it), the parser whose errors are one line, and the switches of progress reports and of the
test-time options."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..errors import BackendError
from ..inference.pipeline import CropLandmarkModel
from ..inference.test_time import MAX_BOX_REFINEMENTS, set_test_time_options
from ..progress import DEFAULT_INTERVAL_S, configure


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers in [low, high] (no upper bound when ``high`` is None)."""
    span = f">= {low}" if high is None else f"in {low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {value}")
        return value

    parse.__name__ = f"integer {span}"
    return parse


def float_at_least(low: float) -> Callable[[str], float]:
    """An argparse ``type`` accepting finite numbers >= ``low``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number >= {low:g}, got {text!r}") from None
        if not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"expected a finite number >= {low:g}, got {text}")
        return value

    parse.__name__ = f"number >= {low:g}"
    return parse


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), naming the command and
    pointing at its --help, like every other error of the command line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _interval_argument(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text}")
    return value


def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` and ``--progress-interval``, read by ``configure_from_arguments``."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress reports on stderr (also implied by -q)")
    parser.add_argument("--progress-interval", type=_interval_argument, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
                        help="when stderr is not a terminal, a progress line at most every SECONDS "
                             "(default %(default)g)")


def configure_from_arguments(args: argparse.Namespace) -> None:
    """Set the progress defaults from ``-q`` and the switches of ``add_progress_arguments``."""
    configure(enabled=not (getattr(args, "quiet", False) or getattr(args, "no_progress", False)),
              interval_s=getattr(args, "progress_interval", DEFAULT_INTERVAL_S))


BACKEND_HELP = ("auto runs onnxruntime: a shipped model on the graph its model card names (int8 where that scored "
                "as the float graph on validation), a checkpoint through a temporary ONNX export, int8 where a graph "
                "calibrated at load on its training split agrees with float32 on its validation faces; onnx runs the "
                "float32 graph; int8 a shipped model's int8 graph; torch a checkpoint in torch (default %(default)s)")


def add_test_time_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line switches of ``set_test_time_options`` (``--flip``, ``--multi-crop`` or ``--grid``,
    ``--box-refinements``); each left unset keeps the model's default."""
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="average each face with its mirror image, one network call on both (default: the "
                             "model's own, on for the shipped models and files exported from them, off for "
                             "trained checkpoints unless their config's inference section says otherwise)")
    crops = parser.add_mutually_exclusive_group()
    crops.add_argument("--multi-crop", action=argparse.BooleanOptionalAction, default=None,
                       help="average the predictions of slightly moved face boxes: the model's own crops "
                            "(mtfl-5pt: two, moved 0.02 box sides along the diagonal), or the 3x3 grid when it has "
                            "none; --no-multi-crop: the box alone (default: the model's own, on for mtfl-5pt and "
                            "files exported from it, off for 300w-68pt and for trained checkpoints unless their "
                            "config's inference section says otherwise)")
    crops.add_argument("--grid", dest="multi_crop", action="store_const", const="grid",
                       help="the 3x3 grid of crops 0.04 box sides apart instead: the most accurate plan measured, "
                            "at about 3x the default's time (docs/results.md; default: off)")
    parser.add_argument("--box-refinements", type=int_in(0, MAX_BOX_REFINEMENTS), default=None, metavar="K",
                        help="re-frame each face K times on the box of its predicted points before the last "
                             "pass (default: the model's own, 1 for mtfl-5pt and files exported from it, 0 for "
                             "300w-68pt and for trained checkpoints unless their config says otherwise)")
    parser.add_argument("--local-stage", action=argparse.BooleanOptionalAction, default=None,
                        help="refine the points on patches around them with the model's local stage (default: on "
                             "for 300w-68pt, the one model that ships one)")


def apply_test_time_arguments(model: CropLandmarkModel, args: argparse.Namespace) -> None:
    """``set_test_time_options`` from the switches ``add_test_time_arguments`` added."""
    try:
        set_test_time_options(model, args.flip, args.multi_crop, args.box_refinements, args.local_stage)
    except ValueError as exc:
        raise BackendError(f"--local-stage: {exc}") from None
