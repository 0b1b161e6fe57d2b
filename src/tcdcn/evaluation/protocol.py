"""Evaluation by the paper's protocol: normalised mean error, failure rate, per-landmark error,
attribute accuracy, CED; a 5-point model on a denser set is compared at the set's five points."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..data.annotation import FaceAnnotation
from ..errors import ImageError, SchemeMismatchError
from ..geometry import Box, box_from_landmarks
from ..io.images import load_image, to_grey
from ..progress import progress
from ..schemes import LandmarkScheme
from .metrics import (
    DEFAULT_FAILURE_THRESHOLD,
    auc,
    binary_accuracy,
    ced,
    failure_rate,
    nme,
    normalised_face_errors,
    per_face_error,
    per_landmark_error,
    per_region_error,
    point_errors,
)

log = logging.getLogger("tcdcn.evaluate")

BOX_MODES = ("image", "gt", "detect")
# Faces read and predicted per block: progress counts finished blocks, and memory holds one block's images.
DEFAULT_BATCH_SIZE = 256

# Finds faces in an RGB image and returns boxes in the package's face-box convention.
BoxDetector = Callable[[np.ndarray], list[Box]]


class LandmarkPrediction(Protocol):
    """What a model's ``predict`` returns (``tcdcn.inference.pipeline.Prediction``)."""

    landmarks: np.ndarray  # (N, P, 2) image pixels
    attribute_probabilities: np.ndarray  # (N, T)


class LandmarkPredictor(Protocol):
    """What evaluation needs of a model: its scheme, its tasks and ``predict`` (any inference backend)."""

    @property
    def scheme(self) -> LandmarkScheme: ...

    @property
    def task_names(self) -> tuple[str, ...]: ...

    def predict(self, grey_images: Sequence[np.ndarray], boxes: Sequence[Box]) -> LandmarkPrediction: ...


@dataclass
class EvaluationReport:
    n: int
    detected: int
    box: str
    point_names: tuple[str, ...]
    face_errors: np.ndarray  # (N,) inter-ocular normalised; inf where no face was found, nan where not scored
    face_errors_interpupil: np.ndarray  # (N,)
    per_landmark: np.ndarray  # (P,)
    per_region: dict[str, float] = field(default_factory=dict)  # the scheme's regions (contour, eyes, ...)
    attribute_accuracy: dict[str, float] = field(default_factory=dict)
    failure_threshold: float = DEFAULT_FAILURE_THRESHOLD
    unscorable: tuple[str, ...] = ()  # annotation lines of faces with a zero normalising distance

    def summary(self) -> dict[str, Any]:
        """The figures, JSON-ready: a figure that does not exist (no face scored) is None, never NaN."""
        found = np.isfinite(self.face_errors)
        scored = ~np.isnan(self.face_errors)
        errs = self.face_errors[found]
        summary = {
            "n": self.n,
            "scored": int(scored.sum()),
            "unscorable": len(self.unscorable),
            "unscorable_examples": list(self.unscorable[:5]),
            "detected": self.detected,
            "box": self.box,
            "nme": nme(errs) if len(errs) else float("nan"),
            "nme_interocular": nme(errs) if len(errs) else float("nan"),
            "nme_interpupil": nme(self.face_errors_interpupil[found]) if len(errs) else float("nan"),
            "failure_rate": failure_rate(self.face_errors[scored], self.failure_threshold) if scored.any() else None,
            "failure_threshold": self.failure_threshold,
            "auc_at_threshold": auc(self.face_errors[scored], self.failure_threshold) if scored.any() else None,
            "per_landmark": {name: float(v) for name, v in zip(self.point_names, self.per_landmark)},
            "per_region": dict(self.per_region),
            "attribute_accuracy": self.attribute_accuracy,
        }
        return finite_or_none(summary)

    def write_ced(self, png_path: str | Path, label: str = "") -> Path:
        """Write the CED curve as PNG and its data as CSV beside it (same name, .csv); the figure needs
        matplotlib (``MissingDependencyError`` without it)."""
        from .plots import save_ced_figure

        thresholds, fractions = ced(self.face_errors[~np.isnan(self.face_errors)], max_error=0.2)
        png = Path(png_path)
        png.parent.mkdir(parents=True, exist_ok=True)
        with open(png.with_suffix(".csv"), "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["normalised_error", "fraction_of_faces"])
            w.writerows(zip(thresholds.round(5), fractions.round(5)))
        return save_ced_figure(thresholds, fractions, png, label)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested in dicts and lists) replaced by None, so that
    it serialises as strict JSON."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def evaluate(
    model: LandmarkPredictor,
    faces: Sequence[FaceAnnotation],
    box: str = "image",
    detector: BoxDetector | None = None,
    failure_threshold: float = DEFAULT_FAILURE_THRESHOLD,
) -> EvaluationReport:
    """Predict every face and score it against its annotation.

    ``box``: "image" (whole image is the face box), "gt" (box from the ground truth by the convention),
    "detect" (``detector``; the detection nearest the ground-truth box is used; a face with no detection
    counts as a failure with infinite error, never dropped).
    """
    if box not in BOX_MODES:
        raise ValueError(f"box must be one of {BOX_MODES}")
    if box == "detect" and detector is None:
        raise ValueError("box='detect' needs a detector")
    data_scheme = faces[0].scheme
    # Compare at the model's points: a 5-point model on a denser set uses the set's five points.
    if model.scheme.name == data_scheme.name:
        scheme = data_scheme
        targets = np.stack([f.landmarks for f in faces]).astype(np.float64)
        visible = np.stack([f.visible if f.visible is not None else np.ones(len(f.landmarks), bool) for f in faces])
    elif model.scheme.num_points == 5:
        scheme = model.scheme
        targets = np.stack([data_scheme.five_points(f.landmarks.astype(np.float64)) for f in faces])
        visible = np.ones(targets.shape[:2], bool)
    else:
        raise SchemeMismatchError(f"the {model.scheme.name} model ({model.scheme.num_points} points) cannot be scored "
                                  f"on {data_scheme.name} annotations ({data_scheme.num_points} points)")
    interocular = scheme.interocular_distance(targets)
    interpupil = scheme.interpupil_distance(targets)
    # A face whose normalising distance is zero (eyes annotated on one spot) has no defined error: it is
    # neither predicted nor scored, and reported by its annotation line.
    scorable = np.isfinite(interocular) & (interocular > 0) & np.isfinite(interpupil) & (interpupil > 0)
    unscorable = tuple(faces[i].source or str(faces[i].image_path) for i in np.flatnonzero(~scorable))
    if unscorable:
        log.warning("%d face(s) with a zero normalising distance are not scored (first: %s)",
                    len(unscorable), unscorable[0])
    keep: list[int] = []
    parts: list[LandmarkPrediction] = []
    # A batch of faces is read and predicted before the next, so progress counts finished faces.
    with progress(len(faces), "evaluate", "face") as shown:
        for start in range(0, len(faces), DEFAULT_BATCH_SIZE):
            greys, boxes = [], []
            for i in range(start, min(start + DEFAULT_BATCH_SIZE, len(faces))):
                if not scorable[i]:
                    continue
                face = faces[i]
                try:
                    rgb = load_image(face.image_path)
                except ImageError as exc:
                    raise ImageError(exc.path, f"{exc.reason} (annotated at {face.source})") from None
                gt_box = box_from_landmarks(face.landmarks, data_scheme)
                if box == "image":
                    b: Box | None = Box.whole_image(rgb.shape[1], rgb.shape[0])
                elif box == "gt":
                    b = gt_box
                else:
                    assert detector is not None
                    found = detector(rgb)
                    b = min(found, key=lambda d: np.hypot(d.cx - gt_box.cx, d.cy - gt_box.cy)) if found else None
                if b is not None:
                    greys.append(to_grey(rgb))
                    boxes.append(b)
                    keep.append(i)
            if greys:
                parts.append(model.predict(greys, boxes))
            shown.update(min(DEFAULT_BATCH_SIZE, len(faces) - start))
    if parts:
        landmarks = np.concatenate([p.landmarks for p in parts])
        probabilities = np.concatenate([p.attribute_probabilities for p in parts])
    else:
        empty = model.predict([], [])
        landmarks, probabilities = empty.landmarks, empty.attribute_probabilities

    n = len(faces)
    face_err = np.where(scorable, np.inf, np.nan)  # inf: no face found (a failure); nan: not scored
    face_err_ip = face_err.copy()
    keep_idx = np.asarray(keep, dtype=int)
    per_landmark = np.full(scheme.num_points, np.nan)
    per_region: dict[str, float] = {}
    if len(keep_idx):
        errs = point_errors(landmarks, targets[keep_idx], interocular[keep_idx])  # (K, P)
        face_err[keep_idx] = per_face_error(errs, visible[keep_idx])
        face_err_ip[keep_idx] = normalised_face_errors(landmarks, targets[keep_idx], interpupil[keep_idx],
                                                       visible[keep_idx])
        per_landmark = per_landmark_error(errs, visible[keep_idx])
        per_region = per_region_error(errs, scheme.regions, visible[keep_idx])
    accuracy: dict[str, float] = {}
    for j, task in enumerate(model.task_names):
        labelled = [k for k, i in enumerate(keep) if task in faces[i].attributes]
        if labelled:
            labels = np.array([faces[keep[k]].attributes[task] for k in labelled], float)
            accuracy[task] = float(binary_accuracy(probabilities[labelled, j:j + 1], labels[:, None])[0])
    pose_tasks = [j for j, t in enumerate(model.task_names) if t.startswith("pose_")]
    if len(pose_tasks) > 1:
        pose_names = [model.task_names[j] for j in pose_tasks]
        labelled = [k for k, i in enumerate(keep) if all(t in faces[i].attributes for t in pose_names)]
        if labelled:
            truth = np.array([[faces[keep[k]].attributes[model.task_names[j]] for j in pose_tasks] for k in labelled])
            guess = probabilities[np.ix_(labelled, pose_tasks)]
            accuracy["pose_class"] = float(np.mean(truth.argmax(1) == guess.argmax(1)))
    return EvaluationReport(
        n=n, detected=len(keep), box=box, point_names=scheme.point_names, face_errors=face_err,
        face_errors_interpupil=face_err_ip, per_landmark=per_landmark, per_region=per_region,
        attribute_accuracy=accuracy,
        failure_threshold=failure_threshold, unscorable=unscorable,
    )
