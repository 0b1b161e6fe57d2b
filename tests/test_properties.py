"""Property-based tests (hypothesis): readers round-trip what they should read and reject the rest;
geometric transforms invert each other."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcdcn.data.formats.mtfl import parse_mtfl_line
from tcdcn.data.formats.pts import read_pts
from tcdcn.data.transforms import CropParams, make_crop
from tcdcn.errors import AnnotationError
from tcdcn.geometry import Box, apply_affine, crop_matrix, invert_affine
from tcdcn.schemes import MTFL_5

LIST_FILE = Path("list.txt")
ROOT = Path("/data")
# Coordinates are printed with 3 decimals, so a round trip is exact to half of the last printed digit.
PRINT_DECIMALS = 3
ROUND_TRIP_TOLERANCE = 0.5 * 10 ** -PRINT_DECIMALS + 1e-4
GEOMETRY_TOLERANCE = 1e-6  # relative to the coordinate scale, for float64 affine round trips
POSES = ("pose_left_profile", "pose_left", "pose_frontal", "pose_right", "pose_right_profile")

coordinate = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, allow_subnormal=False)
image_name = st.from_regex(r"[A-Za-z0-9_]{1,12}([/\\][A-Za-z0-9_]{1,12}){0,2}\.(jpg|png)", fullmatch=True)
binary_code = st.sampled_from([1, 2])
pose_code = st.integers(min_value=1, max_value=5)


@st.composite
def mtfl_lines(draw: st.DrawFn) -> tuple[str, str, np.ndarray, tuple[int, int, int, int]]:
    name = draw(image_name)
    xy = np.array(draw(st.lists(coordinate, min_size=10, max_size=10))).reshape(2, 5).T  # (5, 2)
    codes = (draw(binary_code), draw(binary_code), draw(binary_code), draw(pose_code))
    lead = draw(st.sampled_from(["", " ", "\t"]))
    numbers = [f"{v:.{PRINT_DECIMALS}f}" for v in [*xy[:, 0], *xy[:, 1]]]
    line = lead + " ".join([name, *numbers, *map(str, codes)]) + draw(st.sampled_from(["", "\r", "  "]))
    return line, name, xy, codes


@given(mtfl_lines())
def test_mtfl_line_round_trip(case: tuple[str, str, np.ndarray, tuple[int, int, int, int]]) -> None:
    line, name, xy, (male, smiling, glasses, pose) = case
    face = parse_mtfl_line(line, LIST_FILE, 7, ROOT)
    assert face.image_path == ROOT / name.replace("\\", "/")
    assert face.landmarks.shape == (5, 2) and face.scheme is MTFL_5
    np.testing.assert_allclose(face.landmarks, xy, atol=ROUND_TRIP_TOLERANCE + 1e-6 * np.abs(xy).max())
    assert face.attributes["male"] == int(male == 1)
    assert face.attributes["smiling"] == int(smiling == 1)
    assert face.attributes["glasses"] == int(glasses == 1)
    assert [face.attributes[p] for p in POSES] == [int(pose == i + 1) for i in range(5)]
    assert face.source == f"{LIST_FILE}:7"


@st.composite
def broken_mtfl_lines(draw: st.DrawFn) -> str:
    line, _, _, _ = draw(mtfl_lines())
    fields = line.split()
    how = draw(st.sampled_from(["drop", "add", "word", "nonfinite", "binary", "pose"]))
    if how == "drop":
        fields.pop(draw(st.integers(0, len(fields) - 1)))
    elif how == "add":
        fields.insert(draw(st.integers(0, len(fields))), draw(st.sampled_from(["0", "x", "1.5"])))
    elif how == "word":
        fields[draw(st.integers(1, 14))] = draw(st.from_regex(r"[a-mo-z_]{1,6}", fullmatch=True))  # no "nan"/"inf"
    elif how == "nonfinite":
        fields[draw(st.integers(1, 10))] = draw(st.sampled_from(["nan", "inf", "-inf", "NaN"]))
    elif how == "binary":
        fields[draw(st.integers(11, 13))] = str(draw(st.integers(-5, 9).filter(lambda c: c not in (1, 2))))
    else:
        fields[14] = str(draw(st.integers(-5, 12).filter(lambda c: not 1 <= c <= 5)))
    return " ".join(fields)


@given(broken_mtfl_lines())
def test_broken_mtfl_lines_are_rejected(line: str) -> None:
    with pytest.raises(AnnotationError) as info:
        parse_mtfl_line(line, LIST_FILE, 3, ROOT)
    assert info.value.line == 3 and str(info.value).startswith(f"{LIST_FILE}:3: ")


point_sets = st.integers(min_value=1, max_value=80).flatmap(
    lambda n: st.lists(st.tuples(coordinate, coordinate), min_size=n, max_size=n))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(points=point_sets, crlf=st.booleans())
def test_pts_round_trip(points: list[tuple[float, float]], crlf: bool) -> None:
    body = "".join(f"{x:.{PRINT_DECIMALS}f} {y:.{PRINT_DECIMALS}f}\n" for x, y in points)
    text = f"version: 1\nn_points: {len(points)}\n{{\n{body}}}\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "face.pts"
        path.write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode())
        read = read_pts(path, expected_points=len(points))
    want = np.asarray(points) - 1.0  # .pts is 1-based, the reader returns 0-based pixel centres
    assert read.shape == (len(points), 2)
    np.testing.assert_allclose(read, want, atol=ROUND_TRIP_TOLERANCE + 1e-6 * (np.abs(want).max() + 1))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(points=point_sets, extra=st.integers(min_value=1, max_value=3))
def test_pts_count_mismatch_is_rejected(points: list[tuple[float, float]], extra: int) -> None:
    body = "".join(f"{x:.3f} {y:.3f}\n" for x, y in points)
    text = f"version: 1\nn_points: {len(points) + extra}\n{{\n{body}}}\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "face.pts"
        path.write_text(text)
        with pytest.raises(AnnotationError, match="header says"):
            read_pts(path)


# ---- geometry --------------------------------------------------------------------------------------
centre = st.floats(min_value=-2000, max_value=2000, allow_nan=False, allow_subnormal=False)
side = st.floats(min_value=1.0, max_value=2000, allow_nan=False, allow_subnormal=False)
boxes = st.builds(Box, centre, centre, side)
angles = st.floats(min_value=-180, max_value=180, allow_nan=False, allow_subnormal=False)
crop_sizes = st.integers(min_value=8, max_value=256)
image_points = st.lists(st.tuples(centre, centre), min_size=1, max_size=20).map(np.asarray)


@given(box=boxes, size=crop_sizes, rotation=angles, points=image_points)
def test_crop_matrix_inverts(box: Box, size: int, rotation: float, points: np.ndarray) -> None:
    matrix = crop_matrix(box, size, rotation)
    back = apply_affine(invert_affine(matrix), apply_affine(matrix, points))
    scale = max(1.0, float(np.abs(points).max()), box.side)
    np.testing.assert_allclose(back, points, atol=GEOMETRY_TOLERANCE * scale)


@given(box=boxes, size=crop_sizes, rotation=angles)
def test_crop_matrix_maps_box_centre_to_crop_centre(box: Box, size: int, rotation: float) -> None:
    centre_in_crop = apply_affine(crop_matrix(box, size, rotation), np.array([box.cx, box.cy]))
    scale = max(1.0, abs(box.cx), abs(box.cy)) * size / box.side
    np.testing.assert_allclose(centre_in_crop, [(size - 1) / 2] * 2, atol=GEOMETRY_TOLERANCE * scale)


@given(box=boxes)
def test_box_xyxy_round_trip(box: Box) -> None:
    again = Box.from_xyxy(*box.xyxy())
    for got, want in ((again.cx, box.cx), (again.cy, box.cy), (again.side, box.side)):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, abs(box.cx), abs(box.cy)))


@given(x0=centre, y0=centre, width=side, height=side)
def test_box_from_rectangle_keeps_centre_and_mean_side(x0: float, y0: float, width: float, height: float) -> None:
    box = Box.from_xyxy(x0, y0, x0 + width, y0 + height)
    tol = 1e-9 * max(1.0, abs(x0), abs(y0), width, height)
    assert math.isclose(box.cx, x0 + width / 2, abs_tol=tol) and math.isclose(box.cy, y0 + height / 2, abs_tol=tol)
    assert math.isclose(box.side, (width + height) / 2, abs_tol=tol)


five_point_faces = st.lists(st.tuples(st.floats(20, 40, allow_subnormal=False),
                                      st.floats(20, 40, allow_subnormal=False)), min_size=5, max_size=5).map(
    lambda pts: np.asarray(pts, dtype=np.float32))


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(landmarks=five_point_faces, rotation=st.floats(-30, 30, allow_subnormal=False),
       size=st.sampled_from([32, 48, 60]))
def test_mirroring_twice_is_the_identity(landmarks: np.ndarray, rotation: float, size: int) -> None:
    """A mirrored crop's landmarks, mirrored back (flip x, swap left/right points), are the plain crop's."""
    image = np.random.default_rng(0).integers(0, 256, (60, 60), dtype=np.uint8)
    box = Box(30.0, 30.0, 40.0)
    plain_crop, plain, _ = make_crop(image, box, size, CropParams(rotation_deg=rotation), landmarks, MTFL_5)
    mirror_crop, mirrored, _ = make_crop(image, box, size, CropParams(rotation_deg=rotation, mirror=True),
                                         landmarks, MTFL_5)
    assert plain is not None and mirrored is not None
    back = mirrored[MTFL_5.flip_index] * np.array([-1.0, 1.0], dtype=np.float32)
    np.testing.assert_allclose(back, plain, atol=1e-5)
    np.testing.assert_array_equal(mirror_crop[:, ::-1], plain_crop)
    # The flip permutation is an involution.
    assert list(np.asarray(MTFL_5.flip_index)[np.asarray(MTFL_5.flip_index)]) == list(range(5))
