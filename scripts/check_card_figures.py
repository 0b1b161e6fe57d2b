"""Re-measure a shipped model's card figures by their own commands, on this host.

    python scripts/check_card_figures.py mtfl-5pt [--only aflw] [--update] [--figures-from OLD_CARD.json]

Runs each figure's command once (figures sharing a command share the run), reads the JSON object it prints
(``bench/validation.py`` and ``tcdcn evaluate --json``), and prints the card's value beside the measured one.
The field read follows the figure's name: ``*failure_rate*`` the failure rate, ``*interpupil*`` the
inter-pupil error, anything else the (inter-ocular) mean error. Figures whose command is neither (calibration
printouts) or needs files that are not here are listed as skipped. ``--update`` writes the measured values
into the card, rounded as the card rounds them. New weights shipped under a name lose the card's figures
(``ship_model.py``); ``--figures-from`` takes the list (names, descriptions, commands) from another card
file, e.g. the previous one from git, to measure them all again for the new weights (those it cannot
measure are dropped). Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from tcdcn.models.registry import SHIPPED

REPO = Path(__file__).resolve().parents[1]


def runnable(command: str) -> list[str] | None:
    """The argument list that runs ``command`` with this interpreter, or None for a command this script
    cannot read figures from."""
    words = shlex.split(command)
    if words[:2] == ["python", "bench/validation.py"]:
        return [sys.executable, *words[1:]]
    if words[:2] == ["tcdcn", "evaluate"] and "--json" in words:
        return [sys.executable, "-m", "tcdcn", *words[1:]]
    return None


def field_for(name: str) -> str:
    """The key of the command's JSON output that a figure of this name reports."""
    if "failure_rate" in name:
        return "failure_rate"
    if "interpupil" in name:
        return "nme_interpupil"
    return "nme"


def decimals_of(value: float) -> int:
    """Digits after the point in the card's value (the precision it was recorded at)."""
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 4


def measure(command: str) -> dict[str, Any] | str:
    """The command's JSON output, or a one-line reason it has none."""
    argv = runnable(command)
    if argv is None:
        return "not a validation.py or evaluate --json command"
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"exit {done.returncode}: {last}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else "no JSON on stdout"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a shipped model's name")
    p.add_argument("--only", default="", help="only figures whose name contains this text")
    p.add_argument("--update", action="store_true", help="write the measured values into the card")
    p.add_argument("--figures-from", type=Path, help="another card file whose figures to measure")
    args = p.parse_args()

    if args.model not in SHIPPED:
        raise SystemExit(f"check_card_figures.py: {args.model!r} is not a shipped model ({', '.join(SHIPPED)})")
    card_path = SHIPPED[args.model].card
    card = json.loads(card_path.read_text())
    if args.figures_from is not None:
        card["figures"] = json.loads(args.figures_from.read_text())["figures"]
    runs: dict[str, dict[str, Any] | str] = {}
    changed = 0
    kept: list[dict[str, Any]] = []  # with --figures-from, an unmeasured figure would describe other weights
    for figure in card["figures"]:
        if args.only not in figure["name"]:
            kept.append(figure)
            continue
        command = figure["command"]
        if command not in runs:
            runs[command] = measure(command)
        output = runs[command]
        key = field_for(figure["name"])
        if isinstance(output, str) or output.get(key) is None:
            reason = output if isinstance(output, str) else f"no {key!r} in the output"
            print(f"{figure['name']}: skipped ({reason})" + (", dropped" if args.figures_from else ""))
            if args.figures_from is None:
                kept.append(figure)
            continue
        kept.append(figure)
        measured = round(float(output[key]), decimals_of(figure["value"]))
        mark = "" if measured == figure["value"] else "  <- differs"
        print(f"{figure['name']}: card {figure['value']}, measured {measured}{mark}")
        if args.update and (measured != figure["value"] or args.figures_from is not None):
            figure["value"] = measured
            changed += 1
    card["figures"] = kept
    if args.update and (changed or args.figures_from is not None):
        card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        print(f"{card_path}: {changed} figure(s) updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
