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


def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student t critical value for ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    from scipy.stats import t  # lazy: scipy is heavy and only needed at aggregation time

    return float(t.ppf(0.975, df))


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


def summarize(values: Iterable[float]) -> Summary:
    """Summarise ``values``; NaN (or None) entries are counted and excluded."""
    finite: list[float] = []
    nan_count = 0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            nan_count += 1
        else:
            finite.append(float(v))
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
    return Summary(n, nan_count, total, mean, min(finite), max(finite), variance, stddev, stderr,
                   sum_squared, lo, hi)


def ci_from_stats(mean: float, count: int, stddev: float | None = None,
                  stderr: float | None = None) -> tuple[float, float] | None:
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
    """Paired t-test of ``b - a`` on aligned values; pairs where either side is NaN are dropped.

    The t-test answers "is the mean difference zero"; with all differences equal (e.g. identical
    runs) the p-value is 1.0 when the difference is 0 and 0.0 otherwise, instead of scipy's NaN.
    """
    if len(a) != len(b):
        raise ValueError("paired samples must be aligned and of equal length")
    pairs = [(float(x), float(y)) for x, y in zip(a, b, strict=True)
             if not (x is None or y is None or math.isnan(x) or math.isnan(y))]
    n = len(pairs)
    if n == 0:
        return PairedComparison(0, None, None, None, None, None, None, "paired t-test")
    diffs = [y - x for x, y in pairs]
    mean_a = math.fsum(x for x, _ in pairs) / n
    mean_b = math.fsum(y for _, y in pairs) / n
    md = math.fsum(diffs) / n
    if n < 2:
        return PairedComparison(n, mean_a, mean_b, md, None, None, None, "paired t-test")
    sd = math.sqrt(math.fsum((d - md) ** 2 for d in diffs) / (n - 1))
    if sd == 0.0:
        p = 1.0 if md == 0.0 else 0.0
        return PairedComparison(n, mean_a, mean_b, md, md, md, p, "paired t-test")
    se = sd / math.sqrt(n)
    from scipy.stats import t

    tstat = md / se
    p = float(2.0 * t.sf(abs(tstat), n - 1))
    half = t_quantile_975(n - 1) * se
    return PairedComparison(n, mean_a, mean_b, md, md - half, md + half, p, "paired t-test")
