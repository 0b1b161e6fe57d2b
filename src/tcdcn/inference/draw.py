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


def draw_faces(image_rgb: np.ndarray, faces: Sequence[FaceResult]) -> np.ndarray:
    out = np.ascontiguousarray(image_rgb.copy())
    h, w = out.shape[:2]
    thickness = max(1, round(max(h, w) / 400))
    for face in faces:
        x0, y0, x1, y1 = (round(v) for v in face.box.xyxy())
        cv2.rectangle(out, (x0, y0), (x1, y1), BOX_COLOUR, thickness, cv2.LINE_AA)
        radius = max(1, round(face.box.side / 80))
        for x, y in face.landmarks:
            cv2.circle(out, (round(float(x)), round(float(y))), radius, POINT_COLOUR, -1, cv2.LINE_AA)
        text = describe(face)
        if text:
            scale = max(0.35, face.box.side / 500)
            org = (max(0, x0), max(12, y0 - 4))
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOUR, thickness, cv2.LINE_AA)
    return out
