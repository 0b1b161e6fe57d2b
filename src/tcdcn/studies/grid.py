"""The paper's auxiliary-task and training-scheme studies (Table 2, Fig. 4-9) as a grid of training runs.

``configs/studies/grid.yaml`` lists the variants (base config + overrides) and the seeds. For each
(variant, seed) the runner trains in ``runs/studies/<variant>/seed<k>/`` (resuming from ``last.pt``
when a run was interrupted), evaluates ``best.pt`` on the AFLW test set with the whole image as the
face box, and writes a small results JSON to ``reports/studies_results/<variant>__seed<k>.json``.
A run whose results file exists is never retrained. Finally ``reports/studies.md`` is regenerated from
all saved results (``tcdcn.studies.report``), however many have finished.

A variant may name its own ``seeds`` (fewer than the grid's, for variants that are not central); the runs of
the variants with every grid seed come first, seed-major, then the others, so a grid cut short has the central
comparisons paired on as many seeds as possible.

Several workers may share one grid: each run is claimed with a lock file (``claim`` in the run folder,
holding the worker's pid), so ``--workers 2`` trains two runs at a time with one torch thread each.

    tcdcn study                 # or: python -m tcdcn study
    tcdcn study --workers 2     # two runs at a time
    tcdcn study --report-only   # regenerate the report from reports/studies_results/
    tcdcn study --list          # each run's state: done / partial / todo
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..attributes import tasks_by_name
from ..config import Config, apply_overrides, config_from_dict, config_to_dict, read_yaml_mapping
from ..data.annotation import FaceAnnotation
from ..errors import CheckpointError, ConfigError, TcdcnError
from ..io.atomic import atomic_write_text
from ..progress import progress

log = logging.getLogger("tcdcn.studies")

RESULTS_SCHEMA = 1
CLAIM_FILE = "claim"
STARTED_FILE = "started_at.json"
SUMMARY_FILE = "summary.json"


# ---- the grid ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    group: str  # attribute group the variant adds to FLD ("none" for FLD only, "all" for every task)
    overrides: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None  # None: the grid's seeds


@dataclass(frozen=True)
class Study:
    base_config: str
    seeds: tuple[int, ...]
    variants: tuple[Variant, ...]
    attribute_variants: tuple[str, ...]
    scheme_variants: tuple[str, ...]
    train_subset: int = 0  # 0 = the whole training split
    subset_seed: int = 0
    root: Path = Path(".")  # paths in the grid are relative to this folder (the repository root)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(f"unknown study variant {name!r}; known: {', '.join(v.name for v in self.variants)}")

    def seeds_of(self, variant: Variant) -> tuple[int, ...]:
        """The seeds the variant is trained with: its own list, or the grid's."""
        return self.seeds if variant.seeds is None else variant.seeds

    def is_central(self, variant: Variant) -> bool:
        """A variant trained with every grid seed."""
        return set(self.seeds) <= set(self.seeds_of(variant))

    def runs(self) -> list[tuple[Variant, int]]:
        """Every (variant, seed) in training order: the central variants (every grid seed) seed-major, then the
        others seed-major; so a grid cut short has all central variants paired on its first seeds."""
        order: list[tuple[Variant, int]] = []
        for central in (True, False):
            chosen = [v for v in self.variants if self.is_central(v) == central]
            all_seeds = sorted({s for v in chosen for s in self.seeds_of(v)}, key=self._seed_rank)
            order += [(v, s) for s in all_seeds for v in chosen if s in self.seeds_of(v)]
        return order

    def _seed_rank(self, seed: int) -> tuple[int, int]:
        return (self.seeds.index(seed), seed) if seed in self.seeds else (len(self.seeds), seed)


def load_study(path: str | Path, root: str | Path = ".") -> Study:
    """Read the grid YAML; variant configs are checked here, so a typo fails before any training."""
    p = Path(path)
    raw = read_yaml_mapping(p)
    known = {"base_config", "seeds", "train_subset", "subset_seed", "variants", "attribute_variants",
             "scheme_variants"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{p}: unknown grid key(s): {', '.join(unknown)}")
    try:
        variants = tuple(
            Variant(str(v["name"]), str(v.get("label", v["name"])), str(v.get("group", "")),
                    dict(v.get("overrides") or {}),
                    None if v.get("seeds") is None else tuple(int(s) for s in v["seeds"]))
            for v in raw["variants"]
        )
        study = Study(
            base_config=str(raw["base_config"]),
            seeds=tuple(int(s) for s in raw["seeds"]),
            variants=variants,
            attribute_variants=tuple(raw.get("attribute_variants", ())),
            scheme_variants=tuple(raw.get("scheme_variants", ())),
            train_subset=int(raw.get("train_subset", 0)),
            subset_seed=int(raw.get("subset_seed", 0)),
            root=Path(root),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{p}: malformed grid ({type(exc).__name__}: {exc})") from None
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"{p}: duplicate variant names")
    for name in (*study.attribute_variants, *study.scheme_variants):
        study.variant(name)
    for v in variants:
        unknown_keys = sorted(set(next(r for r in raw["variants"] if str(r["name"]) == v.name))
                              - {"name", "label", "group", "overrides", "seeds"})
        if unknown_keys:
            raise ConfigError(f"{p}: variant {v.name}: unknown key(s): {', '.join(unknown_keys)}")
        if v.seeds is not None and (not v.seeds or len(set(v.seeds)) != len(v.seeds)):
            raise ConfigError(f"{p}: variant {v.name}: seeds must be a non-empty list without repeats")
        variant_config(study, v, study.seeds_of(v)[0] if study.seeds_of(v) else 0)
    return study


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def variant_config(study: Study, variant: Variant, seed: int, threads: int | None = None) -> Config:
    """The base config + the variant's overrides, with ``train.seed`` = seed (and the thread count)."""
    path = study.root / study.base_config
    base = read_yaml_mapping(path)
    values = _merge(base, variant.overrides)
    extra = [f"train.seed={seed}"] + ([f"train.threads={threads}"] if threads is not None else [])
    apply_overrides(values, extra)
    try:
        cfg = config_from_dict(values)
        tasks_by_name(cfg.data.tasks)
    except ConfigError as exc:
        raise ConfigError(f"{path} + variant {variant.name}: {exc}") from None
    except KeyError as exc:
        raise ConfigError(f"{path} + variant {variant.name}: {exc.args[0]}") from None
    return cfg


def results_path(results_dir: Path, variant: str, seed: int) -> Path:
    return results_dir / f"{variant}__seed{seed}.json"


def run_dir_of(runs_dir: Path, variant: str, seed: int) -> Path:
    return runs_dir / variant / f"seed{seed}"


def run_state(runs_dir: Path, results_dir: Path, variant: str, seed: int) -> str:
    if results_path(results_dir, variant, seed).is_file():
        return "done"
    if (run_dir_of(runs_dir, variant, seed) / "last.pt").is_file():
        return "partial"
    return "todo"


# ---- data ------------------------------------------------------------------------------------------
@dataclass
class StudyFaces:
    train: list[FaceAnnotation]
    val: list[FaceAnnotation]
    test: list[FaceAnnotation]


def load_faces(study: Study, cfg: Config) -> StudyFaces:
    """The validation split and the fixed training subset every run of the grid uses, and the test set."""
    from ..data.dataset import split_indices
    from ..data.formats import read_annotations

    root = study.root
    all_faces = read_annotations(root / cfg.data.train)
    train_idx, val_idx = split_indices(len(all_faces), cfg.data.validation_fraction, cfg.data.split_seed)
    if 0 < study.train_subset < len(train_idx):
        rng = np.random.default_rng(study.subset_seed)
        train_idx = np.sort(rng.choice(train_idx, size=study.train_subset, replace=False))
    return StudyFaces(
        train=[all_faces[i] for i in train_idx],
        val=[all_faces[i] for i in val_idx],
        test=read_annotations(root / cfg.data.test),
    )


# ---- one run ---------------------------------------------------------------------------------------
def _comparable(config: dict[str, Any], saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config dict without the settings that do not change what is trained (thread count). With ``saved``
    (the config a partial run was made with), keys that ``saved`` lacks are dropped where they hold their
    default: a key added to the config since, left at the value that trains as before, does not block a
    resume."""
    out = json.loads(json.dumps(config))
    out.get("train", {}).pop("threads", None)
    if saved is not None:
        defaults = config_to_dict(Config())
        for section, values in out.items():
            if not isinstance(values, dict):
                continue
            for key in [k for k in values if k not in saved.get(section, {})]:
                if values[key] == defaults.get(section, {}).get(key):
                    del values[key]
    return out


def train_run(cfg: Config, run_dir: Path, faces: StudyFaces) -> Path:
    """Train one run (resuming from ``last.pt`` if there is one) and return its ``best.pt``; the trainer's
    summary is written to ``summary.json`` in the run folder."""
    from ..models.checkpoint import read_checkpoint
    from ..training.trainer import Trainer

    trainer = Trainer(cfg, run_dir, faces=(faces.train, faces.val))
    last = run_dir / "last.pt"
    if last.is_file():
        saved = read_checkpoint(last)["config"]
        if _comparable(saved) != _comparable(config_to_dict(cfg), saved):
            raise CheckpointError(f"{last}: made with another config than this grid's; delete {run_dir} to retrain")
        trainer.resume(last)
    summary = trainer.fit()
    _write_json_atomic(_round(summary), run_dir / SUMMARY_FILE)
    best = run_dir / "best.pt"
    if not best.is_file():
        raise CheckpointError(f"{best}: training ended without a best checkpoint")
    return best


def _round(value: Any, digits: int = 6) -> Any:
    """Floats to ``digits`` significant digits, recursively; inf/nan to None (plain JSON)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v, digits) for v in value]
    return value


def evaluate_run(best: Path, faces: StudyFaces) -> dict[str, Any]:
    """AFLW test-set scores of a checkpoint (whole image as the face box) and its learned task covariance."""
    from ..evaluation.protocol import evaluate
    from ..inference.backends.torch import LandmarkModel
    from ..models.checkpoint import read_checkpoint

    report = evaluate(LandmarkModel.load(best), faces.test, box="image")
    summary = report.summary()
    state = read_checkpoint(best)
    covariance = state.get("task_covariance")
    return {
        "test": {k: summary[k] for k in ("n", "detected", "box", "nme", "nme_interpupil", "failure_rate",
                                          "failure_threshold", "auc_at_threshold", "attribute_accuracy")},
        "point_names": list(report.point_names),
        "per_landmark": [float(v) for v in report.per_landmark],
        # Rounded to 1e-5 of the inter-ocular distance: enough for every statistic in the report.
        "face_errors": [round(float(e), 5) if np.isfinite(e) else None for e in report.face_errors],
        "task_covariance": None if covariance is None else covariance.double().numpy().tolist(),
    }


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The trainer's summary of the run (``Trainer.fit``'s return: best validation error, lambda bound counts)."""
    path = run_dir / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _now() -> tuple[float, str]:
    t = time.time()
    return t, datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(obj: Any, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n", mkdir=True)


def run_one(study: Study, variant: Variant, seed: int, runs_dir: Path, results_dir: Path, faces: StudyFaces,
            threads: int | None = None) -> Path:
    """Train, evaluate and save one (variant, seed); a run with a results file is left alone."""
    out = results_path(results_dir, variant.name, seed)
    if out.is_file():
        log.info("%s seed %d: results exist (%s), skipped", variant.name, seed, out)
        return out
    cfg = variant_config(study, variant, seed, threads)
    run_dir = run_dir_of(runs_dir, variant.name, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    started_file = run_dir / STARTED_FILE
    if not started_file.is_file():
        t, iso = _now()
        _write_json_atomic({"started_at": t, "started_at_iso": iso}, started_file)
    started = json.loads(started_file.read_text(encoding="utf-8"))
    resumed = (run_dir / "last.pt").is_file()
    log.info("%s seed %d: %s in %s", variant.name, seed, "resuming" if resumed else "training", run_dir)
    t0 = time.time()
    best = train_run(cfg, run_dir, faces)
    t1 = time.time()
    scores = evaluate_run(best, faces)
    t2 = time.time()
    finished, finished_iso = _now()
    result = {
        "schema": RESULTS_SCHEMA,
        "variant": variant.name,
        "label": variant.label,
        "group": variant.group,
        "seed": seed,
        "config": config_to_dict(cfg),
        "study": {"train_subset": study.train_subset, "subset_seed": study.subset_seed,
                  "train_faces": len(faces.train), "val_faces": len(faces.val), "test_faces": len(faces.test),
                  "checkpoint": "best.pt (lowest validation NME)"},
        "task_names": list(cfg.data.tasks),
        **scores,
        "history": read_history(run_dir),
        "train_summary": read_summary(run_dir),
        "timing": {"started_at": started["started_at"], "started_at_iso": started["started_at_iso"],
                   "finished_at": finished, "finished_at_iso": finished_iso,
                   "train_seconds_last_session": t1 - t0, "eval_seconds": t2 - t1, "resumed": resumed},
    }
    for key in ("test", "per_landmark", "task_covariance", "history"):  # not the timestamps
        result[key] = _round(result[key])
    _write_json_atomic(result, out)
    log.info("%s seed %d: AFLW mean error %.2f%%, failure rate %.2f%% (train %.0fs, eval %.0fs) -> %s",
             variant.name, seed, 100 * scores["test"]["nme"], 100 * scores["test"]["failure_rate"],
             t1 - t0, t2 - t1, out)
    return out


# ---- sharing the grid between workers ---------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_run(run_dir: Path) -> bool:
    """Take the run for this process; False when a live process holds it. A dead holder's claim is taken over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    claim = run_dir / CLAIM_FILE
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(claim.read_text(encoding="utf-8").strip() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder == os.getpid():
                return True
            if holder and _pid_alive(holder):
                return False
            try:
                claim.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def release_run(run_dir: Path) -> None:
    claim = run_dir / CLAIM_FILE
    try:
        if int(claim.read_text(encoding="utf-8").strip() or 0) == os.getpid():
            claim.unlink()
    except (OSError, ValueError):
        pass


def run_grid(study: Study, runs_dir: Path, results_dir: Path, variants: Sequence[str] = (),
             seeds: Sequence[int] = (), threads: int | None = None) -> list[tuple[str, int, str]]:
    """Work through every unfinished (variant, seed) this process can claim; returns failures as
    (variant, seed, message)."""
    todo = [(v, s) for v, s in study.runs()
            if (not variants or v.name in variants) and (not seeds or s in seeds)]
    pending = [(v, s) for v, s in todo if not results_path(results_dir, v.name, s).is_file()]
    log.info("study grid: %d runs selected, %d already have results", len(todo), len(todo) - len(pending))
    if not pending:
        return []
    faces = load_faces(study, variant_config(study, pending[0][0], pending[0][1]))
    failures: list[tuple[str, int, str]] = []
    # Runs another worker claimed count as handled here too, so the total is reached either way.
    for variant, seed in progress(pending, "study", "run"):
        run_dir = run_dir_of(runs_dir, variant.name, seed)
        if results_path(results_dir, variant.name, seed).is_file() or not claim_run(run_dir):
            continue
        try:
            run_one(study, variant, seed, runs_dir, results_dir, faces, threads)
        except TcdcnError as exc:
            log.error("%s seed %d failed: %s", variant.name, seed, exc)
            failures.append((variant.name, seed, str(exc)))
        finally:
            release_run(run_dir)
    return failures
