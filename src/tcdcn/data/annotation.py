"""The one record every format reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..schemes import LandmarkScheme


@dataclass(frozen=True)
class FaceAnnotation:
    """One annotated face.

    ``landmarks`` is ``(P, 2)`` float in pixels of ``image_path``'s image; ``visible`` is ``(P,)`` bool
    (False for points the annotation marks missing or occluded and that must not be scored), or None when
    all are present; ``attributes`` maps task names to 0/1 labels; ``source`` is "file:line" for errors.
    """

    image_path: Path
    landmarks: np.ndarray
    scheme: LandmarkScheme
    attributes: dict[str, int] = field(default_factory=dict)
    visible: np.ndarray | None = None
    source: str = ""
