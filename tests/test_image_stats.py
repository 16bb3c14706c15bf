"""Low-level image statistics: each one moves the way its name says."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from features.image_stats import COLUMNS, STAT_NAMES, image_stats

rng = np.random.default_rng(0)


def stats(rgb: np.ndarray, width=400, height=300, file_size=1000) -> dict[str, float]:
    return dict(zip(STAT_NAMES, image_stats(rgb, width, height, file_size).tolist()))


def flat(value) -> np.ndarray:
    return np.full((160, 200, 3), value, np.uint8)


def test_columns_are_named_for_the_block():
    assert COLUMNS[0] == "imgstats_brightness" and len(COLUMNS) == len(STAT_NAMES) == 10


def test_brightness_contrast_and_size():
    white, black = stats(flat(255)), stats(flat(0))
    assert white["brightness"] == 1.0 and black["brightness"] == 0.0
    assert white["contrast"] == 0.0
    halves = flat(0)
    halves[:, 100:] = 255
    assert abs(stats(halves)["contrast"] - 0.5) < 1e-6
    s = stats(flat(128), width=400, height=300, file_size=12345)
    assert (s["width"], s["height"], s["file_size"]) == (400, 300, 12345) and abs(s["aspect"] - 4 / 3) < 1e-6


def test_colourfulness_and_saturation():
    grey = stats(flat(120))
    assert grey["colourfulness"] < 1e-6 and grey["saturation"] == 0.0
    vivid = flat(0)
    vivid[:80, :, 0] = 255
    vivid[80:, :, 2] = 255
    assert stats(vivid)["colourfulness"] > 0.5 and stats(vivid)["saturation"] == 1.0
    pastel = (0.3 * vivid + 0.7 * 200).astype(np.uint8)
    assert stats(pastel)["colourfulness"] < stats(vivid)["colourfulness"]
    assert stats(pastel)["saturation"] < stats(vivid)["saturation"]


def test_sharpness_drops_with_blur_and_noise_rises_with_noise():
    texture = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    sharp = np.asarray(Image.fromarray(texture).resize((200, 160), Image.Resampling.NEAREST))
    blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(3)))
    assert stats(sharp)["sharpness"] > 5 * stats(blurred)["sharpness"]

    smooth = np.tile(np.linspace(40, 200, 200, dtype=np.float32)[None, :, None], (160, 1, 3))
    noisy = np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8)
    clean, estimate = stats(smooth.astype(np.uint8))["noise"], stats(noisy)["noise"]
    assert clean < 0.005
    # Immerkaer's estimate recovers the noise level (10 / 255 per channel; luma averages channels)
    assert 0.02 < estimate < 0.05
