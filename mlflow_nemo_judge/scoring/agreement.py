"""Agreement figures on category labels and repeats: Cohen's κ, Spearman, exact / ±1, confusion, ICC.

Judge vs judge, judge vs human, a judge against itself. Pure functions on plain sequences (no I/O, no
MLflow). NaN (or None) marks a missing value everywhere, as in the rest of ``scoring``; a figure that the
data cannot define (no pairs, every value the same, so chance agreement is perfect) is ``None`` rather
than NaN or a made-up 0/1. Krippendorff's α is :mod:`.alpha`; the bootstrap intervals of α and κ are
:mod:`.bootstrap`.

* Cohen's (weighted) κ, exact / ±1 agreement and the confusion matrix are a few lines each and are
  written here; they work on *category labels*: every value is rounded half-up to the nearest integer
  first, because a reduced headline (the mean of 3 repeats) can be 3.5 while the human said 4.
* ``repeat_figures`` summarises k repeats of one judge on the same items: flip rate, spread and the
  one-way random-effects ICC(1,1) of Shrout & Fleiss (1979) with its exact F-based interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Weights = Literal["quadratic", "linear"] | None


def _missing(v: float | None) -> bool:
    return v is None or v != v


def _label(v: float) -> int:
    """Half-up rounding (3.5 → 4), not Python's banker's rounding (2.5 → 2)."""
    return math.floor(v + 0.5)


def _pairs(a: Sequence[float], b: Sequence[float]) -> list[tuple[float, float]]:
    if len(a) != len(b):
        raise ValueError("paired values must be aligned and of equal length")
    return [(float(x), float(y)) for x, y in zip(a, b, strict=True) if not (_missing(x) or _missing(y))]


# ------------------------------------------------------------------------------------ Cohen's κ


def weighted_kappa(
    a: Sequence[float],
    b: Sequence[float],
    weights: Weights = "quadratic",
    categories: Sequence[float] | None = None,
) -> float | None:
    """Cohen's κ of two raters, weighted (``"quadratic"``/``"linear"``, Cohen 1968) or not (None).

    Pairs with a NaN are dropped; values are rounded half-up to integer labels. Disagreement weights
    use the distance between category *positions* in the sorted category list (``categories``, else
    the labels seen), as Cohen defined them and as scikit-learn computes them, so declaring the full
    scale (1..5) matters when an extreme category is never used. None when no pair is left or chance
    agreement is already perfect (both raters gave one and the same label throughout).
    """
    if weights not in ("quadratic", "linear", None):
        raise ValueError(f"unknown weights {weights!r}; expected 'quadratic', 'linear' or None")
    pairs = [(_label(x), _label(y)) for x, y in _pairs(a, b)]
    if not pairs:
        return None
    seen = {v for p in pairs for v in p}
    cats = sorted({_label(float(c)) for c in categories} | seen) if categories is not None else sorted(seen)
    index = {c: i for i, c in enumerate(cats)}
    k, n = len(cats), len(pairs)
    obs = [[0.0] * k for _ in range(k)]
    for x, y in pairs:
        obs[index[x]][index[y]] += 1.0
    rows = [sum(r) for r in obs]
    cols = [sum(obs[i][j] for i in range(k)) for j in range(k)]

    def w(i: int, j: int) -> float:
        if weights is None:
            return 0.0 if i == j else 1.0
        d = abs(i - j)
        return float(d * d) if weights == "quadratic" else float(d)

    observed = math.fsum(w(i, j) * obs[i][j] for i in range(k) for j in range(k)) / n
    expected = math.fsum(w(i, j) * rows[i] * cols[j] for i in range(k) for j in range(k)) / (n * n)
    if expected == 0.0:
        return None
    return 1.0 - observed / expected


# ------------------------------------------------------------------------------ simple agreement


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's ρ (scipy; ties get mid-ranks) over the pairs without NaN; None when fewer than 2
    pairs or either side is constant (ρ undefined)."""
    pairs = _pairs(a, b)
    if len(pairs) < 2 or len({x for x, _ in pairs}) < 2 or len({y for _, y in pairs}) < 2:
        return None
    from scipy.stats import spearmanr

    rho = float(spearmanr([x for x, _ in pairs], [y for _, y in pairs]).statistic)
    return rho if math.isfinite(rho) else None


def exact_agreement(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Share of the pairs (NaN dropped) with the same integer label; None without pairs."""
    pairs = _pairs(a, b)
    if not pairs:
        return None
    return sum(1 for x, y in pairs if _label(x) == _label(y)) / len(pairs)


def within_one(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Share of the pairs whose integer labels differ by at most one point; None without pairs."""
    pairs = _pairs(a, b)
    if not pairs:
        return None
    return sum(1 for x, y in pairs if abs(_label(x) - _label(y)) <= 1) / len(pairs)


def confusion(a: Sequence[float], b: Sequence[float]) -> tuple[list[int], list[list[int]]]:
    """``(labels, matrix)``: ``matrix[i][j]`` counts pairs with ``a`` = ``labels[i]`` and ``b`` =
    ``labels[j]`` (rows: the first rater, e.g. the judge; columns: the second, e.g. the human)."""
    pairs = [(_label(x), _label(y)) for x, y in _pairs(a, b)]
    labels = sorted({v for p in pairs for v in p})
    index = {c: i for i, c in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for x, y in pairs:
        matrix[index[x]][index[y]] += 1
    return labels, matrix


# --------------------------------------------------------------------------------------- repeats


@dataclass
class RepeatFigures:
    """How consistent one judge is with itself over ``k`` repeats of the same items."""

    items: int  # items with at least 2 finite repeats (flip rate and spread are over these)
    flip_rate: float | None  # share of those items whose finite repeats are not all equal
    spread: float | None  # mean within-item sample standard deviation (ddof = 1)
    icc: float | None  # ICC(1,1), Shrout & Fleiss 1979 (items complete in every repeat)
    icc_ci95_low: float | None
    icc_ci95_high: float | None
    icc_items: int = 0  # items the ICC used


def _icc1(rows: list[list[float]], confidence: float) -> tuple[float | None, float | None, float | None]:
    """One-way random-effects ICC(1,1) with the exact F interval (Shrout & Fleiss 1979, eq. for Case
    1; McGraw & Wong 1996 Table 7): ``(BMS − WMS) / (BMS + (k − 1)·WMS)``."""
    n, k = len(rows), len(rows[0])
    grand = math.fsum(v for r in rows for v in r) / (n * k)
    means = [math.fsum(r) / k for r in rows]
    bms = k * math.fsum((m - grand) ** 2 for m in means) / (n - 1)
    wms = math.fsum((v - m) ** 2 for r, m in zip(rows, means, strict=True) for v in r) / (n * (k - 1))
    denom = bms + (k - 1) * wms
    if denom == 0.0:
        return None, None, None  # every value equal: the ICC is 0/0
    icc = (bms - wms) / denom
    if wms == 0.0:
        return icc, 1.0, 1.0  # repeats agree exactly on every item: the F ratio is infinite
    from scipy.stats import f as fdist

    fobs = bms / wms
    q = 0.5 + confidence / 2.0
    fl = fobs / float(fdist.ppf(q, n - 1, n * (k - 1)))
    fu = fobs * float(fdist.ppf(q, n * (k - 1), n - 1))
    return icc, (fl - 1.0) / (fl + k - 1.0), (fu - 1.0) / (fu + k - 1.0)


def repeat_figures(values: Sequence[Sequence[float]], *, confidence: float = 0.95) -> RepeatFigures:
    """Flip rate, spread and ICC(1,1) of ``values[item][repeat]`` (NaN = an unparsed repeat).

    Items are the ICC's targets and repeats its interchangeable raters. The ICC needs a complete
    table: items with a NaN repeat are dropped from it, and when rows differ in length only those of
    the most common complete length are used.
    """
    finite = [[float(v) for v in row if not _missing(v)] for row in values]
    usable = [r for r in finite if len(r) >= 2]
    flip = spread = None
    if usable:
        flip = sum(1 for r in usable if len(set(r)) > 1) / len(usable)
        sds = []
        for r in usable:
            m = math.fsum(r) / len(r)
            sds.append(math.sqrt(math.fsum((v - m) ** 2 for v in r) / (len(r) - 1)))
        spread = math.fsum(sds) / len(sds)
    complete = [
        [float(v) for v in row] for row in values if len(row) >= 2 and not any(_missing(v) for v in row)
    ]
    icc = lo = hi = None
    used = 0
    if complete:
        lengths: dict[int, int] = {}
        for r in complete:
            lengths[len(r)] = lengths.get(len(r), 0) + 1
        k = max(lengths, key=lambda x: (lengths[x], x))
        rows = [r for r in complete if len(r) == k]
        if len(rows) >= 2:
            used = len(rows)
            icc, lo, hi = _icc1(rows, confidence)
    return RepeatFigures(len(usable), flip, spread, icc, lo, hi, used)
