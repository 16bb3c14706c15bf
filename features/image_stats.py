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
    r, g, b = (rgb[..., c].astype(np.float32) * (1.0 / 255.0) for c in range(3))
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    # Hasler & Suesstrunk (2003) colourfulness on the opponent channels rg, yb
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    high = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]).astype(np.float32)
    low = np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]).astype(np.float32)
    saturation = ((high - low) / np.maximum(high, 1.0)).mean()  # HSV saturation, 0 for black
    # second differences along columns (dxx) and rows (dyy)
    dxx = luma[:, :-2] - 2 * luma[:, 1:-1] + luma[:, 2:]
    dyy = luma[:-2, :] - 2 * luma[1:-1, :] + luma[2:, :]
    # sharpness: variance of the 4-neighbour Laplacian (blurred photos have little high frequency)
    laplacian = dxx[1:-1, :] + dyy[:, 1:-1]
    # noise: Immerkaer (1996) fast estimate of the standard deviation of Gaussian noise; its mask
    # [[1,-2,1],[-2,4,-2],[1,-2,1]] is the second difference along rows of dxx
    mask_response = dxx[:-2, :] - 2 * dxx[1:-1, :] + dxx[2:, :]
    h, w = luma.shape
    noise = np.sqrt(np.pi / 2) * np.abs(mask_response).sum() / (6.0 * (w - 2) * (h - 2))
    return np.array([luma.mean(), luma.std(), colourfulness, saturation, laplacian.var(), noise,
                     width, height, width / max(height, 1), file_size], dtype=np.float32)
