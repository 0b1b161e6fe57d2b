"""The studies report: ``reports/studies.md`` and its PNG figures, regenerated from the saved per-run results
JSONs (numbers from ``statistics``, figures from ``plots``, text from ``markdown``)."""

from __future__ import annotations

from pathlib import Path

from .claims import FLD_ONLY, FULL_MODEL
from .grid import Study
from .markdown import build_markdown
from .plots import (
    plot_attribute_correlation,
    plot_ced,
    plot_error_curves,
    plot_group_landmark_correlation,
    plot_landmark_errors,
    plot_normalised_correlation,
    plot_relative_improvement,
    plot_task_coefficients,
)
from .statistics import (
    attribute_correlation,
    face_errors,
    group_landmark_correlation,
    history_curves,
    load_results,
    normalised_task_landmark_correlation,
    relative_improvement,
    variant_stats,
)


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
