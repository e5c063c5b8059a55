"""paired_test against brute-force enumeration and scipy used only as an independent reference."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from mlflow_nemo_judge.scoring.paired_tests import (
    agresti_min,
    binom_two_sided,
    infer_kind,
    paired_test,
    required_n,
)

NAN = float("nan")


def _midranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _brute_signed_rank_p(diffs):
    """Exact two-sided p of Pratt's signed-rank statistic by enumerating every sign pattern: zeros are
    ranked with the rest and then left out of R+, ties keep their mid-ranks."""
    ranks = _midranks([abs(d) for d in diffs])
    nz = [(r, d > 0) for r, d in zip(ranks, diffs, strict=True) if d != 0]
    obs = sum(r for r, pos in nz if pos)
    stats = [
        sum(r for (r, _), s in zip(nz, signs, strict=True) if s)
        for signs in itertools.product((0, 1), repeat=len(nz))
    ]
    le = sum(1 for s in stats if s <= obs + 1e-9) / len(stats)
    ge = sum(1 for s in stats if s >= obs - 1e-9) / len(stats)
    return min(1.0, 2 * min(le, ge))


def _brute_sign_flip_p(diffs):
    """Exact two-sided sign-flip p: the share of all 2^n sign patterns whose |sum| reaches the observed."""
    import numpy as np

    n = len(diffs)
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    sums = np.abs(((1 - 2 * bits) * np.asarray(diffs)).sum(axis=1))
    return float(np.mean(sums >= abs(sum(diffs)) - 1e-9))


def test_kind_inference():
    assert infer_kind([0.0, 1.0, 1.0]) == "binary"
    assert infer_kind([1.0, 2.0, 5.0]) == "ordinal"
    assert infer_kind([float(v) for v in range(12)]) == "continuous"  # 12 distinct values
    assert infer_kind([0.5, 1.0]) == "continuous"


def test_binary_exact_mcnemar_by_enumeration_and_agresti_min():
    from scipy.stats import norm

    a = [0] * 9 + [1] * 3 + [1] * 10 + [0] * 8
    b = [1] * 9 + [0] * 3 + [1] * 10 + [0] * 8
    res = paired_test(a, b)
    # two-sided binomial on 12 discordant pairs, by summing every outcome as likely as 3 of 12
    probs = [math.comb(12, k) / 2**12 for k in range(13)]
    ref = sum(p for p in probs if p <= probs[3] + 1e-15)
    assert res.kind == "binary" and "McNemar" in res.test
    assert res.p_value == pytest.approx(ref, rel=1e-12)
    nn, bb, cc = 32, 9.5, 3.5
    half = norm.ppf(0.975) * math.sqrt((bb + cc) - (bb - cc) ** 2 / nn) / nn
    assert (res.ci95_low, res.ci95_high) == pytest.approx(((bb - cc) / nn - half, (bb - cc) / nn + half))
    assert res.mean_diff == pytest.approx(6 / 30)
    assert res.effect_size == pytest.approx((9 - 3) / 12)
    assert (
        binom_two_sided(0, 0) == 1.0 and agresti_min(0, 0, 10, 0.95)[0] < 0 < agresti_min(0, 0, 10, 0.95)[1]
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ordinal_wilcoxon_pratt_exact_matches_enumeration(seed):
    rng = random.Random(seed)
    a = [rng.randint(1, 5) for _ in range(12)]
    b = [min(5, max(1, x + rng.choice([-1, 0, 1, 1, 2]))) for x in a]
    res = paired_test(a, b)
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    assert res.kind == "ordinal" and "Wilcoxon" in res.test and "exact" in res.test
    assert res.p_value == pytest.approx(_brute_signed_rank_p(diffs), rel=1e-9)
    nz = [d for d in diffs if d]
    ranks = _midranks([abs(d) for d in nz])
    rp = sum(r for r, d in zip(ranks, nz, strict=True) if d > 0)
    rm = sum(r for r, d in zip(ranks, nz, strict=True) if d < 0)
    assert res.effect_size == pytest.approx((rp - rm) / (rp + rm))
    assert res.ci95_low <= res.mean_diff <= res.ci95_high
    assert res == paired_test(a, b)  # seeded: the same figures every time


def test_ordinal_large_sample_uses_the_normal_approximation():
    from scipy.stats import norm

    rng = random.Random(9)
    a = [rng.randint(1, 5) for _ in range(300)]
    b = [min(5, x + rng.choice([0, 0, -1, 1])) for x in a]
    res = paired_test(a, b)
    # Pratt: rank all |d| (zeros too), drop the zeros' ranks; conditional on the ranks R+ has mean
    # sum(r)/2 and variance sum(r^2)/4 (ties included); continuity-corrected normal tail
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    ranks = _midranks([abs(d) for d in diffs])
    nz = [(r, d) for r, d in zip(ranks, diffs, strict=True) if d]
    rp = sum(r for r, d in nz if d > 0)
    mean, sd = sum(r for r, _ in nz) / 2, math.sqrt(sum(r * r for r, _ in nz) / 4)
    z = (abs(rp - mean) - 0.5) / sd
    assert "normal approx" in res.test and res.p_value == pytest.approx(2 * norm.sf(z), rel=1e-9)
    assert 0 < res.p_value < 1


def test_continuous_small_sample_exact_sign_flip():
    a = [1.12, 2.31, 3.4, 4.52, 5.1, 2.2, 3.3, 0.7]
    b = [1.5, 2.1, 3.9, 5.55, 5.0, 3.05, 3.9, 1.4]
    res = paired_test(a, b)
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    assert res.kind == "continuous" and "sign-flip" in res.test and "exact" in res.test
    assert res.p_value == pytest.approx(_brute_sign_flip_p(diffs), rel=1e-9)
    md = sum(diffs) / 8
    sd = math.sqrt(sum((d - md) ** 2 for d in diffs) / 7)
    assert res.effect_size == pytest.approx(md / sd) and res.effect_size_name == "Cohen's d_z"
    assert res.ci95_low < md < res.ci95_high


def test_continuous_monte_carlo_is_seeded_and_close_to_exact():
    rng = random.Random(4)
    a = [rng.gauss(0, 1) for _ in range(20)]
    b = [x + 0.4 + rng.gauss(0, 1) for x in a]
    res = paired_test(a, b)
    assert "Monte-Carlo" in res.test and res == paired_test(a, b)
    assert paired_test(a, b, seed=1).p_value != res.p_value
    exact = _brute_sign_flip_p([y - x for x, y in zip(a, b, strict=True)])
    assert res.p_value == pytest.approx(exact, abs=0.01)


def test_continuous_large_sample_paired_t_matches_scipy():
    from scipy import stats

    rng = random.Random(7)
    a = [rng.gauss(3, 1) for _ in range(40)]
    b = [x + 0.3 + rng.gauss(0, 0.8) for x in a]
    for conf in (0.9, 0.95):
        res = paired_test(a, b, confidence=conf)
        d = [y - x for x, y in zip(a, b, strict=True)]
        lo, hi = stats.t.interval(conf, 39, loc=sum(d) / 40, scale=stats.sem(d))
        assert res.test == "paired t-test"
        assert res.p_value == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-7)
        assert (res.ci95_low, res.ci95_high) == (pytest.approx(lo), pytest.approx(hi))


def test_degenerate_cases_never_report_p_zero():
    none = paired_test([NAN, 1.0], [2.0, NAN])
    assert none.n == 0 and none.p_value is None and none.mean_diff is None and none.ci95_low is None
    assert none.effect_size is None and none.warning
    assert paired_test([], []).n == 0
    zero = paired_test([1, 2, 3, 4], [1, 2, 3, 4])
    assert zero.p_value == 1.0 and zero.mean_diff == 0.0 and "zero" in (zero.warning or "")
    for n in (3, 12, 40):
        same = paired_test([2.0] * n, [3.0] * n)
        assert same.p_value == pytest.approx(2 * 0.5**n) and same.p_value > 0
        assert (same.ci95_low, same.ci95_high) == (1.0, 1.0) and "sign" in same.test
        assert "equal" in (same.warning or "")
    cont = paired_test([0.25] * 5, [0.5] * 5)
    assert cont.p_value == pytest.approx(2 * 0.5**5) and cont.effect_size is None
    one = paired_test([1.0], [2.0])
    assert one.n == 1 and one.ci95_low is None and one.p_value == 1.0
    huge = paired_test([0.0] * 200 + [0.001], [10.0 + 0.0001 * i for i in range(201)])
    assert huge.p_value is not None and huge.p_value > 0  # asymptotic underflow floored, not 0
    with pytest.raises(ValueError):
        paired_test([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_test([0.5], [1.0], kind="binary")


def test_min_effect_warns_when_underpowered():
    from scipy.stats import norm

    rng = random.Random(1)
    a = [rng.gauss(0, 1) for _ in range(40)]
    b = [x + rng.gauss(0.2, 1) for x in a]
    d = [y - x for x, y in zip(a, b, strict=True)]
    md = sum(d) / 40
    sd = math.sqrt(sum((v - md) ** 2 for v in d) / 39)
    need = math.ceil(((norm.ppf(0.975) + norm.ppf(0.8)) * sd / 0.1) ** 2)
    res = paired_test(a, b, min_effect=0.1)
    assert required_n(sd, 0.1) == need
    assert res.warning and "n = 40" in res.warning and str(need) in res.warning
    assert paired_test(a, b, min_effect=5.0).warning is None  # 5 sd: 40 pairs are plenty
    assert paired_test(a, b).warning is None
    # binary: Connor (1987) with the observed discordant share 12/30
    a2 = [0] * 9 + [1] * 3 + [1] * 10 + [0] * 8
    b2 = [1] * 9 + [0] * 3 + [1] * 10 + [0] * 8
    pd_, delta = 12 / 30, 0.1
    n2 = (norm.ppf(0.975) * math.sqrt(pd_) + norm.ppf(0.8) * math.sqrt(pd_ - delta**2)) ** 2 / delta**2
    w = paired_test(a2, b2, min_effect=delta).warning or ""
    assert str(math.ceil(n2)) in w and "discordant share" in w
    with pytest.raises(ValueError):
        paired_test(a, b, min_effect=0.0)
