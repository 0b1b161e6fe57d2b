"""The Python API: ``LandmarkDetector()(image)`` -> one ``FaceResult`` per face.

    from tcdcn import LandmarkDetector
    faces = LandmarkDetector()("photo.jpg")
    faces[0].landmarks  # (5, 2) image pixels

Images can be paths, PIL images or numpy arrays (RGB or grey, any size). Very large images are
decoded at a bounded size for detection and landmarks; results are in the original image's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import InputError
from ..geometry import Box
from ..io.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    ImageSource,
    load_image_scaled,
    to_grey,
    to_original_pixels,
)
from ..models.registry import DEFAULT_MODEL
from .loading import load_landmark_model
from .test_time import set_test_time_options, test_time_summary


class LandmarkBackend(Protocol):
    """What the detector needs of a model: torch (``backends.torch.LandmarkModel``) or onnxruntime."""

    task_names: tuple[str, ...]
    mirror_average: bool
    multi_crop: tuple[Any, ...]
    box_refinements: int
    local_stage: Any
    use_local_stage: bool

    @property
    def scheme(self) -> Any: ...

    def predict(self, grey_images: Sequence[np.ndarray], boxes: Sequence[Box]) -> Any: ...

    def describe_backend(self) -> str: ...


@dataclass
class FaceResult:
    """One face, in original-image pixels.

    ``box``: a ``Box``, a square on the package's face-box convention (``tcdcn.geometry``) that may extend
    past the image; ``box.x0, y0, x1, y1``, ``box.to_xyxy()``, ``tuple(box)`` and ``np.asarray(box)`` give its
    corners ``(x0, y0, x1, y1)`` as the JSON output writes them, ``box.cx, cy, side`` its centre and side.
    ``score``: the detector's score (None for given boxes). ``landmarks``: ``(P, 2)``. ``attributes``:
    probabilities by task name, empty when the model has no attribute tasks (``300w-68pt``); ``head_pose``
    is None exactly when the model has no pose tasks. ``to_dict`` always writes both keys, so records of
    every model parse alike.
    """

    box: Box
    score: float | None
    landmarks: np.ndarray
    point_names: tuple[str, ...]
    attributes: dict[str, float] = field(default_factory=dict)

    @property
    def head_pose(self) -> str | None:
        """The most probable head-pose class, when the model predicts pose tasks."""
        poses = {k: v for k, v in self.attributes.items() if k.startswith("pose_")}
        return max(poses, key=lambda k: poses[k]).removeprefix("pose_") if poses else None

    def to_dict(self) -> dict[str, Any]:
        x0, y0, x1, y1 = self.box.to_xyxy()
        return {
            "box": {"x0": round(x0, 2), "y0": round(y0, 2), "x1": round(x1, 2), "y1": round(y1, 2)},
            "score": None if self.score is None else round(float(self.score), 4),
            "landmarks": {n: [round(float(x), 2), round(float(y), 2)]
                          for n, (x, y) in zip(self.point_names, self.landmarks)},
            "attributes": {k: round(float(v), 4) for k, v in self.attributes.items()},
            "head_pose": self.head_pose,
        }


def load_backend(model: str, backend: str = "auto") -> LandmarkBackend:
    """A shipped model name or a file, run with torch or onnxruntime ("auto": onnxruntime, a shipped model on the
    graph its card's ``auto_backend`` names)."""
    return load_landmark_model(model, backend=backend)


class LandmarkDetector:
    """Face detection + landmarks + attributes, on any image.

    ``model``: a shipped model name (``mtfl-5pt``, ``300w-68pt``) or a checkpoint / ONNX path.
    ``backend``: "auto", "torch" or "onnx". ``face_detector``: any callable ``rgb -> list[Detection]``
    (default: ``tcdcn.inference.detectors.FaceDetector()``). ``max_side``: images are decoded with their long side
    bounded by this (memory and time stay bounded on huge photos). ``max_pixels``: an image file
    that would decode to more pixels than this is refused with ``ImageError`` before decoding.
    ``mirror_average``: also run each face mirrored and average (None: the model's default, on for the
    shipped models). ``multi_crop``: average the predictions of slightly moved face boxes: True keeps
    the model's own crops (the 3x3 grid when it has none), "grid" the 3x3 grid (the most accurate plan measured,
    about 3x the default's time), False the box alone (None: the model's default, on for the shipped models).
    ``box_refinements``: re-frame each face this many times on the box of its predicted points before the last
    pass (None: the model's default). ``local_stage``: refine the points on patches around them with the model's
    local stage (None: the model's default, on for ``300w-68pt``; True for a model without one: ValueError).
    """

    def __init__(self, model: str = DEFAULT_MODEL, backend: str = "auto", face_detector: Any = None,
                 max_side: int = DEFAULT_MAX_SIDE, mirror_average: bool | None = None,
                 multi_crop: bool | str | None = None, box_refinements: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, local_stage: bool | None = None) -> None:
        self.model = load_backend(model, backend)
        # The model's own test-time options, before the overrides (reported beside those that run).
        self.default_test_time = test_time_summary(self.model)
        set_test_time_options(self.model, mirror_average, multi_crop, box_refinements, local_stage)
        if face_detector is None:
            from .detectors import FaceDetector

            face_detector = FaceDetector()
        self.face_detector = face_detector
        self.max_side = max_side
        self.max_pixels = max_pixels

    def __call__(self, image: ImageSource) -> list[FaceResult]:
        return self.detect(image)[2]

    def detect(self, image: ImageSource) -> tuple[np.ndarray, float, list[FaceResult]]:
        """The decoded (possibly downscaled) RGB image, its scale, and the faces in original pixels."""
        rgb, scale = load_image_scaled(image, self.max_side, self.max_pixels)
        detections = self.face_detector(rgb)
        return rgb, scale, self._results(rgb, scale, [d.box for d in detections], [d.score for d in detections])

    def on_boxes(self, image: ImageSource,
                 boxes: Sequence[Box | tuple[float, float, float, float]]) -> list[FaceResult]:
        """Landmarks for given face boxes (``Box`` on the convention, or (x0, y0, x1, y1) rectangles
        taken as already on the convention), in the original image's pixels."""
        rgb, scale = load_image_scaled(image, self.max_side, self.max_pixels)
        height, width = (np.asarray(rgb.shape[:2]) / scale).round().astype(int)
        as_boxes = [checked_box(b, i, width, height) for i, b in enumerate(boxes)]
        scaled = [_scale_box(b, scale) for b in as_boxes]
        return self._results(rgb, scale, scaled, [None] * len(scaled))

    def _results(self, rgb: np.ndarray, scale: float, boxes: list[Box], scores: list[float | None]) -> list[FaceResult]:
        if not boxes:
            return []
        grey = to_grey(rgb)
        pred = self.model.predict([grey] * len(boxes), boxes)
        results = []
        for box, score, landmarks, probs in zip(boxes, scores, pred.landmarks, pred.attribute_probabilities):
            results.append(FaceResult(
                box=_scale_box(box, 1.0 / scale),
                score=score,
                landmarks=to_original_pixels(landmarks, scale),
                point_names=self.model.scheme.point_names,
                attributes={t: float(p) for t, p in zip(self.model.task_names, probs)},
            ))
        return results


def checked_box(box: Box | Sequence[float], index: int, width: int, height: int) -> Box:
    """A given face box as a ``Box``, or ``InputError`` naming it: corners must be finite and ordered
    (x0 < x1, y0 < y1), the side finite and positive, and the box must overlap the image (it may extend
    past the image's edges: faces at the border are framed that way)."""
    if isinstance(box, Box):
        values, square = (box.cx, box.cy, box.side), box
    else:
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError):
            raise InputError(f"box {index}: expected a Box or (x0, y0, x1, y1), got {box!r}") from None
        values = (x0, y0, x1, y1)
        if np.isfinite(values).all() and not (x1 > x0 and y1 > y0):
            raise InputError(f"box {index}: corners must satisfy x0 < x1 and y0 < y1, got {values}")
        square = Box.from_xyxy(x0, y0, x1, y1)
    if not np.isfinite(values).all():
        raise InputError(f"box {index}: not finite, got {values}")
    if not square.side > 0:
        raise InputError(f"box {index}: side must be > 0, got {square.side}")
    x0, y0, x1, y1 = square.to_xyxy()
    if x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
        raise InputError(f"box {index}: ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}) lies outside the "
                         f"{width}x{height} image")
    return square


def rescale_face(face: FaceResult, scale: float) -> FaceResult:
    """A result in original pixels -> pixels of the image resized by ``scale`` (for drawing)."""
    return FaceResult(_scale_box(face.box, scale), face.score, (face.landmarks + 0.5) * scale - 0.5,
                      face.point_names, face.attributes)


def _scale_box(box: Box, scale: float) -> Box:
    """A box in original pixels -> pixels of an image resized by ``scale`` (pixel-centre convention)."""
    if scale == 1.0:
        return box
    return Box((box.cx + 0.5) * scale - 0.5, (box.cy + 0.5) * scale - 0.5, box.side * scale)
