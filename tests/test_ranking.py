"""Position-swapped verdicts, win rates and Bradley-Terry against independent computations."""

from __future__ import annotations

import math
import random

import pytest

from mlflow_nemo_judge.scoring.ranking import (
    BT_PRIOR,
    bradley_terry,
    bradley_terry_ci,
    combine_orders,
    strength_shares,
    win_rate,
)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("A", "B", ("win", True)),  # x first, then x second: both prefer x
        ("B", "A", ("loss", True)),
        ("TIE", "TIE", ("tie", True)),
        ("A", "A", ("tie", False)),  # always position A: the position decided, not the content
        ("B", "B", ("tie", False)),
        ("A", "TIE", ("tie", False)),
        ("tie", "b", ("tie", False)),
        (None, "A", (None, False)),
        ("B", None, (None, False)),
    ],
)
def test_combine_orders(first, second, expected):
    assert combine_orders(first, second) == expected


def test_combine_orders_rejects_other_verdicts():
    with pytest.raises(ValueError):
        combine_orders("C", "A")


def _wilson(k: float, n: int, z: float) -> tuple[float, float]:
    """Wilson (1927) score interval as the roots of the quadratic (p - k/n)^2 = z^2 p (1 - p) / n."""
    phat = k / n
    a = 1 + z * z / n
    b = -(2 * phat + z * z / n)
    c = phat * phat
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


def test_win_rate_wilson_interval_on_the_half_tie_count():
    from scipy.stats import binomtest, norm

    rate, lo, hi = win_rate(12, 4, 4)
    assert rate == pytest.approx(14 / 20)
    assert (lo, hi) == pytest.approx(_wilson(14, 20, norm.ppf(0.975)))
    # without ties it is scipy's Wilson interval
    ci = binomtest(15, 20).proportion_ci(0.95, method="wilson")
    assert win_rate(15, 0, 5)[1:] == pytest.approx((ci.low, ci.high))
    allwin = win_rate(10, 0, 0)
    assert allwin[0] == 1.0 and allwin[2] == pytest.approx(1.0) and 0.6 < allwin[1] < 0.8
    assert win_rate(0, 0, 0) == (None, None, None)


def _neg_loglik(theta, outcomes, n, prior=0.0):
    s = [0.0, *theta]  # s_0 fixed at 0 (identifiability); the reference re-centres afterwards
    total = 0.0
    for i, j, w in outcomes:
        d = s[i] - s[j]
        total += w * math.log1p(math.exp(-d)) + (1 - w) * math.log1p(math.exp(d))
    if prior:
        for i in range(n):
            for j in range(n):
                if i != j:
                    total += prior * math.log1p(math.exp(s[j] - s[i]))
    return total


def _reference_bt(outcomes, n, prior=0.0):
    """Direct maximum-likelihood fit with scipy.optimize (ties as half a win each way)."""
    from scipy.optimize import minimize

    res = minimize(_neg_loglik, [0.0] * (n - 1), args=(outcomes, n, prior), method="BFGS", tol=1e-12)
    s = [0.0, *res.x]
    m = sum(s) / n
    return [v - m for v in s]


def test_bradley_terry_matches_direct_likelihood_maximisation():
    rng = random.Random(11)
    true = [1.5, 0.5, -0.4, -1.6]
    outcomes = []
    for _ in range(60):  # 60 items, every pair judged on each
        for i in range(4):
            for j in range(i + 1, 4):
                p = 1 / (1 + math.exp(true[j] - true[i]))
                u = rng.random()
                outcomes.append((i, j, 1.0 if u < p - 0.05 else 0.5 if u < p + 0.05 else 0.0))
    got = bradley_terry(outcomes, 4)
    assert got == pytest.approx(_reference_bt(outcomes, 4), abs=1e-5)
    assert sum(got) == pytest.approx(0.0, abs=1e-12)
    assert sorted(range(4), key=lambda t: -got[t]) == [0, 1, 2, 3]
    shares = strength_shares(got)
    assert sum(shares) == pytest.approx(1.0) and shares[0] > shares[3]


def test_bradley_terry_two_players_closed_form():
    # 7 wins, 2 ties, 3 losses: p = 8/12, so s_0 - s_1 = log(8/4)
    outcomes = [(0, 1, 1.0)] * 7 + [(0, 1, 0.5)] * 2 + [(1, 0, 1.0)] * 3
    s = bradley_terry(outcomes, 2)
    assert s[0] - s[1] == pytest.approx(math.log(2.0), abs=1e-8)


def test_bradley_terry_without_an_mle_uses_the_stated_prior():
    outcomes = [(0, 1, 1.0)] * 5 + [(1, 2, 1.0)] * 3  # 0 never lost: the MLE is infinite
    got = bradley_terry(outcomes, 3)
    assert all(math.isfinite(v) for v in got) and got[0] > got[1] > got[2]
    assert got == pytest.approx(_reference_bt(outcomes, 3, prior=BT_PRIOR), abs=1e-5)
    assert bradley_terry([], 3) == pytest.approx([0.0, 0.0, 0.0])
    assert bradley_terry([], 1) == [0.0]
    with pytest.raises(ValueError):
        bradley_terry([(0, 0, 1.0)], 2)


def test_bradley_terry_ci_bootstraps_items_deterministically():
    rng = random.Random(2)
    outcomes, groups = [], []
    for item in range(40):
        for i, j in ((0, 1), (0, 2), (1, 2)):
            p = {(0, 1): 0.7, (0, 2): 0.85, (1, 2): 0.65}[(i, j)]
            outcomes.append((i, j, 1.0 if rng.random() < p else 0.0))
            groups.append(item)
    ci = bradley_terry_ci(outcomes, 3, groups=groups, reps=200, seed=4)
    assert ci == bradley_terry_ci(outcomes, 3, groups=groups, reps=200, seed=4)
    point = bradley_terry(outcomes, 3)
    for (lo, hi), s in zip(ci, point, strict=True):
        assert lo <= s <= hi
    assert ci[0][0] > ci[2][1]  # the best and the worst are told apart
    with pytest.raises(ValueError):
        bradley_terry_ci(outcomes, 3, groups=groups[:-1])
