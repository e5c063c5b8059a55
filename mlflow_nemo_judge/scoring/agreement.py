"""Agreement and reliability figures: judge vs judge, judge vs human, a judge against itself.

Pure functions on plain sequences (no I/O, no MLflow). NaN (or None) marks a missing value
everywhere, as in the rest of ``scoring``; a figure that the data cannot define (no pairs, every value
the same, so chance agreement is perfect) is ``None`` rather than NaN or a made-up 0/1.

* ``krippendorff_alpha`` is computed here from *patterns* (distinct units with their counts; see
  ``_AlphaPatterns``), the same computation the fast ``alpha_ci`` bootstrap runs on each resample. The
  maintained ``krippendorff`` package is the reference the tests hold it to (1e-9, the 2011 worked
  example and random data at every level), but it is not called: it builds a units × values × values
  array, which does not fit in memory for continuous scores (2000 items of mean-reduced floats ≈ 4000
  distinct values → 3·10¹⁰ cells). numpy / scipy are imported lazily: ``--help`` must stay fast.
* Cohen's (weighted) κ, exact / ±1 agreement and the confusion matrix are a few lines each and are
  written here; they work on *category labels*: every value is rounded half-up to the nearest integer
  first, because a reduced headline (the mean of 3 repeats) can be 3.5 while the human said 4.
* ``repeat_figures`` summarises k repeats of one judge on the same items: flip rate, spread and the
  one-way random-effects ICC(1,1) of Shrout & Fleiss (1979) with its exact F-based interval.
* ``alpha_ci`` / ``kappa_ci`` are the percentile bootstrap over items of α / κ, computed without
  re-expanding the items: identical items are grouped into patterns, a resample is a vector of pattern
  counts (a multinomial draw, or n uniform draws when nearly every item is distinct — the same
  distribution), and α / κ of a chunk of resamples are a few matrix products. They estimate exactly what
  ``bootstrap_ci(stat, items)`` estimates, in ~1000× less time. ``bootstrap_ci`` stays for any other
  statistic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    IntArray = npt.NDArray[np.int64]

Level = Literal["nominal", "ordinal", "interval", "ratio"]
LEVELS: tuple[str, ...] = ("nominal", "ordinal", "interval", "ratio")
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


# ------------------------------------------------------------------------------ Krippendorff's α

COINCIDENCE_MAX_VALUES = 64  # up to this many distinct values α works on the V × V coincidence matrix
GENERIC_MAX_ITEMS = 1000  # ordinal / ratio α with more distinct values: generic bootstrap up to here
_CHUNK_BYTES = 16 * 2**20  # one chunk of resamples holds ≤ ~16 MB per array (a few arrays at a time)


@dataclass
class _AlphaPatterns:
    """``data[rater][unit]`` reduced to what α depends on: the multiset of values of each unit.

    Units with the same multiset are one pattern; units with fewer than two values (they pair with
    nothing, α ignores them) are all one "null" pattern, kept so a resample still draws ``units`` units.
    ``codes[p]`` are the pattern's indices into ``values`` (sorted; ``len(values)`` marks an empty slot).
    """

    values: FloatArray  # the distinct pairable values, sorted
    codes: IntArray  # (P, raters)
    freq: IntArray  # (P,) units with that pattern
    m: FloatArray  # (P,) values in the pattern (0 for the null pattern)

    @property
    def units(self) -> int:
        return int(self.freq.sum())


def _alpha_patterns(data: Sequence[Sequence[float]]) -> _AlphaPatterns | None:
    """The patterns of ``data`` (validated); None without data or without a pairable unit."""
    import numpy as np

    if not data or not data[0]:
        return None
    width = len(data[0])
    if any(len(row) != width for row in data):
        raise ValueError("every rater needs one value per unit (NaN where missing)")
    x = np.array(data, dtype=float).T  # (units, raters); None → NaN
    finite = ~np.isnan(x)
    pairable = finite.sum(axis=1) >= 2
    if not pairable.any():
        return None
    keep = finite & pairable[:, None]
    values = np.unique(x[keep])
    codes = np.full(x.shape, len(values), dtype=np.int64)
    codes[keep] = np.searchsorted(values, x[keep])
    codes.sort(axis=1)
    pats, freq = np.unique(codes, axis=0, return_counts=True)
    m = (pats < len(values)).sum(axis=1).astype(float)
    return _AlphaPatterns(values, pats.astype(np.int64), freq.astype(np.int64), m)


def _delta2(level: str, x: FloatArray, y: FloatArray) -> FloatArray:
    """Krippendorff's fixed metric differences δ²(x, y) (element-wise; not for ordinal)."""
    import numpy as np

    if level == "nominal":
        differs: FloatArray = (x != y).astype(float)
        return differs
    if level == "interval":
        return (x - y) ** 2
    s = x + y  # ratio: ((x − y)/(x + y))², 0 where x + y = 0 (as the krippendorff package)
    ratio: FloatArray = np.divide(x - y, s, out=np.zeros(np.broadcast(x, y).shape), where=s != 0)
    return ratio**2


def _slot_pairs(pat: _AlphaPatterns) -> Iterator[tuple[IntArray, IntArray, IntArray]]:
    """(patterns, code_i, code_j) of every ordered pair of filled slots i ≠ j of the patterns."""
    import numpy as np

    v = len(pat.values)
    raters = pat.codes.shape[1]
    for i in range(raters):
        for j in range(raters):
            if i != j:
                rows = np.nonzero((pat.codes[:, i] < v) & (pat.codes[:, j] < v))[0]
                yield rows, pat.codes[rows, i], pat.codes[rows, j]


def _coincidence_rows(pat: _AlphaPatterns) -> Any:
    """Sparse (P, V·V): row p is pattern p's contribution to the coincidence matrix, o_ck =
    Σ_{pairs i≠j} [v_i = c][v_j = k] / (m_p − 1) (Krippendorff 2011, section C)."""
    import numpy as np
    from scipy import sparse

    v = len(pat.values)
    rows, cols, vals = [], [], []
    for r, ci, cj in _slot_pairs(pat):
        rows.append(r)
        cols.append(ci * v + cj)
        vals.append(1.0 / (pat.m[r] - 1.0))
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(pat.freq), v * v)
    )


def _alpha_from_coincidences(level: str, values: FloatArray, o: FloatArray) -> FloatArray:
    """α of each coincidence matrix ``o[r]`` (R, V, V); NaN where undefined (fewer than two distinct
    values, or no expected disagreement). α = 1 − (N − 1)·Σ o·δ² / Σ_{c,k} n_c·n_k·δ²."""
    import numpy as np

    n_v = o.sum(axis=2)
    big_n = n_v.sum(axis=1)
    if level == "ordinal":  # δ²_ck = (r_c − r_k)², r_c = n_1 + … + n_{c−1} + n_c/2 of *this* resample
        ranks = np.cumsum(n_v, axis=1) - n_v / 2.0
        d = (ranks[:, :, None] - ranks[:, None, :]) ** 2
        num = (o * d).sum(axis=(1, 2))
        den = np.einsum("rc,rck,rk->r", n_v, d, n_v)
    else:
        fixed = _delta2(level, values[:, None], values[None, :])
        num = (o * fixed).sum(axis=(1, 2))
        den = ((n_v @ fixed) * n_v).sum(axis=1)
    ok = ((n_v > 0).sum(axis=1) >= 2) & (den > 0)
    out = np.full(len(big_n), np.nan)
    out[ok] = 1.0 - (big_n[ok] - 1.0) * num[ok] / den[ok]
    return out


class _IntervalMoments:
    """Interval α as a function linear in the pattern counts (for many distinct values):
    per pattern d_p = Σ_{ordered pairs i≠j} (v_i − v_j)² / (m_p − 1), m_p, Σv, Σv² (values centred on the
    data's mean, which α does not depend on, to keep the variance term exact), and then
    α = 1 − (N − 1)·Σ d / (2N·Σv² − 2(Σv)²). Defined when the resample holds two distinct values."""

    def __init__(self, pat: _AlphaPatterns, values: FloatArray | None = None) -> None:
        import numpy as np

        vals = pat.values if values is None else values
        nv = len(pat.values)
        filled = pat.codes < nv
        x = np.where(filled, vals[np.minimum(pat.codes, nv - 1)], 0.0)
        mean = float((x.sum(axis=1) * pat.freq).sum() / (pat.m * pat.freq).sum())
        x = np.where(filled, x - mean, 0.0)
        d = np.zeros(len(pat.freq))
        for r, ci, cj in _slot_pairs(pat):
            np.add.at(d, r, (vals[ci] - vals[cj]) ** 2)
        d /= np.maximum(pat.m - 1.0, 1.0)
        self.lo = np.where(filled, pat.codes, nv).min(axis=1)  # smallest / largest value code
        self.hi = np.where(filled, pat.codes, -1).max(axis=1)
        varied = (self.lo < self.hi).astype(float)
        self.features = np.stack([d, pat.m, x.sum(axis=1), (x * x).sum(axis=1), varied], axis=1)

    def alpha(self, counts: FloatArray) -> FloatArray:
        import numpy as np

        f = counts @ self.features
        big_n, s1, s2 = f[:, 1], f[:, 2], f[:, 3]
        den = 2.0 * big_n * s2 - 2.0 * s1 * s1
        distinct = f[:, 4] > 0  # a unit with two different values is in the resample
        check = np.nonzero(~distinct)[0]  # else: do its one-valued units hold two different values?
        if len(check):
            present = counts[check] > 0
            lo = np.where(present, self.lo, np.iinfo(np.int64).max).min(axis=1)
            hi = np.where(present, self.hi, -1).max(axis=1)
            distinct[check] = lo < hi
        ok = distinct & (den > 0)
        out = np.full(len(big_n), np.nan)
        out[ok] = 1.0 - (big_n[ok] - 1.0) * f[ok, 0] / den[ok]
        return out


def _alpha_point_many(pat: _AlphaPatterns, level: str) -> float:
    """α of the data itself when there are more than ``COINCIDENCE_MAX_VALUES`` distinct values."""
    import numpy as np

    v = len(pat.values)
    n_v = np.zeros(v)
    for i in range(pat.codes.shape[1]):
        filled = pat.codes[:, i] < v
        np.add.at(n_v, pat.codes[filled, i], pat.freq[filled])
    if level == "ordinal":  # interval α on the ranks r_c (see _alpha_from_coincidences)
        ranks = np.cumsum(n_v) - n_v / 2.0
        return float(_IntervalMoments(pat, ranks).alpha(pat.freq[None, :].astype(float))[0])
    if level == "interval":
        return float(_IntervalMoments(pat).alpha(pat.freq[None, :].astype(float))[0])
    if (n_v > 0).sum() < 2:
        return math.nan
    d = np.zeros(len(pat.freq))  # observed: per pattern Σ δ²/(m − 1); expected: n·Δ·n in blocks
    for r, ci, cj in _slot_pairs(pat):
        np.add.at(d, r, _delta2(level, pat.values[ci], pat.values[cj]))
    observed = float((d / np.maximum(pat.m - 1.0, 1.0) * pat.freq).sum())
    block = max(1, _CHUNK_BYTES // (8 * v))
    expected = 0.0
    for s in range(0, v, block):
        delta = _delta2(level, pat.values[s : s + block, None], pat.values[None, :])
        expected += float(n_v[s : s + block] @ delta @ n_v)
    if expected <= 0.0:
        return math.nan
    return 1.0 - (float(n_v.sum()) - 1.0) * observed / expected


def _alpha_of(pat: _AlphaPatterns, level: str) -> float | None:
    import numpy as np

    if len(pat.values) <= COINCIDENCE_MAX_VALUES:
        o = (_coincidence_rows(pat).T @ pat.freq.astype(float)).reshape(1, len(pat.values), -1)
        value = float(_alpha_from_coincidences(level, pat.values, np.asarray(o))[0])
    else:
        value = _alpha_point_many(pat, level)
    return value if math.isfinite(value) else None


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"unknown measurement level {level!r}; expected one of {', '.join(LEVELS)}")


def krippendorff_alpha(data: Sequence[Sequence[float]], level: str) -> float | None:
    """Krippendorff's α of ``data[rater][unit]`` (NaN = not rated) at a measurement ``level``.

    None when α is undefined: no unit rated by two raters, or a single value in the whole data (the
    expected disagreement is 0). Equal to the ``krippendorff`` package's α (to ~1e-12; tested), in
    memory linear in the units for any number of distinct values.
    """
    _check_level(level)
    pat = _alpha_patterns(data)
    return None if pat is None else _alpha_of(pat, level)


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


# ------------------------------------------------------------------------------------- bootstrap


def _percentile_interval(values: list[float], reps: int, confidence: float) -> tuple[float, float] | None:
    """The percentile interval of the defined resample statistics ``values`` (of ``reps`` drawn);
    None when more than half were undefined (it would describe a different population)."""
    if len(values) * 2 < reps:
        return None
    values = sorted(values)
    tail = (1.0 - confidence) / 2.0

    def quantile(q: float) -> float:  # linear interpolation (numpy's default)
        pos = q * (len(values) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(values) - 1)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    return quantile(tail), quantile(1.0 - tail)


def bootstrap_ci(
    stat: Callable[[Sequence[Any]], float | None],
    columns: Sequence[Any],
    *,
    reps: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``stat(columns)``, resampling the items (``columns``, one entry
    per unit or item, e.g. ``(judge_value, human_value)``) with replacement.

    Deterministic for a given ``seed``. Resamples on which the statistic is undefined (None, NaN) are
    skipped; if more than half are, the interval is None (it would describe a different population).
    Generic and slow (the statistic is recomputed on every expanded resample): α and κ have the fast
    ``alpha_ci`` / ``kappa_ci``.
    """
    if not columns or reps < 1:
        return None
    rng = random.Random(seed)
    n = len(columns)
    values: list[float] = []
    for _ in range(reps):
        sample = [columns[rng.randrange(n)] for _ in range(n)]
        v = stat(sample)
        if v is not None and v == v:
            values.append(float(v))
    return _percentile_interval(values, reps, confidence)


def resample_counts(freq: Sequence[int], reps: int, seed: int, width: int = 0) -> Iterator[FloatArray]:
    """The bootstrap over items, as pattern counts: ``freq[p]`` items have pattern ``p``; yields chunks
    (rows = resamples, ``reps`` in all) of how many times each pattern is drawn when the
    ``n = Σ freq`` items are resampled with replacement — a multinomial(n, freq / n) vector.

    Deterministic for a ``seed`` (numpy ``default_rng``). With many patterns (more than n/2: nearly
    every item distinct) drawing the n items' indices and counting them is cheaper than P binomials and
    has the same distribution. Chunks hold ≤ ~16 MB (``width``: other per-resample columns the caller
    builds, e.g. V·V coincidences).
    """
    import numpy as np

    f = np.asarray(freq, dtype=np.int64)
    n, p = int(f.sum()), len(f)
    rng = np.random.default_rng(seed)
    direct = p * 2 > n  # measured: a binomial per pattern ≈ 65 ns, an index drawn and counted ≈ 30 ns
    chunk = max(1, min(reps, _CHUNK_BYTES // (8 * max(p, width, n if direct else 1, 1))))
    owner = None if direct and p == n else np.repeat(np.arange(p), f)
    done = 0
    while done < reps:
        r = min(chunk, reps - done)
        if direct:
            idx = rng.integers(0, n, size=(r, n), dtype=np.int64)
            if owner is not None:
                idx = owner[idx]
            idx += (np.arange(r, dtype=np.int64) * p)[:, None]
            yield np.bincount(idx.ravel(), minlength=r * p).reshape(r, p).astype(float)
        else:
            yield rng.multinomial(n, f / n, size=r).astype(float)
        done += r


def _finite(values: FloatArray) -> list[float]:
    import numpy as np

    return [float(v) for v in values[np.isfinite(values)]]


def alpha_ci(
    data: Sequence[Sequence[float]],
    level: str,
    *,
    reps: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of Krippendorff's α over the units of ``data[rater][unit]`` —
    what ``bootstrap_ci(lambda u: krippendorff_alpha(rows_of(u), level), columns_of(data))`` estimates
    (other random draws), without re-expanding the units: α of a resample is computed from its pattern
    counts (``resample_counts``): nominal / ordinal, and interval / ratio with ≤
    ``COINCIDENCE_MAX_VALUES`` distinct values, from the counts' coincidence matrix (ordinal δ² from the
    resample's own marginals); interval with more values from moments linear in the counts.

    Ordinal / ratio with more distinct values (not a shape the judges' scores take: ordinal scores are
    integers, ratio is not a config level) fall back to the generic ``bootstrap_ci``, only up to
    ``GENERIC_MAX_ITEMS`` units — beyond that the interval is None rather than minutes of work.
    None also when the data have no pairable unit or more than half of the resamples leave α undefined.
    """
    import numpy as np

    _check_level(level)
    pat = _alpha_patterns(data)
    if pat is None or reps < 1:
        return None
    v = len(pat.values)
    alphas: list[float] = []
    if v <= COINCIDENCE_MAX_VALUES:
        rows_t = _coincidence_rows(pat).T.tocsr()  # (V·V, P)
        for counts in resample_counts(pat.freq.tolist(), reps, seed, width=v * v):
            o = np.asarray(rows_t @ counts.T).T.reshape(len(counts), v, v)
            alphas += _finite(_alpha_from_coincidences(level, pat.values, o))
    elif level == "interval":
        moments = _IntervalMoments(pat)
        for counts in resample_counts(pat.freq.tolist(), reps, seed):
            alphas += _finite(moments.alpha(counts))
    else:
        if pat.units > GENERIC_MAX_ITEMS:
            return None
        return bootstrap_ci(
            lambda u: krippendorff_alpha(rows_of(u), level),
            columns_of(data),
            reps=reps,
            seed=seed,
            confidence=confidence,
        )
    return _percentile_interval(alphas, reps, confidence)


def _kappa_cells(
    a: Sequence[float], b: Sequence[float], categories: Sequence[float] | None
) -> tuple[list[int], list[bool], IntArray]:
    """The κ table's categories (declared ∪ seen), which are declared, and the items' counts per cell
    ``i·k + j`` (``k·k``: a pair with a NaN, which κ drops)."""
    import numpy as np

    if len(a) != len(b):
        raise ValueError("paired values must be aligned and of equal length")
    x, y = np.array(a, dtype=float), np.array(b, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    lx, ly = np.floor(x[ok] + 0.5).astype(np.int64), np.floor(y[ok] + 0.5).astype(np.int64)
    declared = {_label(float(c)) for c in categories} if categories is not None else set()
    cats = sorted(declared | set(lx.tolist()) | set(ly.tolist()))
    k = len(cats)
    ix, iy = np.searchsorted(cats, lx), np.searchsorted(cats, ly)
    cells = np.full(len(x), k * k, dtype=np.int64)
    cells[ok] = ix * k + iy
    return cats, [c in declared for c in cats], np.bincount(cells, minlength=k * k + 1)


def _kappa_from_tables(t: FloatArray, declared: Sequence[bool], weights: Weights) -> FloatArray:
    """κ of each table ``t[r]`` (R, k, k) as ``weighted_kappa`` computes it on that resample: the
    weights use category positions among the declared categories and those the resample holds."""
    import numpy as np

    n = t.sum(axis=(1, 2))
    rows, cols = t.sum(axis=2), t.sum(axis=1)
    present = (rows + cols > 0) | np.asarray(declared, dtype=bool)[None, :]
    pos = np.cumsum(present, axis=1).astype(float)
    d = np.abs(pos[:, :, None] - pos[:, None, :])
    w = (d > 0).astype(float) if weights is None else (d * d if weights == "quadratic" else d)
    observed_sum = (w * t).sum(axis=(1, 2))
    expected_sum = np.einsum("rij,ri,rj->r", w, rows, cols)
    ok = (n > 0) & (expected_sum != 0)
    out = np.full(len(n), np.nan)
    out[ok] = 1.0 - (observed_sum[ok] / n[ok]) / (expected_sum[ok] / (n[ok] * n[ok]))
    return out


def kappa_ci(
    a: Sequence[float],
    b: Sequence[float],
    weights: Weights = "quadratic",
    *,
    categories: Sequence[float] | None = None,
    reps: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``weighted_kappa(a, b, weights, categories)`` over the items —
    what ``bootstrap_ci`` of that statistic over ``zip(a, b)`` estimates (other random draws; items
    with a NaN are drawn too and dropped by κ, as there), from the resamples' confusion tables:
    a resample is a multinomial vector of cell counts (``resample_counts``), κ of a chunk is vectorised.
    """

    if weights not in ("quadratic", "linear", None):
        raise ValueError(f"unknown weights {weights!r}; expected 'quadratic', 'linear' or None")
    cats, declared, freq = _kappa_cells(a, b, categories)
    k = len(cats)
    if freq[: k * k].sum() == 0 or reps < 1:  # no pair without a NaN
        return None
    kappas: list[float] = []
    for counts in resample_counts(freq.tolist(), reps, seed, width=2 * k * k):
        kappas += _finite(_kappa_from_tables(counts[:, : k * k].reshape(-1, k, k), declared, weights))
    return _percentile_interval(kappas, reps, confidence)


def columns_of(data: Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
    """``data[rater][unit]`` → one tuple per unit, the shape ``bootstrap_ci`` resamples."""
    return [tuple(r[u] for r in data) for u in range(len(data[0]))] if data else []


def rows_of(columns: Sequence[Sequence[float]]) -> list[list[float]]:
    """The inverse of ``columns_of``: units back to ``data[rater][unit]``."""
    return [[c[i] for c in columns] for i in range(len(columns[0]))] if columns else []
