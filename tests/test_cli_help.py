"""The command line's help and version: every option with a default says it, `tcdcn --version` answers."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

import tcdcn
from tcdcn.cli import build_parser, main


def _options(parser: argparse.ArgumentParser, name: str = "tcdcn") -> Iterator[tuple[str, argparse.Action]]:
    """(command, action) of every option of the parser and of its commands' parsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from _options(sub, f"{name} {command}")
        else:
            yield name, action


def test_every_option_with_a_default_shows_it_in_its_help() -> None:
    missing = []
    checked = 0
    for command, action in _options(build_parser()):
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or action.help == argparse.SUPPRESS:
            continue
        checked += 1
        help_text = action.help or ""
        # An empty list (a repeatable option given no value) has nothing to show but "none".
        shows = "default: none" in help_text if default == [] else "%(default)" in help_text
        if not shows:
            missing.append(f"{command} {'/'.join(action.option_strings) or action.dest} (default {default!r})")
    assert checked > 15  # the walk reached every command's options
    assert not missing, "options whose help omits their default: " + "; ".join(missing)


def test_help_renders_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for shown in ("(default mtfl-5pt)", "(default auto)", "(default tcdcn-out)", "(default 4096)"):
        assert shown in text


def test_version_prints_the_package_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tcdcn {tcdcn.__version__}"
