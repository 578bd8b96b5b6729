"""The report's statistics against scipy and brute force on known data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from segcli.report import stats


def test_summary_matches_numpy_and_counts_nan() -> None:
    values = np.array([0.1, 0.5, np.nan, 0.9, 0.7, np.nan, 0.3])
    finite = values[~np.isnan(values)]
    s = stats.summarize_values(values)
    assert (s.n, s.n_nan) == (5, 2)
    assert s.mean == pytest.approx(0.5)
    assert s.median == pytest.approx(0.5)
    assert s.std == pytest.approx(math.sqrt(((finite - 0.5) ** 2).sum() / 4))
    assert (s.q1, s.q3) == pytest.approx((0.3, 0.7))
    assert s.iqr == pytest.approx(sps.iqr(finite))
    assert (s.min, s.max) == (0.1, 0.9)


def test_summary_of_nothing_is_nan_not_an_error() -> None:
    s = stats.summarize_values([math.nan, math.nan])
    assert (s.n, s.n_nan) == (0, 2)
    assert math.isnan(s.mean) and math.isnan(s.ci_low)


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap() -> None:
    rng = np.random.default_rng(3)
    sample = rng.gamma(2.0, 1.5, 300)
    low, high = stats.bootstrap_ci(sample)
    ref = sps.bootstrap(
        (sample,), np.mean, method="percentile", n_resamples=20000, random_state=1
    ).confidence_interval
    width = ref.high - ref.low
    assert abs(low - ref.low) < 0.05 * width
    assert abs(high - ref.high) < 0.05 * width
    assert stats.bootstrap_ci(sample) == (low, high)  # fixed seed: reproducible


def test_bootstrap_ci_matches_a_brute_force_loop() -> None:
    sample = np.array([0.2, 0.9, 0.4, 0.75, 0.6, 0.1, 0.95])
    rng = np.random.default_rng(0)
    means = [sample[rng.integers(0, 7, 7)].mean() for _ in range(stats.BOOTSTRAP_RESAMPLES)]
    assert stats.bootstrap_ci(sample) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40),
    st.floats(-100, 100, allow_nan=False),
)
def test_ci_brackets_the_mean_and_shifts_with_the_data(values: list[float], shift: float) -> None:
    low, high = stats.bootstrap_ci(values)
    mean = float(np.mean(values))
    assert low <= mean + 1e-9 * (1 + abs(mean)) and mean - 1e-9 * (1 + abs(mean)) <= high
    moved = stats.bootstrap_ci(np.asarray(values) + shift)
    assert moved == pytest.approx(
        (low + shift, high + shift), abs=1e-6 * (1 + abs(shift) + abs(mean))
    )


def _exact_wilcoxon(diff: np.ndarray) -> float:
    """Two-sided exact signed-rank p by enumerating every sign assignment (no ties, no zeros)."""
    ranks = sps.rankdata(np.abs(diff))
    observed = ranks[diff > 0].sum()
    totals = [
        sum(r for r, s in zip(ranks, signs, strict=True) if s)
        for signs in itertools.product((0, 1), repeat=diff.size)
    ]
    totals = np.array(totals)
    return min(1.0, 2 * min((totals <= observed).mean(), (totals >= observed).mean()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wilcoxon_equals_the_exact_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    diff = rng.normal(0.3, 1.0, 11)
    assert stats.wilcoxon_p(diff) == pytest.approx(_exact_wilcoxon(diff))


def test_wilcoxon_with_no_difference_is_nan() -> None:
    assert math.isnan(stats.wilcoxon_p([0.0, 0.0, 0.0]))


def test_paired_counts_wins_by_metric_direction_and_drops_nan_pairs() -> None:
    a = np.array([0.5, 0.6, 0.7, np.nan, 0.8, 0.9])
    b = np.array([0.6, 0.6, 0.5, 0.4, 0.85, np.nan])
    up = stats.paired(a, b, higher_is_better=True)
    assert (up.n, up.n_left_out) == (4, 2)
    assert (up.wins, up.ties, up.losses) == (2, 1, 1)
    assert up.mean_diff == pytest.approx(np.mean([0.1, 0.0, -0.2, 0.05]))
    assert (up.mean_a, up.mean_b) == pytest.approx((0.65, 0.6375))
    down = stats.paired(a, b, higher_is_better=False)  # a distance: lower is better
    assert (down.wins, down.ties, down.losses) == (1, 1, 2)
    assert up.verdict == "no significant difference"  # the interval crosses zero


def test_verdict_names_a_real_difference_by_direction() -> None:
    a = np.linspace(0.5, 0.8, 30)
    better = stats.paired(a, a + 0.05, higher_is_better=True)
    assert better.ci_low > 0 and better.verdict == "B better"
    worse_distance = stats.paired(a, a + 0.05, higher_is_better=False)
    assert worse_distance.verdict == "B worse"
    assert better.p < 1e-4
    assert stats.paired(a, a, True).verdict == "no significant difference"


def test_direction_of_every_metric() -> None:
    from segcli.metrics import ALL_METRICS

    ways = {m: stats.direction(m) for m in ALL_METRICS}
    assert ways["dice"] == ways["nsd"] == ways["lesion_f1"] == "higher"
    assert ways["hd95"] == ways["assd"] == ways["lesion_fp"] == "lower"
    assert ways["vol_ref"] == ways["cc_pred"] == "none"


def test_infinite_values_are_left_out_like_nan() -> None:
    """An inf (an unbounded distance) must not turn the mean into inf and the interval n/a."""
    from segcli.report.stats import paired, summarize_values

    s = summarize_values([1.0, 2.0, math.inf, 3.0, math.nan])
    assert (s.n, s.n_nan) == (3, 2) and s.mean == 2.0
    assert math.isfinite(s.ci_low) and math.isfinite(s.ci_high)
    p = paired([1.0, 2.0, 3.0, 4.0], [1.5, math.inf, 3.5, 4.5], higher_is_better=False)
    assert (p.n, p.n_left_out) == (3, 1) and p.mean_diff == 0.5
