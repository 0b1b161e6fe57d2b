"""Drawing results on an image: points, box, attribute summary."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .api import FaceResult

POINT_COLOUR = (0, 255, 0)
BOX_COLOUR = (255, 200, 0)
TEXT_COLOUR = (255, 255, 255)
ATTRIBUTE_LABELS = {"male": ("male", "female"), "smiling": ("smiling", "not smiling"),
                    "glasses": ("glasses", "no glasses")}


def describe(face: FaceResult) -> str:
    parts = [yes if face.attributes[k] >= 0.5 else no for k, (yes, no) in ATTRIBUTE_LABELS.items()
             if k in face.attributes]
    if face.head_pose:
        parts.append(f"pose {face.head_pose.replace('_', ' ')}")
    return ", ".join(parts)


def label_origin(text_size: tuple[int, int], baseline: int, box_x0: float, box_y0: float,
                 image_size: tuple[int, int], margin: int = 1) -> tuple[int, int]:
    """Where ``cv2.putText`` draws a label (its bottom-left origin) so that the whole text stays inside the image.

    ``text_size`` is ``(width, height)`` and ``baseline`` the descent below the origin, as ``cv2.getTextSize``
    gives them for the thickest stroke drawn; ``image_size`` is ``(width, height)``. The label's preferred place is
    just above the box's top-left corner; a face at the right edge moves it left, one at the top edge moves it down
    (onto the box), so that the text is never cut. ``margin`` pixels are kept free at the edges for anti-aliasing.
    """
    text_w, text_h = text_size
    width, height = image_size
    x = round(box_x0)
    y = round(box_y0) - 4 - baseline
    # Right edge first, then left: a label wider than the image starts at its left edge.
    x = max(margin, min(x, width - text_w - margin))
    y = max(text_h + margin, min(y, height - baseline - margin))
    return x, y


def draw_faces(image_rgb: np.ndarray, faces: Sequence[FaceResult]) -> np.ndarray:
    out = np.ascontiguousarray(image_rgb.copy())
    h, w = out.shape[:2]
    thickness = max(1, round(max(h, w) / 400))
    for face in faces:
        x0, y0, x1, y1 = (round(v) for v in face.box.to_xyxy())
        cv2.rectangle(out, (x0, y0), (x1, y1), BOX_COLOUR, thickness, cv2.LINE_AA)
        radius = max(1, round(face.box.side / 80))
        for x, y in face.landmarks:
            cv2.circle(out, (round(float(x)), round(float(y))), radius, POINT_COLOUR, -1, cv2.LINE_AA)
        text = describe(face)
        if text:
            scale = max(0.35, face.box.side / 500)
            outline = thickness + 2
            (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, outline)
            # The outline stroke reaches half its thickness beyond the glyph box getTextSize reports.
            org = label_origin((text_w, text_h), baseline, face.box.x0, face.box.y0, (w, h),
                               margin=outline // 2 + 1)
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), outline, cv2.LINE_AA)
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOUR, thickness, cv2.LINE_AA)
    return out
