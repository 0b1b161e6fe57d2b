"""`tcdcn predict` and the Python API on real and broken inputs, with the shipped model."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tcdcn import LandmarkDetector
from tcdcn.cli import main
from tcdcn.cpu import this_cpu_int8_pays
from tcdcn.errors import ImageError
from tcdcn.geometry import Box
from tcdcn.models.registry import SHIPPED

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


@pytest.fixture(scope="module")
def detector() -> LandmarkDetector:
    return LandmarkDetector()


def test_api_finds_the_astronaut_with_plausible_landmarks(detector: LandmarkDetector) -> None:
    faces = detector(EXAMPLE)
    assert len(faces) >= 1
    face = max(faces, key=lambda f: f.score or 0)
    x0, y0, x1, y1 = face.box.xyxy()
    # The face in the public-domain portrait spans roughly x 170-280, y 60-170 of the 512x512 image.
    assert 150 < (x0 + x1) / 2 < 290 and 60 < (y0 + y1) / 2 < 170
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert mouth_left[0] < mouth_right[0]
    assert set(face.attributes) >= {"male", "smiling", "glasses", "pose_frontal"}
    assert all(0.0 <= p <= 1.0 for p in face.attributes.values())
    assert face.head_pose in {"left_profile", "left", "frontal", "right", "right_profile"}


def test_api_accepts_arrays_pil_and_grey_alike(detector: LandmarkDetector) -> None:
    rgb = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    box = detector(EXAMPLE)[0].box
    from_path = detector.on_boxes(EXAMPLE, [box])[0].landmarks
    from_array = detector.on_boxes(rgb, [box])[0].landmarks
    from_pil = detector.on_boxes(Image.open(EXAMPLE), [box])[0].landmarks
    from_grey = detector.on_boxes(np.asarray(Image.open(EXAMPLE).convert("L")), [box])[0].landmarks
    np.testing.assert_allclose(from_array, from_path, atol=1e-4)
    np.testing.assert_allclose(from_pil, from_path, atol=1e-4)
    np.testing.assert_allclose(from_grey, from_path, atol=1.0)  # grey conversion differs by rounding


def test_on_boxes_follow_the_box_in_original_pixels_of_a_downscaled_image(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.open(EXAMPLE).resize((2048, 2048), Image.BILINEAR).save(big)
    full = LandmarkDetector(max_side=4096)
    small = LandmarkDetector(max_side=512)  # decodes the 2048 image at 512
    box = Box(225 * 4 + 1.5, 110 * 4 + 1.5, 110 * 4)
    a = full.on_boxes(big, [box])[0].landmarks
    b = small.on_boxes(big, [box])[0].landmarks
    iod = np.linalg.norm(a[0] - a[1])
    assert np.abs(a - b).max() < 0.1 * iod  # same face, same pixels, despite 4x downscaling
    assert a[:, 0].min() > 700 and a[:, 0].max() < 1100


def test_exif_rotated_photo_gives_landmarks_in_displayed_orientation(detector: LandmarkDetector,
                                                                      tmp_path: Path) -> None:
    upright = detector(EXAMPLE)
    rotated_path = tmp_path / "rotated.jpg"
    # Store the pixels rotated 90 deg clockwise with orientation 8 (display rotates them back).
    img = Image.open(EXAMPLE).transpose(Image.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8
    img.save(rotated_path, exif=exif, quality=95)
    shown = detector(rotated_path)
    assert shown and upright
    best_up = max(upright, key=lambda f: f.score or 0)
    best_shown = min(shown, key=lambda f: np.hypot(f.box.cx - best_up.box.cx, f.box.cy - best_up.box.cy))
    assert np.hypot(best_shown.box.cx - best_up.box.cx, best_shown.box.cy - best_up.box.cy) < 10


def test_no_face_and_tiny_images_give_empty_results(detector: LandmarkDetector, tmp_path: Path) -> None:
    assert detector(np.full((300, 300, 3), 128, np.uint8)) == []
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (10, 10), (90, 90, 90)).save(tiny)
    assert detector(tiny) == []


def test_broken_image_through_the_api_is_an_image_error(detector: LandmarkDetector, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="notes.jpg"):
        detector(text)


def test_cli_predict_writes_json_and_annotated_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["-q", "predict", str(EXAMPLE), "--out", str(out)]) == 0
    record = json.loads((out / "astronaut.json").read_text())
    assert record["input"].endswith("astronaut.jpg")
    assert len(record["faces"]) >= 1
    face = record["faces"][0]
    assert set(face) == {"box", "score", "landmarks", "attributes", "head_pose"}
    assert list(face["landmarks"]) == ["left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right"]
    drawn = Image.open(out / "astronaut.jpg")
    assert drawn.size == (512, 512)
    assert capsys.readouterr().out == ""


def test_cli_predict_goes_on_past_bad_inputs_and_says_so(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(EXAMPLE, inputs / "a_good.jpg")
    (inputs / "b_text.jpg").write_text("hello")
    (inputs / "c_empty.png").write_bytes(b"")
    (inputs / "d_truncated.jpg").write_bytes(EXAMPLE.read_bytes()[:2000])
    empty_folder = tmp_path / "nothing_here"
    empty_folder.mkdir()
    out = tmp_path / "out"
    code = main(["-q", "predict", str(inputs), str(tmp_path / "missing.jpg"), str(empty_folder),
                 "--out", str(out), "--jsonl", "--no-draw"])
    err = capsys.readouterr().err
    assert code == 1
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [Path(r["input"]).name for r in lines] == ["a_good.jpg"]
    for name in ("b_text.jpg", "c_empty.png", "d_truncated.jpg", "missing.jpg", "nothing_here"):
        matching = [line for line in err.splitlines() if name in line]
        assert len(matching) == 1, (name, err)
        assert matching[0].startswith("tcdcn: error:")
    assert "Traceback" not in err
    assert "5 of 6 input(s) failed" in err


def test_cli_predict_csv_has_one_row_per_face(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["-q", "predict", str(EXAMPLE), "--out", str(out), "--csv", "--no-draw"]) == 0
    rows = list(csv.reader((out / "results.csv").open()))
    header, body = rows[0], rows[1:]
    assert header[:8] == ["input", "frame", "face", "score", "x0", "y0", "x1", "y1"]
    assert "left_eye_x" in header and "male" in header
    assert len(body) >= 1 and all(len(r) == len(header) for r in body)


def test_api_runs_without_torch_on_the_shipped_onnx_model() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from tcdcn import LandmarkDetector\n"
        "d = LandmarkDetector()\n"
        f"faces = d({str(EXAMPLE)!r})\n"
        "print(type(d.model).__name__, len(faces), 'torch' in sys.modules and sys.modules['torch'] is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    name, count, torch_loaded = done.stdout.split()
    assert name == "OnnxLandmarkModel" and int(count) >= 1 and torch_loaded == "False"


def test_cli_predict_video_frame_by_frame_with_smoothing(tmp_path: Path) -> None:
    import cv2

    frame = cv2.cvtColor(np.asarray(Image.open(EXAMPLE).convert("RGB").resize((256, 256))), cv2.COLOR_RGB2BGR)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 256))
    for _ in range(4):
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    assert main(["-q", "predict", str(video), "--out", str(out)]) == 0
    record = json.loads((out / "clip.json").read_text())
    assert [f["frame"] for f in record["frames"]] == [0, 1, 2, 3]
    assert all(len(f["faces"]) >= 1 for f in record["frames"])
    assert (out / "clip.mp4").stat().st_size > 0


def test_huge_photo_is_decoded_bounded_and_gives_results_in_original_pixels(tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    Image.new("RGB", (10_000, 10_000), (120, 120, 120)).save(huge, quality=50)
    detector = LandmarkDetector(max_side=1024)
    rgb, scale, faces = detector.detect(huge)
    assert max(rgb.shape[:2]) <= 1024 and scale == pytest.approx(0.1024, rel=1e-3)
    assert faces == []  # a flat photo has no face: an empty result, not an error
    box = Box(5000.0, 5000.0, 2000.0)
    (face,) = detector.on_boxes(huge, [box])
    assert face.box.side == pytest.approx(2000.0, rel=1e-6)
    assert np.all((face.landmarks > 3000) & (face.landmarks < 7000))  # original pixels, inside the box


def test_json_and_csv_keep_attributes_and_head_pose_for_a_model_without_attribute_tasks(tmp_path: Path) -> None:
    # 300w-68pt predicts no attribute tasks: the JSON keeps both keys (empty mapping, null), so records of
    # every model parse alike, and the CSV has no attribute column and an empty head_pose column.
    out = tmp_path / "json"
    assert main(["-q", "predict", str(EXAMPLE), "--model", "300w-68pt", "--out", str(out), "--no-draw"]) == 0
    face = json.loads((out / "astronaut.json").read_text())["faces"][0]
    assert set(face) == {"box", "score", "landmarks", "attributes", "head_pose"}
    assert face["attributes"] == {} and face["head_pose"] is None and len(face["landmarks"]) == 68
    out = tmp_path / "csv"
    assert main(["-q", "predict", str(EXAMPLE), "--model", "300w-68pt", "--out", str(out), "--csv",
                 "--no-draw"]) == 0
    header, row, *_ = list(csv.reader((out / "results.csv").open()))
    assert header[-2:] == ["mouth_19_y", "head_pose"]  # no attribute column between points and head_pose
    assert len(row) == len(header) and row[-1] == ""


def test_csv_head_pose_column_matches_the_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["-q", "predict", str(EXAMPLE), "--out", str(out), "--csv", "--no-draw"]) == 0
    header, row, *_ = list(csv.reader((out / "results.csv").open()))
    assert header[-1] == "head_pose" and row[-1] in {"left_profile", "left", "frontal", "right", "right_profile"}


def test_face_result_box_agrees_with_the_json_corners(detector: LandmarkDetector) -> None:
    face = detector(EXAMPLE)[0]
    corners = face.to_dict()["box"]
    assert [corners[k] for k in ("x0", "y0", "x1", "y1")] == [round(v, 2) for v in face.box]
    assert (face.box.x0, face.box.y1) == face.box.to_xyxy()[::3]


def test_predict_logs_the_test_time_options_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tcdcn")
    assert main(["predict", str(EXAMPLE), "--out", str(tmp_path / "a"), "--no-draw", "--no-progress"]) == 0
    lines = [r.getMessage() for r in caplog.records if "test-time options" in r.getMessage()]
    card = SHIPPED["mtfl-5pt"]
    assert lines == [f"test-time options: flip on, {len(card.multi_crop)} crop(s) per face, 1 box refinement "
                     "(the model's defaults)"]
    graph = card.int8_onnx_file if card.auto_backend == "int8" and this_cpu_int8_pays() else card.onnx_file
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend:")] == [
        f"backend: onnxruntime, {graph}"]
    caplog.clear()
    assert main(["predict", str(EXAMPLE), "--out", str(tmp_path / "b"), "--no-draw", "--no-progress",
                 "--no-flip", "--no-multi-crop", "--box-refinements", "0"]) == 0
    lines = [r.getMessage() for r in caplog.records if "test-time options" in r.getMessage()]
    assert lines == ["test-time options: flip off, 1 crop(s) per face, 0 box refinements (the model's defaults: "
                     f"flip on, {len(card.multi_crop)} crop(s) per face, 1 box refinement)"]
