"""Media inputs: expanding files, folders and glob patterns into images and videos, and decoding video frames.

Problems with an input never raise while a list is expanded: they come back as a ``MediaInput`` carrying an
``ImageError`` that names the input, so a batch run can report it and go on.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ..errors import ImageError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
VIDEO_SUFFIXES: frozenset[str] = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
# Video containers that do not report a frame rate are read as this many frames per second.
FALLBACK_FPS = 30.0

MediaKind = Literal["image", "video"]


@dataclass(frozen=True)
class MediaInput:
    """One entry of an expanded input list: a file to process, or an error to report.

    ``kind`` is ``"image"`` or ``"video"`` (``None`` with an error). ``error`` is an ``ImageError``
    naming the input that could not be expanded (missing path, folder or pattern with no media).
    """

    path: Path
    kind: MediaKind | None
    error: ImageError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def media_kind(path: str | os.PathLike[str]) -> MediaKind | None:
    """``"image"`` / ``"video"`` from the file suffix (case-insensitive), ``None`` for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def has_glob_magic(text: str) -> bool:
    """Whether ``text`` is a glob pattern (holds ``*``, ``?`` or ``[``)."""
    return any(ch in text for ch in "*?[")


def _media_files(candidates: Iterable[Path]) -> list[Path]:
    return sorted(p for p in candidates if p.is_file() and media_kind(p) is not None)


def iter_image_paths(inputs: Sequence[str | os.PathLike[str]]) -> Iterator[MediaInput]:
    """Expand files, folders (recursively, sorted) and glob patterns into images and videos.

    Yields one ``MediaInput`` per file, in input order, each file once. Problems never raise: a missing
    path, a folder with no image or video files, or a pattern that matches none yields a ``MediaInput``
    with ``error`` set, so a batch run can report it and continue. A file named explicitly is taken
    whatever its suffix (as an image unless its suffix is a video one; the loader reports non-images);
    files found in folders or by patterns are kept only with an image (JPEG/PNG/BMP/WebP) or video
    (mp4/avi/mov/mkv/webm) suffix.
    """
    seen: set[Path] = set()

    def emit(paths: Iterable[Path]) -> Iterator[MediaInput]:
        for p in paths:
            key = p.resolve()
            if key in seen:
                continue
            seen.add(key)
            yield MediaInput(p, media_kind(p) or "image")

    for raw in inputs:
        text = os.fspath(raw)
        path = Path(text)
        if path.is_file():
            yield from emit([path])
        elif path.is_dir():
            files = _media_files(path.rglob("*"))
            if files:
                yield from emit(files)
            else:
                yield MediaInput(path, None, ImageError(path, "folder contains no image or video files"))
        elif has_glob_magic(text):
            matches = [Path(m) for m in glob.glob(text, recursive=True)]
            files = _media_files(matches)
            for folder in sorted(m for m in matches if m.is_dir()):
                files.extend(_media_files(folder.rglob("*")))
            if files:
                yield from emit(files)
            else:
                yield MediaInput(path, None, ImageError(path, "pattern matches no image or video files"))
        else:
            yield MediaInput(path, None, ImageError(path, "no such file or folder"))


# ---------------------------------------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoFrame:
    """A decoded frame: ``image`` (H, W, 3) uint8 RGB, its 0-based ``index``, ``time_s = index / fps``.

    ``fps`` is the container's frame rate, or ``FALLBACK_FPS`` when it reports none
    (``fps_reported`` is then False).
    """

    index: int
    image: np.ndarray
    fps: float
    time_s: float
    fps_reported: bool = True


def iter_video_frames(path: str | os.PathLike[str]) -> Iterator[VideoFrame]:
    """Decode a video file frame by frame with OpenCV; ``ImageError`` if it cannot be opened.

    The file is checked when the generator is first advanced. A file that opens but yields no frame at
    all raises ``ImageError`` too; a stream that stops early simply ends.
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(p, "no such file")
    if p.is_dir():
        raise ImageError(p, "is a folder, not a video file")
    capture = cv2.VideoCapture(str(p))
    try:
        if not capture.isOpened():
            raise ImageError(p, "cannot open as a video (unsupported or corrupt file)")
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        fps_reported = math.isfinite(fps) and fps > 0
        if not fps_reported:
            fps = FALLBACK_FPS
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                break
            if bgr.ndim == 2:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
            elif bgr.shape[2] == 4:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
            else:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield VideoFrame(index, rgb, fps, index / fps, fps_reported)
            index += 1
        if index == 0:
            raise ImageError(p, "no frames could be decoded from the video")
    finally:
        capture.release()


def declared_frame_count(path: Path) -> int | None:
    """The frame count the container reports, or None: some streams report 0 or a wrong estimate."""
    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if capture.isOpened() else 0
    finally:
        capture.release()
    return count if count > 0 else None
