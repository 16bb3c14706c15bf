"""Low-level image statistics that predict popularity beside deep features
(Khosla et al., "What makes an image popular?", WWW 2014).

Computed in the encoder's decode pass on a copy of the photo scaled to a fixed
shorter side (`STATS_SIDE`), so that sharpness and noise, which depend on
resolution, are comparable between photos of different sizes. Width, height,
aspect and file size describe the original file.
"""
from __future__ import annotations

import numpy as np

STATS_SIDE = 160
STAT_NAMES = ("brightness", "contrast", "colourfulness", "saturation", "sharpness", "noise",
              "width", "height", "aspect", "file_size")
COLUMNS = tuple(f"imgstats_{name}" for name in STAT_NAMES)


def missing_stats() -> np.ndarray:
    return np.full(len(STAT_NAMES), np.nan, dtype=np.float32)


def image_stats(rgb: np.ndarray, width: int, height: int, file_size: int) -> np.ndarray:
    """Statistics of one photo, in the order of STAT_NAMES (float32).

    rgb: (H, W, 3) uint8, the photo scaled to shorter side STATS_SIDE (at least 3x3).
    width, height, file_size: of the original file (pixels, bytes).
    """
    x = rgb.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    # Hasler & Suesstrunk (2003) colourfulness on the opponent channels rg, yb
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    high, low = x.max(axis=2), x.min(axis=2)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0).mean()
    # sharpness: variance of the 4-neighbour Laplacian (blurred photos have little high frequency)
    laplacian = (luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1])
    # noise: Immerkaer (1996) fast estimate of the standard deviation of Gaussian noise
    mask_response = (luma[:-2, :-2] + luma[:-2, 2:] + luma[2:, :-2] + luma[2:, 2:]
                     - 2 * (luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:])
                     + 4 * luma[1:-1, 1:-1])
    h, w = luma.shape
    noise = np.sqrt(np.pi / 2) * np.abs(mask_response).sum() / (6.0 * (w - 2) * (h - 2))
    return np.array([luma.mean(), luma.std(), colourfulness, saturation, laplacian.var(), noise,
                     width, height, width / max(height, 1), file_size], dtype=np.float32)
