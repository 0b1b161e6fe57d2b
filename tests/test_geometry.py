"""The face-box convention, crop matrices, normalised coordinates and mirroring."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcdcn.data.transforms import CropParams, make_crop
from tcdcn.geometry import (
    BOX_SCALE,
    Box,
    apply_affine,
    box_from_landmarks,
    crop_matrix,
    from_normalised,
    invert_affine,
    to_normalised,
    warp_crop,
)
from tcdcn.schemes import IBUG_68, MTFL_5, LandmarkScheme

# Eyes at (10,20) and (30,20), nose (20,30), mouth corners (12,44) and (28,44):
# bounding box x 10..30 (20 wide), y 20..44 (24 high) -> centre (20, 32), side 2.8 * 24 = 67.2.
FIVE = np.array([[10.0, 20.0], [30.0, 20.0], [20.0, 30.0], [12.0, 44.0], [28.0, 44.0]])


def test_box_scale_is_the_documented_value() -> None:
    assert BOX_SCALE == 2.8


def test_box_from_landmarks_hand_example() -> None:
    box = box_from_landmarks(FIVE, MTFL_5)
    assert box.cx == pytest.approx(20.0)
    assert box.cy == pytest.approx(32.0)
    assert box.side == pytest.approx(67.2)
    assert box_from_landmarks(FIVE, MTFL_5, scale=1.0).side == pytest.approx(24.0)


def test_box_from_68_points_uses_their_five_point_groups() -> None:
    # Jaw, brows and the rest of the nose far away must not move the box; eyes are group means.
    points = np.full((68, 2), 1000.0)
    points[36:42] = FIVE[0] + np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]])
    points[42:48] = FIVE[1] + np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]])
    points[30], points[48], points[54] = FIVE[2], FIVE[3], FIVE[4]
    box = box_from_landmarks(points, IBUG_68)
    assert (box.cx, box.cy, box.side) == pytest.approx((20.0, 32.0, 67.2))


def test_degenerate_landmarks_raise() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        box_from_landmarks(np.ones((5, 2)), MTFL_5)
    with pytest.raises(ValueError, match="degenerate"):
        box_from_landmarks(np.full((5, 2), np.nan), MTFL_5)


def test_box_helpers() -> None:
    box = Box.from_xyxy(10, 20, 30, 60)  # 20 x 40 -> square of side 30 on the same centre
    assert (box.cx, box.cy, box.side) == (20.0, 40.0, 30.0)
    assert box.xyxy() == (5.0, 25.0, 35.0, 55.0)
    whole = Box.whole_image(80, 60)
    assert (whole.cx, whole.cy, whole.side) == (39.5, 29.5, 80.0)


def test_crop_matrix_maps_box_corners_and_centre_to_the_crop() -> None:
    box, size = Box(100.0, 50.0, 40.0), 60
    matrix = crop_matrix(box, size)
    x0, y0, x1, y1 = box.xyxy()
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [box.cx, box.cy]])
    # The box's edges are the crop's outer pixel edges (pixel i spans i-0.5 .. i+0.5).
    expected = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5],
                         [(size - 1) / 2, (size - 1) / 2]])
    np.testing.assert_allclose(apply_affine(matrix, corners), expected, atol=1e-12)


def test_whole_image_box_at_its_own_size_is_the_identity() -> None:
    np.testing.assert_allclose(crop_matrix(Box.whole_image(60, 60), 60), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_rotation_keeps_the_centre_fixed_and_turns_counter_clockwise() -> None:
    box, size = Box(30.0, 40.0, 20.0), 40  # scale 2
    c = (size - 1) / 2
    for angle in (-170.0, -30.0, 15.0, 90.0, 180.0):
        centre = apply_affine(crop_matrix(box, size, angle), np.array([box.cx, box.cy]))
        np.testing.assert_allclose(centre, [c, c], atol=1e-12)
    # Rotating by 90 degrees moves a point right of the centre to above it in the displayed crop
    # (y points down), at twice its distance (the crop scale).
    right_of_centre = np.array([box.cx + 5.0, box.cy])
    np.testing.assert_allclose(apply_affine(crop_matrix(box, size, 90.0), right_of_centre), [c, c - 10.0],
                               atol=1e-12)


def test_rotation_is_a_similarity() -> None:
    matrix = crop_matrix(Box(30.0, 40.0, 20.0), 40, 37.0)
    a, b = np.array([3.0, 7.0]), np.array([-11.0, 2.5])
    ma, mb = apply_affine(matrix, a), apply_affine(matrix, b)
    assert np.linalg.norm(ma - mb) == pytest.approx(2.0 * np.linalg.norm(a - b))


def test_apply_affine_invert_affine_round_trip() -> None:
    rng = np.random.default_rng(0)
    matrix = crop_matrix(Box(123.4, 56.7, 89.0), 60, 23.0)
    points = rng.uniform(-50, 250, size=(7, 5, 2))  # any leading shape
    back = apply_affine(invert_affine(matrix), apply_affine(matrix, points))
    assert back.shape == points.shape
    np.testing.assert_allclose(back, points, atol=1e-9)


def test_normalised_coordinates() -> None:
    size = 60
    pixels = np.array([[-0.5, -0.5], [29.5, 29.5], [59.5, 59.5], [0.0, 59.0]])
    norm = to_normalised(pixels, size)
    # The crop's outer edges are -1 and 1; its centre is 0.
    np.testing.assert_allclose(norm[:3], [[-1, -1], [0, 0], [1, 1]], atol=1e-12)
    np.testing.assert_allclose(from_normalised(norm, size), pixels, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    cx=st.floats(-200, 400, allow_subnormal=False),
    cy=st.floats(-200, 400, allow_subnormal=False),
    side=st.floats(4.0, 600.0, allow_subnormal=False),
    rotation=st.floats(-180.0, 180.0, allow_subnormal=False),
    size=st.integers(8, 128),
    points=st.lists(st.tuples(st.floats(-300, 600, allow_subnormal=False),
                              st.floats(-300, 600, allow_subnormal=False)), min_size=1, max_size=10),
)
def test_points_round_trip_through_crop_and_back(cx: float, cy: float, side: float, rotation: float, size: int,
                                                 points: list[tuple[float, float]]) -> None:
    image_points = np.array(points)  # (P, 2)
    matrix = crop_matrix(Box(cx, cy, side), size, rotation)
    norm = to_normalised(apply_affine(matrix, image_points), size)  # what the network is trained on
    back = apply_affine(invert_affine(matrix), from_normalised(norm, size))  # what inference returns
    np.testing.assert_allclose(back, image_points, atol=1e-6 * max(1.0, side))


# ---- mirroring in make_crop ---------------------------------------------------------------------------
def _dot_image(x: int, y: int, width: int = 100, height: int = 100) -> np.ndarray:
    image = np.zeros((height, width), np.uint8)
    image[y, x] = 255
    return image


def test_warp_crop_of_identity_keeps_the_image() -> None:
    image = _dot_image(30, 40)
    np.testing.assert_array_equal(warp_crop(image, crop_matrix(Box.whole_image(100, 100), 100), 100), image)


def test_mirroring_swaps_flip_pairs_and_follows_the_image() -> None:
    # A bright dot on the right eye (index 1). After mirroring, that eye is on the image's left, so it is
    # the new point 0, and the dot in the mirrored crop must sit where the mirrored point 0 says.
    landmarks = np.array([[30.0, 40.0], [71.0, 38.0], [50.0, 55.0], [35.0, 70.0], [66.0, 72.0]])
    image = _dot_image(71, 38)
    box, size = Box.whole_image(100, 100), 100
    crop, norm, matrix = make_crop(image, box, size, CropParams(), landmarks, MTFL_5)
    mirrored, norm_m, matrix_m = make_crop(image, box, size, CropParams(mirror=True), landmarks, MTFL_5)
    np.testing.assert_array_equal(matrix, matrix_m)  # the matrix is the one before mirroring
    np.testing.assert_array_equal(mirrored, crop[:, ::-1])
    dot_y, dot_x = np.unravel_index(np.argmax(mirrored), mirrored.shape)
    assert (dot_x, dot_y) == (100 - 1 - 71, 38)
    np.testing.assert_allclose(from_normalised(norm_m[0], size), [dot_x, dot_y], atol=1e-4)
    # Pairs swap and x changes sign; the nose (no pair) only changes sign.
    flip = np.array([-1.0, 1.0])
    np.testing.assert_allclose(norm_m, norm[[1, 0, 2, 4, 3]] * flip, atol=1e-6)


def test_mirroring_twice_gives_the_original() -> None:
    landmarks = np.array([[30.0, 40.0], [71.0, 38.0], [50.0, 55.0], [35.0, 70.0], [66.0, 72.0]])
    image = np.random.default_rng(1).integers(0, 256, (100, 100), dtype=np.uint8)
    box, size = Box.whole_image(100, 100), 100
    _, norm, _ = make_crop(image, box, size, CropParams(), landmarks, MTFL_5)
    once, norm_once, _ = make_crop(image, box, size, CropParams(mirror=True), landmarks, MTFL_5)
    # The whole-image box at the image's size makes crop pixels image pixels, so the mirrored crop and its
    # points are a valid mirrored image with annotations.
    twice, norm_twice, _ = make_crop(once.astype(np.uint8), box, size, CropParams(mirror=True),
                                     from_normalised(norm_once, size), MTFL_5)
    np.testing.assert_array_equal(twice, image.astype(np.float32))
    np.testing.assert_allclose(norm_twice, norm, atol=1e-5)


@pytest.mark.parametrize("scheme", [MTFL_5, IBUG_68])
def test_flip_index_is_an_involution(scheme: LandmarkScheme) -> None:
    flip = scheme.flip_index
    np.testing.assert_array_equal(flip[flip], np.arange(scheme.num_points))


def test_ibug68_flip_pairs_jaw_and_eye_corners() -> None:
    flip = IBUG_68.flip_index
    assert flip[0] == 16 and flip[8] == 8 and flip[36] == 45 and flip[30] == 30 and flip[48] == 54


def test_mirroring_landmarks_without_scheme_raises() -> None:
    with pytest.raises(ValueError, match="scheme"):
        make_crop(_dot_image(1, 1), Box.whole_image(100, 100), 60, CropParams(mirror=True), np.zeros((5, 2)))


# ---- anti-aliased shrinking in warp_crop -----------------------------------------------------------------
def _blob(cx: float, cy: float, sigma: float, width: int = 500, height: int = 400) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return (255 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))).astype(np.float32)


def _centroid(crop: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
    weights = crop / crop.sum()
    return np.array([(weights * xx).sum(), (weights * yy).sum()])


@pytest.mark.parametrize("box", [Box(250.0, 200.0, 300.0), Box(240.0, 150.0, 420.0), Box(60.0, 50.0, 160.0)])
def test_antialiased_shrink_keeps_points_where_the_matrix_puts_them(box: Box) -> None:
    # A smooth blob's centre must land where apply_affine maps it, area-reduced or not, including boxes
    # that run off the image (the last one: the reduced region is clipped and the border replicated).
    centre = np.array([box.cx - 0.13 * box.side, box.cy + 0.07 * box.side])
    image = _blob(*centre, sigma=0.04 * box.side)
    matrix = crop_matrix(box, 60, rotation_deg=10.0)
    expected = apply_affine(matrix, centre)
    for antialias in (True, False):
        np.testing.assert_allclose(_centroid(warp_crop(image, matrix, 60, antialias)), expected, atol=0.05)


def test_antialiased_shrink_removes_aliasing_and_leaves_enlarging_alone() -> None:
    yy, xx = np.mgrid[0:400, 0:500]
    checker = ((xx // 2 + yy // 2) % 2 * 255).astype(np.uint8)  # 4-pixel period
    shrink = crop_matrix(Box(250.0, 200.0, 300.0), 60)  # 5x smaller: the pattern must average to grey
    assert warp_crop(checker, shrink, 60).std() < 5.0
    assert warp_crop(checker, shrink, 60, antialias=False).std() > 50.0  # plain bilinear aliases
    enlarge = crop_matrix(Box(250.0, 200.0, 40.0), 60)
    np.testing.assert_array_equal(warp_crop(checker, enlarge, 60), warp_crop(checker, enlarge, 60, antialias=False))


def test_box_reads_as_corners_like_other_libraries_boxes() -> None:
    # torchvision, insightface and face_alignment give boxes as (x0, y0, x1, y1); a Box reads the same way.
    box = Box(20.0, 40.0, 30.0)
    assert (box.x0, box.y0, box.x1, box.y1) == (5.0, 25.0, 35.0, 55.0)
    assert box.to_xyxy() == box.xyxy() == (5.0, 25.0, 35.0, 55.0)
    assert tuple(box) == (5.0, 25.0, 35.0, 55.0)
    x0, y0, x1, y1 = box
    assert (x0, y1) == (5.0, 55.0)
    np.testing.assert_array_equal(np.asarray(box), [5.0, 25.0, 35.0, 55.0])
    assert np.asarray([box, Box(0.0, 0.0, 2.0)]).shape == (2, 4)
    assert np.asarray(box, dtype=np.float32).dtype == np.float32
    # The centre form stays, and corners taken back give the same square.
    assert (box.cx, box.cy, box.side) == (20.0, 40.0, 30.0)
    assert Box.from_xyxy(*box) == box
