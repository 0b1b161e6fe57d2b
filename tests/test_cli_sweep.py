"""Every command-line option given a value it cannot take, and the commands' usual mistakes: each ends
with one line on stderr, a non-zero exit status and no traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tcdcn.cli import build_parser, main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
INVALID_NUMBERS = ("abc", "nan", "inf", "-1000000000", "1.5e999", "")
INVALID_CHOICE = "no-such-choice"


def _required_arguments(tmp: Path) -> dict[str, list[str]]:
    config = tmp / "config.yaml"
    config.write_text("train:\n  epochs: 1\n")
    return {
        "train": ["--config", str(config), "--out", str(tmp / "run")],
        "evaluate": ["--data", str(tmp / "absent.txt")],
        "predict": [str(EXAMPLE), "--out", str(tmp / "out")],
        "export": ["--model", "mtfl-5pt", "--out", str(tmp / "model.onnx")],
        "study": [],
    }


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _sweep_cases() -> list[tuple[str, str, str]]:
    """(command, option, invalid value) for every option that takes a value of a checked kind."""
    cases = []
    for command, sub in _subcommands().items():
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0:
                continue
            option = action.option_strings[-1]
            if action.choices is not None:
                cases.append((command, option, INVALID_CHOICE))
            elif action.type is not None and action.type is not str:
                cases += [(command, option, value) for value in INVALID_NUMBERS]
    return cases


def test_every_numeric_option_has_a_checked_type() -> None:
    """Plain int/float types would let 0, negative and NaN values through to the arithmetic."""
    loose = [(command, action.option_strings[-1]) for command, sub in _subcommands().items()
             for action in sub._actions if action.type in (int, float)]
    assert not loose, f"options typed plain int/float: {loose}"


def _one_line_failure(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code not in (0, None), f"{argv}: exit status 0"
    assert "Traceback" not in err and len(err.splitlines()) == 1, f"{argv}:\n{err}"
    assert err.startswith(("tcdcn", "python -m tcdcn")), err
    return err


@pytest.mark.parametrize(("command", "option", "value"), _sweep_cases(),
                         ids=lambda v: str(v) if v != "" else "empty")
def test_invalid_option_values_end_in_one_line(command: str, option: str, value: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-q", command, *_required_arguments(tmp_path)[command], option, value]
    err = _one_line_failure(argv, capsys)
    assert option in err or "invalid choice" in err


def test_usual_mistakes_end_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    mistakes = [
        ["predict", str(EXAMPLE), "--out", str(a_file)],  # --out is a file
        ["evaluate", "--data", str(tmp_path / "absent.txt")],  # no such annotation file
        ["evaluate", "--model", str(tmp_path / "absent.pt"), "--data", str(a_file)],
        ["export", "--model", "mtfl-5pt", "--out", str(tmp_path / "model.txt")],  # not .onnx
        ["export", "--model", "no-such-model", "--out", str(tmp_path / "m.onnx")],
        ["train", "--config", str(a_file), "--out", str(tmp_path / "run")],  # not a YAML mapping
        ["train", "--config", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "run")],
    ]
    import os
    if os.geteuid() != 0:  # root writes into read-only folders
        mistakes += [
            ["export", "--model", "mtfl-5pt", "--out", str(locked / "sub" / "m.onnx")],
            ["predict", str(EXAMPLE), "--out", str(locked / "out")],
        ]
    for argv in mistakes:
        _one_line_failure(["-q", *argv], capsys)


def test_ced_path_is_checked_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "ced.png"
    folder.mkdir()  # a folder where the PNG must go
    err = _one_line_failure(["-q", "evaluate", "--data", str(tmp_path / "absent.txt"), "--ced", str(folder)], capsys)
    assert "ced.png" in err and "is a folder" in err
