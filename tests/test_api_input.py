"""The Python API refuses unusable input where it enters, with a named error, instead of computing on it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tcdcn import LandmarkDetector
from tcdcn.errors import ImageError, InputError, TcdcnError
from tcdcn.geometry import Box

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


@pytest.fixture(scope="module")
def detector() -> LandmarkDetector:
    return LandmarkDetector(face_detector=lambda rgb: [], box_refinements=0, multi_crop=False)


@pytest.mark.parametrize(("box", "message"), [
    ((200, 100, 100, 200), "x0 < x1"),  # x1 < x0
    ((200, 200, 100, 100), "x0 < x1"),  # both corners swapped
    ((100, 100, 100, 100), "x0 < x1"),  # zero size
    ((100, 100, math.inf, 200), "not finite"),
    ((math.nan, 100, 200, 200), "not finite"),
    (Box(100, 100, 0), "side must be > 0"),
    (Box(100, 100, -5), "side must be > 0"),
    (Box(math.nan, 100, 50), "not finite"),
    ((5000, 5000, 5100, 5100), "lies outside"),
    ((-300, -300, -200, -200), "lies outside"),
    ((1, 2, 3), "expected a Box or (x0, y0, x1, y1)"),
])
def test_unusable_boxes_are_refused_by_index(detector: LandmarkDetector, box: object, message: str) -> None:
    with pytest.raises(InputError, match=r"box 1: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        detector.on_boxes(EXAMPLE, [(150, 50, 350, 250), box])


def test_a_box_past_the_edge_is_used(detector: LandmarkDetector) -> None:
    faces = detector.on_boxes(EXAMPLE, [(-20, -20, 100, 100)])
    assert len(faces) == 1 and np.isfinite(faces[0].landmarks).all()


@pytest.mark.parametrize("source", [None, b"\xff\xd8 not a path", 42])
def test_unsupported_sources_are_image_errors(detector: LandmarkDetector, source: object) -> None:
    with pytest.raises(ImageError, match="not an image: expected a file path, a PIL image or a numpy array"):
        detector(source)  # type: ignore[arg-type]
    assert issubclass(ImageError, TcdcnError)
