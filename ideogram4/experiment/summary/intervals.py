"""Confidence intervals for a setting's mean (and for paired differences), clustered by prompt.

Images of one prompt are not independent (they share the caption), so the prompt is the unit that is
resampled: the interval is a Student-t interval over prompt clusters, with the cluster-robust (CR1)
standard error of the image mean, df = clusters - 1. With equal seeds per prompt it is exactly the
t interval of the prompt means. A setting with a single prompt has the seeds as its units.

Why not the percentile bootstrap this replaced: at n = 2 it returns [min, max] and at n = 3 it covers
the true mean far less than 95 % (a resample of all-minimum values alone has probability 1/27). The t interval
is exact for normal data at any n >= 2 and covers >= 90 % for lognormal (sigma 0.5) data from n = 10.
Where no interval exists (fewer than MIN_CLUSTERS units) the bounds are empty and ``note`` says why.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
MIN_CLUSTERS = 2
METHOD = "student-t over prompt clusters (cluster-robust SE of the image mean, df = clusters - 1)"


@dataclass(frozen=True)
class Interval:
    n: int  # images
    clusters: int  # the independent units the interval rests on
    mean: float
    low: float
    high: float
    note: str  # empty when the interval exists; otherwise why it is empty


def clustered_mean_ci(
    values: Sequence[float], clusters: Sequence[Hashable] | None = None, level: float = LEVEL
) -> Interval:
    """Mean of ``values`` and its ``level`` interval, the values grouped by ``clusters`` (one label each;
    None or a single label: every value is its own unit)."""
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=np.float64)  # (n,)
    if x.size == 0:
        return Interval(0, 0, math.nan, math.nan, math.nan, "no values")
    labels = list(clusters) if clusters is not None else list(range(x.size))
    if len(set(labels)) < 2:  # one prompt: its seeds are the units
        labels = list(range(x.size))
    _, group = np.unique(np.asarray([str(label) for label in labels]), return_inverse=True)  # (n,)
    g = int(group.max()) + 1
    mean = float(x.mean())
    if g < MIN_CLUSTERS:
        return Interval(x.size, g, mean, math.nan, math.nan, f"n={x.size}: no interval from a single value")
    sums = np.bincount(group, weights=x - mean, minlength=g)  # (g,) cluster sums of residuals
    se = math.sqrt(g / (g - 1) * float(np.sum(sums**2))) / x.size
    half = float(student_t.ppf((1 + level) / 2, g - 1)) * se
    return Interval(x.size, g, mean, mean - half, mean + half, "")


def paired_difference_ci(
    values: Sequence[float],
    baseline: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    level: float = LEVEL,
) -> Interval:
    """Interval of the mean of ``values[i] - baseline[i]`` (aligned unit by unit, clustered as above)."""
    diff = np.asarray(values, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)  # (n,)
    return clustered_mean_ci(diff, clusters, level)
