"""The paired-by-seed statistics of the studies report, checked against values computed by hand, the
measurements read off a run's history, and the order in which the grid trains its runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tcdcn.studies import grid as studies
from tcdcn.studies import statistics as st
from tcdcn.studies.markdown import _claim_line
from tcdcn.studies.pilots import measurement_table, run_measurements

REPO = Path(__file__).resolve().parents[1]


def test_t_quantiles_are_the_tabulated_ones() -> None:
    assert st.t_quantile_975(1) == 12.706
    assert st.t_quantile_975(2) == 4.303
    assert st.t_quantile_975(4) == 2.776
    assert st.t_quantile_975(30) == 2.042
    assert st.t_quantile_975(100) == 1.96
    assert math.isnan(st.t_quantile_975(0))


def test_paired_difference_and_interval_by_hand() -> None:
    a = {0: 0.100, 1: 0.120, 2: 0.110}
    b = {0: 0.110, 1: 0.125, 2: 0.130, 3: 0.200}  # seed 3 has no partner and is left out
    paired = st.paired_difference("a", a, "b", b)
    # d = -0.010, -0.005, -0.020: mean -0.011667; deviations 0.001667, 0.006667, -0.008333, squares sum
    # 1.16667e-4, / 2 = 5.8333e-5, sd = 0.0076376; half-width 4.303 * 0.0076376 / sqrt(3) = 0.018974.
    assert paired.seeds == [0, 1, 2] and paired.n == 3
    assert paired.mean == pytest.approx(-0.0116667, abs=1e-7)
    assert paired.sd == pytest.approx(0.0076376, abs=1e-7)
    assert paired.half_width == pytest.approx(0.018974, abs=1e-6)
    low, high = paired.interval
    assert low == pytest.approx(-0.030641, abs=1e-6) and high == pytest.approx(0.007308, abs=1e-6)
    assert paired.wins == 3
    assert paired.mean_a == pytest.approx(0.11) and paired.mean_b == pytest.approx(0.121666667)
    # The interval holds 0 and -margin: unresolved.
    assert st.claim_verdict(paired, margin=0.001) == st.UNRESOLVED


def test_verdicts_from_the_interval() -> None:
    base = {0: 0.100, 1: 0.100, 2: 0.100}
    # d = -0.010, -0.011, -0.012: mean -0.011, sd 0.001, half 4.303 * 0.001 / sqrt(3) = 0.002484.
    better = st.paired_difference("a", {0: 0.090, 1: 0.089, 2: 0.088}, "b", base)
    assert better.interval == pytest.approx((-0.013484, -0.008516), abs=1e-6)
    assert st.claim_verdict(better, margin=0.0015) == st.REPRODUCED
    # d = +0.001, 0, +0.002: interval (-0.001484, 0.003484): rules out a gain of 0.003, not one of 0.001.
    same = st.paired_difference("a", {0: 0.101, 1: 0.100, 2: 0.102}, "b", base)
    assert same.interval == pytest.approx((-0.001484, 0.003484), abs=1e-6)
    assert st.claim_verdict(same, margin=0.003) == st.NOT_REPRODUCED
    assert st.claim_verdict(same, margin=0.001) == st.UNRESOLVED
    # One paired seed: no interval, no verdict.
    single = st.paired_difference("a", {0: 0.05}, "b", base)
    assert single.n == 1 and math.isnan(single.half_width)
    assert st.claim_verdict(single, margin=0.01) == st.UNRESOLVED


def test_seeds_to_resolve() -> None:
    # Half-width t(n-1) * 0.004 / sqrt(n) <= 0.002: n = 17 gives 2.120 * 0.004 / 4.123 = 0.00206, n = 18 gives
    # 2.110 * 0.004 / 4.243 = 0.00199.
    assert st.seeds_to_resolve(0.004, 0.004) == 18
    assert st.seeds_to_resolve(0.0001, 0.004) == 2
    assert st.seeds_to_resolve(math.nan, 0.004) is None
    assert st.seeds_to_resolve(1.0, 0.0001) is None


def test_claim_line_for_the_random_task_inverts_the_verdict() -> None:
    base = {0: 0.100, 1: 0.100, 2: 0.100}
    same = st.paired_difference("fld_random", {0: 0.101, 1: 0.100, 2: 0.102}, "fld_only", base)
    labels = {"fld_random": "FLD+random", "fld_only": "FLD only"}
    line = _claim_line("A random task hardly helps", same, labels, 0.003, "source", expect_gain=False)
    assert line.startswith("- A random task hardly helps: **reproduced**. FLD+random - FLD only = +0.10 points")
    assert "95% interval -0.15 to +0.35" in line and "paper's effect 0.30 points (source)" in line
    unresolved = _claim_line("Claim", same, labels, 0.001, "source")
    assert "**unresolved at this budget**" in unresolved
    # sd of the differences 0.001, margin 0.001: t(n-1) * 0.001 / sqrt(n) <= 0.0005 first at n = 18 (as above).
    assert "about 18 paired seeds" in unresolved


def _record(epoch: float, shared: dict[str, float], head: dict[str, float], lambdas: dict[str, float],
            nme: float = 0.1, seconds: float = 10.0) -> dict:
    return {"epoch": epoch, "step": int(epoch * 10), "val_nme": nme, "seconds": seconds,
            "gradient_norms": {"shared": shared, "landmark_head": head}, "task_coefficients": lambdas}


HISTORY = [
    _record(0.5, {"landmarks": 3.0, "attributes": 1.0}, {"landmarks": 9.0, "covariance": 1.0},
            {"a": 1.0, "b": 0.01}, nme=0.20, seconds=5.0),
    _record(1.0, {"landmarks": 1.0, "attributes": 1.0}, {"landmarks": 19.0, "covariance": 1.0},
            {"a": 0.4, "b": 0.01}, nme=0.15, seconds=11.0),
    _record(1.5, {"landmarks": 1.0, "attributes": 3.0}, {"landmarks": 1.0, "covariance": 0.0},
            {"a": 1.0, "b": 0.0}, nme=0.16, seconds=6.0),
]


def test_gradient_shares_and_lambda_counts_from_a_history() -> None:
    # Shared layers: 3/4, 1/2, 1/4 -> landmark share 0.5; attributes 1/4, 1/2, 3/4 -> 0.5.
    assert st.term_shares(HISTORY, "shared") == pytest.approx({"landmarks": 0.5, "attributes": 0.5})
    # Landmark head covariance: 0.1, 0.05, 0 -> 0.05.
    assert st.term_shares(HISTORY, "landmark_head")["covariance"] == pytest.approx(0.05)
    counts = st.coefficient_counts(HISTORY, eps=0.01)
    assert counts["a"] == {"updates": 3, "at_eps": 0, "at_ceiling": 2, "at_zero": 0, "between": 1}
    assert counts["b"] == {"updates": 3, "at_eps": 2, "at_ceiling": 0, "at_zero": 1, "between": 0}
    assert st.halted_tasks(HISTORY) == {"b": 1.5}


def test_run_measurements_up_to_an_epoch() -> None:
    m = run_measurements(HISTORY, eps=0.01, upto_epoch=1.0)
    assert m["epochs"] == 1.0 and m["best_val_nme"] == 0.15 and m["last_val_nme"] == 0.15
    assert m["seconds_per_epoch"] == 11.0  # the epoch-end record holds the epoch's time
    assert m["shared"] == pytest.approx({"landmarks": 0.625, "attributes": 0.375})
    assert m["lambda"] == {"at_eps": 2, "between": 1, "at_ceiling": 1, "at_zero": 0, "updates": 4}
    assert m["halted"] == {}
    table = measurement_table({"pilot": m})
    assert table[2] == ("| pilot | 1.00 | 15.00% | 15.00% | 11 | 62.5% | 37.5% | 7.5% | 2 / 1 / 1 / 0 of 4 | - |")


def test_variant_seeds_and_run_order(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text((REPO / "configs/studies/base.yaml").read_text(encoding="utf-8"))
    (tmp_path / "grid.yaml").write_text(
        "base_config: base.yaml\nseeds: [0, 1, 2]\nvariants:\n"
        "  - {name: fld_only, overrides: {data: {tasks: []}}}\n"
        "  - {name: fld_eyes, seeds: [0, 1], overrides: {data: {tasks: [glasses]}}}\n"
        "  - {name: fld_all}\n"
        "attribute_variants: [fld_only, fld_eyes, fld_all]\nscheme_variants: []\n", encoding="utf-8")
    study = studies.load_study(tmp_path / "grid.yaml", root=tmp_path)
    assert study.seeds_of(study.variant("fld_eyes")) == (0, 1)
    assert [(v.name, s) for v, s in study.runs()] == [
        ("fld_only", 0), ("fld_all", 0), ("fld_only", 1), ("fld_all", 1), ("fld_only", 2), ("fld_all", 2),
        ("fld_eyes", 0), ("fld_eyes", 1)]
    (tmp_path / "bad.yaml").write_text(
        "base_config: base.yaml\nseeds: [0]\nvariants:\n  - {name: x, seed: [1]}\n", encoding="utf-8")
    from tcdcn.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key"):
        studies.load_study(tmp_path / "bad.yaml", root=tmp_path)


def test_report_measures_whether_the_method_acts(tmp_path: Path) -> None:
    from tcdcn.studies.markdown import _method_acts_lines

    (tmp_path / "base.yaml").write_text((REPO / "configs/studies/base.yaml").read_text(encoding="utf-8"))
    (tmp_path / "grid.yaml").write_text(
        "base_config: base.yaml\nseeds: [0, 1]\nvariants:\n"
        "  - {name: fld_all, label: FLD+all}\n"
        "  - {name: fld_all_early_stopping, label: ES, overrides: {multitask: {coefficients: early_stopping}}}\n"
        "attribute_variants: [fld_all]\nscheme_variants: [fld_all_early_stopping]\n", encoding="utf-8")
    study = studies.load_study(tmp_path / "grid.yaml", root=tmp_path)
    cfg = studies.config_to_dict(studies.variant_config(study, study.variant("fld_all"), 0))
    es_cfg = studies.config_to_dict(studies.variant_config(study, study.variant("fld_all_early_stopping"), 0))
    es_history = [_record(0.5, {"landmarks": 1.0, "attributes": 1.0}, {"landmarks": 1.0}, {"a": 1.0, "b": 1.0}),
                  _record(1.0, {"landmarks": 1.0, "attributes": 1.0}, {"landmarks": 1.0}, {"a": 0.0, "b": 1.0})]
    results = {"fld_all": {0: {"config": cfg, "history": HISTORY}, 1: {"config": cfg, "history": HISTORY}},
               "fld_all_early_stopping": {0: {"config": es_cfg, "history": es_history}}}
    lines = _method_acts_lines(study, results)
    # Two seeds of HISTORY: shares 50% / 50% on the shared layers, covariance 5% of the landmark head; lambda
    # counts doubled (a: 0 / 1 / 2 / 0, b: 2 / 0 / 0 / 1 per seed).
    assert "| FLD+all | 2 | 50.0% | 50.0% | 5.0% | 4 / 2 / 4 / 2 of 12 |" in lines
    # Early stopping: ceiling = initial_coefficient 1; one halt.
    assert "| ES | 1 | 50.0% | 50.0% | 0.0% | 0 / 0 / 3 / 1 of 4 |" in lines
    assert "Task-wise early stopping halted: seed 0: a at epoch 1.00." in lines
    # Per task, dynamic variants only: task a of HISTORY is 0 / 1 / 2 per seed, b 2 / 0 / 0 (and once at 0).
    assert "| FLD+all | a | 0 | 2 | 4 | 6 |" in lines and "| FLD+all | b | 4 | 0 | 0 | 6 |" in lines
    assert not any(line.startswith("| ES | a |") for line in lines)


# ---- the grid resumes an interrupted run from last.pt (a real, tiny training run) -----------------------
def test_interrupted_grid_run_resumes_on_the_same_trajectory(mtfl_train_faces: list, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from small_training import NO_AUGMENTATION, small_config

    from tcdcn.errors import CheckpointError
    from tcdcn.models.checkpoint import read_checkpoint
    from tcdcn.training.trainer import Trainer

    faces = studies.StudyFaces(mtfl_train_faces[:24], mtfl_train_faces[24:32], [])
    cfg = small_config(augment=NO_AUGMENTATION, data={"tasks": ["male", "smiling"]},
                       multitask={"evaluations_per_epoch": 2, "tau": 1, "covariance_interval": 2},
                       train={"epochs": 3, "batch_size": 8})
    whole = studies.train_run(cfg, tmp_path / "whole", faces)

    real_save = Trainer.save_checkpoint
    saves = {"n": 0}

    def save_then_die(self: Trainer, path: Path) -> None:  # killed right after the first epoch's checkpoint
        real_save(self, path)
        saves["n"] += 1
        if saves["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        studies.train_run(cfg, tmp_path / "cut", faces)
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(Trainer, "save_checkpoint", real_save)
    resumed = studies.train_run(cfg, tmp_path / "cut", faces)

    a, b = read_checkpoint(whole)["model"], read_checkpoint(resumed)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    def timeless(run: str) -> list[dict]:  # each record's seconds are wall-clock, the rest must match
        return [{k: v for k, v in r.items() if k != "seconds"} for r in studies.read_history(tmp_path / run)]

    assert len(timeless("cut")) == 6 and timeless("cut") == timeless("whole")
    assert studies.read_summary(tmp_path / "cut")["epochs"] == 3
    # A partial run made with another config is refused, not continued.
    (tmp_path / "cut" / "last.pt").replace(tmp_path / "other.pt")
    other = small_config(augment=NO_AUGMENTATION, data={"tasks": ["male", "smiling"]},
                         multitask={"evaluations_per_epoch": 2, "tau": 2, "covariance_interval": 2},
                         train={"epochs": 3, "batch_size": 8})
    studies.train_run(other, tmp_path / "changed", faces)  # writes its own last.pt at epoch 3
    (tmp_path / "other.pt").replace(tmp_path / "changed" / "last.pt")
    with pytest.raises(CheckpointError, match="another config"):
        studies.train_run(other, tmp_path / "changed", faces)


def test_resume_check_tolerates_config_keys_added_at_their_default() -> None:
    cfg = studies.config_to_dict(studies.Config())
    saved = {k: dict(v) for k, v in cfg.items()}
    del saved["train"]["weight_averaging_from"]  # a key the partial run's code did not have yet
    assert studies._comparable(saved) == studies._comparable(cfg, saved)
    changed = {k: dict(v) for k, v in cfg.items()}
    changed["train"]["weight_averaging_from"] = 5  # the new key set away from its default: another run
    assert studies._comparable(saved) != studies._comparable(changed, saved)
    changed = {k: dict(v) for k, v in cfg.items()}
    changed["multitask"]["rho"] = 1.0
    assert studies._comparable(cfg) != studies._comparable(changed, cfg)


def test_report_from_a_partial_grid_says_how_much_has_finished(tmp_path: Path) -> None:
    from test_studies_report import _fake_result

    from tcdcn.studies.markdown import build_markdown

    study = studies.load_study(REPO / "configs/studies/grid.yaml", root=REPO)
    results = {"fld_only": {0: _fake_result(study, "fld_only", 0)}}
    md = build_markdown(study, results, {}, tmp_path)
    assert f"Runs with results: 1 of {len(study.runs())}." in md
    assert ("- Auxiliary tasks help: FLD+all has a lower mean error than FLD only (Fig. 8): **unresolved at this "
            "budget**: no paired seeds yet (FLD+all: 0, FLD only: 1 finished runs)") in md
    assert "- The mouth group lowers the error at its own region (Fig. 9): **unresolved at this budget**" in md
    assert "## Missing runs" in md and "fld_all seed 0" in md
