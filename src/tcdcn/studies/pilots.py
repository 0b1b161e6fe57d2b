"""Measurements of single training runs (pilots or grid runs) read off their ``history.jsonl``: what the study
settings in configs/studies/base.yaml were chosen on. ``tcdcn study --inspect RUN_DIR ...`` prints them."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .statistics import coefficient_counts, halted_tasks, term_shares


def read_run_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluation records of a run folder's ``history.jsonl``; ``ConfigError`` when there is none."""
    path = Path(run_dir) / "history.jsonl"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no history.jsonl (not a training run folder, or not one evaluation yet)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_measurements(history: Sequence[dict[str, Any]], eps: float = 0.01, upto_epoch: float | None = None,
                     ceiling: float = 1.0) -> dict[str, Any]:
    """Over the evaluation points up to ``upto_epoch`` (all by default): epochs covered, best and last validation
    error, seconds per epoch, mean gradient shares of the terms on the shared layers and the landmark head,
    lambda's updates at eps / between / 1 / 0 summed over tasks, and the tasks early stopping halted."""
    rows = [h for h in history if upto_epoch is None or h["epoch"] <= upto_epoch + 1e-9]
    if not rows:
        return {"epochs": 0.0}
    totals = {"at_eps": 0, "between": 0, "at_ceiling": 0, "at_zero": 0, "updates": 0}
    per_task = coefficient_counts(rows, eps, ceiling)
    for counts in per_task.values():
        for key in totals:
            totals[key] += counts[key]
    per_epoch: dict[int, float] = {}
    for h in rows:  # "seconds" is the time since the epoch's start: the last record of an epoch holds its time
        per_epoch[math.ceil(h["epoch"] - 1e-9)] = float(h.get("seconds") or 0.0)
    whole = [per_epoch[e] for e in per_epoch if any(abs(h["epoch"] - e) < 1e-9 for h in rows)]
    return {
        "epochs": float(rows[-1]["epoch"]),
        "best_val_nme": float(min(h["val_nme"] for h in rows)),
        "last_val_nme": float(rows[-1]["val_nme"]),
        "seconds_per_epoch": float(np.median(whole)) if whole else math.nan,
        "shared": term_shares(rows, "shared"),
        "landmark_head": term_shares(rows, "landmark_head"),
        "lambda": totals,
        "lambda_per_task": per_task,
        "halted": halted_tasks(rows),
    }


def measurement_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """A markdown table of ``run_measurements`` results by run name."""
    header = ["run", "epochs", "best val NME", "last val NME", "s/epoch", "landmark share (shared)",
              "attribute share (shared)", "covariance share (landmark head)", "lambda at eps / between / 1 / 0",
              "halted (epoch)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name, m in runs.items():
        if not m.get("epochs"):
            lines.append(f"| {name} | 0 |" + " |" * (len(header) - 2))
            continue
        lam = m["lambda"]
        lam_text = (f"{lam['at_eps']} / {lam['between']} / {lam['at_ceiling']} / {lam['at_zero']} of {lam['updates']}"
                    if lam["updates"] else "no tasks")
        halted = ", ".join(f"{t} ({e:.2f})" for t, e in m["halted"].items()) or "-"
        lines.append("| " + " | ".join([
            name, f"{m['epochs']:.2f}", f"{100 * m['best_val_nme']:.2f}%", f"{100 * m['last_val_nme']:.2f}%",
            f"{m['seconds_per_epoch']:.0f}", f"{100 * m['shared'].get('landmarks', 0.0):.1f}%",
            f"{100 * m['shared'].get('attributes', 0.0):.1f}%",
            f"{100 * m['landmark_head'].get('covariance', 0.0):.1f}%", lam_text, halted]) + " |")
    return lines


def per_task_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """A markdown table of each run's lambda updates per task: at eps / between / 1 / 0."""
    lines = ["| run | task | at eps | between | at 1 | at 0 | updates |", "|---|---|---|---|---|---|---|"]
    for name, m in runs.items():
        for task, c in (m.get("lambda_per_task") or {}).items():
            lines.append(f"| {name} | {task} | {c['at_eps']} | {c['between']} | {c['at_ceiling']} | {c['at_zero']} "
                         f"| {c['updates']} |")
    return lines
