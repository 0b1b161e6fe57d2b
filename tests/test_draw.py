"""Annotated images: the label beside a face box stays whole inside the image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tcdcn.geometry import Box
from tcdcn.inference.api import FaceResult
from tcdcn.inference.draw import TEXT_COLOUR, describe, draw_faces, label_origin

TASKS = {"male": 0.9, "smiling": 0.1, "glasses": 0.2, "pose_frontal": 0.9, "pose_left": 0.1}


def face_at(box: Box) -> FaceResult:
    landmarks = np.tile([[box.cx, box.cy]], (5, 1))
    return FaceResult(box, 0.99, landmarks, ("a", "b", "c", "d", "e"), dict(TASKS))


def white_pixels(image: np.ndarray) -> np.ndarray:
    return (image == np.array(TEXT_COLOUR, dtype=image.dtype)).all(axis=2)


@pytest.mark.parametrize(("box_x0", "box_y0"), [(630.0, 100.0), (600.0, -50.0), (-40.0, -40.0), (10.0, 470.0),
                                                (200.0, 200.0)])
def test_label_origin_keeps_the_text_inside_the_image(box_x0: float, box_y0: float) -> None:
    width, height = 640, 480
    (text_w, text_h), baseline = cv2.getTextSize("male, not smiling, no glasses", cv2.FONT_HERSHEY_SIMPLEX, 0.5, 3)
    x, y = label_origin((text_w, text_h), baseline, box_x0, box_y0, (width, height))
    assert 0 <= x and x + text_w < width
    assert 0 <= y - text_h and y + baseline < height
    if box_x0 == 200.0:  # room enough: the label sits just above the box's corner
        assert x == 200 and y < box_y0


@pytest.mark.parametrize("box", [Box(600.0, 240.0, 120.0), Box(620.0, 20.0, 120.0)])
def test_label_of_a_face_at_the_right_or_top_edge_is_drawn_whole(box: Box) -> None:
    face = face_at(box)
    drawn = draw_faces(np.zeros((480, 640, 3), np.uint8), [face])
    white = white_pixels(drawn)
    assert white.any()
    ys, xs = np.nonzero(white)
    assert xs.max() < 639 and ys.min() > 0  # the text does not run into the right or top edge
    # The same label drawn where it has room (same image size: same stroke): as many pure text-colour pixels,
    # so none was cut.
    roomy = draw_faces(np.zeros((480, 640, 3), np.uint8), [face_at(Box(260.0, 240.0, box.side))])
    assert describe(face) and white.sum() == white_pixels(roomy).sum()
