"""Data-parallel training on two loopback processes (gloo) agrees with itself and with one process.

Two ranks each take their slice of every global batch of 7 faces (4 + 3, so the uneven-slice weighting
is exercised); their parameters, task coefficients and task covariance must be identical, and match a
single-process run on the same global batches up to floating-point summation order. The same data and
tiny model as ``test_fault_tolerance``: 64 real MTFL faces, images symlinked, nothing copied.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from mtfl_lists import write_tiny_mtfl

from tcdcn.config import config_from_dict
from tcdcn.models.checkpoint import read_checkpoint
from tcdcn.training.distributed import (
    DistributedContext,
    DistributedError,
    free_port,
    init_from_environment,
    shard_bounds,
)
from tcdcn.training.trainer import Trainer

REPO_ROOT = Path(__file__).resolve().parents[1]
FACES_USED = 64
WORLD_SIZE = 2
BATCH_SIZE = 7  # 48 training faces -> 6 steps per epoch; slices of 4 and 3
EPOCHS = 2
EVALUATIONS_PER_EPOCH = 2
# One process vs two differ only in the order gradients and losses are summed (float32 round-off).
# SGD carries that round-off linearly; Adam divides by sqrt(v) and turns it into lr-sized steps on
# near-zero gradients (5e-4 after 12 steps here), so the cross-check trains with SGD. Ranks agree
# bit for bit with either optimiser.
OPTIMIZER = "sgd"
PARAMETER_TOLERANCE = 1e-5
COEFFICIENT_TOLERANCE = 1e-4
SUBPROCESS_TIMEOUT_S = 400.0


def tiny_config(listing: Path, epochs: int = EPOCHS) -> dict[str, Any]:
    # A constant learning rate, so a run resumed after epoch 1 follows the EPOCHS-epoch run exactly.
    return {
        "data": {"train": str(listing), "test": str(listing), "validation_fraction": 0.25,
                 "tasks": ["male", "smiling", "glasses", "pose_frontal"]},
        "model": {"input_size": 48, "channels": [4, 8, 8, 8], "feature_dim": 16},
        "objective": {"landmark_weight": 100.0},
        "multitask": {"coefficients": "dynamic", "tau": 1, "covariance_interval": 2,
                      "evaluations_per_epoch": EVALUATIONS_PER_EPOCH},
        "train": {"epochs": epochs, "batch_size": BATCH_SIZE, "warmup_epochs": 0, "threads": 1,
                  "optimizer": OPTIMIZER, "learning_rate": 0.001, "min_learning_rate": 0.001},
    }


def final_state(trainer: Trainer) -> dict[str, Any]:
    return {
        "model": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "coefficients": torch.as_tensor(trainer.coefficients.values),
        "coefficient_history": torch.as_tensor(np.stack(trainer.coefficients.value_history)),
        "covariance": trainer.task_covariance.clone(),
        "val_nme": torch.tensor([r["val_nme"] for r in trainer.history]),
        "step": trainer.step,
    }


def _rank_main(rank: int, world_size: int, port: int, config: dict[str, Any], out: str, dump: str) -> None:
    """One spawned rank: join the group through the environment torchrun would set, train, dump state."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    context = init_from_environment()
    try:
        context.assert_same("rank number", np.array([rank]))
        caught_disagreement = False
    except DistributedError:
        caught_disagreement = True
    trainer = Trainer(config_from_dict(config), out, distributed=context)
    trainer.fit()
    state = final_state(trainer)
    state["caught_disagreement"] = caught_disagreement
    torch.save(state, Path(dump) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_mtfl(tmp_path_factory.mktemp("tiny"), FACES_USED)


@pytest.fixture(scope="module")
def single_process(listing: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    trainer = Trainer(config_from_dict(tiny_config(listing)), tmp_path_factory.mktemp("single"))
    trainer.fit()
    return final_state(trainer)


def assert_close_to_single_process(state: dict[str, Any], reference: dict[str, Any]) -> None:
    assert state["step"] == reference["step"]
    for name, tensor in reference["model"].items():
        gap = (state["model"][name] - tensor).abs().max().item()
        assert gap < PARAMETER_TOLERANCE, f"{name}: two ranks vs one process differ by {gap:.3g}"
    gap = (state["coefficient_history"] - reference["coefficient_history"]).abs().max().item()
    assert gap < COEFFICIENT_TOLERANCE, f"task coefficients differ by {gap:.3g}"
    gap = (state["covariance"] - reference["covariance"]).abs().max().item()
    assert gap < COEFFICIENT_TOLERANCE, f"task covariance differs by {gap:.3g}"
    assert torch.allclose(state["val_nme"], reference["val_nme"], atol=COEFFICIENT_TOLERANCE)


def test_shard_bounds_cover_the_batch_once_in_order() -> None:
    for n in (1, 7, 8, 64):
        for world in (1, 2, 3, 8):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_single_process_context_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = init_from_environment()
    assert context == DistributedContext()
    assert context.all_reduce_sum(np.array([1.5, 2.0])).tolist() == [1.5, 2.0]
    context.assert_same("anything", np.array([1.0]))  # no other rank to disagree with


def test_world_size_without_rendezvous_address_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(DistributedError, match="MASTER_ADDR"):
        init_from_environment()


def test_two_ranks_agree_and_match_one_process(listing: Path, single_process: dict[str, Any], tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    dump.mkdir()
    mp.spawn(_rank_main, args=(WORLD_SIZE, free_port(), tiny_config(listing), str(tmp_path / "run"), str(dump)),
             nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
    assert all(r["caught_disagreement"] for r in ranks), "assert_same missed ranks holding different values"
    first, second = ranks
    for name, tensor in first["model"].items():
        assert torch.equal(second["model"][name], tensor), f"ranks hold different {name}"
    assert torch.equal(first["coefficient_history"], second["coefficient_history"])
    assert torch.equal(first["covariance"], second["covariance"])
    assert_close_to_single_process(first, single_process)
    # Rank 0 alone writes the run folder.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "history.jsonl", "last.pt"]


def test_torchrun_resumes_a_single_process_checkpoint(listing: Path, single_process: dict[str, Any],
                                                      tmp_path: Path) -> None:
    """`torchrun -m tcdcn train --resume`: both ranks load the checkpoint and finish the run."""
    first_epoch = Trainer(config_from_dict(tiny_config(listing, epochs=1)), tmp_path / "epoch1")
    first_epoch.fit()
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(tiny_config(listing)))  # JSON is YAML
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD_SIZE}",
           "-m", "tcdcn", "-q", "train", "--config", str(config), "--out", str(run),
           "--resume", str(tmp_path / "epoch1" / "last.pt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, cwd=REPO_ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    state = read_checkpoint(run / "last.pt")
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == EPOCHS * EVALUATIONS_PER_EPOCH  # written once, by rank 0, history carried over
    coefficients = state["task_coefficients"]
    resumed = {
        "model": state["model"],
        "coefficients": torch.tensor(coefficients["values"]),
        "coefficient_history": torch.tensor(coefficients["value_history"]),
        "covariance": state["task_covariance"],
        "val_nme": torch.tensor([r["val_nme"] for r in history]),
        "step": state["step"],
    }
    assert_close_to_single_process(resumed, single_process)
