"""One typed configuration: frozen dataclasses, YAML as the file format only.

Unknown keys and wrongly typed values are rejected with the key's dotted path. The resolved config is
written into every checkpoint, so a checkpoint says how it was made.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    train: str = "../shared/data/mtfl/training.txt"
    test: str = "../shared/data/mtfl/testing.txt"
    scheme: str = "mtfl-5"
    validation_fraction: float = 0.1
    split_seed: int = 0
    # A list of image paths (relative to the folder of `train`, or to `train` itself when it is a folder;
    # '#' starts a comment) kept out of training and validation: a held-out test split, e.g.
    # configs/splits/helen-test.txt. Empty: none.
    exclude: str = ""
    # Auxiliary training faces of a coarser scheme that data.scheme derives (schemes.LandmarkScheme
    # .derivation_matrix), e.g. ../shared/data/mtfl/training.txt (5 points) beside 68-point faces: the points
    # derived from each auxiliary face's dense prediction are trained towards its annotation
    # (objective.auxiliary_weight). Any format read_annotations reads; empty: none. Never a test file.
    auxiliary_train: str = ""
    # Share of each step's faces drawn (with replacement) from the auxiliary faces; the main faces per step
    # stay train.batch_size, so an epoch is still one pass over data.train: round(batch_size * f / (1 - f))
    # auxiliary faces join every step (64 beside 64 at 0.5).
    auxiliary_fraction: float = 0.5
    # Carved from auxiliary_train with data.split_seed and never trained on: the auxiliary term's validation
    # figure (history.jsonl: val_auxiliary_nme). 0.1 with seed 0 is the carve configs/mtfl-5pt.yaml makes of
    # MTFL training.txt, so models started from mtfl-5pt never trained on these faces either.
    auxiliary_validation_fraction: float = 0.1
    # Attribute tasks trained beside the landmarks; empty = landmarks only ("FLD only").
    tasks: tuple[str, ...] = (
        "male", "smiling", "glasses",
        "pose_left_profile", "pose_left", "pose_frontal", "pose_right", "pose_right_profile",
    )


@dataclass(frozen=True)
class AugmentConfig:
    mirror: bool = True
    rotation_deg: float = 15.0  # uniform in +-rotation_deg
    scale: float = 0.15  # box side times a factor in [1 - scale, 1 + scale]
    shift: float = 0.06  # box centre moved by up to shift x side
    brightness: float = 0.3  # contrast/brightness jitter before per-image standardisation
    contrast: float = 0.3
    blur_probability: float = 0.0  # chance of a Gaussian blur of the crop (defocus, motion, low resolution)
    blur_sigma: float = 1.5  # its sigma, uniform in [0.5, blur_sigma] crop pixels
    occlusion_probability: float = 0.0  # chance of one grey rectangle over part of the crop (hands, objects)
    occlusion_size: float = 0.4  # its sides, uniform in [0.1, occlusion_size] x the crop side


@dataclass(frozen=True)
class ModelConfig:
    input_size: int = 60
    channels: tuple[int, ...] = (20, 48, 64, 80)
    kernels: tuple[int, ...] = (5, 5, 3, 3)
    feature_dim: int = 256
    num_points: int = 5
    # Per conv layer, 0 for a full k x k convolution or r > 0 for a factored one: a k x 1 convolution to r
    # channels, then a 1 x k one to the layer's width (a rank-r approximation; tcdcn.models.factoring).
    # Empty: every layer full (the paper's network).
    factor_ranks: tuple[int, ...] = ()


@dataclass(frozen=True)
class ObjectiveConfig:
    landmark_weight: float = 1.0  # the data term's step size relative to the others (eta1)
    covariance_weight: float = 1e-3  # weight of tr(W Upsilon^-1 W^T) (eta2); 0 or use_covariance=False drops it
    use_covariance: bool = True
    filter_decay: float = 5e-4  # weight of tr(K K^T)
    covariance_ridge: float = 1e-4  # added to Upsilon's diagonal before inverting
    # The landmark data term: "squared" is Eq. 9's least squares (the paper); "wing" is the wing loss of
    # Feng et al. (CVPR 2018), an extension that weighs small and medium errors more than least squares.
    landmark_loss: str = "squared"
    wing_width: float = 1 / 3  # w, in normalised crop units (1 = half the crop side: 10 px of 60)
    wing_curvature: float = 1 / 15  # epsilon, same units (2 px of 60)
    # Weight of the auxiliary term (data.auxiliary_train): the mean over auxiliary faces of the mean distance
    # between the points derived from the prediction and the annotated ones, over the annotation's
    # inter-ocular distance (its scheme's normalised error).
    auxiliary_weight: float = 1.0
    # Distillation (Hinton et al. 2015; an extension): a trained landmark model (checkpoint path or shipped
    # name, same crop size and points) whose answer on each augmented training crop is a second landmark
    # target, through the same loss, weighted by distillation_weight relative to the ground-truth term. It lets
    # a cheaper network learn from a wider one. Empty: none.
    distillation_teacher: str = ""
    distillation_weight: float = 1.0


@dataclass(frozen=True)
class MultitaskConfig:
    # "dynamic": Eq. 13-14; "fixed": all lambda_t = initial_coefficient; "early_stopping": ECCV 2014.
    coefficients: str = "dynamic"
    initial_coefficient: float = 1.0
    rho: float = 1000.0
    tau: int = 3  # strip length in evaluation points (each evaluation = one coefficient update)
    eps: float = 0.01
    covariance_interval: int = 100  # SGD steps between closed-form task covariance updates
    evaluations_per_epoch: int = 1
    early_stop_strip: int = 5  # k of the ECCV criterion
    early_stop_threshold: float = 5.0  # epsilon of the ECCV criterion
    # Training faces the ECCV criterion's training error is measured on, un-augmented, at every evaluation
    # point (a fixed, evenly spaced subset of the training split; all of it when smaller).
    early_stop_train_faces: int = 256


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    optimizer: str = "adam"  # "adam" or "sgd" (momentum 0.9)
    learning_rate: float = 2e-3
    min_learning_rate: float = 2e-5  # cosine schedule floor
    warmup_epochs: int = 1
    seed: int = 0
    threads: int = 0  # 0 = torch default
    device: str = "cpu"  # "cpu" or "cuda" (under torchrun each rank takes cuda:LOCAL_RANK)
    checkpoint_every_steps: int = 0  # 0 = once per epoch (always at least that)
    # Fine-tuning: start from a trained model (name or checkpoint) and swap its landmark head.
    init_from: str = ""
    # What init_from copies: "all" (conv filters and the shared fc layer; the source's input_size,
    # channels, kernels and feature_dim must equal this config's) or "features" (the conv filters only;
    # fc and heads start fresh, so input_size and feature_dim may differ: e.g. a larger crop for dense
    # points; channels may be wider than the source's, whose filters then fill the leading channels; a factored
    # layer (model.factor_ranks) is filled from a factored layer of the same rank and widths).
    init_layers: str = "all"
    # Stochastic weight averaging (Izmailov et al., 2018): from the end of this epoch on (1-based), the
    # weights at every epoch end join a uniform running average, scored on the validation split and
    # written to RUN/averaged.pt; 0 = off. Pair it with a flat schedule (min_learning_rate equal to
    # learning_rate), typically in a continuation run from a trained model (init_from).
    weight_averaging_from: int = 0


@dataclass(frozen=True)
class InferenceConfig:
    """The test-time options a trained checkpoint runs with by default (``tcdcn.inference.test_time``); the
    defaults run one pass on the box alone. ``tcdcn export`` writes them into the ONNX file."""

    mirror_average: bool = False  # also run each face mirrored and average the two answers
    multi_crop_grid_shift: float = 0.0  # 0: the box alone; else its 3x3 grid of crops this many box sides apart
    box_refinements: int = 0  # re-framings on the box of the previous answer's points before the last pass


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    multitask: MultitaskConfig = field(default_factory=MultitaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null")
        return None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def _build(cls: Any, values: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> Config:
    cfg = _build(Config, values)
    validate(cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return {k: (config_to_dict(v) if dataclasses.is_dataclass(v) else plain(v))
            for k, v in ((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg))}


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping, or ``ConfigError`` naming the file."""
    p = Path(path)
    try:
        values = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return values


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config; ``overrides`` are ``section.key=value`` strings (values parsed as YAML)."""
    p = Path(path)
    values = read_yaml_mapping(p)
    apply_overrides(values, overrides or [])
    try:
        return config_from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> None:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        parts = key.split(".")
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")


@dataclass(frozen=True)
class Range:
    """Valid values of a numeric config key (each element, for a list key); NaN and infinity never."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return " and ".join(p for p in (low, high) if p) or "finite"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1)

# The valid range of every numeric key, by dotted path; validate() rejects a numeric key missing here.
RANGES: dict[str, Range] = {
    "data.validation_fraction": Range(0, 1, low_open=True, high_open=True),
    "data.split_seed": NON_NEGATIVE,
    "data.auxiliary_fraction": Range(0, 1, low_open=True, high_open=True),
    "data.auxiliary_validation_fraction": Range(0, 1, low_open=True, high_open=True),
    "augment.rotation_deg": Range(0, 180),
    "augment.scale": Range(0, 1, high_open=True),
    "augment.shift": Range(0, 0.5),
    "augment.brightness": NON_NEGATIVE,
    "augment.contrast": Range(0, 1, high_open=True),
    "augment.blur_probability": FRACTION,
    "augment.blur_sigma": Range(0.5, 20),
    "augment.occlusion_probability": FRACTION,
    "augment.occlusion_size": Range(0.1, 1),
    "model.input_size": Range(16, 1024),
    "model.channels": AT_LEAST_ONE,
    "model.kernels": AT_LEAST_ONE,
    "model.factor_ranks": NON_NEGATIVE,
    "model.feature_dim": AT_LEAST_ONE,
    "model.num_points": AT_LEAST_ONE,
    "objective.landmark_weight": POSITIVE,
    "objective.covariance_weight": NON_NEGATIVE,
    "objective.filter_decay": NON_NEGATIVE,
    "objective.covariance_ridge": POSITIVE,
    "objective.wing_width": POSITIVE,
    "objective.wing_curvature": POSITIVE,
    "objective.auxiliary_weight": POSITIVE,
    "objective.distillation_weight": POSITIVE,
    "multitask.initial_coefficient": NON_NEGATIVE,
    "multitask.rho": POSITIVE,
    "multitask.tau": AT_LEAST_ONE,
    "multitask.eps": Range(0, 1, low_open=True),
    "multitask.covariance_interval": AT_LEAST_ONE,
    "multitask.evaluations_per_epoch": AT_LEAST_ONE,
    "multitask.early_stop_strip": AT_LEAST_ONE,
    "multitask.early_stop_threshold": NON_NEGATIVE,
    "multitask.early_stop_train_faces": AT_LEAST_ONE,
    "train.epochs": AT_LEAST_ONE,
    "train.batch_size": AT_LEAST_ONE,
    "train.learning_rate": POSITIVE,
    "train.min_learning_rate": NON_NEGATIVE,
    "train.warmup_epochs": NON_NEGATIVE,
    "train.seed": NON_NEGATIVE,
    "train.threads": NON_NEGATIVE,
    "train.checkpoint_every_steps": NON_NEGATIVE,
    "train.weight_averaging_from": NON_NEGATIVE,
    "inference.multi_crop_grid_shift": Range(0, 0.5, high_open=True),
    "inference.box_refinements": Range(0, 10),
}

# The valid values of every key that names something.
CHOICES: dict[str, tuple[str, ...]] = {
    "objective.landmark_loss": ("squared", "wing"),
    "multitask.coefficients": ("dynamic", "fixed", "early_stopping"),
    "train.optimizer": ("adam", "sgd"),
    "train.device": ("cpu", "cuda"),
    "train.init_layers": ("all", "features"),
}


def _numeric_keys(cfg: Config) -> list[tuple[str, Any]]:
    """(dotted key, value) of every int/float (or tuple of them) field, an empty tuple of them included."""
    out = []
    for section in dataclasses.fields(cfg):
        part = getattr(cfg, section.name)
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            items = value if isinstance(value, tuple) else (value,)
            if not items and str(f.type).startswith(("tuple[int", "tuple[float")):
                out.append((f"{section.name}.{f.name}", value))
            elif items and all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
                out.append((f"{section.name}.{f.name}", value))
    return out


def _check_ranges(cfg: Config) -> None:
    for key, value in _numeric_keys(cfg):
        valid = RANGES.get(key)
        if valid is None:
            raise ConfigError(f"{key}: no valid range declared (config.RANGES)")
        for item in value if isinstance(value, tuple) else (value,):
            if not valid.contains(float(item)):
                raise ConfigError(f"{key}: expected a value {valid.describe()}, got {item!r}")
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"{key}: expected {'|'.join(allowed)}, got {value!r}")


def validate(cfg: Config) -> None:
    from .attributes import ALL_TASKS
    from .schemes import SCHEMES

    _check_ranges(cfg)
    if cfg.data.scheme not in SCHEMES:
        raise ConfigError(f"data.scheme: expected one of {'|'.join(sorted(SCHEMES))}, got {cfg.data.scheme!r}")
    unknown = [t for t in cfg.data.tasks if t not in ALL_TASKS]
    if unknown:
        raise ConfigError(f"data.tasks: unknown task(s) {', '.join(map(repr, unknown))}; known: "
                          f"{', '.join(ALL_TASKS)}")
    if cfg.data.auxiliary_train and cfg.data.test and (
            os.path.normpath(cfg.data.auxiliary_train) == os.path.normpath(cfg.data.test)):
        raise ConfigError(f"data.auxiliary_train: {cfg.data.auxiliary_train} is data.test; test faces never train")
    if cfg.train.min_learning_rate > cfg.train.learning_rate:
        raise ConfigError(f"train.min_learning_rate ({cfg.train.min_learning_rate:g}) must not exceed "
                          f"train.learning_rate ({cfg.train.learning_rate:g})")
    if cfg.train.warmup_epochs > cfg.train.epochs:
        raise ConfigError(f"train.warmup_epochs ({cfg.train.warmup_epochs}) must not exceed train.epochs "
                          f"({cfg.train.epochs})")
    m = cfg.multitask
    if m.coefficients not in ("dynamic", "fixed", "early_stopping"):
        raise ConfigError(f"multitask.coefficients: expected dynamic|fixed|early_stopping, got {m.coefficients!r}")
    if cfg.train.device not in ("cpu", "cuda"):
        raise ConfigError(f"train.device: expected cpu|cuda, got {cfg.train.device!r}")
    if cfg.train.init_layers not in ("all", "features"):
        raise ConfigError(f"train.init_layers: expected all|features, got {cfg.train.init_layers!r}")
    if cfg.train.weight_averaging_from < 0 or cfg.train.weight_averaging_from > cfg.train.epochs:
        raise ConfigError(f"train.weight_averaging_from: expected 0 (off) or an epoch in 1..{cfg.train.epochs}, "
                          f"got {cfg.train.weight_averaging_from}")
    if cfg.train.optimizer not in ("adam", "sgd"):
        raise ConfigError(f"train.optimizer: expected adam|sgd, got {cfg.train.optimizer!r}")
    if len(cfg.model.channels) != len(cfg.model.kernels):
        raise ConfigError("model.channels and model.kernels must have the same length")
    if cfg.model.factor_ranks and len(cfg.model.factor_ranks) != len(cfg.model.channels):
        raise ConfigError(f"model.factor_ranks: expected one rank per conv layer ({len(cfg.model.channels)}) "
                          f"or none, got {len(cfg.model.factor_ranks)}")
    if not 0 < cfg.data.validation_fraction < 1:
        raise ConfigError("data.validation_fraction must be in (0, 1)")
    a = cfg.augment
    if not (0 <= a.blur_probability <= 1 and 0 <= a.occlusion_probability <= 1):
        raise ConfigError("augment.blur_probability and augment.occlusion_probability must be in [0, 1]")
    if a.blur_sigma < 0.5:
        raise ConfigError(f"augment.blur_sigma must be >= 0.5 (crop pixels), got {a.blur_sigma}")
    if not 0.1 <= a.occlusion_size <= 1:
        raise ConfigError(f"augment.occlusion_size must be in [0.1, 1] (fraction of the crop side), "
                          f"got {a.occlusion_size}")
    o = cfg.objective
    if o.landmark_loss not in ("squared", "wing"):
        raise ConfigError(f"objective.landmark_loss: expected squared|wing, got {o.landmark_loss!r}")
    if o.wing_width <= 0 or o.wing_curvature <= 0:
        raise ConfigError("objective.wing_width and objective.wing_curvature must be > 0")
    if m.tau < 1 or not 0 < m.eps <= 1:
        raise ConfigError("multitask.tau must be >= 1 and multitask.eps in (0, 1]")
