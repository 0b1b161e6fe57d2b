"""The figures of the studies report (Fig. 4-9 analogues and the CED), drawn with matplotlib on the Agg backend.

matplotlib comes with the ``studies`` extra; ``tcdcn.evaluation.plots.pyplot`` imports it and names the extra
when it is missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.metrics import ced
from ..evaluation.plots import pyplot
from .statistics import VariantStats, point_label


def _pyplot() -> Any:
    return pyplot("the studies report's figures")


def plot_landmark_errors(stats: Sequence[VariantStats], path: Path) -> Path:
    """Fig. 8: per-landmark mean error (left) and failure rate (right) per variant, mean ± std over seeds."""
    plt = _pyplot()
    points = stats[0].point_names
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    width = 0.8 / len(stats)
    x = np.arange(len(points))
    for i, s in enumerate(stats):
        ax1.bar(x + (i - (len(stats) - 1) / 2) * width, 100 * s.landmark_mean(), width,
                yerr=100 * np.nan_to_num(s.landmark_std()), capsize=2, label=s.label)
    lowest = min(float(np.min(s.landmark_mean())) for s in stats)
    ax1.set_ylim(bottom=math.floor(90 * lowest) / 1.0 if lowest > 0 else 0)  # axis from 90% of the lowest bar
    ax1.set_xticks(x, [point_label(p) for p in points])
    ax1.set_ylabel("mean error (% of inter-ocular distance)")
    ax1.legend(fontsize=7, ncol=2, loc="upper left")
    ax1.grid(axis="y", alpha=0.3)
    fr = [s.failure_mean_std() for s in stats]
    ax2.bar(np.arange(len(stats)), [100 * m for m, _ in fr], yerr=[100 * np.nan_to_num(sd) for _, sd in fr],
            capsize=3, color=[f"C{i}" for i in range(len(stats))])
    ax2.set_xticks(np.arange(len(stats)), [s.label for s in stats], rotation=35, ha="right", fontsize=8)
    ax2.set_ylabel("failure rate (%, mean error > 10%)")
    ax2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_relative_improvement(improvements: dict[str, np.ndarray], points: Sequence[str], path: Path) -> Path:
    """Fig. 9: relative improvement over FLD only per landmark for each variant."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, len(improvements))
    x = np.arange(len(points))
    for i, (label, values) in enumerate(improvements.items()):
        ax.bar(x + (i - (len(improvements) - 1) / 2) * width, 100 * values, width, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [point_label(p) for p in points])
    ax.set_ylabel("relative improvement over FLD only (%)")
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_error_curves(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]], path: Path) -> Path:
    """Fig. 4a: training and validation landmark error over iterations per training scheme (mean ± std)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    keys = [("train_landmark_loss", "training landmark loss (the objective's term)"),
            ("val_landmark_loss", "validation landmark error (sum of squared coords)"),
            ("val_nme", "validation mean error (%)")]
    for ax, (key, title) in zip(axes, keys):
        for i, (label, by_key) in enumerate(curves.items()):
            steps, mean, std = by_key[key]
            scale = 100.0 if key == "val_nme" else 1.0
            ax.plot(steps, scale * mean, color=f"C{i}", label=label)
            ax.fill_between(steps, scale * (mean - std), scale * (mean + std), color=f"C{i}", alpha=0.15)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration (SGD step)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(fig, path)


def plot_task_coefficients(runs: Sequence[dict[str, Any]], path: Path) -> Path:
    """Fig. 4b: every task's lambda_t over training, one panel per seed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 3.8), sharey=True, squeeze=False)
    for ax, run in zip(axes[0], runs):
        steps = [h["step"] for h in run["history"]]
        for i, task in enumerate(run["task_names"]):
            ax.plot(steps, [h["task_coefficients"][task] for h in run["history"]], marker=".", ms=3,
                    color=f"C{i}", label=task)
        ax.set_title(f"seed {run['seed']}", fontsize=9)
        ax.set_xlabel("iteration (SGD step)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("task coefficient lambda_t")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def _grouped_bars(rows: dict[str, np.ndarray], points: Sequence[str], path: Path, xlabel: str,
                  ylabel: str) -> Path:
    """One group of bars per row (attribute group or task), one bar per landmark."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(rows)
    width = 0.8 / len(points)
    x = np.arange(len(names))
    for i, p in enumerate(points):
        ax.bar(x + (i - (len(points) - 1) / 2) * width, [rows[n][i] for n in names], width,
               label=point_label(p))
    ax.set_xticks(x, names)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_group_landmark_correlation(by_group: dict[str, np.ndarray], points: Sequence[str], path: Path) -> Path:
    """Fig. 5: mean |correlation| of each attribute group with each landmark."""
    return _grouped_bars(by_group, points, path, "attribute group", "mean |correlation| with the landmark")


def plot_normalised_correlation(by_task: dict[str, np.ndarray], points: Sequence[str], path: Path) -> Path:
    """Fig. 6: one attribute per group, |correlation| with the landmarks normalised to sum to one."""
    return _grouped_bars(by_task, points, path, "", "normalised |correlation|")


def plot_attribute_correlation(names: Sequence[str], matrix: np.ndarray, path: Path) -> Path:
    """Fig. 7: correlation between the attributes (pose aggregated)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.8))
    image = ax.imshow(matrix, cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path)


def plot_ced(curves: dict[str, list[np.ndarray]], path: Path, max_error: float = 0.2) -> Path:
    """CED per variant: the mean over seeds of the fraction of faces at or below each error, min-max band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.3))
    for i, (label, runs) in enumerate(curves.items()):
        fractions = []
        thresholds = np.zeros(0)
        for errs in runs:
            thresholds, f = ced(errs, max_error=max_error)
            fractions.append(f)
        arr = np.array(fractions)
        ax.plot(100 * thresholds, arr.mean(axis=0), color=f"C{i}", label=label)
        ax.fill_between(100 * thresholds, arr.min(axis=0), arr.max(axis=0), color=f"C{i}", alpha=0.2)
    ax.axvline(10, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("mean error (% of inter-ocular distance)")
    ax.set_ylabel("fraction of faces")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
