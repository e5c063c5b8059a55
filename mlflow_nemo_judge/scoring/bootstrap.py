"""Percentile bootstrap intervals over items: the generic ``bootstrap_ci`` and the fast ``alpha_ci`` /
``kappa_ci``.

``alpha_ci`` / ``kappa_ci`` are the percentile bootstrap over items of α / κ, computed without
re-expanding the items: identical items are grouped into patterns (:mod:`.alpha`'s for α, the cells of
the confusion table for κ), a resample is a vector of pattern counts (``resample_counts``: a multinomial
draw, or n uniform draws when nearly every item is distinct — the same distribution), and α / κ of a
chunk of resamples are a few matrix products. They estimate exactly what ``bootstrap_ci(stat, items)``
estimates, in ~1000× less time. ``bootstrap_ci`` stays for any other statistic. numpy / scipy are
imported lazily.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.scoring.agreement import Weights, _label
from mlflow_nemo_judge.scoring.alpha import (
    _CHUNK_BYTES,
    COINCIDENCE_MAX_VALUES,
    _alpha_from_coincidences,
    _alpha_patterns,
    _check_level,
    _coincidence_rows,
    _IntervalMoments,
    krippendorff_alpha,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.scoring.alpha import FloatArray, IntArray

GENERIC_MAX_ITEMS = 1000  # ordinal / ratio α with more distinct values: generic bootstrap up to here


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
