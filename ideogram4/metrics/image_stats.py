"""Caption-free image statistics: the near-uniform flag, pixel spread, sharpness, colourfulness.

A near-uniform image (every channel's pixel std below the threshold) is the signature of a broken build
or wrong weights (the 'blocked' artefact), not a result. Sharpness is the variance of the Laplacian of
the grey image (0..255 scale; depends on resolution, so compare like with like). Colourfulness is
Hasler & Suesstrunk (2003): std and mean of the opponent channels rg = R - G, yb = (R + G) / 2 - B.
"""

from __future__ import annotations

import numpy as np
from PIL import ImageStat

from ..spec import UNIFORM_STD_THRESHOLD
from .registry import MetricResult

NAME = "image_stats"
VERSION = "1"
KEYS = {"near_uniform": "lower", "pixel_std": "neither", "sharpness": "neither", "colorfulness": "neither"}
PACKAGES: dict[str, str] = {}  # numpy and Pillow only: the default metric runs on the base install
WEIGHTS = "none"
OPTIONS = {"uniform_std_threshold": UNIFORM_STD_THRESHOLD}
READS_CAPTION = False


def pixel_std(image) -> float:
    """Largest per-channel standard deviation of the pixels (0..255 scale)."""
    return float(max(ImageStat.Stat(image.convert("RGB")).stddev))


def sharpness(image) -> float:
    """Variance of the 5-point Laplacian, edges mirrored (the values of scikit-image's `laplace`, ksize 3)."""
    grey = np.pad(np.asarray(image.convert("L"), dtype=np.float64), 1, mode="symmetric")  # 0..255
    centre = grey[1:-1, 1:-1]
    lap = 4 * centre - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(lap.var())


def colorfulness(image) -> float:
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)  # (H, W, 3) 0..255
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def score_detailed(image, facts, options: dict) -> MetricResult:
    std = pixel_std(image)
    return MetricResult(
        values={
            "near_uniform": float(std < options["uniform_std_threshold"]),
            "pixel_std": std,
            "sharpness": sharpness(image),
            "colorfulness": colorfulness(image),
        }
    )
