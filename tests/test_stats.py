import math

import pytest
from scipy import stats as sps

from mlflow_nemo_judge.scoring.stats import ci_from_stats, paired_compare, summarize

NAN = float("nan")


def test_nan_excluded_and_counted_never_zero():
    s = summarize([5.0, NAN, 3.0, NAN, 4.0])
    assert s.count == 3 and s.nan_count == 2
    assert s.mean == pytest.approx(4.0) and s.sum == pytest.approx(12.0)
    assert s.min == 3.0 and s.max == 5.0
    assert s.variance == pytest.approx(2 / 3)  # population, as NeMo
    assert s.stddev == pytest.approx(math.sqrt(2 / 3))
    assert s.stderr == pytest.approx(1.0 / math.sqrt(3))  # sample sd (1.0) / sqrt(n)


def test_ci_matches_scipy_t_interval():
    vals = [1.0, 2.0, 2.0, 3.0, 5.0, 4.0, 4.0]
    s = summarize(vals)
    lo, hi = sps.t.interval(0.95, len(vals) - 1, loc=sps.tmean(vals), scale=sps.sem(vals))
    assert s.ci95_low == pytest.approx(lo) and s.ci95_high == pytest.approx(hi)
    assert ci_from_stats(s.mean or 0, s.count, stddev=s.stddev) == pytest.approx((lo, hi))


def test_all_nan_and_single_value():
    s = summarize([NAN, NAN])
    assert s.count == 0 and s.nan_count == 2 and s.mean is None
    one = summarize([3.0])
    assert one.mean == 3.0 and one.stderr is None and one.ci95_low is None


def test_paired_compare_delegates_to_paired_test_and_drops_nan_pairs():
    from mlflow_nemo_judge.scoring.paired_tests import paired_test

    a = [3.0, 4.0, 2.0, 5.0, NAN, 3.0]
    b = [4.0, 5.0, 2.0, 5.0, 1.0, 5.0]
    res = paired_compare(a, b)
    assert res.n == 5
    assert res.mean_diff == pytest.approx(0.8)
    # 1-5 ratings: Wilcoxon signed-rank (Pratt), exact. Differences 1, 1, 0, 0, 2: the three non-zero
    # ones (mid-ranks 3.5, 3.5, 5) are all positive, the most extreme of 2^3 sign patterns: p = 2/8.
    assert "Wilcoxon" in res.test and res.p_value == pytest.approx(0.25)
    pt = paired_test(a, b)
    assert (res.p_value, res.ci95_low, res.ci95_high, res.test) == (
        pt.p_value,
        pt.ci95_low,
        pt.ci95_high,
        pt.test,
    )
    assert res.ci95_low is not None and res.ci95_low < 0.8 < (res.ci95_high or 0)
    # continuous scores with n >= 30 keep the paired t-test
    x = [0.1 * i + (i % 7) * 0.37 for i in range(40)]
    y = [v + 0.2 + ((i * 13) % 5) * 0.11 for i, v in enumerate(x)]
    t = paired_compare(x, y)
    assert t.test == "paired t-test" and t.p_value == pytest.approx(sps.ttest_rel(y, x).pvalue)


def test_paired_identical_runs():
    res = paired_compare([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert res.mean_diff == 0.0 and res.p_value == 1.0
    with pytest.raises(ValueError):
        paired_compare([1.0], [1.0, 2.0])


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 24, 49, 120, 999, 100000])
def test_t_quantile_and_tail_match_scipy(df):
    from mlflow_nemo_judge.scoring.stats import t_quantile_975, t_sf

    assert t_quantile_975(df) == pytest.approx(sps.t.ppf(0.975, df), rel=1e-9)
    for t in (0.0, 0.3, 1.7, 4.2, -2.5, 30.0):
        assert t_sf(t, df) == pytest.approx(sps.t.sf(t, df), rel=1e-8, abs=1e-300)
