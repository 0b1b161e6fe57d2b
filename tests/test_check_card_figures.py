"""scripts/check_card_figures.py: which output field a figure reads, which commands it runs, and failures."""

from __future__ import annotations

import sys

from repo_scripts import REPO, load_file_module

check = load_file_module(REPO / "scripts" / "check_card_figures.py", "check_card_figures_under_test")


def test_field_follows_the_figure_name() -> None:
    assert check.field_for("aflw_failure_rate_box_image") == "failure_rate"
    assert check.field_for("val_nme_interpupil_grid") == "nme_interpupil"
    assert check.field_for("val_nme_interocular") == "nme"
    assert check.field_for("w300_5pt_nme_box_detect") == "nme"


def test_only_validation_and_json_evaluate_commands_run_with_this_interpreter() -> None:
    assert check.runnable("python bench/validation.py --backend int8") == [
        sys.executable, "bench/validation.py", "--backend", "int8"]
    assert check.runnable("tcdcn evaluate --model m --data d --json")[:3] == [sys.executable, "-m", "tcdcn"]
    assert check.runnable("tcdcn evaluate --model m --data d") is None  # no JSON to read
    assert check.runnable("python scripts/ship_model.py RUN/averaged.pt candidate") is None


def test_card_precision_is_kept() -> None:
    assert check.decimals_of(0.0767) == 4
    assert check.decimals_of(0.037) == 3
    assert check.decimals_of(0.0) == 1


def test_a_failing_command_gives_its_last_error_line() -> None:
    reason = check.measure("tcdcn evaluate --model mtfl-5pt --data no/such/list.txt --json")
    assert isinstance(reason, str) and reason.startswith("exit ") and "no/such/list.txt" in reason
