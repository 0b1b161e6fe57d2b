"""The text of the studies report: tables, setup, and the discussion that judges the paper's claims
(``claims``) by the difference of means against twice its standard error."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..evaluation.metrics import auc
from .claims import (
    AUXILIARY_TASK_CLAIMS,
    EARLY_STOPPING,
    FLD_ONLY,
    FULL_MODEL,
    PAPER_BEST_SINGLE_GROUPS,
    PAPER_MOST_CORRELATED_GROUP,
    REGION_CLAIMS,
    SINGLE_GROUP_VARIANTS,
    TRAINING_SCHEME_CLAIMS,
    Claim,
)
from .grid import Study
from .statistics import (
    Comparison,
    RunResults,
    VariantStats,
    attribute_correlation,
    coefficient_summary,
    compare,
    face_errors,
    grid_timing,
    group_landmark_correlation,
    mean_std,
    point_label,
    relative_improvement,
    variant_stats,
)


def pct(mean: float, std: float | None = None, digits: int = 2) -> str:
    """Fractions as percent: "8.12 ± 0.34" (std omitted when None or nan)."""
    if not math.isfinite(mean):
        return "n/a"
    text = f"{100 * mean:.{digits}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {100 * std:.{digits}f}"
    return text


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


def _method_changes_lines(results: RunResults) -> list[str]:
    """What changed in training so that the dynamic coefficients, the covariance term and the early-stopping
    baseline can be seen to act, and how many of the runs in ``results`` were trained with it (the ones whose
    history holds the gradient-norm record)."""
    runs = [r for by_seed in results.values() for r in by_seed.values()]
    measured = sum(1 for r in runs if r.get("history") and "gradient_norms" in r["history"][0])
    if measured == 0:
        status = ("None of the runs below was trained with these changes: the grid has not been rerun with them "
                  "yet, so every figure below predates them (the early-stopping rows still come from the "
                  "criterion on augmented batch means).")
    else:
        status = f"{measured} of {len(runs)} runs below were trained with these changes."
    return [
        "## Settings at which the method acts: what changed",
        "",
        "- Task-wise early stopping (ECCV 2014 baseline): the criterion's training error is the current model's "
        "loss on un-augmented training faces (`multitask.early_stop_train_faces` of them, a fixed evenly spaced "
        "subset of the training split, scored at every evaluation point), as the ECCV paper defines it. Before, "
        "it read the mean loss over the augmented training batches since the previous evaluation, which stays "
        "above the validation loss, so the criterion halted a task at the last step or never.",
        "- Every evaluation point in `history.jsonl`, and so in each run's results, records the L2 norm of the "
        "gradient of each weighted objective term (landmarks, attributes, covariance, filters) on the shared "
        "layers (conv + fc) and on the landmark head (`gradient_norms`), measured on the latest training batch "
        "with one backward per term and no optimiser step; next to each task's lambda and the training losses "
        "the coefficient rule read (`coefficient_train_task_losses`, `coefficient_train_loss_source`).",
        "- The run summary counts, per task, the coefficient updates that left lambda at eps, at its ceiling "
        "(1; `initial_coefficient` for the fixed and early-stopping rules) and at 0 (`task_coefficient_counts`).",
        "- `tests/test_method_acts.py` checks on real training runs that lambda leaves its start and comes back "
        "up for a task whose validation loss improves, that early stopping halts a task whose validation loss "
        "rises while its un-augmented training loss falls (and reads that loss), that the covariance update "
        "changes the landmark head's gradient, and that the gradient-norm record is written.",
        f"- {status}",
        "",
    ]


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
        "Generated by `tcdcn study` (or `tcdcn study --report-only` to rebuild it from "
        "`reports/studies_results/` without training); do not edit by hand. "
        f"Runs with results: {len(expected) - len(missing)} of {len(expected)}.",
        "",
    ]
    out += _method_changes_lines(results)
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
        out += _table(["variant", "seeds", "mean error", "failure rate", *[point_label(p) for p in points]], rows)
        out += fig("fig8", "Fig. 8 analogue: per-landmark mean error and failure rate")

    # Fig. 9
    if FLD_ONLY in stats and len(attr) > 1:
        base = stats[FLD_ONLY]
        out += ["## Relative improvement per landmark over FLD only (Fig. 9 analogue)", "",
                "(FLD-only error - variant error) / FLD-only error per landmark, errors averaged over seeds (%); "
                "positive = better than FLD only.", ""]
        rows = [[s.label] + [f"{100 * v:+.1f}" for v in relative_improvement(base, s)]
                for s in attr if s.name != FLD_ONLY]
        out += _table(["variant", *[point_label(p) for p in base.point_names]], rows)
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
    if EARLY_STOPPING in results:
        halted = []
        for seed in sorted(results[EARLY_STOPPING]):
            run = results[EARLY_STOPPING][seed]
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
            out += _table(["group", *[point_label(p) for p in points]], rows)
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

    def judge(claims: Sequence[Claim]) -> None:
        for claim in claims:
            if claim.better in stats and claim.baseline in stats:
                name = "mean error" if claim.metric == "nme" else "failure rate"
                text = claim.text.format(label=labels.get(claim.better, claim.better))
                comparison = compare(stats[claim.better], stats[claim.baseline], claim.metric)
                lines.append(_comparison_text(comparison, labels, text, name))

    judge(AUXILIARY_TASK_CLAIMS)
    singles = [stats[n] for n in SINGLE_GROUP_VARIANTS if n in stats]
    if singles:
        order = sorted(singles, key=lambda s: s.nme_mean_std()[0])
        lines.append(f"- Ranking of single groups by mean error (paper: {PAPER_BEST_SINGLE_GROUPS} best): "
                     + " < ".join(f"{s.label} {pct(s.nme_mean_std()[0])}" for s in order) + ".")
    judge(TRAINING_SCHEME_CLAIMS)
    if FLD_ONLY in stats:
        base = stats[FLD_ONLY]
        points = base.point_names
        for region_claim in REGION_CLAIMS:
            if region_claim.variant in stats:
                group = region_claim.group
                rel = relative_improvement(base, stats[region_claim.variant])
                best = points[int(np.argmax(rel))]
                in_region = [i for i, p in enumerate(points) if region_claim.region in p]
                lines.append(
                    f"- Fig. 9: the {group} group's largest relative improvement is at {point_label(best)} "
                    f"({100 * rel.max():+.1f}%); at the {group} landmarks "
                    + ", ".join(f"{point_label(points[i])} {100 * rel[i]:+.1f}%" for i in in_region)
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
                             f"({float(by_group[top].mean()):.3f}; paper: {PAPER_MOST_CORRELATED_GROUP}); "
                             + ", ".join(f"{g} {float(v.mean()):.3f}" for g, v in by_group.items()) + ".")
        summary = coefficient_summary(list(results[FULL_MODEL].values()))
        if summary:
            dropped = [t for t, v in summary.items() if v["min"] < 0.5]
            rising = [t for t, v in summary.items() if v["rises"] >= 1]
            lines.append(f"- Fig. 4b: {len(dropped)} of {len(summary)} tasks had lambda_t fall below 0.5 "
                         f"({', '.join(dropped) or 'none'}); {len(rising)} rose again at least once on average "
                         f"(the sawtooth: {', '.join(rising) or 'none'}).")
    return lines
