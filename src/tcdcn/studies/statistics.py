"""The numbers of the studies report, as pure functions of the saved per-run results JSONs.

Errors are fractions of the inter-ocular distance. "mean ± std" is over seeds, std the sample standard
deviation (ddof = 1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..attributes import ALL_TASKS
from ..training.task_covariance import covariance_to_correlation
from .grid import Study

RunResults = dict[str, dict[int, dict[str, Any]]]  # variant -> seed -> results JSON
ATTRIBUTE_GROUPS = ("eyes", "mouth", "global", "pose")


def load_results(results_dir: str | Path) -> RunResults:
    """Every ``<variant>__seed<k>.json`` in the folder, keyed by variant and seed."""
    out: RunResults = {}
    for path in sorted(Path(results_dir).glob("*__seed*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        out.setdefault(str(data["variant"]), {})[int(data["seed"])] = data
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan when fewer than two values)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


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


def point_label(name: str) -> str:
    """A landmark name as tables and figures print it."""
    return name.replace("_", " ")


# ---- paired comparisons -------------------------------------------------------------------------------
# Two-sided 95% quantiles of Student's t by degrees of freedom (1-30); beyond 30, the normal 1.96 is within
# 2% of the true value.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
UNRESOLVED = "unresolved at this budget"


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (a 95% two-sided interval)."""
    if df < 1:
        return math.nan
    return T_975[df - 1] if df <= len(T_975) else 1.96


@dataclass
class PairedDifference:
    """Variant a minus variant b on the seeds both have: d_s = a_s - b_s, its mean and 95% t interval."""

    a: str
    b: str
    seeds: list[int]
    differences: np.ndarray  # (n,) a - b per common seed
    mean_a: float  # over the common seeds
    mean_b: float

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def mean(self) -> float:
        return float(self.differences.mean()) if self.n else math.nan

    @property
    def sd(self) -> float:
        """Sample standard deviation of the per-seed differences (nan below two seeds)."""
        return float(self.differences.std(ddof=1)) if self.n > 1 else math.nan

    @property
    def half_width(self) -> float:
        """Half-width of the 95% interval, t_{0.975, n-1} * sd / sqrt(n)."""
        return t_quantile_975(self.n - 1) * self.sd / math.sqrt(self.n) if self.n > 1 else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return self.mean - self.half_width, self.mean + self.half_width

    @property
    def wins(self) -> int:
        """Seeds where a is lower than b."""
        return int((self.differences < 0).sum())


def paired_difference(a: str, values_a: dict[int, float], b: str, values_b: dict[int, float]) -> PairedDifference:
    """The paired-by-seed difference a - b over the seeds present in both (value per seed, lower is better)."""
    seeds = sorted(set(values_a) & set(values_b))
    va = np.array([values_a[s] for s in seeds], float)
    vb = np.array([values_b[s] for s in seeds], float)
    return PairedDifference(a, b, seeds, va - vb, float(va.mean()) if seeds else math.nan,
                            float(vb.mean()) if seeds else math.nan)


def claim_verdict(paired: PairedDifference, margin: float) -> str:
    """Verdict on "a is lower than b" from the 95% interval of the paired difference a - b.

    ``REPRODUCED``: the whole interval is below 0. ``NOT_REPRODUCED``: the interval excludes an improvement of
    ``margin`` or more (its lower end is above -margin), so a gain as large as the paper's is ruled out.
    ``UNRESOLVED`` otherwise, and with fewer than two paired seeds.
    """
    if paired.n < 2 or not math.isfinite(paired.half_width):
        return UNRESOLVED
    low, high = paired.interval
    if high < 0:
        return REPRODUCED
    if low > -margin:
        return NOT_REPRODUCED
    return UNRESOLVED


def seeds_to_resolve(sd: float, margin: float, max_seeds: int = 200) -> int | None:
    """Paired seeds at which the 95% half-width t_{0.975, n-1} * sd / sqrt(n) falls to ``margin`` / 2, so that
    the interval cannot hold both 0 and -margin; None when sd is unknown or more than ``max_seeds`` are needed."""
    if not (math.isfinite(sd) and margin > 0):
        return None
    for n in range(2, max_seeds + 1):
        if t_quantile_975(n - 1) * sd / math.sqrt(n) <= margin / 2:
            return n
    return None


def values_by_seed(results: RunResults, variant: str, metric: str = "nme",
                   landmarks: Sequence[int] | None = None) -> dict[int, float]:
    """One number per seed of a variant: the test ``metric`` ("nme" or "failure_rate"), or with ``landmarks``
    the mean per-landmark error over those landmark indices."""
    out: dict[int, float] = {}
    for seed, run in results.get(variant, {}).items():
        if landmarks is not None:
            out[seed] = float(np.mean([run["per_landmark"][i] for i in landmarks]))
        else:
            out[seed] = float(run["test"][metric])
    return out


# ---- whether the method acts: measurements read off each run's history --------------------------------
def term_shares(history: Sequence[dict[str, Any]], group: str) -> dict[str, float]:
    """Mean over evaluation points of each term's share of the summed gradient norms on a parameter group
    ("shared" or "landmark_head"): ||g_term|| / sum over terms of ||g_term||. Empty without the record."""
    rows = [h["gradient_norms"][group] for h in history if h.get("gradient_norms")]
    if not rows:
        return {}
    terms = sorted({t for r in rows for t in r})
    shares = {t: [] for t in terms}  # type: dict[str, list[float]]
    for r in rows:
        total = sum(r.get(t, 0.0) for t in terms)
        for t in terms:
            shares[t].append(r.get(t, 0.0) / total if total > 0 else 0.0)
    return {t: float(np.mean(v)) for t, v in shares.items()}


def coefficient_counts(history: Sequence[dict[str, Any]], eps: float,
                       ceiling: float = 1.0) -> dict[str, dict[str, int]]:
    """Per task, the coefficient updates (evaluation points) that left lambda at eps, at ``ceiling``, at 0,
    and strictly between eps and the ceiling; read off the history's ``task_coefficients``."""
    if not history or not history[0].get("task_coefficients"):
        return {}
    out = {}
    for task in history[0]["task_coefficients"]:
        values = np.array([h["task_coefficients"][task] for h in history], float)
        at_eps = np.isclose(values, eps, rtol=0, atol=1e-9)
        at_top = np.isclose(values, ceiling, rtol=0, atol=1e-9)
        at_zero = values == 0
        out[task] = {"updates": int(values.size), "at_eps": int(at_eps.sum()), "at_ceiling": int(at_top.sum()),
                     "at_zero": int(at_zero.sum()), "between": int((~(at_eps | at_top | at_zero)).sum())}
    return out


def halted_tasks(history: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Early stopping: each halted task and the epoch of the first evaluation point with lambda 0."""
    out: dict[str, float] = {}
    for h in history:
        for task, value in (h.get("task_coefficients") or {}).items():
            if value == 0.0 and task not in out:
                out[task] = float(h["epoch"])
    return out
