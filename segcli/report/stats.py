"""Population and paired statistics for the report: pure functions on 1-D float arrays.

NaN values (distances of a case where one mask is empty) are left out of every statistic and
counted; each function documents what it does with an empty input.  Bootstrap intervals use a
fixed seed, so a report rebuilt from the same CSV shows the same numbers.

    >>> summarize_values(np.array([0.8, 0.9, np.nan])).mean
    0.85
    >>> paired(np.array([0.8, 0.9]), np.array([0.85, 0.95]), higher_is_better=True).wins
    2
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "PairedStats",
    "Summary",
    "bootstrap_ci",
    "direction",
    "paired",
    "summarize_values",
    "wilcoxon_p",
]

#: Resamples of every bootstrap interval (percentile method).
BOOTSTRAP_RESAMPLES = 2000
_SEED = 0

_HIGHER = {"dice", "iou", "precision", "recall", "nsd", "lesion_tp", "lesion_f1"}
_LOWER = {"hd", "hd95", "assd", "masd", "lesion_fn", "lesion_fp"}


def direction(metric: str) -> Literal["higher", "lower", "none"]:
    """Which way a metric improves: ``higher`` (overlap), ``lower`` (distances, misses) or
    ``none`` (volumes and component counts describe, they do not score)."""
    if metric in _HIGHER:
        return "higher"
    if metric in _LOWER:
        return "lower"
    return "none"


@dataclass(frozen=True)
class Summary:
    """Population statistics of one label and metric (NaN when ``n == 0``).

    Attributes:
        n: values used (finite).
        n_nan: values left out (NaN).
        mean, median, std: sample statistics; ``std`` with ddof=1 (NaN for n < 2).
        q1, q3: 25th and 75th percentiles (numpy's linear interpolation); IQR = q3 - q1.
        ci_low, ci_high: 95% percentile-bootstrap interval of the mean.
        min, max: extremes.
    """

    n: int
    n_nan: int
    mean: float
    median: float
    std: float
    q1: float
    q3: float
    ci_low: float
    ci_high: float
    min: float
    max: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def _finite(values: npt.ArrayLike) -> tuple[np.ndarray, int]:
    """The finite values and how many were left out (NaN, and ±inf: an infinite distance
    would make every mean and interval infinite or undefined)."""
    array = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(array)
    return array[keep], int((~keep).sum())


def bootstrap_ci(
    values: npt.ArrayLike,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = _SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values`` (NaNs dropped).

    Args:
        values: 1-D sample.
        level: coverage, e.g. 0.95.
        resamples: bootstrap resamples.
        seed: RNG seed (fixed: the same data give the same interval).

    Returns:
        ``(low, high)``; ``(nan, nan)`` for an empty sample, ``(x, x)`` for one value.
    """
    sample, _ = _finite(values)
    if sample.size == 0:
        return math.nan, math.nan
    if sample.size == 1 or np.all(sample == sample[0]):
        return float(sample[0]), float(sample[0])
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // sample.size)  # bound the index matrix to ~16 MB
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = sample[rng.integers(0, sample.size, (stop - start, sample.size))].mean(
            axis=1
        )
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize_values(values: npt.ArrayLike) -> Summary:
    """Mean, median, std, quartiles, bootstrap CI, extremes of ``values`` (NaNs counted apart)."""
    sample, n_nan = _finite(values)
    if sample.size == 0:
        nan = math.nan
        return Summary(0, n_nan, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    q1, median, q3 = np.percentile(sample, [25, 50, 75])
    low, high = bootstrap_ci(sample)
    return Summary(
        n=int(sample.size),
        n_nan=n_nan,
        mean=float(sample.mean()),
        median=float(median),
        std=float(sample.std(ddof=1)) if sample.size > 1 else math.nan,
        q1=float(q1),
        q3=float(q3),
        ci_low=low,
        ci_high=high,
        min=float(sample.min()),
        max=float(sample.max()),
    )


def wilcoxon_p(differences: npt.ArrayLike) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (scipy; zeros dropped).

    Returns NaN when no pair differs (the test has nothing to rank) or the sample is empty.
    """
    from scipy.stats import wilcoxon

    diff, _ = _finite(differences)
    if diff.size == 0 or not np.any(diff != 0):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties / small n; the p stands
        return float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


@dataclass(frozen=True)
class PairedStats:
    """Run B against run A on the same cases, one label and metric.

    Attributes:
        n: pairs where both values are finite (the others are left out).
        n_left_out: pairs with a NaN on either side.
        mean_a, mean_b: means over the ``n`` pairs.
        mean_diff: mean of ``b - a``.
        ci_low, ci_high: 95% bootstrap interval of ``mean_diff``.
        p: Wilcoxon signed-rank p-value (NaN when all pairs are equal).
        wins, ties, losses: cases where B is better, equal, worse than A (metric direction;
            all ties-free counts are 0 for a metric without direction).
        higher_is_better: the direction used (None: no direction).
    """

    n: int
    n_left_out: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    p: float
    wins: int
    ties: int
    losses: int
    higher_is_better: bool | None

    @property
    def verdict(self) -> str:
        """Honest wording: a difference only where the 95% interval excludes zero."""
        if self.n == 0:
            return "no pairs to compare"
        if math.isnan(self.ci_low) or (self.ci_low <= 0.0 <= self.ci_high):
            return "no significant difference"
        if self.higher_is_better is None:
            return "B larger" if self.mean_diff > 0 else "B smaller"
        better = (self.mean_diff > 0) == self.higher_is_better
        return "B better" if better else "B worse"


def paired(
    a: npt.ArrayLike, b: npt.ArrayLike, higher_is_better: bool | None, tol: float = 1e-12
) -> PairedStats:
    """Paired comparison of ``b`` against ``a`` (same cases, same order).

    Args:
        a, b: 1-D arrays of equal length; a pair with a NaN or inf on either side is left out.
        higher_is_better: metric direction (None: wins/losses are not counted).
        tol: absolute difference below which a pair is a tie.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    a_arr = np.asarray(a, dtype=np.float64).ravel()
    b_arr = np.asarray(b, dtype=np.float64).ravel()
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired samples differ in length: {a_arr.size} vs {b_arr.size}")
    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    a_arr, b_arr = a_arr[keep], b_arr[keep]
    diff = b_arr - a_arr
    n = int(diff.size)
    if n == 0:
        nan = math.nan
        return PairedStats(
            0, int((~keep).sum()), nan, nan, nan, nan, nan, nan, 0, 0, 0, higher_is_better
        )
    ties = int((np.abs(diff) <= tol).sum())
    if higher_is_better is None:
        wins = losses = 0
    else:
        better = diff > tol if higher_is_better else diff < -tol
        wins = int(better.sum())
        losses = n - ties - wins
    low, high = bootstrap_ci(diff)
    return PairedStats(
        n=n,
        n_left_out=int((~keep).sum()),
        mean_a=float(a_arr.mean()),
        mean_b=float(b_arr.mean()),
        mean_diff=float(diff.mean()),
        ci_low=low,
        ci_high=high,
        p=wilcoxon_p(diff),
        wins=wins,
        ties=ties,
        losses=losses,
        higher_is_better=higher_is_better,
    )
