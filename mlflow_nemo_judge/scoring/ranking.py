"""Pairwise judging: position-swapped verdicts, win rates and a Bradley–Terry ranking.

Pure functions (no I/O). Bradley–Terry strengths come from ``choix`` (its iterative Luce Spectral
Ranking, ``ilsr_pairwise_dense``, converges to the maximum-likelihood estimate and takes fractional
counts, so a tie is exactly half a win each way); it is imported lazily.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence
from statistics import NormalDist
from typing import Literal

Verdict = Literal["A", "B", "TIE"]
Outcome = Literal["win", "loss", "tie"]

# The pseudo-count added between every pair of targets when the maximum-likelihood estimate does not
# exist (a target that never lost, or groups never compared): a tenth of a tie each way, enough to
# keep the strengths finite, too little to reorder targets the data already order.
BT_PRIOR = 0.05


def combine_orders(first: str | None, second: str | None) -> tuple[Outcome | None, bool]:
    """Outcome for target x from two verdicts on the same item: ``first`` judged (A=x, B=y),
    ``second`` judged (A=y, B=x).

    Returns ``(outcome, consistent)``: both orders prefer x → ``"win"``; both prefer y → ``"loss"``;
    both tie → ``"tie"``; the orders disagree (the judge followed the position, not the content) →
    ``"tie"`` with ``consistent`` False. An unparsed side (None) → ``(None, False)``: unjudged, counted
    apart and never as a tie.
    """
    if first is None or second is None:
        return None, False
    f, s = first.upper(), second.upper()
    for v in (f, s):
        if v not in ("A", "B", "TIE"):
            raise ValueError(f"a verdict is 'A', 'B', 'TIE' or None, not {v!r}")
    x_first = {"A": 1.0, "B": 0.0, "TIE": 0.5}[f]  # x was A
    x_second = {"A": 0.0, "B": 1.0, "TIE": 0.5}[s]  # x was B
    if x_first != x_second:
        return "tie", False
    return ("win" if x_first == 1.0 else "loss" if x_first == 0.0 else "tie"), True


def win_rate(wins: int, ties: int, losses: int, *, confidence: float = 0.95) -> tuple[float | None, ...]:
    """``(rate, lo, hi)``: rate = (wins + ties/2) / n with a Wilson score interval on the half-tie
    count.

    Wilson rather than a t interval on the per-item {1, ½, 0}: the t interval collapses to a point
    when every item is a win (sd 0) and leaves [0, 1] for small n, while Wilson stays inside [0, 1]
    and keeps its coverage at the extremes. Ties make the per-item score less variable than a
    Bernoulli one, so with ties the interval errs on the wide (conservative) side. All None when
    n = 0.
    """
    n = wins + ties + losses
    if n <= 0:
        return None, None, None
    p = (wins + ties / 2.0) / n
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def _win_matrix(outcomes: Sequence[tuple[int, int, float]], n_items: int) -> list[list[float]]:
    m = [[0.0] * n_items for _ in range(n_items)]
    for i, j, s in outcomes:
        if not (0 <= i < n_items and 0 <= j < n_items) or i == j:
            raise ValueError(f"comparison ({i}, {j}) needs two distinct targets in 0..{n_items - 1}")
        if s not in (0.0, 0.5, 1.0):
            raise ValueError(f"the score of i is 1, 0.5 or 0, not {s!r}")
        m[i][j] += s
        m[j][i] += 1.0 - s
    return m


def _mle_exists(m: list[list[float]]) -> bool:
    """Ford (1957): the maximum-likelihood strengths are finite iff the "beat or tied" graph is strongly
    connected (every target beat, somehow, every other through a chain)."""
    import numpy as np
    from scipy.sparse.csgraph import connected_components

    n_comp, _ = connected_components(np.array(m) > 0, connection="strong")
    return int(n_comp) == 1


def _strengths(m: list[list[float]]) -> list[float]:
    import choix
    import numpy as np

    n = len(m)
    if n == 1:
        return [0.0]
    if not _mle_exists(m):
        m = [[v + (BT_PRIOR if i != j else 0.0) for j, v in enumerate(row)] for i, row in enumerate(m)]
    params = choix.ilsr_pairwise_dense(np.array(m, dtype=float), max_iter=10_000, tol=1e-12)
    centred = [float(p) for p in params]
    mean = math.fsum(centred) / n
    return [p - mean for p in centred]


def bradley_terry(outcomes: Sequence[tuple[int, int, float]], n_items: int) -> list[float]:
    """Maximum-likelihood Bradley–Terry log-strengths of ``n_items`` targets, mean 0.

    ``outcomes``: ``(i, j, score of i)`` with score 1 (i won), 0.5 (tie: half a win each way) or 0.
    P(i beats j) = 1 / (1 + exp(s_j − s_i)). When the estimate does not exist (a target never lost
    or never won, or targets never compared) a small symmetric prior (``BT_PRIOR``) keeps it finite.
    """
    if n_items < 1:
        return []
    return _strengths(_win_matrix(outcomes, n_items))


def bradley_terry_ci(
    outcomes: Sequence[tuple[int, int, float]],
    n_items: int,
    *,
    groups: Sequence[Hashable] | None = None,
    reps: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[tuple[float, float]]:
    """Percentile bootstrap interval of each target's log-strength.

    ``groups`` names the dataset item of each outcome (all comparisons on one item share its
    difficulty, so items, not single comparisons, are resampled); without it every outcome is its
    own item. Deterministic for a given ``seed``.
    """
    if groups is not None and len(groups) != len(outcomes):
        raise ValueError("groups must name one item per outcome")
    if n_items < 1:
        return []
    keys = list(range(len(outcomes))) if groups is None else list(groups)
    by_item: dict[Hashable, list[tuple[int, int, float]]] = {}
    for k, o in zip(keys, outcomes, strict=True):
        by_item.setdefault(k, []).append(o)
    items = list(by_item.values())
    if not items:
        return [(0.0, 0.0)] * n_items
    rng = random.Random(seed)
    draws: list[list[float]] = [[] for _ in range(n_items)]
    for _ in range(reps):
        sample = [o for _ in items for o in items[rng.randrange(len(items))]]
        for t, s in enumerate(_strengths(_win_matrix(sample, n_items))):
            draws[t].append(s)
    import numpy as np

    tail = 100.0 * (1.0 - confidence) / 2.0
    return [(float(lo), float(hi)) for lo, hi in (np.percentile(d, [tail, 100.0 - tail]) for d in draws)]


def strength_shares(log_strengths: Sequence[float]) -> list[float]:
    """Log-strengths on the probability scale: ``exp(s) / Σ exp(s)`` (shares summing to 1)."""
    if not log_strengths:
        return []
    top = max(log_strengths)
    e = [math.exp(s - top) for s in log_strengths]
    total = math.fsum(e)
    return [v / total for v in e]
