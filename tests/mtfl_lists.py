"""Small MTFL-format lists of real training faces for tests that run training end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MTFL_TRAIN = REPO_ROOT.parent / "shared" / "data" / "mtfl" / "training.txt"


def write_tiny_mtfl(folder: Path, count: int) -> Path:
    """An MTFL list of the first ``count`` training faces, images symlinked under ``folder/images``."""
    if not MTFL_TRAIN.is_file():
        pytest.skip(f"shared data not found at {MTFL_TRAIN} (expected ../shared/data beside the repository)")
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, line in enumerate(MTFL_TRAIN.read_text().splitlines()[:count]):
        fields = line.split()
        source = MTFL_TRAIN.parent / fields[0].replace("\\", "/")
        link = images / f"{i:03d}{source.suffix}"
        link.symlink_to(source)
        lines.append(" ".join([f"images/{link.name}", *fields[1:]]))
    listing = folder / "faces.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing
