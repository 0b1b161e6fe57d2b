"""Training augmentation draws: blur and occlusion, and the random stream of configs without them."""

from __future__ import annotations

import numpy as np

from tcdcn.config import AugmentConfig
from tcdcn.data.transforms import CropParams, draw_params, make_crop
from tcdcn.geometry import Box
from tcdcn.schemes import MTFL_5

LANDMARKS = np.array([[30.0, 40.0], [71.0, 38.0], [50.0, 55.0], [35.0, 70.0], [66.0, 72.0]])


def _image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (100, 100), dtype=np.uint8)


def test_without_blur_and_occlusion_the_draws_are_the_seven_documented_ones() -> None:
    # Older configs (and the shipped models' training) must keep their crops: with both chances at 0,
    # draw_params takes exactly scale, shift x/y, rotation, mirror, contrast, brightness from the stream.
    cfg = AugmentConfig(rotation_deg=25.0)
    params = draw_params(cfg, np.random.default_rng(7))
    ref = np.random.default_rng(7)
    expected = CropParams(
        scale=float(ref.uniform(1 - cfg.scale, 1 + cfg.scale)),
        shift_x=float(ref.uniform(-cfg.shift, cfg.shift)),
        shift_y=float(ref.uniform(-cfg.shift, cfg.shift)),
        rotation_deg=float(ref.uniform(-cfg.rotation_deg, cfg.rotation_deg)),
        mirror=bool(ref.random() < 0.5),
        contrast=float(ref.uniform(1 - cfg.contrast, 1 + cfg.contrast)),
        brightness=float(ref.uniform(-cfg.brightness, cfg.brightness) * 128.0),
    )
    assert params == expected


def test_chances_are_respected() -> None:
    rng = np.random.default_rng(0)
    never = [draw_params(AugmentConfig(), rng) for _ in range(200)]
    assert all(p.occluder is None and p.blur_sigma == 0 for p in never)
    always = [draw_params(AugmentConfig(occlusion_probability=1.0, blur_probability=1.0, blur_sigma=2.0,
                                        occlusion_size=0.3), rng) for _ in range(200)]
    for p in always:
        assert 0.5 <= p.blur_sigma <= 2.0
        assert p.occluder is not None
        left, top, width, height, grey = p.occluder
        assert 0.1 <= width <= 0.3 and 0.1 <= height <= 0.3
        assert 0 <= left and left + width <= 1 and 0 <= top and top + height <= 1 and 0 <= grey <= 255
    half = [draw_params(AugmentConfig(occlusion_probability=0.5), rng).occluder is not None for _ in range(400)]
    assert 150 < sum(half) < 250


def test_occluder_paints_its_rectangle_and_keeps_the_landmarks() -> None:
    box, size = Box.whole_image(100, 100), 100
    plain, norm, _ = make_crop(_image(), box, size, CropParams(), LANDMARKS, MTFL_5)
    occluded, norm_o, _ = make_crop(_image(), box, size, CropParams(occluder=(0.2, 0.5, 0.3, 0.1, 77.0)),
                                    LANDMARKS, MTFL_5)
    np.testing.assert_array_equal(norm_o, norm)
    assert np.all(occluded[50:60, 20:50] == 77.0)  # rows top..top+height, columns left..left+width
    outside = np.ones_like(plain, bool)
    outside[50:60, 20:50] = False
    np.testing.assert_array_equal(occluded[outside], plain[outside])


def test_blur_smooths_the_crop_and_keeps_the_landmarks() -> None:
    box, size = Box.whole_image(100, 100), 100
    plain, norm, _ = make_crop(_image(), box, size, CropParams(), LANDMARKS, MTFL_5)
    blurred, norm_b, _ = make_crop(_image(), box, size, CropParams(blur_sigma=1.5), LANDMARKS, MTFL_5)
    np.testing.assert_array_equal(norm_b, norm)
    assert blurred.std() < 0.5 * plain.std()  # white noise loses most of its variance
    assert abs(blurred.mean() - plain.mean()) < 2.0
