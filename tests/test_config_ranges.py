"""Every configuration key has a valid range or set of choices, checked at load; out-of-range values,
NaN and infinity are refused with the key's name, from the API and in one line from the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from tcdcn.cli import main
from tcdcn.config import CHOICES, RANGES, Config, ConfigError, _numeric_keys, config_from_dict, config_to_dict


def _invalid_values(key: str) -> list[float]:
    valid = RANGES[key]
    values = [math.nan, math.inf, -math.inf]
    if valid.low is not None:
        values.append(valid.low if valid.low_open else valid.low - 1)
    if valid.high is not None:
        values.append(valid.high if valid.high_open else valid.high + 1)
    return values


def _with(key: str, value: object) -> dict:
    values = config_to_dict(Config())
    section, name = key.split(".")
    default = values[section][name]
    # A per-layer list that is empty by default (model.factor_ranks) takes one value per conv layer.
    length = len(default) or len(values["model"]["channels"]) if isinstance(default, list) else 0
    values[section][name] = [value] * length if isinstance(default, list) else value
    return values


def test_every_numeric_key_has_a_range() -> None:
    keys = {key for key, _ in _numeric_keys(Config())}
    assert keys == set(RANGES), f"missing: {keys - set(RANGES)}; stale: {set(RANGES) - keys}"


def test_defaults_are_inside_their_ranges() -> None:
    config_from_dict(config_to_dict(Config()))


@pytest.mark.parametrize("key", sorted(RANGES))
def test_out_of_range_values_are_refused_by_name(key: str) -> None:
    integer = isinstance(getattr(getattr(Config(), key.split(".")[0]), key.split(".")[1]), int | tuple)
    for value in _invalid_values(key):
        if integer and not math.isfinite(value):
            continue  # an integer key takes no NaN or infinity: the type check refuses those first
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            config_from_dict(_with(key, int(value) if integer else value))


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_unknown_choices_are_refused_by_name(key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(_with(key, "no-such-choice"))


def test_unknown_scheme_and_task_are_refused() -> None:
    with pytest.raises(ConfigError, match="data.scheme"):
        config_from_dict(_with("data.scheme", "dlib-81"))
    with pytest.raises(ConfigError, match="data.tasks: unknown task"):
        config_from_dict(_with("data.tasks", "beard"))


@pytest.mark.parametrize("override", ["train.learning_rate=-1", "train.learning_rate=.nan", "train.epochs=0",
                                      "multitask.covariance_interval=0", "model.input_size=0",
                                      "train.device=tpu", "data.tasks=[beard]", "train.batch_size=1.5"])
def test_cli_reports_invalid_overrides_in_one_line(tmp_path: Path, override: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"train": {"epochs": 1}}))
    code = main(["-q", "train", "--config", str(config), "--out", str(tmp_path / "run"), "--set", override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("tcdcn: error: ") and override.split("=")[0] in err
    assert not (tmp_path / "run").exists()
