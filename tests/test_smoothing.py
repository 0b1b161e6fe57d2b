"""One Euro filter: less jitter when still, little lag when moving; per-face tracks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcdcn.geometry import Box
from tcdcn.inference.smoothing import LandmarkSmoother, OneEuroFilter

FPS = 30.0


def _run(filt: OneEuroFilter, frames: np.ndarray) -> np.ndarray:
    return np.stack([filt(x, i / FPS) for i, x in enumerate(frames)])


def test_still_sequence_jitter_reduced() -> None:
    rng = np.random.default_rng(0)
    truth = np.array([[30.0, 40.0], [50.0, 40.0], [40.0, 55.0]])
    frames = truth + rng.normal(0, 1.0, (300, *truth.shape))
    out = _run(OneEuroFilter(min_cutoff=0.5, beta=0.05, d_cutoff=1.0), frames)
    raw_jitter = frames[60:].std(axis=0).mean()
    filtered_jitter = out[60:].std(axis=0).mean()
    assert filtered_jitter < 0.4 * raw_jitter
    assert np.abs(out[60:].mean(axis=0) - truth).max() < 0.3


def test_moving_sequence_small_lag() -> None:
    rng = np.random.default_rng(1)
    n = 240
    speed = 150.0  # pixels per second
    truth = 20.0 + speed * np.arange(n) / FPS
    frames = truth[:, None] + rng.normal(0, 0.5, (n, 4))
    out = _run(OneEuroFilter(min_cutoff=1.0, beta=0.1, d_cutoff=1.0), frames)
    converged = slice(30, n)
    one_euro_error = np.abs(out[converged] - truth[converged, None]).mean()
    window = 15  # a heavy trailing moving average
    moving_average = np.stack([frames[max(0, i - window + 1): i + 1].mean(axis=0) for i in range(n)])
    average_error = np.abs(moving_average[converged] - truth[converged, None]).mean()
    assert one_euro_error < 2.5
    assert one_euro_error < 0.25 * average_error


def test_first_call_passes_through_and_shape_checked() -> None:
    filt = OneEuroFilter()
    x = np.arange(6.0).reshape(3, 2)
    assert np.array_equal(filt(x), x)
    with pytest.raises(ValueError, match="shape"):
        filt(np.zeros(4))
    filt.reset()
    assert np.array_equal(filt(np.ones(4)), np.ones(4))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1000, 1000, allow_subnormal=False), min_size=1, max_size=40),
       st.floats(0.1, 10, allow_subnormal=False), st.floats(0, 5, allow_subnormal=False))
def test_output_within_input_range(values: list[float], min_cutoff: float, beta: float) -> None:
    filt = OneEuroFilter(min_cutoff=min_cutoff, beta=beta)
    out = np.array([float(filt(np.array(v))) for v in values])
    assert out.min() >= min(values) - 1e-9
    assert out.max() <= max(values) + 1e-9


def test_landmark_smoother_tracks_faces() -> None:
    rng = np.random.default_rng(2)
    base = np.array([[0.0, 0.0], [20.0, 0.0], [10.0, 15.0]])
    face_a, box_a = base + 100, Box(110, 107, 60)
    face_b, box_b = base + 400, Box(410, 407, 60)
    smoother = LandmarkSmoother(min_cutoff=1.0, beta=1.0)
    raw_a, smooth_a = [], []
    for i in range(90):
        noisy_a = face_a + rng.normal(0, 1.0, base.shape)
        noisy_b = face_b + rng.normal(0, 1.0, base.shape)
        # Faces arrive in either order; matching by box keeps each on its own filter.
        if i % 2:
            out_b, out_a = smoother.update([noisy_b, noisy_a], [box_b, box_a])
        else:
            out_a, out_b = smoother.update([noisy_a, noisy_b], [box_a, box_b])
        raw_a.append(noisy_a)
        smooth_a.append(out_a)
        assert np.abs(out_b - face_b).max() < 5
    assert smoother.num_tracks == 2
    assert np.std(smooth_a[30:], axis=0).mean() < 0.5 * np.std(raw_a[30:], axis=0).mean()
    # A jump to another place starts a fresh track: the output is the input, not a blend.
    jumped = base + 700
    (out,) = smoother.update([jumped], [Box(710, 707, 60)])
    assert np.array_equal(out, jumped)
    assert smoother.num_tracks == 1
    # Without boxes, the landmarks' bounding square is used: a small move stays on the same track.
    plain = LandmarkSmoother()
    plain.update([jumped])
    (again,) = plain.update([jumped + 0.5])
    assert np.all(np.abs(again - jumped) < 0.5) and plain.num_tracks == 1
