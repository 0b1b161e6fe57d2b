"""The typed config: defaults, the shipped YAML, rejection of unknown keys and wrong types, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcdcn.config import (
    Config,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from tcdcn.errors import AnnotationError, ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = REPO_ROOT / "configs" / "mtfl-5pt.yaml"


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load() -> None:
    cfg = config_from_dict({})
    assert cfg == Config()
    assert cfg.model.channels == (20, 48, 64, 80)
    assert cfg.model.kernels == (5, 5, 3, 3)
    assert cfg.model.input_size == 60 and cfg.model.feature_dim == 256 and cfg.model.num_points == 5
    assert len(cfg.data.tasks) == 8
    assert cfg.multitask.coefficients == "dynamic"


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_yaml(tmp_path, "")) == Config()


def test_shipped_config_loads() -> None:
    cfg = load_config(SHIPPED_CONFIG)
    assert cfg.data.scheme == "mtfl-5"
    assert cfg.data.tasks[0] == "male" and len(cfg.data.tasks) == 8
    assert cfg.model == ModelConfig()
    assert cfg.objective.landmark_loss == "wing" and cfg.objective.landmark_weight == 3.0
    assert isinstance(cfg.train.min_learning_rate, float) and cfg.train.min_learning_rate == 2e-5
    assert cfg.train.threads == 2


@pytest.mark.parametrize(
    "values, dotted",
    [
        ({"trian": {}}, "trian"),
        ({"train": {"epocs": 3}}, "train.epocs"),
        ({"model": {"channels": [1], "kernels": [3], "dropout": 0.5}}, "model.dropout"),
    ],
)
def test_unknown_key_names_the_dotted_key(values: dict, dotted: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown config key\(s\): {dotted}\b"):
        config_from_dict(values)


def test_unknown_key_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "train:\n  epochs: 3\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "train.lerning_rate" in str(info.value)


@pytest.mark.parametrize(
    "values, key",
    [
        ({"train": {"epochs": "10"}}, "train.epochs"),  # string for int
        ({"train": {"epochs": True}}, "train.epochs"),  # bool for int
        ({"train": {"epochs": 2.5}}, "train.epochs"),  # float for int
        ({"model": {"channels": 20.0}}, "model.channels"),  # float for tuple
        ({"model": {"channels": [20, "48", 64, 80]}}, r"model.channels\[1\]"),  # bad tuple item
        ({"augment": {"mirror": "yes"}}, "augment.mirror"),  # string for bool
        ({"augment": {"mirror": 1}}, "augment.mirror"),  # int for bool
        ({"objective": {"covariance_weight": True}}, "objective.covariance_weight"),  # bool for float
        ({"data": {"train": 3}}, "data.train"),  # int for str
        ({"data": "mtfl"}, "data"),  # scalar for a section
        ({"objective": {"landmark_loss": "l1"}}, "objective.landmark_loss"),  # not a known loss
        ({"train": {"init_layers": "fc"}}, "train.init_layers"),  # not a known layer group
        ({"objective": {"wing_width": 0.0}}, "objective.wing_width"),
    ],
)
def test_mistyped_value_names_the_key(values: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        config_from_dict(values)


def test_int_is_accepted_for_float_and_converted() -> None:
    cfg = config_from_dict({"train": {"learning_rate": 1}})
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)


@pytest.mark.parametrize(
    "values",
    [
        {"multitask": {"coefficients": "sometimes"}},
        {"train": {"optimizer": "rmsprop"}},
        {"model": {"channels": [20, 48], "kernels": [5, 5, 3]}},
        {"data": {"validation_fraction": 0.0}},
        {"multitask": {"tau": 0}},
        {"multitask": {"eps": 0.0}},
        {"augment": {"occlusion_probability": 1.5}},
        {"augment": {"blur_probability": -0.1}},
        {"augment": {"blur_sigma": 0.2}},
        {"augment": {"occlusion_size": 0.0}},
        {"train": {"epochs": 5, "weight_averaging_from": 6}},
        {"train": {"weight_averaging_from": -1}},
    ],
)
def test_invalid_values_are_rejected(values: dict) -> None:
    with pytest.raises(ConfigError):
        config_from_dict(values)


def test_overrides_parse_values_as_yaml(tmp_path: Path) -> None:
    cfg = load_config(SHIPPED_CONFIG, [
        "train.epochs=3",
        "model.channels=[8, 16, 16, 16]",
        "augment.mirror=false",
        "data.tasks=[]",
        "multitask.coefficients=fixed",
    ])
    assert cfg.train.epochs == 3
    assert cfg.model.channels == (8, 16, 16, 16)
    assert cfg.augment.mirror is False
    assert cfg.data.tasks == ()
    assert cfg.multitask.coefficients == "fixed"
    # Untouched keys keep the file's values.
    assert cfg.objective.landmark_weight == 3.0


def test_override_of_unknown_or_mistyped_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="train.epoch"):
        load_config(SHIPPED_CONFIG, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(SHIPPED_CONFIG, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(SHIPPED_CONFIG, ["train.epochs"])


def test_override_creates_a_missing_section(tmp_path: Path) -> None:
    cfg = load_config(_yaml(tmp_path, "train:\n  epochs: 2\n"), ["model.feature_dim=64"])
    assert cfg.model.feature_dim == 64 and cfg.train.epochs == 2


def test_round_trip_through_dict_and_yaml(tmp_path: Path) -> None:
    cfg = load_config(SHIPPED_CONFIG, ["train.epochs=7", "model.kernels=[3, 3, 3, 3]"])
    as_dict = config_to_dict(cfg)
    assert as_dict["model"]["kernels"] == [3, 3, 3, 3]  # plain lists: what YAML and checkpoints hold
    assert config_from_dict(as_dict) == cfg
    saved = tmp_path / "saved.yaml"
    save_config(cfg, saved)
    assert load_config(saved) == cfg


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_yaml(tmp_path, "train: [epochs: 3\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_yaml(tmp_path, "- 1\n- 2\n"))


def test_config_is_frozen() -> None:
    cfg = TrainConfig()
    with pytest.raises(AttributeError):
        cfg.epochs = 3  # type: ignore[misc]


def test_exclude_list_keeps_a_held_out_split_out_of_training_and_validation(tmp_path: Path) -> None:
    """data.exclude (configs/splits/helen-test.txt): the listed faces are in neither split; a list naming
    a face the data does not hold is refused by name."""
    from tcdcn.data.dataset import split_faces
    from tcdcn.data.formats import read_annotations

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "300w"
    if not data.is_dir():
        pytest.skip(f"shared data not found at {data}")
    split = Path(__file__).resolve().parents[1] / "configs" / "splits" / "helen-test.txt"
    faces = read_annotations(data)
    cfg = config_from_dict({"data": {"train": str(data), "scheme": "ibug-68", "tasks": [], "exclude": str(split)}})
    train, val = split_faces(faces, cfg.data)
    held_out = {line for line in split.read_text().splitlines() if line and not line.startswith("#")}
    assert len(train) + len(val) == len(faces) - len(held_out) == len(faces) - 200
    used = {Path(f.image_path).relative_to(data).as_posix() for f in train + val}
    assert not used & held_out
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("# a face that is not there\nhelen/trainset/no_such_face.jpg\n")
    bad = config_from_dict({"data": {"train": str(data), "scheme": "ibug-68", "tasks": [], "exclude": str(wrong)}})
    with pytest.raises(AnnotationError, match=r"wrong\.txt: 1 listed path\(s\) are not faces"):
        split_faces(faces, bad.data)
