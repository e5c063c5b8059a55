"""Krippendorff's α of ``data[rater][unit]``, computed from *patterns* (distinct units with their counts).

Pure functions (no I/O, no MLflow); NaN (or None) marks a value not rated, and α that the data cannot
define (no unit rated twice, a single value throughout) is ``None``.

The pattern form (``_AlphaPatterns``) is the seam with :mod:`.bootstrap`: ``krippendorff_alpha`` and each
resample of the fast ``alpha_ci`` run the same code on pattern counts (the data's own, or a resample's),
so the pieces below (coincidence rows, interval moments) take counts rather than units. The maintained
``krippendorff`` package is the reference the tests hold it to (1e-9, the 2011 worked example and random
data at every level), but it is not called: it builds a units × values × values array, which does not
fit in memory for continuous scores (2000 items of mean-reduced floats ≈ 4000 distinct values → 3·10¹⁰
cells). numpy / scipy are imported lazily: ``--help`` must stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    IntArray = npt.NDArray[np.int64]

Level = Literal["nominal", "ordinal", "interval", "ratio"]
LEVELS: tuple[str, ...] = ("nominal", "ordinal", "interval", "ratio")

COINCIDENCE_MAX_VALUES = 64  # up to this many distinct values α works on the V × V coincidence matrix
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
