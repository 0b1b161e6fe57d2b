"""Training survives faults: SIGKILL mid-epoch then --resume, a non-finite loss, a full disk during save.

The runs train a tiny TCDCN on 64 real MTFL faces listed in an MTFL-format file in ``tmp_path`` whose
relative image paths are symlinks into the shared data (nothing is copied). One torch thread, so two
runs with the same seed are bit-identical and "resumed == uninterrupted" is checked exactly.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from mtfl_lists import write_tiny_mtfl

from tcdcn.cli import main
from tcdcn.config import config_from_dict, load_config
from tcdcn.models import checkpoint
from tcdcn.models.checkpoint import atomic_save, read_checkpoint
from tcdcn.training.trainer import NonFiniteLossError, Trainer

REPO_ROOT = Path(__file__).resolve().parents[1]
FACES_USED = 64
BATCH_SIZE = 8  # 48 training faces -> 6 steps per epoch
EPOCHS = 3
CHECKPOINT_EVERY_STEPS = 2  # mid-epoch checkpoints at steps 2, 4, 8, 10, 14, 16
STEPS_PER_EPOCH = 6
# Seconds the killed run sleeps per SGD step, so the test can catch it between two checkpoints.
SLOW_STEP_S = 0.3
KILL_DEADLINE_S = 120.0
SUBPROCESS_TIMEOUT_S = 300.0


def tiny_config(listing: Path) -> dict[str, Any]:
    """Small enough for a few seconds of CPU; every part of the alternating algorithm is exercised."""
    return {
        "data": {"train": str(listing), "test": str(listing), "validation_fraction": 0.25,
                 "tasks": ["male", "smiling", "glasses", "pose_frontal"]},
        "model": {"input_size": 48, "channels": [4, 8, 8, 8], "feature_dim": 16},
        "objective": {"landmark_weight": 100.0},
        "multitask": {"coefficients": "dynamic", "tau": 1, "covariance_interval": 2, "evaluations_per_epoch": 2},
        "train": {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "warmup_epochs": 1, "threads": 1,
                  "checkpoint_every_steps": CHECKPOINT_EVERY_STEPS},
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config file, data listing) in a fresh folder."""
    folder = tmp_path_factory.mktemp("tiny")
    listing = write_tiny_mtfl(folder, FACES_USED)
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(listing)))
    return config, listing


def train_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tcdcn", "-q", "train", "--config", str(config), "--out", str(out), *extra]


def run_quietly(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, cwd=REPO_ROOT)


def history_without_timing(run: Path) -> list[dict[str, Any]]:
    import json

    records = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def checkpoint_step(path: Path) -> tuple[int, int] | None:
    """(step, step_in_epoch) of a checkpoint, or None while there is none."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return int(state["step"]), int(state["step_in_epoch"])


# A `tcdcn train` whose SGD steps are slowed down (numerics untouched), so that it can be killed mid-run.
SLOW_TRAIN = f"""
import sys, time
import tcdcn.training.trainer
from tcdcn.cli import main
original = tcdcn.training.trainer.Trainer.sgd_step
def slow_step(self, *args, **kwargs):
    time.sleep({SLOW_STEP_S})
    return original(self, *args, **kwargs)
tcdcn.training.trainer.Trainer.sgd_step = slow_step
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = tiny_run
    total_steps = EPOCHS * STEPS_PER_EPOCH

    # The uninterrupted run in this process (one interpreter start less; same single thread, same numbers).
    reference = tmp_path / "uninterrupted"
    Trainer(load_config(config), reference).fit()

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-c", SLOW_TRAIN, "-q", "train", "--config", str(config), "--out", str(killed)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + KILL_DEADLINE_S
    position = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            position = checkpoint_step(killed / "last.pt")
            if position is not None and 0 < position[1] < STEPS_PER_EPOCH:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"training ended before it could be killed: {proc.communicate()[1]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    kept = checkpoint_step(killed / "last.pt")
    assert kept is not None and 0 < kept[0] < total_steps, f"no mid-run checkpoint to resume from: {kept}"
    assert 0 < kept[1] < STEPS_PER_EPOCH, f"the checkpoint is not mid-epoch: {kept}"

    resumed = run_quietly(train_command(config, killed, "--resume", str(killed / "last.pt")))
    assert resumed.returncode == 0, resumed.stderr

    want = read_checkpoint(reference / "last.pt")
    got = read_checkpoint(killed / "last.pt")
    assert got["step"] == want["step"] == total_steps
    for name, tensor in want["model"].items():
        assert torch.equal(got["model"][name], tensor), f"parameter {name} differs after resume"
    assert torch.equal(got["task_covariance"], want["task_covariance"])
    assert got["task_coefficients"] == want["task_coefficients"]
    assert got["best_val_nme"] == want["best_val_nme"]
    assert history_without_timing(killed) == history_without_timing(reference)


def in_process_trainer(config: Path, out: Path, **train: Any) -> Trainer:
    values = yaml.safe_load(config.read_text())
    values["train"].update(train)
    return Trainer(config_from_dict(values), out)


def test_mid_epoch_checkpoints_are_written_at_the_configured_steps(tiny_run: tuple[Path, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config, _ = tiny_run
    trainer = in_process_trainer(config, tmp_path / "run", epochs=1)
    saved: list[tuple[int, int]] = []
    original = Trainer.save_checkpoint

    def record(self: Trainer, path: Path) -> None:
        saved.append((self.step, self.step_in_epoch))
        original(self, path)

    monkeypatch.setattr(Trainer, "save_checkpoint", record)
    trainer.fit()
    # Every 2 steps inside the epoch, plus the epoch end (step 6 is saved once, as the end of the epoch).
    assert saved == [(2, 2), (4, 4), (6, 0)]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_run: tuple[Path, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config, _ = tiny_run
    out = tmp_path / "run"
    trainer = in_process_trainer(config, out, epochs=1)
    import tcdcn.training.trainer

    original = tcdcn.training.trainer.tcdcn_objective
    poisoned_step = 3  # after the checkpoint at step 2

    def objective(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        terms = original(*args, **kwargs)
        if trainer.step == poisoned_step:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(tcdcn.training.trainer, "tcdcn_objective", objective)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 1, step 3; last good checkpoint "
                                                 r"kept: .*last\.pt \(step 2\)"):
        trainer.fit()
    kept = read_checkpoint(out / "last.pt")
    assert kept["step"] == 2
    assert all(torch.isfinite(t).all() for t in kept["model"].values())
    # The step that produced the NaN did not touch the parameters.
    for name, tensor in trainer.model.state_dict().items():
        assert torch.isfinite(tensor).all(), name


def test_checkpoint_with_non_finite_weights_is_refused(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = tiny_run
    out = tmp_path / "run"
    trainer = in_process_trainer(config, out, epochs=1)
    trainer.save_checkpoint(out / "last.pt")
    good = (out / "last.pt").read_bytes()
    with torch.no_grad():
        trainer.model.fc.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="non-finite parameter fc.weight"):
        trainer.save_checkpoint(out / "last.pt")
    assert (out / "last.pt").read_bytes() == good


def test_exploding_learning_rate_exits_2_with_one_line(tiny_run: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = tiny_run
    code = main(["-q", "train", "--config", str(config), "--out", str(tmp_path / "run"),
                 "--set", "train.learning_rate=1.0e+30", "--set", "train.warmup_epochs=0"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("tcdcn: error: non-finite")


def test_disk_full_during_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.pt"
    atomic_save({"model": {"w": torch.arange(4.0)}, "config": {}}, target)
    before = target.read_bytes()

    def partial_write_then_enospc(obj: Any, fh: Any, *args: Any, **kwargs: Any) -> None:
        fh.write(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", partial_write_then_enospc)
    with pytest.raises(OSError) as info:
        atomic_save({"model": {"w": torch.zeros(4)}, "config": {}}, target)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(target)["model"]["w"], torch.arange(4.0))
