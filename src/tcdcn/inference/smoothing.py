"""Temporal smoothing of landmarks across video frames: the One Euro filter.

``OneEuroFilter`` is the filter of Casiez, Roussel and Vogel, "1 Euro Filter: A Simple Speed-based
Low-pass Filter for Noisy Input in Interactive Systems" (CHI 2012): an exponential low-pass whose
cutoff rises with the (low-passed) speed of the signal, ``cutoff = min_cutoff + beta * |speed|``, so
still input is smoothed hard (little jitter) and moving input lightly (little lag). It works elementwise
on arrays of any fixed shape.

``LandmarkSmoother`` keeps one filter per tracked face. Tracking is deliberately simple: each frame's
faces are matched greedily, best IoU first, to the previous frame's faces by their boxes; a face whose
best overlap with every previous face is below ``min_iou`` (a new face, or a box that jumped) starts a
fresh track, which passes its first landmarks through unchanged; previous faces left unmatched are
dropped. Each track filters landmarks divided by the face's box side at the track's start, so
``min_cutoff`` is in Hz and ``beta`` in 1 / (face sides per second), whatever the face's size in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..geometry import Box


def smoothing_factor(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray:
    """Exponential smoothing weight of a first-order low-pass with ``cutoff_hz`` sampled every ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over arrays of a fixed shape.

    ``min_cutoff`` (Hz): cutoff at zero speed -- lower = less jitter, more lag when slow.
    ``beta``: how fast the cutoff rises with speed (per unit of the signal per second) -- higher = less
    lag when fast. ``d_cutoff`` (Hz): cutoff of the low-pass on the speed estimate. ``fps``: the sampling
    rate assumed when ``__call__`` gets no timestamp.

    ``filter(x, t)``: the first call returns ``x`` unchanged; later calls need increasing timestamps in
    seconds (a timestamp not after the previous one is treated as one frame, ``1 / fps``, later). Output
    is a convex combination of the input and the previous output, so it stays within the input's range.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0,
                 fps: float = 30.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0:
            raise ValueError("min_cutoff and d_cutoff must be positive (Hz)")
        if beta < 0:
            raise ValueError("beta must be >= 0")
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.fps = float(fps)
        self.reset()

    def reset(self) -> None:
        """Forget the state; the next call passes its input through."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @property
    def initialised(self) -> bool:
        return self._x is not None

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The shape of the arrays being filtered, or None before the first call."""
        return None if self._x is None else self._x.shape

    def __call__(self, x: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        return self.filter(x, timestamp)

    def filter(self, x: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        value = np.asarray(x, dtype=np.float64)
        if self._x is None or self._dx is None or self._t is None:
            self._x = value.copy()
            self._dx = np.zeros_like(value)
            self._t = 0.0 if timestamp is None else float(timestamp)
            return value.copy()
        if value.shape != self._x.shape:
            raise ValueError(f"input shape {value.shape} differs from the filter's {self._x.shape}; reset() it")
        t = self._t + 1.0 / self.fps if timestamp is None else float(timestamp)
        dt = t - self._t
        if not dt > 0:
            dt = 1.0 / self.fps
            t = self._t + dt
        speed = (value - self._x) / dt
        a_d = smoothing_factor(self.d_cutoff, dt)
        smoothed_speed = a_d * speed + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(smoothed_speed)
        a = smoothing_factor(cutoff, dt)
        out = a * value + (1.0 - a) * self._x
        self._x, self._dx, self._t = out, smoothed_speed, t
        return out.copy()


def _iou(a: Box, b: Box) -> float:
    ax0, ay0, ax1, ay1 = a.xyxy()
    bx0, by0, bx1, by1 = b.xyxy()
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = a.side ** 2 + b.side ** 2 - inter
    return inter / union if union > 0 else 0.0


def _box_of_points(points: np.ndarray) -> Box:
    lo, hi = points.min(axis=0), points.max(axis=0)
    side = float(max(hi[0] - lo[0], hi[1] - lo[1], 1e-6))
    return Box(float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2), side)


@dataclass
class _Track:
    filter: OneEuroFilter
    unit: float  # the face's box side (pixels) when the track started
    box: Box


class LandmarkSmoother:
    """Per-face One Euro smoothing of landmark arrays from successive video frames (see module notes).

    ``update(landmarks, boxes, timestamp)`` takes this frame's faces (each ``(P, 2)`` pixels, with its
    face box; without boxes, the landmarks' bounding square is used) and returns the smoothed landmarks
    in the same order. ``timestamp`` in seconds; ``None`` advances by ``1 / fps``.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 10.0, d_cutoff: float = 1.0,
                 fps: float = 30.0, min_iou: float = 0.3) -> None:
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.fps = fps
        self.min_iou = min_iou
        self._tracks: list[_Track] = []
        self._time: float | None = None

    def reset(self) -> None:
        self._tracks = []
        self._time = None

    @property
    def num_tracks(self) -> int:
        return len(self._tracks)

    def update(self, landmarks: Sequence[np.ndarray], boxes: Sequence[Box] | None = None,
               timestamp: float | None = None) -> list[np.ndarray]:
        points = [np.asarray(p, dtype=np.float64) for p in landmarks]
        if boxes is None:
            face_boxes = [_box_of_points(p) for p in points]
        else:
            face_boxes = list(boxes)
            if len(face_boxes) != len(points):
                raise ValueError(f"{len(points)} landmark arrays but {len(face_boxes)} boxes")
        if timestamp is None:
            timestamp = 0.0 if self._time is None else self._time + 1.0 / self.fps
        self._time = float(timestamp)

        pairs = sorted(
            ((_iou(box, track.box), i, j) for i, box in enumerate(face_boxes)
             for j, track in enumerate(self._tracks)),
            reverse=True,
        )
        assigned: dict[int, _Track] = {}
        used: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < self.min_iou:
                break
            if i in assigned or j in used:
                continue
            track = self._tracks[j]
            if track.filter.shape not in (None, points[i].shape):
                continue  # a different landmark scheme: start afresh
            assigned[i] = track
            used.add(j)

        new_tracks: list[_Track] = []
        smoothed: list[np.ndarray] = []
        for i, (pts, box) in enumerate(zip(points, face_boxes)):
            track = assigned.get(i)
            if track is None:
                filt = OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff, self.fps)
                track = _Track(filt, max(float(box.side), 1e-6), box)
            track.box = box
            smoothed.append(track.filter(pts / track.unit, self._time) * track.unit)
            new_tracks.append(track)
        self._tracks = new_tracks
        return smoothed
