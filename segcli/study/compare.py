"""Ranking and paired comparison of a study's variants, from their out-of-fold scores.

    >>> from segcli.study.compare import rank, compare_pairs, holm
    >>> ranking = rank(scores, "dice")                 # best first
    >>> pairs = compare_pairs(scores, "dice")          # every pair, every label, Holm-corrected

``scores`` maps variant → case → label → metric value (the rows of each variant's
``cv_metrics.csv``: every case scored by the fold model that did not train on it).

* **Ranking** (as nnU-Net's ``find_best_configuration``): the mean over cases of the mean over
  labels of the metric, NaN cells left out; higher first for overlap metrics, lower first for
  distances.  Each variant's spread is the standard deviation of its fold means.
* **Pairs**: every pair of variants, per label, paired by case: mean difference, 95% bootstrap
  interval and two-sided Wilcoxon signed-rank p (:mod:`segcli.report.stats`); the p-values of
  all the comparisons on the page are corrected together by Holm's step-down method (which
  controls the family-wise error rate), and a difference is called significant when the
  corrected p is below 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from segcli.report import stats

__all__ = ["ALPHA", "Pair", "RankRow", "compare_pairs", "holm", "rank"]

#: family-wise significance level of the study's tests
ALPHA = 0.05

Scores = Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (same order); NaN stays NaN and is not counted in the family.

    ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) · p(j))`` over the p-values sorted ascending,
    ``m`` the number of finite p-values.
    """
    finite = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    out = [math.nan] * len(p_values)
    m = len(finite)
    running = 0.0
    for j, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (m - j) * p))
        out[i] = running
    return out


def _higher(metric: str) -> bool:
    return stats.direction(metric) != "lower"


def case_means(
    per_case: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str
) -> dict[str, float]:
    """case → the mean over labels of ``metric`` (NaN cells left out; NaN when none)."""
    out = {}
    for case, labels in per_case.items():
        values = [v[metric] for v in labels.values() if not math.isnan(v[metric])]
        out[case] = float(np.mean(values)) if values else math.nan
    return out


@dataclass(frozen=True)
class RankRow:
    variant: str
    rank: int
    mean: float
    fold_std: float
    n: int


def rank(
    scores: Scores, metric: str, folds: Mapping[str, Mapping[str, int]] | None = None
) -> list[RankRow]:
    """Variants best first by the mean of their per-case means (see the module docstring).

    ``folds``: variant → case → fold, for the spread between folds (NaN without it).
    """
    rows = []
    for variant, per_case in scores.items():
        means = case_means(per_case, metric)
        finite = [v for v in means.values() if not math.isnan(v)]
        mean = float(np.mean(finite)) if finite else math.nan
        spread = math.nan
        if folds is not None and variant in folds:
            by_fold: dict[int, list[float]] = {}
            for case, value in means.items():
                if not math.isnan(value):
                    by_fold.setdefault(folds[variant][case], []).append(value)
            fold_means = [float(np.mean(v)) for v in by_fold.values()]
            spread = float(np.std(fold_means, ddof=1)) if len(fold_means) > 1 else math.nan
        rows.append((variant, mean, spread, len(finite)))
    sign = -1.0 if _higher(metric) else 1.0
    ordered = sorted(
        rows, key=lambda r: (math.isnan(r[1]), sign * r[1] if not math.isnan(r[1]) else 0)
    )
    return [RankRow(v, i + 1, m, s, n) for i, (v, m, s, n) in enumerate(ordered)]


@dataclass(frozen=True)
class Pair:
    """Variant ``b`` against variant ``a`` on one label, paired by case."""

    a: str
    b: str
    label: str
    stats: stats.PairedStats
    p_holm: float

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm < ALPHA

    @property
    def better(self) -> str | None:
        """The variant that is significantly better, None when the difference is not."""
        if not self.significant or self.stats.higher_is_better is None:
            return None
        b_up = self.stats.mean_diff > 0
        return self.b if b_up == self.stats.higher_is_better else self.a


def compare_pairs(scores: Scores, metric: str, order: Sequence[str] | None = None) -> list[Pair]:
    """Every pair of variants (``order``: best first, so ``a`` is the better-ranked one), per
    label, paired by the cases both scored; Holm-corrected over all of them."""
    variants = list(order or scores)
    way = stats.direction(metric)
    higher = None if way == "none" else way == "higher"
    raw = []
    for i, a in enumerate(variants):
        for b in variants[i + 1 :]:
            cases = sorted(set(scores[a]) & set(scores[b]))
            labels = sorted({lbl for c in cases for lbl in scores[a][c]}, key=lambda v: (len(v), v))
            for label in labels:
                xa = [scores[a][c].get(label, {}).get(metric, math.nan) for c in cases]
                xb = [scores[b][c].get(label, {}).get(metric, math.nan) for c in cases]
                raw.append((a, b, label, stats.paired(xa, xb, higher)))
    adjusted = holm([p.p for *_, p in raw])
    return [Pair(a, b, label, p, q) for (a, b, label, p), q in zip(raw, adjusted, strict=True)]
