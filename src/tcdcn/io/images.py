"""Reading images robustly: decoding, EXIF orientation, modes, bounded size and pixel limits.

Every loader returns ``(H, W, 3)`` ``uint8`` RGB in the image's *displayed* orientation (the EXIF
orientation tag is applied). Anything that cannot be read or decoded raises ``ImageError`` with a
one-line message that names the file; no decoder exception leaks.

Mode handling (PIL images and files):

- grey ``L`` / ``1``, palette ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` -> converted to RGB;
- an alpha channel (``RGBA``, ``LA``, ``PA``, palette with transparency) is composited over white;
- 16-bit grey (``I;16``, ``I;16B``, ``I;16L``, and ``I``, which is how 16-bit data usually arrives)
  is scaled from 0..65535 to 0..255 (values outside are clipped); float ``F`` is taken as 0..1 when
  its maximum is at most 1, else as 0..255, and clipped.

NumPy arrays are taken as RGB (not OpenCV's BGR): ``(H, W)`` or ``(H, W, 1)`` grey, ``(H, W, 3)`` RGB,
``(H, W, 4)`` RGBA (composited over white). ``uint16`` is scaled to 8 bit, floats as for ``F``, bool to
0/255.

Large images. ``load_image_scaled(source, max_side)`` bounds the long side of the result: JPEGs are
decoded at reduced size by the decoder itself (PIL's ``draft`` mode: 1/2, 1/4 or 1/8 DCT scaling, so a
10,000 x 10,000 JPEG never exists at full size in memory), then any image is resized (area averaging) to
a long side of exactly ``max_side``. It returns ``(array, scale)`` with
``scale = result long side / original long side`` (``1.0`` when nothing was resized). In the package's
pixel-centre convention (pixel ``i`` has its centre at ``i``) a point ``p`` of the returned array is at
``(p + 0.5) / scale - 0.5`` in the original image: use ``to_original_pixels``; a length (a box side) is
``length / scale``. Each axis is rounded to whole pixels, so the per-axis scale can differ from ``scale``
by at most half a pixel of the result.

Memory stays bounded: before any pixel is decoded, the size the decoder would produce (after JPEG
draft scaling) is checked against ``max_pixels`` (default ``DEFAULT_MAX_PIXELS``, 50 megapixels, about
200 MB as RGBA); a file that declares more is refused with ``ImageError`` however small it is on disk
(a PNG can declare a 13,000 x 13,000 canvas in 700 KB).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

DEFAULT_MAX_SIDE = 4096
# Largest decoded image (width x height, after JPEG draft scaling) accepted before decoding starts.
DEFAULT_MAX_PIXELS = 50_000_000

ImageSource = str | os.PathLike[str] | Image.Image | np.ndarray


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB, displayed orientation, at full size (see the module notes)."""
    array, _ = _load(source, max_side=None, max_pixels=max_pixels)
    return array


def to_grey(image_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) ITU-R 601 luma, as OpenCV and PIL compute it; grey passes through."""
    if image_rgb.ndim == 2:
        return image_rgb
    return cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)


def load_image_scaled(source: ImageSource, max_side: int = DEFAULT_MAX_SIDE,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, float]:
    """``(array, scale)``: the image with its long side at most ``max_side``.

    ``scale`` is result long side / original long side (``<= 1``); map points of the result back to the
    original with ``to_original_pixels(points, scale)`` and lengths with ``length / scale``.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    return _load(source, max_side=max_side, max_pixels=max_pixels)


def to_original_pixels(points: np.ndarray, scale: float) -> np.ndarray:
    """Points ``(..., 2)`` in a ``load_image_scaled`` result -> pixels of the original image."""
    return (np.asarray(points, dtype=np.float64) + 0.5) / scale - 0.5


def _source_name(source: ImageSource) -> str:
    if isinstance(source, np.ndarray):
        return "<array>"
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    if not isinstance(source, str | os.PathLike):
        raise ImageError(f"<{type(source).__name__}>", "not an image: expected a file path, a PIL image or a "
                                                       "numpy array")
    return os.fspath(source)


def _load(source: ImageSource, max_side: int | None, max_pixels: int) -> tuple[np.ndarray, float]:
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    name = _source_name(source)
    if isinstance(source, np.ndarray):
        rgb = array_to_rgb(source, name)
        return _bound_size(rgb, max_side)
    if isinstance(source, Image.Image):
        try:
            rgb = pil_to_rgb(ImageOps.exif_transpose(source))
        except Exception as exc:  # noqa: BLE001 - any decoder failure becomes one ImageError
            raise ImageError(name, f"cannot decode image ({_describe(exc)})") from exc
        return _bound_size(rgb, max_side)
    return _load_file(Path(name), max_side, max_pixels)


def _load_file(path: Path, max_side: int | None, max_pixels: int) -> tuple[np.ndarray, float]:
    if not path.exists():
        raise ImageError(path, "no such file")
    if path.is_dir():
        raise ImageError(path, "is a folder, not an image file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(path, f"cannot read ({_describe(exc)})") from exc
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Large images are handled below (draft decoding); PIL's hard limit still raises.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if max_side is not None and max(width, height) > max_side:
                    factor = max_side / max(width, height)
                    # draft() keeps the decoded size >= the request in both axes, so ask for the
                    # aspect-preserving target (JPEG only; other formats ignore it).
                    img.draft("RGB", (max(1, math.ceil(width * factor)), max(1, math.ceil(height * factor))))
                decoded_width, decoded_height = img.size  # after draft: what the decoder will produce
                if decoded_width * decoded_height > max_pixels:
                    raise ImageError(path, f"declares {width} x {height} pixels, more than the limit of "
                                           f"{max_pixels:,} (max_pixels / --max-pixels)")
                img.load()
                oriented = ImageOps.exif_transpose(img)
                rgb = pil_to_rgb(oriented)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(path, "not a recognised image format (corrupt, or not an image)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"image too large to decode safely ({_describe(exc)})") from exc
    except MemoryError as exc:
        raise ImageError(path, "out of memory while decoding the image") from exc
    except Exception as exc:  # noqa: BLE001 - truncated data, bad headers, decoder errors of any kind
        raise ImageError(path, f"truncated or corrupt image ({_describe(exc)})") from exc
    # Original (displayed) size: EXIF rotation by 90/270 degrees swaps the axes; draft shrinks both.
    original_long = max(width, height)
    if max_side is None:
        return rgb, 1.0
    resized, _ = _bound_size(rgb, max_side)
    return resized, max(resized.shape[:2]) / original_long


def _bound_size(rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Resize so the long side is at most ``max_side``; returns the array and long-side scale."""
    height, width = rgb.shape[:2]
    long_side = max(height, width)
    if max_side is None or long_side <= max_side:
        return rgb, 1.0
    factor = max_side / long_side
    new_w = max(1, round(width * factor))
    new_h = max(1, round(height * factor))
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(resized), max(new_w, new_h) / long_side


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _composite_over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _high_depth_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit integer holding 16-bit) data -> 8 bit: 0..65535 -> 0..255."""
    v = np.clip(values.astype(np.float64), 0, 65535) / 257.0
    return np.rint(v).astype(np.uint8)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64)
    v = np.nan_to_num(v, nan=0.0, posinf=255.0, neginf=0.0)
    finite_max = float(v.max()) if v.size else 0.0
    if finite_max <= 1.0:
        v = v * 255.0
    return np.rint(np.clip(v, 0, 255)).astype(np.uint8)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> ``(H, W, 3)`` uint8 RGB (alpha composited over white)."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        grey = _high_depth_to_uint8(np.asarray(img))
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if mode == "F":
        grey = _float_to_uint8(np.asarray(img))
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"))
        return _composite_over_white(rgba[..., :3], rgba[..., 3])
    if mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def array_to_rgb(array: np.ndarray, name: str = "<array>") -> np.ndarray:
    """A NumPy image (grey, RGB or RGBA; uint8, uint16, float or bool) -> ``(H, W, 3)`` uint8 RGB."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape[:2]:
        raise ImageError(name, f"unsupported array shape {a.shape}: expected (H, W), (H, W, 3) or (H, W, 4)")
    if a.dtype == np.bool_:
        a8 = a.astype(np.uint8) * 255
    elif a.dtype == np.uint8:
        a8 = a
    elif a.dtype in (np.uint16, np.int32, np.uint32, np.int64, np.uint64):
        a8 = _high_depth_to_uint8(a)
    elif a.dtype in (np.int8, np.int16):
        a8 = np.clip(a, 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a8 = _float_to_uint8(a)
    else:
        raise ImageError(name, f"unsupported array dtype {a.dtype}")
    if a8.ndim == 2:
        return np.ascontiguousarray(np.repeat(a8[..., None], 3, axis=2))
    if a8.shape[2] == 4:
        return _composite_over_white(a8[..., :3], a8[..., 3])
    return np.ascontiguousarray(a8)
