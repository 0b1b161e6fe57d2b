"""Shipped models: each described by a small record (file, sha256, scheme, preprocessing, the figures
it reached), loaded with its checksum verified. Nothing is downloaded: the files ship in the package.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import CheckpointError


@dataclass(frozen=True)
class ModelWeights:
    name: str
    file: str  # inside tcdcn/weights/
    sha256: str
    scheme: str
    input_size: int
    box_convention: str
    preprocessing: str
    training_data: str
    metrics: dict[str, float] = field(default_factory=dict)

    def path(self) -> Path:
        return Path(str(resources.files("tcdcn") / "weights" / self.file))


_PREPROCESS = "grey (ITU-R 601 luma), square face box cropped and resized to 60x60, per-image standardised"
_BOX = "square box on the 5 points' bounding-box centre, side 2.8x its larger side (tcdcn.geometry)"

SHIPPED: dict[str, ModelWeights] = {
    w.name: w
    for w in (
        ModelWeights(
            name="mtfl-5pt",
            file="mtfl-5pt.pt",
            sha256="",
            scheme="mtfl-5",
            input_size=60,
            box_convention=_BOX,
            preprocessing=_PREPROCESS,
            training_data="MTFL training set (9,000 faces; 1,000 held out for validation)",
            metrics={},
        ),
    )
}


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights_file(name_or_path: str) -> Path:
    """A shipped model's name (checksum verified) or a checkpoint path -> the file to load."""
    if name_or_path in SHIPPED:
        w = SHIPPED[name_or_path]
        path = w.path()
        if not path.is_file():
            raise CheckpointError(f"{path}: shipped model {w.name!r} is missing from the installation")
        actual = sha256_of(path)
        if actual != w.sha256:
            raise CheckpointError(f"{path}: sha256 {actual[:12]}... does not match the expected {w.sha256[:12]}...")
        return path
    path = Path(name_or_path)
    if not path.exists():
        raise CheckpointError(f"{name_or_path}: neither a shipped model ({', '.join(SHIPPED)}) nor a file")
    return path
