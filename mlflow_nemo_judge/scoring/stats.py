"""NaN-aware aggregation and paired comparison.

Conventions (kept identical for both backends so MLflow runs compare like for like):

* NaN values (unparseable judge output, failed judge call) are *excluded* from every statistic and
  counted in ``nan_count``; they are never coerced to 0.
* ``variance``/``stddev`` are population statistics, as NeMo Evaluator reports them.
* ``stderr`` is the standard error of the mean, ``sample_stddev / sqrt(count)`` (ddof=1).
* The 95% confidence interval is Student's t interval ``mean ± t(0.975, n-1) · stderr``: exact for
  normal data, close for the bounded ordinal scores judges give, deterministic (no bootstrap seed), and
  computable from summary statistics alone, which is all a NeMo server may return.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """Upper tail P(T > t) of Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@lru_cache(maxsize=1024)
def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student t critical value for ``df`` degrees of freedom.

    Computed here (bisection on the exact tail via the incomplete beta function) rather than with
    scipy, whose import alone costs about a second: aggregation should not wait on it.
    """
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 0.025:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > 0.025:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass
class Summary:
    """Aggregate statistics of one score over the samples of a task."""

    count: int
    nan_count: int
    sum: float | None
    mean: float | None
    min: float | None
    max: float | None
    variance: float | None
    stddev: float | None
    stderr: float | None
    sum_squared: float | None
    ci95_low: float | None
    ci95_high: float | None


def split_nan(values: Iterable[float | None]) -> tuple[list[float], int]:
    """The non-NaN values (as floats) and how many were NaN or None: the one NaN rule everywhere."""
    finite: list[float] = []
    nan_count = 0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            nan_count += 1
        else:
            finite.append(float(v))
    return finite, nan_count


def summarize(values: Iterable[float]) -> Summary:
    """Summarise ``values``; NaN (or None) entries are counted and excluded."""
    finite, nan_count = split_nan(values)
    n = len(finite)
    if n == 0:
        return Summary(0, nan_count, None, None, None, None, None, None, None, None, None, None)
    total = math.fsum(finite)
    mean = total / n
    sq = math.fsum((x - mean) ** 2 for x in finite)
    variance = sq / n
    stddev = math.sqrt(variance)
    sum_squared = math.fsum(x * x for x in finite)
    if n > 1:
        stderr = math.sqrt(sq / (n - 1)) / math.sqrt(n)
        half = t_quantile_975(n - 1) * stderr
        lo, hi = mean - half, mean + half
    else:
        stderr, lo, hi = None, None, None
    return Summary(
        n, nan_count, total, mean, min(finite), max(finite), variance, stddev, stderr, sum_squared, lo, hi
    )


def ci_from_stats(
    mean: float, count: int, stddev: float | None = None, stderr: float | None = None
) -> tuple[float, float] | None:
    """95% t interval from summary statistics (for NeMo results that give only count/mean/stddev).

    ``stddev`` is taken as the population value (NeMo's convention) and converted to the sample one.
    """
    if count < 2:
        return None
    if stderr is None:
        if stddev is None:
            return None
        stderr = stddev * math.sqrt(count / (count - 1)) / math.sqrt(count)
    half = t_quantile_975(count - 1) * stderr
    return mean - half, mean + half


@dataclass
class PairedComparison:
    """Paired difference ``b - a`` over shared item ids."""

    n: int
    mean_a: float | None
    mean_b: float | None
    mean_diff: float | None
    ci95_low: float | None
    ci95_high: float | None
    p_value: float | None
    test: str


def paired_compare(a: Sequence[float], b: Sequence[float]) -> PairedComparison:
    """Paired comparison of ``b - a`` on aligned values; pairs where either side is NaN are dropped.

    Kept for compatibility: it delegates to ``scoring.paired_tests.paired_test``, which picks the test
    from the data (exact McNemar for 0/1, Wilcoxon signed-rank for ratings, paired t or a sign-flip
    permutation test otherwise) and never reports ``p = 0`` for all-equal differences (the exact sign
    test ``2·0.5ⁿ``). Use ``paired_test`` for the effect size and the warnings.
    """
    from mlflow_nemo_judge.scoring.paired_tests import paired_test

    pt = paired_test(a, b)
    return PairedComparison(
        pt.n, pt.mean_a, pt.mean_b, pt.mean_diff, pt.ci95_low, pt.ci95_high, pt.p_value, pt.test
    )
