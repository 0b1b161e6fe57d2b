"""Shared fixtures: where the shared data lives, parsed MTFL lists, and one torch thread per test run.

Data is never copied into the repository: it is read from ``../shared/data`` relative to the repository
root (resolved from this file, so tests work from any working directory). Tests that need it are skipped
with a reason naming the missing path when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tcdcn.data.annotation import FaceAnnotation
from tcdcn.data.formats import read_mtfl

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MTFL_DIR = SHARED_DATA / "mtfl"
W300_DIR = SHARED_DATA / "300w"

# The machine is shared with a background training run; unit tests must not compete for cores.
TEST_TORCH_THREADS = 1


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> None:
    torch.set_num_threads(TEST_TORCH_THREADS)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (expected ../shared/data beside the repository)")
    return path


@pytest.fixture(scope="session")
def mtfl_dir() -> Path:
    return _require(MTFL_DIR)


@pytest.fixture(scope="session")
def mtfl_train_file(mtfl_dir: Path) -> Path:
    return _require(mtfl_dir / "training.txt")


@pytest.fixture(scope="session")
def mtfl_test_file(mtfl_dir: Path) -> Path:
    return _require(mtfl_dir / "testing.txt")


@pytest.fixture(scope="session")
def mtfl_train_faces(mtfl_train_file: Path) -> list[FaceAnnotation]:
    return read_mtfl(mtfl_train_file)


@pytest.fixture(scope="session")
def mtfl_test_faces(mtfl_test_file: Path) -> list[FaceAnnotation]:
    return read_mtfl(mtfl_test_file)


@pytest.fixture(scope="session")
def w300_afw_dir() -> Path:
    return _require(W300_DIR / "afw")


@pytest.fixture(scope="session")
def aflw_subset(mtfl_dir: Path, mtfl_test_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """``aflw_subset(n)``: the first ``n`` lines of testing.txt in a folder of their own, with AFLW/ linked
    beside them (the list's paths are relative to its folder)."""

    def make(n: int) -> Path:
        folder = tmp_path_factory.mktemp(f"aflw{n}")
        os.symlink(mtfl_dir / "AFLW", folder / "AFLW", target_is_directory=True)
        lines = mtfl_test_file.read_bytes().splitlines(keepends=True)[:n]
        path = folder / f"testing{n}.txt"
        path.write_bytes(b"".join(lines))
        return path

    return make

