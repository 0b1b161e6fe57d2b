"""Image loading in every mode, bad files, huge images, input expansion and video frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from tcdcn.errors import ImageError
from tcdcn.io.images import load_image, load_image_scaled, to_original_pixels
from tcdcn.io.video import iter_image_paths, iter_video_frames


def _check_rgb(a: np.ndarray, shape: tuple[int, int]) -> None:
    assert a.dtype == np.uint8
    assert a.shape == (*shape, 3)


def test_grey_png(tmp_path: Path) -> None:
    grey = np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1))
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    a = load_image(path)
    _check_rgb(a, (30, 40))
    assert np.array_equal(a[..., 0], grey) and np.array_equal(a[..., 2], grey)


def test_rgba_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :6, 3] = 255  # left half opaque red, right half fully transparent
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    a = load_image(str(path))
    _check_rgb(a, (10, 12))
    assert np.array_equal(a[0, 0], [200, 0, 0])
    assert np.array_equal(a[0, -1], [255, 255, 255])


def test_la_and_palette(tmp_path: Path) -> None:
    la = Image.new("LA", (8, 6), (100, 0))
    la.save(tmp_path / "la.png")
    assert np.all(load_image(tmp_path / "la.png") == 255)
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    rgb[:, :4] = (10, 200, 30)
    rgb[:, 4:] = (250, 5, 5)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    a = load_image(tmp_path / "pal.png")
    _check_rgb(a, (6, 8))
    assert np.abs(a.astype(int) - rgb.astype(int)).max() <= 2


def test_16bit_png_scaled_to_8bit(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    a = load_image(path)
    assert np.array_equal(a[0, :, 0], [0, 100, 255])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # red in CMYK
    assert Image.open(path).mode == "CMYK"
    a = load_image(path)
    _check_rgb(a, (16, 16))
    r, g, b = a[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_applied(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = 255  # left half white as stored
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    a = load_image(path)
    _check_rgb(a, (40, 20))  # width and height swapped
    # Rotating clockwise puts the stored left half at the top.
    assert a[5, 10].mean() > 200 and a[35, 10].mean() < 50
    scaled, scale = load_image_scaled(path, max_side=20)
    _check_rgb(scaled, (20, 10))
    assert scale == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("truncated.jpg", None, "truncated or corrupt"),
        ("text.jpg", b"this is not a picture\n", "not a recognised image"),
        ("empty.png", b"", "empty file"),
    ],
)
def test_bad_files_raise_image_error(tmp_path: Path, name: str, content: bytes | None, reason: str) -> None:
    path = tmp_path / name
    if content is None:
        full = tmp_path / "full.jpg"
        noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(full, quality=90)
        data = full.read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and reason in message
    assert "\n" not in message


def test_missing_path_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file") as info:
        load_image(tmp_path / "missing.jpg")
    assert "missing.jpg" in str(info.value)
    with pytest.raises(ImageError, match="folder") as info:
        load_image(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_decompression_bomb_is_image_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,600 pixels > 2 x limit
    with pytest.raises(ImageError, match="too large") as info:
        load_image(path)
    assert "bomb.png" in str(info.value)


def test_huge_jpeg_bounded(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    img = Image.new("L", (10000, 10000), 128)
    img.paste(255, (0, 0, 5000, 5000))
    img.save(path, quality=50)
    a, scale = load_image_scaled(path, max_side=1000)
    _check_rgb(a, (1000, 1000))
    assert scale == pytest.approx(0.1)
    # The top-left quadrant is white: the boundary maps back to ~x = 5000 in the original.
    assert a[100, 480].mean() > 250 and a[100, 520].mean() < 140
    assert to_original_pixels(np.array([499.5, 0.0]), scale)[0] == pytest.approx(4999.5)


def test_arrays_and_pil_images() -> None:
    deep = np.full((4, 5), 65535, dtype=np.uint16)
    assert np.all(load_image(deep) == 255)
    rgba = np.zeros((3, 3, 4), dtype=np.uint8)
    assert np.all(load_image(rgba) == 255)  # fully transparent -> white
    floats = np.full((2, 2, 3), 0.5, dtype=np.float32)
    assert np.all(load_image(floats) == 128)
    pil = Image.new("RGB", (7, 3), (1, 2, 3))
    assert load_image(pil).shape == (3, 7, 3)
    with pytest.raises(ImageError, match="unsupported array shape"):
        load_image(np.zeros((4, 4, 2), dtype=np.uint8))


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))))
def test_uint8_arrays_round_trip(array: np.ndarray) -> None:
    assert np.array_equal(load_image(array), array)


def test_iter_image_paths(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    (folder / "sub").mkdir(parents=True)
    for rel in ("b.png", "a.JPG", "sub/c.webp", "notes.txt", "sub/clip.mp4"):
        (folder / rel).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    single = tmp_path / "one.bmp"
    single.write_bytes(b"x")
    items = list(iter_image_paths([str(folder), str(single), str(tmp_path / "nope"), str(tmp_path / "empty"),
                                   str(tmp_path / "*.bmp"), str(tmp_path / "*.gif")]))
    ok = [(i.path.relative_to(tmp_path).as_posix(), i.kind) for i in items if i.ok]
    assert ok == [("set/a.JPG", "image"), ("set/b.png", "image"), ("set/sub/c.webp", "image"),
                  ("set/sub/clip.mp4", "video"), ("one.bmp", "image")]  # the glob repeat is dropped
    errors = [str(i.error) for i in items if not i.ok]
    assert len(errors) == 3
    assert "nope: no such file or folder" in errors[0]
    assert "empty: folder contains no image" in errors[1]
    assert "*.gif: pattern matches no image" in errors[2]


def test_video_frames(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    assert writer.isOpened()
    for i in range(5):
        frame = np.zeros((24, 32, 3), dtype=np.uint8)
        frame[..., 2] = 40 * i  # BGR: red channel grows
        writer.write(frame)
    writer.release()
    frames = list(iter_video_frames(path))
    assert [f.index for f in frames] == list(range(5))
    assert frames[0].fps == pytest.approx(10.0)
    assert frames[3].time_s == pytest.approx(0.3)
    assert frames[4].image.shape == (24, 32, 3)
    assert frames[4].image[..., 0].mean() > frames[1].image[..., 0].mean() + 60  # RGB order
    with pytest.raises(ImageError, match="missing.mp4"):
        next(iter_video_frames(tmp_path / "missing.mp4"))
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"not a video")
    with pytest.raises(ImageError, match="bogus.mp4"):
        list(iter_video_frames(bogus))


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    """A file that declares more pixels than max_pixels is refused by its header; JPEG draft scaling
    counts (a large JPEG decoded at 1/8 size passes)."""
    png = tmp_path / "canvas.png"
    Image.new("RGBA", (3000, 2000)).save(png)  # a few KB on disk, 6 megapixels declared
    with pytest.raises(ImageError, match=r"canvas\.png: declares 3000 x 2000 pixels, more than the limit of 5,000,000"):
        load_image(png, max_pixels=5_000_000)
    assert load_image(png).shape == (2000, 3000, 3)  # the default limit (50 megapixels) lets it through
    jpeg = tmp_path / "large.jpg"
    Image.new("RGB", (3000, 2000), (90, 120, 150)).save(jpeg)
    rgb, scale = load_image_scaled(jpeg, max_side=375, max_pixels=200_000)  # drafted to 375 x 250
    assert rgb.shape == (250, 375, 3) and scale == pytest.approx(0.125)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(png, max_pixels=0)
