"""Metrics against values worked out by hand.

The example: two faces with two points each, chosen so every number is an exact binary fraction.

face A, normaliser 8:  target (0,0), (8,0);   prediction (0,4), (8,0)   -> distances 4, 0 -> 0.5, 0
face B, normaliser 16: target (0,0), (16,0);  prediction (3,4), (16,2)  -> distances 5, 2 -> 0.3125, 0.125
"""

from __future__ import annotations

import numpy as np
import pytest

from tcdcn.evaluation.metrics import (
    DEFAULT_FAILURE_THRESHOLD,
    auc,
    binary_accuracy,
    ced,
    failure_rate,
    nme,
    per_face_error,
    per_landmark_error,
    per_region_error,
    point_errors,
)

TARGET = np.array([[[0.0, 0.0], [8.0, 0.0]], [[0.0, 0.0], [16.0, 0.0]]])  # (2, 2, 2)
PRED = np.array([[[0.0, 4.0], [8.0, 0.0]], [[3.0, 4.0], [16.0, 2.0]]])  # (2, 2, 2)
NORMALISER = np.array([8.0, 16.0])  # (2,)
ERRORS = np.array([[0.5, 0.0], [0.3125, 0.125]])  # (2, 2)
# Face A's second point is hidden.
VISIBLE = np.array([[True, False], [True, True]])


def test_point_errors_hand_example() -> None:
    errors = point_errors(PRED, TARGET, NORMALISER)
    assert errors.shape == (2, 2)
    np.testing.assert_array_equal(errors, ERRORS)


def test_per_face_error_all_points() -> None:
    np.testing.assert_array_equal(per_face_error(ERRORS), [0.25, 0.21875])


def test_per_face_error_with_visibility_mask() -> None:
    # Face A is scored on its first point only; face B on both.
    np.testing.assert_array_equal(per_face_error(ERRORS, VISIBLE), [0.5, 0.21875])


def test_per_face_error_without_visible_points_is_nan() -> None:
    result = per_face_error(ERRORS, np.array([[False, False], [True, False]]))
    assert np.isnan(result[0])
    assert result[1] == 0.3125


def test_nme_is_mean_over_faces() -> None:
    assert nme(np.array([0.25, 0.21875])) == 0.234375


def test_failure_rate_counts_strictly_above_threshold() -> None:
    face_errors = np.array([0.25, 0.21875])
    assert failure_rate(face_errors, 0.25) == 0.0  # exactly at the threshold is not a failure
    assert failure_rate(face_errors, 0.21875) == 0.5
    assert failure_rate(face_errors, 0.2) == 1.0


def test_failure_rate_default_is_ten_percent() -> None:
    assert DEFAULT_FAILURE_THRESHOLD == 0.10
    assert failure_rate(np.array([0.0625, 0.125, 0.09375, 0.25])) == 0.5


def test_failure_rate_counts_undetected_faces_as_failures() -> None:
    assert failure_rate(np.array([0.0, np.inf])) == 0.5


def test_per_landmark_error() -> None:
    np.testing.assert_array_equal(per_landmark_error(ERRORS), [0.40625, 0.0625])
    # With face A's second point hidden, landmark 1 is the mean over face B only.
    np.testing.assert_array_equal(per_landmark_error(ERRORS, VISIBLE), [0.40625, 0.125])


def test_ced_fractions_at_or_below_each_threshold() -> None:
    thresholds, fractions = ced(np.array([0.0625, 0.125, 0.1875, 0.5]), max_error=0.25, steps=5)
    np.testing.assert_array_equal(thresholds, [0.0, 0.0625, 0.125, 0.1875, 0.25])
    np.testing.assert_array_equal(fractions, [0.0, 0.25, 0.5, 0.75, 0.75])


def test_ced_is_monotone_and_bounded() -> None:
    errors = np.random.default_rng(0).exponential(0.05, 200)
    _, fractions = ced(errors)
    assert np.all(np.diff(fractions) >= 0)
    assert fractions[0] >= 0 and fractions[-1] <= 1


def test_auc_of_a_step() -> None:
    # Every face at error 0.05: the CED is a unit step at 0.05, so half the area up to 0.1 is covered.
    assert auc(np.full(10, 0.05), max_error=0.1) == pytest.approx(0.5, abs=2e-3)
    # Half the faces perfect and half lost: the CED is 0.5 everywhere.
    assert auc(np.array([0.0, np.inf]), max_error=0.1) == pytest.approx(0.5, abs=1e-9)
    assert auc(np.zeros(3), max_error=0.1) == pytest.approx(1.0, abs=1e-9)
    assert auc(np.full(3, 0.2), max_error=0.1) == 0.0


def test_binary_accuracy_thresholds_at_one_half() -> None:
    probabilities = np.array([[0.9, 0.5], [0.2, 0.49], [0.6, 0.1]])  # (3, 2)
    labels = np.array([[1, 1], [0, 1], [1, 0]])  # (3, 2)
    # Task 0: all right. Task 1: 0.5 counts as yes (right), 0.49 as no (wrong), 0.1 as no (right).
    np.testing.assert_allclose(binary_accuracy(probabilities, labels), [1.0, 2 / 3])


def test_per_region_error_by_hand() -> None:
    # Two faces, four points; regions "a" = points 0-1, "b" = points 2-3.
    errors = np.array([[0.1, 0.3, 0.2, 0.4],
                       [0.5, 0.1, 0.0, 0.2]])
    regions = (("a", (0, 1)), ("b", (2, 3)))
    assert per_region_error(errors, regions) == pytest.approx({"a": 1.0 / 4, "b": 0.8 / 4})
    # Point 1 of face 0 and point 3 of face 1 not visible: means over the three visible values each.
    visible = np.array([[True, False, True, True], [True, True, True, False]])
    assert per_region_error(errors, regions, visible) == pytest.approx({"a": 0.7 / 3, "b": 0.6 / 3})
    nothing = np.zeros((2, 4), bool)
    assert np.isnan(per_region_error(errors, regions, nothing)["a"])


def test_schemes_regions_cover_their_points_once() -> None:
    from tcdcn.schemes import IBUG_68, MTFL_5

    for scheme in (IBUG_68, MTFL_5):
        covered = sorted(i for _, indices in scheme.regions for i in indices)
        assert covered == list(range(scheme.num_points)), scheme.name
    assert [name for name, _ in IBUG_68.regions] == ["contour", "brows", "nose", "eyes", "mouth"]
