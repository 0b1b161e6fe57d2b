"""``tcdcn study``: train and evaluate the paper's study grid (``tcdcn.studies``), then write its report.

``tcdcn.studies`` is imported when the command runs; its report's figures need matplotlib (the ``studies``
extra), checked before any training so that a missing package costs one line, not a grid's results.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..progress import PLAIN_ENV
from .arguments import add_progress_arguments, float_at_least, int_in

log = logging.getLogger("tcdcn.studies")

DEFAULT_GRID = "configs/studies/grid.yaml"
DEFAULT_RUNS_DIR = "runs/studies"
DEFAULT_RESULTS_DIR = "reports/studies_results"
DEFAULT_REPORT = "reports/studies.md"
# Workers share one terminal and one grid: their log lines carry the time and the process id.
WORKER_LOG_FORMAT = "%(asctime)s [{pid}] %(message)s"


def add_command(subparsers: Any) -> None:
    """Register ``tcdcn study`` on the main CLI's sub-parsers."""
    p = subparsers.add_parser("study", help="train and evaluate the paper's study grid, write reports/studies.md")
    p.add_argument("--grid", default=DEFAULT_GRID, help="grid YAML (default %(default)s)")
    p.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR,
                   help="run folders <variant>/seed<k>/, git-ignored (default %(default)s)")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help="one results JSON per run, committed (default %(default)s)")
    p.add_argument("--report", default=DEFAULT_REPORT,
                   help="markdown report; its figures go to figures/ beside it (default %(default)s)")
    p.add_argument("--workers", type=int_in(1), default=1,
                   help="runs trained at the same time, in separate processes (default %(default)s)")
    p.add_argument("--threads", type=int_in(1), default=None, help="torch threads per worker (default: the config's)")
    p.add_argument("--variant", action="append", default=[],
                   help="only this variant (repeatable; default: none, every variant)")
    p.add_argument("--seed", action="append", type=int_in(0), default=[],
                   help="only this seed (repeatable; default: none, every seed)")
    p.add_argument("--report-only", action="store_true", help="regenerate the report from saved results only")
    p.add_argument("--no-report", action="store_true", help="train and evaluate, do not write the report")
    p.add_argument("--list", action="store_true", help="print each run's state (done/partial/todo) and exit")
    p.add_argument("--inspect", nargs="+", metavar="RUN_DIR", default=None,
                   help="print the measurements of these training run folders (validation error, gradient shares "
                        "of the terms, lambda at its bounds, halted tasks) from their history.jsonl, and exit")
    p.add_argument("--upto-epoch", type=float_at_least(0.0), default=None,
                   help="with --inspect: only the evaluation points up to this epoch (default: all)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a process started by --workers
    add_progress_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``tcdcn study``: 0 when every selected run has its results, 1 when a run failed."""
    from ..evaluation.plots import require_matplotlib
    from ..studies.grid import load_study, run_grid, run_state

    if args.inspect:
        return _inspect(args.inspect, args.upto_epoch)
    if args.worker:
        formatter = logging.Formatter(WORKER_LOG_FORMAT.format(pid=os.getpid()), datefmt="%H:%M:%S")
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
    if not (args.list or args.no_report):
        require_matplotlib("the studies report (tcdcn study; --no-report trains without it)")
    study = load_study(args.grid)
    runs_dir, results_dir = Path(args.runs_dir), Path(args.results_dir)
    unknown = [v for v in args.variant if v not in {x.name for x in study.variants}]
    if unknown:
        raise ConfigError(f"unknown study variant(s) {unknown}")
    if args.list:
        for variant, seed in study.runs():
            print(f"{run_state(runs_dir, results_dir, variant.name, seed):8s} {variant.name} seed {seed}")
        return 0
    code = 0
    if not args.report_only:
        if args.workers > 1:
            code = _spawn_workers(args)
        else:
            failures = run_grid(study, runs_dir, results_dir, args.variant, args.seed, args.threads)
            code = 1 if failures else 0
    if not args.no_report:
        from ..studies.report import write_report

        path = write_report(study, results_dir, Path(args.report))
        log.info("report written: %s", path)
    return code


def _inspect(run_dirs: list[str], upto_epoch: float | None) -> int:
    """``--inspect``: a markdown table of each run's measurements on stdout."""
    from ..models.checkpoint import read_checkpoint
    from ..studies.pilots import measurement_table, per_task_table, read_run_history, run_measurements

    measured = {}
    for run_dir in run_dirs:
        history = read_run_history(run_dir)
        eps, ceiling = 0.01, 1.0
        for name in ("last.pt", "best.pt"):  # the run's config: lambda's floor and ceiling
            if (Path(run_dir) / name).is_file():
                multitask = read_checkpoint(Path(run_dir) / name)["config"]["multitask"]
                eps = float(multitask["eps"])
                ceiling = 1.0 if multitask["coefficients"] == "dynamic" else float(multitask["initial_coefficient"])
                break
        names = [Path(d).name for d in run_dirs]  # the folder name; with its parent where two share it
        name = Path(run_dir).name if names.count(Path(run_dir).name) == 1 else "/".join(Path(run_dir).parts[-2:])
        measured[name] = run_measurements(history, eps, upto_epoch, ceiling)
    print("\n".join(measurement_table(measured)))
    if any(m.get("lambda_per_task") for m in measured.values()):
        print("\nLambda updates per task:\n")
        print("\n".join(per_task_table(measured)))
    return 0


def _spawn_workers(args: argparse.Namespace) -> int:
    """Start ``args.workers`` worker processes on the same grid and wait for all of them."""
    base = [sys.executable, "-m", "tcdcn", "study", "--worker", "--grid", args.grid, "--runs-dir", args.runs_dir,
            "--results-dir", args.results_dir, "--workers", "1", "--no-report"]
    if args.threads is not None:
        base += ["--threads", str(args.threads)]
    for v in args.variant:
        base += ["--variant", v]
    for s in args.seed:
        base += ["--seed", str(s)]
    base += ["--progress-interval", str(args.progress_interval)]
    if args.no_progress or getattr(args, "quiet", False):
        base += ["--no-progress"]
    # Workers share this terminal: plain lines, since bars from several processes overwrite each other.
    env = {**os.environ, PLAIN_ENV: "1"}
    procs = []
    for i in range(args.workers):
        procs.append(subprocess.Popen(base, env=env))
        log.info("started worker %d (pid %d)", i, procs[-1].pid)
        time.sleep(2.0)  # stagger the first claims
    codes = [p.wait() for p in procs]
    return max(codes)
