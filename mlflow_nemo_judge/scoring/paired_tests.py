"""Decision-grade paired comparison of two runs on the same items: a test fit for the score type.

``paired_test(a, b)`` compares ``b − a`` pair by pair (pairs with a NaN on either side dropped):

* **binary** (every value 0/1, e.g. string-check): exact McNemar (two-sided binomial on the
  discordant pairs) and the Agresti–Min interval (Wald on the 2×2 table with ½ added to each cell;
  Agresti & Min, Stat. Med. 2005), which keeps its coverage where plain Wald fails. Effect size: the
  matched-pairs rank-biserial r, which for 0/1 scores is (b − c)/(b + c).
* **ordinal** (integers, at most 11 distinct values: judge ratings 1–5): Wilcoxon signed-rank with
  Pratt's treatment of zero differences; exact (the null distribution over all 2ⁿ sign flips,
  ties handled by conditioning on the observed mid-ranks) up to ``WILCOXON_EXACT_MAX_N`` pairs,
  scipy's tie-corrected normal approximation above. The interval is a paired BCa bootstrap of the mean difference (a t interval
  assumes an interval scale the ratings do not have). Effect size: matched-pairs rank-biserial r
  (Kerby 2014: (R⁺ − R⁻)/(R⁺ + R⁻) over the non-zero differences).
* **continuous**: paired t when n ≥ 30 (the CLT makes it fit); below that an exact (up to
  ``EXACT_MAX_N``) or seeded Monte-Carlo sign-flip permutation test of the mean difference with a
  bootstrap interval. Effect size: Cohen's d_z = mean / sd of the differences.

Degenerate data never give ``p = 0``: all differences zero → p = 1 (with a warning); all equal and
non-zero → the exact sign test ``2·0.5ⁿ``; an asymptotic p below the smallest normal float is
reported as that float. ``min_effect`` adds a warning when n is below what 80 % power at α = 0.05
needs (normal approximation on the observed sd of the differences; binary: the discordant share).

The exact binomial and Agresti–Min helpers live here; ``gate.decision`` imports them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from mlflow_nemo_judge.scoring.stats import t_sf

Kind = Literal["binary", "ordinal", "continuous"]
EXACT_MAX_N = 16  # sign-flip permutation: 2^16 patterns enumerated, well under a second
WILCOXON_EXACT_MAX_N = 200  # the signed-rank null distribution is a cheap subset-sum count
MONTE_CARLO_RESAMPLES = 20_000
BOOTSTRAP_RESAMPLES = 4_000
P_FLOOR = sys.float_info.min  # an asymptotic p that underflows is reported as this, never 0


# ------------------------------------------------------------------------- shared exact helpers


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t, by bisection on the exact tail."""
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > tail:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of ``k`` successes in ``n`` fair trials (the symmetric binomial test)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = math.fsum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def agresti_min(b: int, c: int, n: int, confidence: float) -> tuple[float, float]:
    """Agresti–Min interval for a paired difference of proportions: ``b`` pairs went 0→1, ``c`` went
    1→0, of ``n`` pairs; Wald on the table with ½ added to each cell."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    nn, bb, cc = n + 2.0, b + 0.5, c + 0.5
    adj = (bb - cc) / nn
    half = z * math.sqrt(max(0.0, (bb + cc) - (bb - cc) ** 2 / nn)) / nn
    return max(-1.0, adj - half), min(1.0, adj + half)


# ---------------------------------------------------------------------------------------- result


@dataclass
class PairedTest:
    """One paired comparison of ``b − a`` (positive: ``b`` scored higher)."""

    n: int
    mean_a: float | None
    mean_b: float | None
    mean_diff: float | None
    ci95_low: float | None  # at ``confidence`` (named for the default 95 %)
    ci95_high: float | None
    p_value: float | None
    test: str
    effect_size: float | None = None
    effect_size_name: str = ""
    warning: str | None = None
    kind: str = ""


def infer_kind(values: Sequence[float]) -> Kind:
    """binary when every value is 0/1; ordinal when all are integers with at most 11 distinct values;
    else continuous."""
    vals = set(values)
    if vals <= {0.0, 1.0}:
        return "binary"
    if all(float(v).is_integer() for v in vals) and len(vals) <= 11:
        return "ordinal"
    return "continuous"


def required_n(sd: float, effect: float) -> int:
    """Pairs needed to detect a mean difference ``effect`` with 80 % power at two-sided α = 0.05 when
    the differences have standard deviation ``sd`` (normal approximation)."""
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    return max(2, math.ceil((z * sd / effect) ** 2))


def required_n_mcnemar(discordant: float, effect: float) -> int | None:
    """Pairs needed by McNemar's test for a difference of proportions ``effect`` with 80 % power at
    α = 0.05 when a share ``discordant`` of pairs is discordant (Connor 1987, normal approximation);
    None when the effect cannot occur with that discordant share."""
    if discordant <= 0.0 or effect > discordant:
        return None
    za, zb = NormalDist().inv_cdf(0.975), NormalDist().inv_cdf(0.8)
    n = (za * math.sqrt(discordant) + zb * math.sqrt(max(0.0, discordant - effect * effect))) ** 2
    return max(2, math.ceil(n / (effect * effect)))


def _rank_biserial(diffs: Sequence[float]) -> float | None:
    from scipy.stats import rankdata

    nz = [d for d in diffs if d != 0.0]
    if not nz:
        return None
    ranks = rankdata([abs(d) for d in nz])
    plus = math.fsum(float(r) for r, d in zip(ranks, nz, strict=True) if d > 0)
    minus = math.fsum(float(r) for r, d in zip(ranks, nz, strict=True) if d < 0)
    return (plus - minus) / (plus + minus)


def _bootstrap_mean(diffs: Sequence[float], confidence: float, seed: int) -> tuple[float, float]:
    """Paired bootstrap (BCa, scipy) of the mean difference; percentile when BCa is undefined."""
    import numpy as np
    from scipy.stats import bootstrap

    data = (np.asarray(diffs, dtype=float),)
    kw = {"confidence_level": confidence, "n_resamples": BOOTSTRAP_RESAMPLES, "vectorized": True}
    ci = bootstrap(data, np.mean, method="BCa", rng=seed, **kw).confidence_interval
    lo, hi = float(ci.low), float(ci.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        ci = bootstrap(data, np.mean, method="percentile", rng=seed, **kw).confidence_interval
        lo, hi = float(ci.low), float(ci.high)
    return lo, hi


def _floor(p: float) -> float:
    return min(1.0, max(P_FLOOR, p))


def _signed_rank_exact_p(diffs: Sequence[float]) -> float:
    """Exact two-sided p of Pratt's signed-rank statistic, conditional on the observed (mid-)ranks.

    Written here because scipy's exact route with ties (``PermutationMethod``) re-ranks every one of
    the 2ⁿ sign patterns: 23 s at n = 16. Mid-ranks are multiples of ½, so the null distribution of
    2·R⁺ is a subset-sum count over integers: one pass per non-zero difference.
    """
    import numpy as np
    from scipy.stats import rankdata

    ranks = rankdata([abs(d) for d in diffs])  # Pratt: zeros take part in the ranking ...
    doubled = [round(2 * float(r)) for r, d in zip(ranks, diffs, strict=True) if d != 0]  # ... not in R+
    obs = sum(r for r, d in zip(doubled, [d for d in diffs if d != 0], strict=True) if d > 0)  # 2·R+
    dist = np.zeros(sum(doubled) + 1)
    dist[0] = 1.0
    for r in doubled:  # each rank (r >= 2) joins R+ or not with probability ½
        shifted = np.concatenate([np.zeros(r), dist[:-r]])
        dist = 0.5 * dist + 0.5 * shifted
    cdf = float(dist[: obs + 1].sum())
    sf = float(dist[obs:].sum())
    return min(1.0, 2.0 * min(cdf, sf))


def _wilcoxon(diffs: Sequence[float]) -> tuple[float, str]:
    import numpy as np
    from scipy.stats import wilcoxon

    if len(diffs) <= WILCOXON_EXACT_MAX_N:
        return _signed_rank_exact_p(diffs), "Wilcoxon signed-rank (Pratt, exact)"
    res = wilcoxon(np.asarray(diffs, dtype=float), zero_method="pratt", method="asymptotic", correction=True)
    return _floor(float(res.pvalue)), "Wilcoxon signed-rank (Pratt, normal approx.)"


def _sign_flip(diffs: Sequence[float], seed: int) -> tuple[float, str]:
    import numpy as np
    from scipy.stats import permutation_test

    d = np.asarray(diffs, dtype=float)
    exact = len(d) <= EXACT_MAX_N
    res = permutation_test(
        (d,),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=2**EXACT_MAX_N if exact else MONTE_CARLO_RESAMPLES,
        alternative="two-sided",
        rng=seed,
    )
    how = "exact" if exact else f"Monte-Carlo {MONTE_CARLO_RESAMPLES}, seed {seed}"
    return float(res.pvalue), f"sign-flip permutation ({how}), bootstrap CI"


def paired_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    kind: Kind | None = None,
    confidence: float = 0.95,
    min_effect: float | None = None,
    seed: int = 0,
) -> PairedTest:
    """Paired comparison of ``b − a`` on aligned values (see the module docstring for the tests)."""
    if len(a) != len(b):
        raise ValueError("paired samples must be aligned and of equal length")
    if kind not in (None, "binary", "ordinal", "continuous"):
        raise ValueError(f"unknown kind {kind!r}; expected binary, ordinal, continuous or None")
    if min_effect is not None and not min_effect > 0:
        raise ValueError("min_effect must be a positive difference")
    pairs = [
        (float(x), float(y))
        for x, y in zip(a, b, strict=True)
        if not (x is None or y is None or x != x or y != y)
    ]
    n = len(pairs)
    if n == 0:
        return PairedTest(0, None, None, None, None, None, None, "none (no pair)", warning="no shared pair")
    if kind is None:
        kind = infer_kind([v for p in pairs for v in p])
    diffs = [y - x for x, y in pairs]
    mean_a = math.fsum(x for x, _ in pairs) / n
    mean_b = math.fsum(y for _, y in pairs) / n
    md = math.fsum(diffs) / n
    sd = math.sqrt(math.fsum((d - md) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    notes: list[str] = []
    res = PairedTest(n, mean_a, mean_b, md, None, None, None, "", kind=kind)

    if kind == "binary":
        if any(v not in (0.0, 1.0) for p in pairs for v in p):
            raise ValueError("kind='binary' needs every value to be 0 or 1")
        up = sum(1 for d in diffs if d > 0)
        down = sum(1 for d in diffs if d < 0)
        res.ci95_low, res.ci95_high = agresti_min(up, down, n, confidence)
        res.p_value = binom_two_sided(up, up + down)
        res.test = "exact McNemar, Agresti-Min interval"
        res.effect_size_name = "matched-pairs rank-biserial r ((b-c)/(b+c))"
        res.effect_size = (up - down) / (up + down) if up + down else None
        if up + down == 0:
            notes.append("no discordant pair: the two sides agree on every item (p = 1)")
    elif len(set(diffs)) == 1:  # every difference equal: no spread for t/rank statistics
        res.ci95_low = res.ci95_high = md
        if md == 0.0:
            res.p_value, res.test = 1.0, "none (all differences zero)"
            notes.append(f"all {n} differences are zero: no difference to test (p = 1)")
        else:
            res.p_value = binom_two_sided(0, n)
            res.test = "exact sign test (all differences equal)"
            notes.append(f"all {n} differences equal {md:g}: exact sign test p = 2·0.5^{n}")
        if kind == "ordinal":
            res.effect_size_name = "matched-pairs rank-biserial r"
            res.effect_size = None if md == 0.0 else math.copysign(1.0, md)
        else:
            res.effect_size_name = "Cohen's d_z"
    elif kind == "ordinal":
        res.p_value, res.test = _wilcoxon(diffs)
        res.test += ", bootstrap CI"
        res.ci95_low, res.ci95_high = _bootstrap_mean(diffs, confidence, seed)
        res.effect_size_name = "matched-pairs rank-biserial r"
        res.effect_size = _rank_biserial(diffs)
    else:
        res.effect_size_name = "Cohen's d_z"
        res.effect_size = md / sd if sd > 0 else None
        if n >= 30:
            se = sd / math.sqrt(n)
            half = t_quantile(0.5 + confidence / 2.0, n - 1) * se
            res.ci95_low, res.ci95_high = md - half, md + half
            res.p_value = _floor(2.0 * t_sf(abs(md / se), n - 1))
            res.test = "paired t-test"
        else:
            res.p_value, res.test = _sign_flip(diffs, seed)
            res.ci95_low, res.ci95_high = _bootstrap_mean(diffs, confidence, seed)
    if n == 1:
        res.ci95_low = res.ci95_high = None
        notes.append("a single pair: no interval")

    if min_effect is not None:
        if kind == "binary":
            disc = sum(1 for d in diffs if d != 0) / n
            need = required_n_mcnemar(disc, min_effect)
            basis = f"discordant share {disc:.3g}"
        else:
            need = required_n(sd, min_effect) if sd > 0 else None
            basis = f"observed sd of differences {sd:.3g}"
        if need is None:
            notes.append(f"power for min_effect {min_effect:g} cannot be estimated ({basis})")
        elif n < need:
            notes.append(
                f"n = {n} pairs is below the {need} needed to detect a difference of {min_effect:g} "
                f"with 80% power at alpha = 0.05 (normal approximation, {basis})"
            )
    res.warning = "; ".join(notes) or None
    return res
