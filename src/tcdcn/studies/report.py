"""The studies report (reports/studies.md + PNG figures), generated from the saved per-run results JSONs.

Numbers are computed by pure functions (``variant_stats``, ``relative_improvement``,
``group_landmark_correlation``, ``attribute_correlation``, ``coefficient_summary``, ``compare``);
figures by ``plot_*`` functions (matplotlib, Agg); ``write_report`` puts them together. Errors are
fractions of the inter-ocular distance internally and printed in percent. "mean ± std" is over seeds,
std the sample standard deviation (ddof = 1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..attributes import ALL_TASKS
from ..evaluation.metrics import auc, ced
from ..training.task_coefficients import covariance_to_correlation

if TYPE_CHECKING:
    from .grid import Study

RunResults = dict[str, dict[int, dict[str, Any]]]  # variant -> seed -> results JSON
ATTRIBUTE_GROUPS = ("eyes", "mouth", "global", "pose")
FLD_ONLY = "fld_only"
FULL_MODEL = "fld_all"


# ---- loading ---------------------------------------------------------------------------------------
def load_results(results_dir: str | Path) -> RunResults:
    """Every ``<variant>__seed<k>.json`` in the folder, keyed by variant and seed."""
    out: RunResults = {}
    for path in sorted(Path(results_dir).glob("*__seed*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        out.setdefault(str(data["variant"]), {})[int(data["seed"])] = data
    return out


# ---- statistics ------------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan when fewer than two values)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def pct(mean: float, std: float | None = None, digits: int = 2) -> str:
    """Fractions as percent: "8.12 ± 0.34" (std omitted when None or nan)."""
    if not math.isfinite(mean):
        return "n/a"
    text = f"{100 * mean:.{digits}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {100 * std:.{digits}f}"
    return text


@dataclass
class VariantStats:
    name: str
    label: str
    seeds: list[int]
    nme: np.ndarray  # (S,) AFLW mean error per seed
    failure_rate: np.ndarray  # (S,)
    per_landmark: np.ndarray  # (S, P)
    point_names: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.seeds)

    def nme_mean_std(self) -> tuple[float, float]:
        return mean_std(self.nme)

    def failure_mean_std(self) -> tuple[float, float]:
        return mean_std(self.failure_rate)

    def landmark_mean(self) -> np.ndarray:
        return self.per_landmark.mean(axis=0)

    def landmark_std(self) -> np.ndarray:
        if self.n < 2:
            return np.full(self.per_landmark.shape[1], np.nan)
        return self.per_landmark.std(axis=0, ddof=1)


def variant_stats(results: RunResults, study: Study) -> dict[str, VariantStats]:
    """Per-seed test scores of every variant that has at least one result."""
    out: dict[str, VariantStats] = {}
    for variant in study.variants:
        runs = results.get(variant.name, {})
        seeds = sorted(runs)
        if not seeds:
            continue
        out[variant.name] = VariantStats(
            name=variant.name,
            label=variant.label,
            seeds=seeds,
            nme=np.array([runs[s]["test"]["nme"] for s in seeds], float),
            failure_rate=np.array([runs[s]["test"]["failure_rate"] for s in seeds], float),
            per_landmark=np.array([runs[s]["per_landmark"] for s in seeds], float),
            point_names=tuple(runs[seeds[0]]["point_names"]),
        )
    return out


@dataclass
class Comparison:
    """Variant a against variant b on one metric (lower is better)."""

    a: str
    b: str
    mean_a: float
    mean_b: float
    difference: float  # mean_a - mean_b
    standard_error: float  # of the difference, from the two seed-to-seed spreads
    paired_wins: int  # seeds (present in both) where a is lower
    paired_seeds: int

    @property
    def verdict(self) -> str:
        if not math.isfinite(self.standard_error):
            return "not enough seeds to judge"
        if self.difference < -2 * self.standard_error:
            return "supported"
        if self.difference > 2 * self.standard_error:
            return "contradicted"
        return "not resolved (within the seed-to-seed spread)"


def compare(a: VariantStats, b: VariantStats, metric: str = "nme") -> Comparison:
    """Difference of means with its standard error sqrt(s_a^2/n_a + s_b^2/n_b), and paired seed wins."""
    va: np.ndarray = getattr(a, metric)
    vb: np.ndarray = getattr(b, metric)
    ma, sa = mean_std(va)
    mb, sb = mean_std(vb)
    se = math.sqrt(sa**2 / len(va) + sb**2 / len(vb)) if len(va) > 1 and len(vb) > 1 else math.nan
    common = sorted(set(a.seeds) & set(b.seeds))
    wins = sum(int(va[a.seeds.index(s)] < vb[b.seeds.index(s)]) for s in common)
    return Comparison(a.name, b.name, ma, mb, ma - mb, se, wins, len(common))


def relative_improvement(baseline: VariantStats, variant: VariantStats) -> np.ndarray:
    """(P,) per-landmark (baseline error - variant error) / baseline error, errors averaged over seeds."""
    base = baseline.landmark_mean()
    return (base - variant.landmark_mean()) / base


def task_group(task: str) -> str:
    return ALL_TASKS[task].group if task in ALL_TASKS else task


def mean_abs_correlation(runs: Sequence[dict[str, Any]]) -> tuple[np.ndarray, list[str], int]:
    """Mean over runs of |correlation| read off each run's learned task covariance; (K, K), task names, M."""
    mats = []
    for r in runs:
        cov = np.asarray(r["task_covariance"], float)
        mats.append(np.abs(covariance_to_correlation(cov)))
    tasks = list(runs[0]["task_names"])
    m = mats[0].shape[0] - len(tasks)
    return np.mean(mats, axis=0), tasks, m


def mean_signed_correlation(runs: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.mean([covariance_to_correlation(np.asarray(r["task_covariance"], float)) for r in runs], axis=0)


def task_landmark_correlation(abs_corr: np.ndarray, tasks: Sequence[str], m: int) -> np.ndarray:
    """(T, P): |correlation| of each task with each landmark, the mean over its x and y coordinates."""
    points = m // 2
    out = np.zeros((len(tasks), points))
    for t in range(len(tasks)):
        for p in range(points):
            out[t, p] = abs_corr[m + t, 2 * p: 2 * p + 2].mean()
    return out


def group_landmark_correlation(runs: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Fig. 5: for each attribute group, the mean |correlation| of its tasks with each landmark (P,)."""
    abs_corr, tasks, m = mean_abs_correlation(runs)
    per_task = task_landmark_correlation(abs_corr, tasks, m)
    out: dict[str, np.ndarray] = {}
    for group in ATTRIBUTE_GROUPS:
        rows = [i for i, t in enumerate(tasks) if task_group(t) == group]
        if rows:
            out[group] = per_task[rows].mean(axis=0)
    return out


def representative_tasks(tasks: Sequence[str]) -> list[str]:
    """One task per attribute group (the first in the run's task order), as in Fig. 6."""
    chosen: dict[str, str] = {}
    for t in tasks:
        chosen.setdefault(task_group(t), t)
    return [chosen[g] for g in ATTRIBUTE_GROUPS if g in chosen]


def normalised_task_landmark_correlation(runs: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Fig. 6: each representative task's |correlation| with the landmarks, normalised to sum to one."""
    abs_corr, tasks, m = mean_abs_correlation(runs)
    per_task = task_landmark_correlation(abs_corr, tasks, m)
    out = {}
    for t in representative_tasks(tasks):
        row = per_task[tasks.index(t)]
        out[t] = row / row.sum() if row.sum() > 0 else np.full_like(row, 1.0 / len(row))
    return out


def attribute_correlation(runs: Sequence[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """Fig. 7: correlation between the attributes, the pose tasks aggregated into one "pose" attribute
    (mean |correlation| with each other attribute); other pairs keep the sign (mean over runs)."""
    signed = mean_signed_correlation(runs)
    abs_corr, tasks, m = mean_abs_correlation(runs)
    pose = [i for i, t in enumerate(tasks) if task_group(t) == "pose"]
    others = [i for i, t in enumerate(tasks) if task_group(t) != "pose"]
    names = [tasks[i] for i in others] + (["pose"] if pose else [])
    k = len(names)
    out = np.eye(k)
    for a, i in enumerate(others):
        for b, j in enumerate(others):
            if a != b:
                out[a, b] = signed[m + i, m + j]
        if pose:
            out[a, k - 1] = out[k - 1, a] = float(np.mean([abs_corr[m + i, m + j] for j in pose]))
    return names, out


def coefficient_summary(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per task, over the runs' histories: mean of the minimum and final lambda_t, and the mean number of
    rises (lambda_t up by more than 0.05 between two evaluations: the paper's sawtooth)."""
    out: dict[str, dict[str, float]] = {}
    tasks = list(runs[0]["task_names"])
    for task in tasks:
        mins, finals, rises, below = [], [], [], []
        for r in runs:
            values = np.array([h["task_coefficients"][task] for h in r["history"]], float)
            if values.size == 0:
                continue
            mins.append(values.min())
            finals.append(values[-1])
            rises.append(int(np.sum(np.diff(values) > 0.05)))
            below.append(float(np.mean(values < 0.5)))
        if mins:
            out[task] = {"min": float(np.mean(mins)), "final": float(np.mean(finals)),
                         "rises": float(np.mean(rises)), "fraction_below_half": float(np.mean(below))}
    return out


def history_curves(runs: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps (J,) and mean and std over runs (J,) of one history key, truncated to the shortest run."""
    length = min(len(r["history"]) for r in runs)
    steps = np.array([h["step"] for h in runs[0]["history"][:length]], float)
    values = np.array([[h[key] for h in r["history"][:length]] for r in runs], float)
    std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(length)
    return steps, values.mean(axis=0), std


def face_errors(run: dict[str, Any]) -> np.ndarray:
    return np.array([np.inf if e is None else e for e in run["face_errors"]], float)


def grid_timing(results: RunResults) -> dict[str, float]:
    """Wall-clock span from the first run's start to the last run's finish, and per-run seconds."""
    runs = [r for by_seed in results.values() for r in by_seed.values() if "timing" in r]
    if not runs:
        return {}
    start = min(r["timing"]["started_at"] for r in runs)
    end = max(r["timing"]["finished_at"] for r in runs)
    per_run = [r["timing"]["finished_at"] - r["timing"]["started_at"] for r in runs]
    return {"span_seconds": end - start, "start": start, "end": end, "runs": len(runs),
            "median_run_seconds": float(np.median(per_run)), "sum_run_seconds": float(np.sum(per_run)),
            "median_eval_seconds": float(np.median([r["timing"]["eval_seconds"] for r in runs]))}


# ---- figures ---------------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _point_label(name: str) -> str:
    return name.replace("_", " ")


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
    ax1.set_xticks(x, [_point_label(p) for p in points])
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
    ax.set_xticks(x, [_point_label(p) for p in points])
    ax.set_ylabel("relative improvement over FLD only (%)")
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_error_curves(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]], path: Path) -> Path:
    """Fig. 4a: training and validation landmark error over iterations per training scheme (mean ± std)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    keys = [("train_landmark_loss", "training landmark error (sum of squared coords)"),
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
               label=_point_label(p))
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


# ---- markdown ---------------------------------------------------------------------------------------
def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _seed_values(values: np.ndarray) -> str:
    return ", ".join(f"{100 * v:.2f}" for v in values)


def _comparison_text(c: Comparison, labels: dict[str, str], claim: str, metric_name: str = "mean error") -> str:
    spread = f"2 SE = {100 * 2 * c.standard_error:.2f}" if math.isfinite(c.standard_error) else "SE n/a"
    return (f"- {claim}: **{c.verdict}**. {labels[c.a]} {100 * c.mean_a:.2f}% vs {labels[c.b]} "
            f"{100 * c.mean_b:.2f}% {metric_name} (difference {100 * c.difference:+.2f} points, {spread}; "
            f"lower in {c.paired_wins}/{c.paired_seeds} paired seeds).")


def _clock(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _schedule_lines(study: Study, results: RunResults) -> list[str]:
    any_run = next(r for by_seed in results.values() for r in by_seed.values())
    cfg, info = any_run["config"], any_run.get("study", {})
    tr, mt = cfg["train"], cfg["multitask"]
    steps_per_epoch = max(1, info.get("train_faces", 0) // tr["batch_size"])
    lines = [
        "## Setup",
        "",
        f"- Data: MTFL. Training faces per run: {info.get('train_faces', '?')} (a fixed random subset, "
        f"seed {study.subset_seed}, of the training split; `train_subset: {study.train_subset}` in the grid), "
        f"validation: {info.get('val_faces', '?')} faces carved from training.txt "
        f"(`validation_fraction: {cfg['data']['validation_fraction']}`), the same for every run. "
        f"Test: the AFLW test set ({info.get('test_faces', '?')} faces), whole image as the face box; "
        "reported once per finished run, never used for any choice.",
        f"- Schedule (configs/studies/base.yaml): {tr['epochs']} epochs x {steps_per_epoch} steps of "
        f"{tr['batch_size']} = {tr['epochs'] * steps_per_epoch} SGD steps per run, {tr['optimizer']} lr "
        f"{tr['learning_rate']} with {tr['warmup_epochs']} warm-up epoch(s) then cosine decay; "
        f"{mt['evaluations_per_epoch']} evaluations per epoch (= coefficient updates), tau = {mt['tau']} "
        f"evaluations, rho = {mt['rho']}, eps = {mt['eps']}; Upsilon recomputed every "
        f"{mt['covariance_interval']} steps; early stopping k = {mt['early_stop_strip']} evaluations, "
        f"epsilon = {mt['early_stop_threshold']}; {tr['threads']} torch thread(s) per run. "
        "The evaluated checkpoint is best.pt (lowest validation mean error).",
        f"- Seeds: {', '.join(str(s) for s in study.seeds)} (train.seed: initialisation, batch order and "
        "augmentation; with the same seed every variant starts from the same filters and sees the same "
        "batches, so seeds are paired across variants).",
        "- This is a short schedule (the paper trains for ~200k iterations); absolute errors are far above "
        "the shipped model's, and only differences larger than the seed-to-seed spread mean anything.",
    ]
    timing = grid_timing(results)
    if timing:
        lines.append(
            f"- Grid time: {timing['runs']} runs, first start to last finish {_clock(timing['span_seconds'])} "
            f"of wall-clock (all workers together, on CPUs shared with other jobs; includes any interruption); "
            f"median {timing['median_run_seconds']:.0f} s per run including "
            f"{timing['median_eval_seconds']:.0f} s of test evaluation.")
    return lines


def build_markdown(study: Study, results: RunResults, figures: dict[str, Path], report_dir: Path) -> str:
    stats = variant_stats(results, study)
    labels = {v.name: v.label for v in study.variants}
    expected = [(v.name, s) for v, s in study.runs()]
    missing = [(v, s) for v, s in expected if s not in results.get(v, {})]

    def fig(key: str, caption: str) -> list[str]:
        if key not in figures:
            return []
        rel = figures[key].relative_to(report_dir) if figures[key].is_relative_to(report_dir) else figures[key]
        return ["", f"![{caption}]({rel.as_posix()})", ""]

    out = [
        "# Auxiliary tasks and training schemes: the paper's studies on MTFL -> AFLW",
        "",
        "Generated by `tcdcn study` (or `python -m tcdcn.studies --report-only` to rebuild it from "
        "`reports/studies_results/` without training); do not edit by hand. "
        f"Runs with results: {len(expected) - len(missing)} of {len(expected)}.",
        "",
    ]
    if not stats:
        return "\n".join(out + ["No results yet."]) + "\n"
    out += _schedule_lines(study, results)

    # Table 2
    out += ["", "## Training schemes for FLD+all (Table 2 analogue)", "",
            "AFLW mean error and failure rate (%), mean ± std over seeds; per-seed values in seed order.", ""]
    rows = []
    for name in study.scheme_variants:
        if name in stats:
            s = stats[name]
            rows.append([labels[name], str(s.n), pct(*s.nme_mean_std()), pct(*s.failure_mean_std()),
                         _seed_values(s.nme)])
    out += _table(["training scheme", "seeds", "mean error (%)", "failure rate (%)", "per seed (%)"], rows)

    # Fig. 8
    attr = [stats[n] for n in study.attribute_variants if n in stats]
    if attr:
        points = attr[0].point_names
        out += ["", "## Auxiliary task groups (Fig. 8 analogue)", "",
                "All with dynamic task coefficients and the task covariance term. Mean ± std over seeds (%).", ""]
        rows = [[s.label, str(s.n), pct(*s.nme_mean_std()), pct(*s.failure_mean_std())]
                + [pct(m, sd) for m, sd in zip(s.landmark_mean(), s.landmark_std())] for s in attr]
        out += _table(["variant", "seeds", "mean error", "failure rate", *[_point_label(p) for p in points]], rows)
        out += fig("fig8", "Fig. 8 analogue: per-landmark mean error and failure rate")

    # Fig. 9
    if FLD_ONLY in stats and len(attr) > 1:
        base = stats[FLD_ONLY]
        out += ["## Relative improvement per landmark over FLD only (Fig. 9 analogue)", "",
                "(FLD-only error - variant error) / FLD-only error per landmark, errors averaged over seeds (%); "
                "positive = better than FLD only.", ""]
        rows = [[s.label] + [f"{100 * v:+.1f}" for v in relative_improvement(base, s)]
                for s in attr if s.name != FLD_ONLY]
        out += _table(["variant", *[_point_label(p) for p in base.point_names]], rows)
        out += fig("fig9", "Fig. 9 analogue: relative improvement per landmark")

    # Fig. 4
    scheme_runs = {n: list(results[n].values()) for n in study.scheme_variants if n in results}
    if scheme_runs:
        out += ["## Training curves and task coefficients (Fig. 4 analogue)", "",
                "Landmark error (sum of squared normalised coordinates, the data term of Eq. 9) on the training "
                "batches (augmented, averaged since the previous evaluation) and on the validation split, mean "
                "± std over seeds; final values below.", ""]
        rows = []
        for name, runs in scheme_runs.items():
            finals = [r["history"][-1] for r in runs if r["history"]]
            if finals:
                rows.append([labels[name],
                             f"{np.mean([f['train_landmark_loss'] for f in finals]):.4f}",
                             f"{np.mean([f['val_landmark_loss'] for f in finals]):.4f}",
                             pct(*mean_std([f["val_nme"] for f in finals]))])
        out += _table(["training scheme", "final train error", "final val error", "final val mean error (%)"], rows)
        out += fig("fig4a", "Fig. 4a analogue: landmark error over training")
    if FULL_MODEL in results:
        runs = [results[FULL_MODEL][s] for s in sorted(results[FULL_MODEL])]
        summary = coefficient_summary(runs)
        if summary:
            out += ["Task coefficients of FLD+all (dynamic, Eq. 13-14), mean over seeds: the lowest and final "
                    "lambda_t, the fraction of evaluations with lambda_t < 0.5, and the number of rises "
                    "(lambda_t up by > 0.05 between evaluations, the sawtooth).", ""]
            rows = [[t, f"{v['min']:.2f}", f"{v['final']:.2f}", f"{v['fraction_below_half']:.2f}",
                     f"{v['rises']:.1f}"] for t, v in summary.items()]
            out += _table(["task", "min lambda", "final lambda", "fraction < 0.5", "rises"], rows)
            out += fig("fig4b", "Fig. 4b analogue: task coefficients over training")
    es = "fld_all_early_stopping"
    if es in results:
        halted = []
        for seed in sorted(results[es]):
            run = results[es][seed]
            stops = []
            for task in run["task_names"]:
                steps = [h["step"] for h in run["history"] if h["task_coefficients"][task] == 0.0]
                if steps:
                    stops.append(f"{task}@{steps[0]}")
            halted.append(f"seed {seed}: " + (", ".join(stops) if stops else "none halted"))
        out += ["", "Task-wise early stopping (ECCV 2014) halted (task@step): " + "; ".join(halted) + ".", ""]

    # Fig. 5-7
    if FULL_MODEL in results:
        runs = [results[FULL_MODEL][s] for s in sorted(results[FULL_MODEL])
                if results[FULL_MODEL][s].get("task_covariance")]
        if runs:
            points = tuple(runs[0]["point_names"])
            by_group = group_landmark_correlation(runs)
            out += ["## Correlations read off the learned task covariance (Fig. 5-7 analogues)", "",
                    f"From FLD+all's final Upsilon (best.pt), correlation = covariance / sqrt(product of variances), "
                    f"averaged over {len(runs)} seed(s). A landmark's correlation is the mean |correlation| over its "
                    "x and y coordinates; a group's is the mean over its tasks (Fig. 5).", ""]
            rows = [[g] + [f"{v:.3f}" for v in vals] for g, vals in by_group.items()]
            out += _table(["group", *[_point_label(p) for p in points]], rows)
            out += fig("fig5", "Fig. 5 analogue: attribute groups vs landmarks")
            out += fig("fig6", "Fig. 6 analogue: normalised correlation of one attribute per group")
            names, matrix = attribute_correlation(runs)
            out += ["Between attributes (Fig. 7; pose = mean |correlation| of the five pose tasks):", ""]
            rows = [[n] + [f"{v:+.2f}" for v in matrix[i]] for i, n in enumerate(names)]
            out += _table(["", *names], rows)
            out += fig("fig7", "Fig. 7 analogue: correlation between attributes")

    # CED
    if FLD_ONLY in results and FULL_MODEL in results:
        out += ["## Cumulative error distribution: FLD only vs full TCDCN", ""]
        rows = []
        for name in (FLD_ONLY, FULL_MODEL):
            aucs = [auc(face_errors(results[name][s]), 0.1) for s in sorted(results[name])]
            rows.append([labels[name], pct(*stats[name].nme_mean_std()), pct(*stats[name].failure_mean_std()),
                         f"{np.mean(aucs):.3f} ± {np.std(aucs, ddof=1) if len(aucs) > 1 else float('nan'):.3f}"])
        out += _table(["variant", "mean error (%)", "failure rate (%)", "AUC at 10%"], rows)
        out += fig("ced", "CED of FLD only and FLD+all (mean over seeds, min-max band)")

    out += ["## Discussion", ""] + discussion(study, results, stats)
    if missing:
        out += ["", "## Missing runs", "", ", ".join(f"{v} seed {s}" for v, s in missing) + "."]
    return "\n".join(out) + "\n"


def discussion(study: Study, results: RunResults, stats: dict[str, VariantStats]) -> list[str]:
    """The paper's claims, each judged by the difference of means against twice its standard error."""
    labels = {v.name: v.label for v in study.variants}
    lines = ["A claim is *supported* when the difference is larger than twice its standard error (from the "
             "seed-to-seed spread of both variants), *contradicted* when it is that large the other way, and "
             "*not resolved* otherwise; with 3 seeds this is a rough screen, not a significance test.", ""]

    def pair(a: str, b: str, claim: str, metric: str = "nme") -> None:
        if a in stats and b in stats:
            name = "mean error" if metric == "nme" else "failure rate"
            lines.append(_comparison_text(compare(stats[a], stats[b], metric), labels, claim, name))

    pair(FULL_MODEL, FLD_ONLY, "Auxiliary tasks help: FLD+all has a lower mean error than FLD only (Fig. 8)")
    pair(FULL_MODEL, FLD_ONLY, "FLD+all has a lower failure rate than FLD only (paper: over 7 points lower)",
         "failure_rate")
    for name in ("fld_pose", "fld_global", "fld_eyes", "fld_mouth"):
        pair(name, FLD_ONLY, f"{labels.get(name, name)} beats FLD only")
    pair("fld_random", FLD_ONLY, "A random task helps (the paper expects it hardly does)")
    singles = [stats[n] for n in ("fld_eyes", "fld_mouth", "fld_global", "fld_pose") if n in stats]
    if singles:
        order = sorted(singles, key=lambda s: s.nme_mean_std()[0])
        lines.append("- Ranking of single groups by mean error (paper: pose and global best): "
                     + " < ".join(f"{s.label} {pct(s.nme_mean_std()[0])}" for s in order) + ".")
    pair(FULL_MODEL, "fld_all_dynamic_nocov", "The task covariance term helps (Table 2: 8.07 -> 7.95)")
    pair("fld_all_dynamic_nocov", "fld_all_early_stopping",
         "Dynamic coefficients beat task-wise early stopping, both without covariance (Table 2: 8.07 vs 8.35)")
    pair(FULL_MODEL, "fld_all_early_stopping", "Full TCDCN beats early stopping")
    pair("fld_all_dynamic_nocov", "fld_all_fixed", "Dynamic coefficients beat fixed equal weights")
    if FLD_ONLY in stats:
        base = stats[FLD_ONLY]
        points = base.point_names
        for group, name, region in (("mouth", "fld_mouth", "mouth"), ("eyes", "fld_eyes", "eye")):
            if name in stats:
                rel = relative_improvement(base, stats[name])
                best = points[int(np.argmax(rel))]
                in_region = [i for i, p in enumerate(points) if region in p]
                lines.append(
                    f"- Fig. 9: the {group} group's largest relative improvement is at {_point_label(best)} "
                    f"({100 * rel.max():+.1f}%); at the {group} landmarks "
                    + ", ".join(f"{_point_label(points[i])} {100 * rel[i]:+.1f}%" for i in in_region)
                    + " (paper: each group helps its own region most). Per-landmark seed spread of FLD only: "
                    + ", ".join(f"{100 * s / m:.1f}%" for s, m in zip(base.landmark_std(), base.landmark_mean()))
                    + " of its error.")
    if FULL_MODEL in results:
        runs = [r for r in results[FULL_MODEL].values() if r.get("task_covariance")]
        if runs:
            by_group = group_landmark_correlation(runs)
            if by_group:
                top = max(by_group, key=lambda g: float(by_group[g].mean()))
                lines.append(f"- Fig. 5: the group most correlated with the landmarks on average is {top} "
                             f"({float(by_group[top].mean()):.3f}; paper: pose); "
                             + ", ".join(f"{g} {float(v.mean()):.3f}" for g, v in by_group.items()) + ".")
        summary = coefficient_summary(list(results[FULL_MODEL].values()))
        if summary:
            dropped = [t for t, v in summary.items() if v["min"] < 0.5]
            rising = [t for t, v in summary.items() if v["rises"] >= 1]
            lines.append(f"- Fig. 4b: {len(dropped)} of {len(summary)} tasks had lambda_t fall below 0.5 "
                         f"({', '.join(dropped) or 'none'}); {len(rising)} rose again at least once on average "
                         f"(the sawtooth: {', '.join(rising) or 'none'}).")
    return lines


def write_report(study: Study, results_dir: str | Path, report_path: str | Path) -> Path:
    """Regenerate the markdown report and its figures (``figures/`` beside it) from the saved results."""
    report = Path(report_path)
    figures_dir = report.parent / "figures"
    results = load_results(results_dir)
    stats = variant_stats(results, study)
    figures: dict[str, Path] = {}
    attr = [stats[n] for n in study.attribute_variants if n in stats]
    if attr:
        figures["fig8"] = plot_landmark_errors(attr, figures_dir / "studies_fig8_landmark_errors.png")
    if FLD_ONLY in stats and len(attr) > 1:
        improvements = {s.label: relative_improvement(stats[FLD_ONLY], s) for s in attr if s.name != FLD_ONLY}
        figures["fig9"] = plot_relative_improvement(improvements, stats[FLD_ONLY].point_names,
                                                    figures_dir / "studies_fig9_relative_improvement.png")
    labels = {v.name: v.label for v in study.variants}
    curves = {}
    for name in study.scheme_variants:
        runs = [r for r in results.get(name, {}).values() if r.get("history")]
        if runs:
            curves[labels[name]] = {k: history_curves(runs, k)
                                    for k in ("train_landmark_loss", "val_landmark_loss", "val_nme")}
    if curves:
        figures["fig4a"] = plot_error_curves(curves, figures_dir / "studies_fig4a_error_curves.png")
    if FULL_MODEL in results:
        runs = [results[FULL_MODEL][s] for s in sorted(results[FULL_MODEL])]
        if any(r.get("history") and r["task_names"] for r in runs):
            figures["fig4b"] = plot_task_coefficients(runs, figures_dir / "studies_fig4b_task_coefficients.png")
        cov_runs = [r for r in runs if r.get("task_covariance")]
        if cov_runs and cov_runs[0]["task_names"]:
            points = tuple(cov_runs[0]["point_names"])
            figures["fig5"] = plot_group_landmark_correlation(
                group_landmark_correlation(cov_runs), points, figures_dir / "studies_fig5_group_correlation.png")
            figures["fig6"] = plot_normalised_correlation(
                normalised_task_landmark_correlation(cov_runs), points,
                figures_dir / "studies_fig6_attribute_landmark_correlation.png")
            names, matrix = attribute_correlation(cov_runs)
            figures["fig7"] = plot_attribute_correlation(names, matrix,
                                                         figures_dir / "studies_fig7_attribute_correlation.png")
    if FLD_ONLY in results and FULL_MODEL in results:
        ced_runs = {labels[n]: [face_errors(results[n][s]) for s in sorted(results[n])] for n in (FLD_ONLY, FULL_MODEL)}
        figures["ced"] = plot_ced(ced_runs, figures_dir / "studies_ced_fld_vs_tcdcn.png")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(build_markdown(study, results, figures, report.parent), encoding="utf-8")
    return report
