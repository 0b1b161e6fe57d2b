"""The MTFL list reader on the real release files and on broken files that must be rejected by line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tcdcn.data.annotation import FaceAnnotation
from tcdcn.data.formats import read_annotations, read_mtfl
from tcdcn.errors import AnnotationError
from tcdcn.schemes import MTFL_5

POSE_TASKS = ("pose_left_profile", "pose_left", "pose_frontal", "pose_right", "pose_right_profile")

# A valid line in the release's layout: path, x1..x5, y1..y5, gender smile glasses pose.
GOOD_LINE = "img\\a.jpg 10 20 15 11 19 12 12 16 20 21 1 2 2 3"


# ---- the real files --------------------------------------------------------------------------------
def test_training_file_has_10000_faces(mtfl_train_faces: list[FaceAnnotation]) -> None:
    assert len(mtfl_train_faces) == 10_000
    assert all(f.scheme is MTFL_5 for f in mtfl_train_faces)


def test_testing_file_has_2995_faces(mtfl_test_faces: list[FaceAnnotation]) -> None:
    assert len(mtfl_test_faces) == 2_995


def test_first_training_face_values(mtfl_train_faces: list[FaceAnnotation], mtfl_dir: Path) -> None:
    # training.txt line 1: lfw_5590\Aaron_Eckhart_0001.jpg 34.32 47.28 40.40 34.00 45.04
    #                      34.80 36.24 46.00 50.80 52.08 1 2 2 3
    face = mtfl_train_faces[0]
    expected = np.array([[34.32, 34.80], [47.28, 36.24], [40.40, 46.00], [34.00, 50.80], [45.04, 52.08]])
    np.testing.assert_allclose(face.landmarks, expected, atol=1e-4)
    assert face.landmarks.shape == (5, 2)
    assert face.image_path.resolve() == (mtfl_dir / "lfw_5590" / "Aaron_Eckhart_0001.jpg").resolve()
    assert face.attributes == {
        "male": 1, "smiling": 0, "glasses": 0,
        "pose_left_profile": 0, "pose_left": 0, "pose_frontal": 1, "pose_right": 0, "pose_right_profile": 0,
    }
    assert face.source.endswith("training.txt:1")
    assert face.visible is None


def test_first_testing_face_values(mtfl_test_faces: list[FaceAnnotation], mtfl_dir: Path) -> None:
    # testing.txt line 1: AFLW/0001-image20056.jpg, attributes 1 1 2 3.
    face = mtfl_test_faces[0]
    np.testing.assert_allclose(face.landmarks[0], [30.190925, 23.066909], atol=1e-4)
    np.testing.assert_allclose(face.landmarks[4], [49.704537, 55.434725], atol=1e-4)
    assert face.image_path.resolve() == (mtfl_dir / "AFLW" / "0001-image20056.jpg").resolve()
    assert face.attributes["male"] == 1 and face.attributes["smiling"] == 1 and face.attributes["glasses"] == 0


def test_second_line_with_leading_space_is_parsed(mtfl_train_faces: list[FaceAnnotation]) -> None:
    # Line 2 starts with a space and line 1 ends in CRLF: the path must not keep either.
    face = mtfl_train_faces[1]
    assert face.image_path.name == "Aaron_Guiel_0001.jpg"
    assert face.attributes["male"] == 1 and face.attributes["smiling"] == 1 and face.attributes["glasses"] == 0
    assert face.source.endswith("training.txt:2")


def test_backslash_paths_resolve_to_existing_images(mtfl_train_faces: list[FaceAnnotation],
                                                    mtfl_test_faces: list[FaceAnnotation]) -> None:
    sample = mtfl_train_faces[::97] + mtfl_test_faces[::53]
    for face in sample:
        assert "\\" not in str(face.image_path)
        assert face.image_path.is_file(), face.source


def test_every_face_has_exactly_one_pose(mtfl_train_faces: list[FaceAnnotation]) -> None:
    poses = np.array([[f.attributes[p] for p in POSE_TASKS] for f in mtfl_train_faces])  # (N, 5)
    assert np.all(poses.sum(axis=1) == 1)
    assert set(np.unique(poses)) == {0, 1}


def test_read_annotations_dispatches_a_file_to_the_mtfl_reader(mtfl_test_file: Path) -> None:
    assert len(read_annotations(mtfl_test_file)) == 2_995


# ---- the attribute mapping, on written files --------------------------------------------------------
def _write(tmp_path: Path, content: str | bytes, name: str = "list.txt") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


@pytest.mark.parametrize("pose_code, pose_task", list(zip(range(1, 6), POSE_TASKS)))
def test_pose_code_sets_exactly_its_task(tmp_path: Path, pose_code: int, pose_task: str) -> None:
    line = f"a.jpg 10 20 15 11 19 12 12 16 20 21 1 2 2 {pose_code}\n"
    (face,) = read_mtfl(_write(tmp_path, line))
    assert face.attributes[pose_task] == 1
    assert [face.attributes[p] for p in POSE_TASKS if p != pose_task] == [0, 0, 0, 0]


def test_binary_codes_one_means_yes(tmp_path: Path) -> None:
    lines = "a.jpg 10 20 15 11 19 12 12 16 20 21 1 1 1 3\nb.jpg 10 20 15 11 19 12 12 16 20 21 2 2 2 3\n"
    yes, no = read_mtfl(_write(tmp_path, lines))
    assert (yes.attributes["male"], yes.attributes["smiling"], yes.attributes["glasses"]) == (1, 1, 1)
    assert (no.attributes["male"], no.attributes["smiling"], no.attributes["glasses"]) == (0, 0, 0)


def test_crlf_leading_space_backslash_and_blank_lines(tmp_path: Path) -> None:
    content = f"{GOOD_LINE}\r\n {GOOD_LINE.replace('a.jpg', 'b.jpg')}\r\n\r\n"
    faces = read_mtfl(_write(tmp_path, content))
    assert len(faces) == 2
    assert faces[0].image_path == tmp_path / "img" / "a.jpg"
    assert faces[1].image_path == tmp_path / "img" / "b.jpg"
    # x1..x5 then y1..y5: point i is (x_i, y_i).
    np.testing.assert_allclose(faces[0].landmarks, [[10, 12], [20, 12], [15, 16], [11, 20], [19, 21]])


def test_root_argument_overrides_the_file_folder(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    (face,) = read_mtfl(_write(tmp_path, GOOD_LINE + "\n"), root=other)
    assert face.image_path == other / "img" / "a.jpg"


# ---- broken files -----------------------------------------------------------------------------------
def _assert_rejected(path: Path, line: int | None, reason_pattern: str) -> None:
    with pytest.raises(AnnotationError) as info:
        read_mtfl(path)
    message = str(info.value)
    where = f"{path}:{line}" if line is not None else str(path)
    assert message.startswith(where + ":"), message
    assert re.search(reason_pattern, message, re.IGNORECASE), message
    assert "\n" not in message
    assert info.value.line == line


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        ("a.jpg 10 20 15 11 19 12 12 16 20 21 1 2 2", r"expected 15 fields.*found 14"),
        ("a.jpg 10 20 15 11 19 12 12 16 20 21 1 2 2 3 7", r"found 16"),
        ("a.jpg 10 20 15 11 19 12 12 sixteen 20 21 1 2 2 3", r"non-numeric"),
        ("a.jpg 10 20 15 11 19 12 12 16 20 21 1 2 2 3.5", r"non-numeric"),
        ("a.jpg 10 20 nan 11 19 12 12 16 20 21 1 2 2 3", r"non-finite"),
        ("a.jpg 10 20 15 11 inf 12 12 16 20 21 1 2 2 3", r"non-finite"),
        ("a.jpg 10 20 15 11 19 12 12 16 20 21 0 2 2 3", r"male code must be 1 or 2"),
        ("a.jpg 10 20 15 11 19 12 12 16 20 21 1 3 2 3", r"smiling code must be 1 or 2"),
        ("a.jpg 10 20 15 11 19 12 12 16 20 21 1 2 -1 3", r"glasses code must be 1 or 2"),
        ("a.jpg 10 20 15 11 19 12 12 16 20 21 1 2 2 6", r"pose code must be 1..5, found 6"),
        ("a.jpg 10 20 15 11 19 12 12 16 20 21 1 2 2 0", r"pose code"),
    ],
)
def test_bad_line_is_rejected_naming_file_and_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    # The bad line is the third of the file (a blank line in between still counts).
    content = f"{GOOD_LINE}\r\n\r\n {bad_line}\r\n{GOOD_LINE}\r\n"
    _assert_rejected(_write(tmp_path, content), 3, reason)


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    _assert_rejected(_write(tmp_path, ""), None, r"no annotations")


def test_whitespace_only_file_is_rejected(tmp_path: Path) -> None:
    _assert_rejected(_write(tmp_path, " \r\n\r\n\t\n"), None, r"no annotations")


def test_binary_garbage_is_rejected(tmp_path: Path) -> None:
    garbage = bytes(np.random.default_rng(0).integers(128, 256, 512, dtype=np.uint8))
    _assert_rejected(_write(tmp_path, b"\x89PNG\r\n\x1a\n" + garbage), None, r"not a text file")


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    _assert_rejected(tmp_path / "absent.txt", None, r"cannot read")
