"""Configs for training runs that take seconds on one thread: a narrow network (the default architecture with
fewer channels) and a short schedule, shared by the tests that train on a handful of real MTFL faces."""

from __future__ import annotations

from typing import Any

from tcdcn.config import Config, config_from_dict

NARROW_MODEL = {"channels": [8, 16, 16, 16], "feature_dim": 64}
NO_AUGMENTATION = {"mirror": False, "rotation_deg": 0.0, "scale": 0.0, "shift": 0.0, "brightness": 0.0,
                   "contrast": 0.0}


def small_config(**sections: dict[str, Any]) -> Config:
    """The narrow network, one thread, batches of 8, one epoch without warm-up; ``sections`` override by key."""
    values: dict[str, Any] = {
        "model": dict(NARROW_MODEL),
        "train": {"threads": 1, "batch_size": 8, "epochs": 1, "warmup_epochs": 0},
    }
    for name, overrides in sections.items():
        values[name] = {**values.get(name, {}), **overrides}
    return config_from_dict(values)
