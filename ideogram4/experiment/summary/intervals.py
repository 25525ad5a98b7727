"""Bootstrap confidence intervals over the units of a sweep (one unit = one prompt x seed image).

Percentile bootstrap of the mean: resample the units with replacement (numpy's seeded generator, so a
summary is reproducible), take the mean of each resample, read the interval off the quantiles. A
paired comparison resamples the per-unit differences, which keeps the prompt and seed effects that
both settings share out of the interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

LEVEL = 0.95
# resample in chunks so n_boot x n indices never take more than ~16 MB at once
_MAX_INDICES = 2_000_000


def bootstrap_mean_ci(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = LEVEL
) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high); NaN for what n cannot give (no values: all; one value: the interval)."""
    x = np.asarray(values, dtype=np.float64)  # (n,)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)  # (n_boot,)
    chunk = max(1, _MAX_INDICES // x.size)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))  # (chunk, n)
        means[start:stop] = x[idx].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return mean, float(low), float(high)


def paired_difference_ci(
    values: Sequence[float], baseline: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = LEVEL
) -> tuple[float, float, float]:
    """Mean and CI of ``values[i] - baseline[i]`` (the two lists are aligned unit by unit)."""
    diff = np.asarray(values, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)  # (n,)
    return bootstrap_mean_ci(diff, n_boot=n_boot, seed=seed, level=level)
