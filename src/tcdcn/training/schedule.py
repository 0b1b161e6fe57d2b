"""The learning-rate schedule: linear warm-up, then cosine decay to a floor."""

from __future__ import annotations

import math


def learning_rate_at(step: int, total_steps: int, warmup_steps: int, base: float, floor: float) -> float:
    """Linear warm-up then cosine decay to ``floor``; a function of the step, so resume is exact."""
    if warmup_steps > 0 and step < warmup_steps:
        return base * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(1.0, progress)))
