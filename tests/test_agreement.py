"""Agreement figures, α and their bootstraps (``scoring.agreement``, ``.alpha``, ``.bootstrap``) against
published worked examples and independent computations."""

from __future__ import annotations

import math
import random

import pytest

from mlflow_nemo_judge.scoring import alpha as al
from mlflow_nemo_judge.scoring import bootstrap as bs
from mlflow_nemo_judge.scoring.agreement import (
    confusion,
    exact_agreement,
    repeat_figures,
    spearman,
    weighted_kappa,
    within_one,
)
from mlflow_nemo_judge.scoring.alpha import krippendorff_alpha
from mlflow_nemo_judge.scoring.bootstrap import alpha_ci, bootstrap_ci, columns_of, kappa_ci, rows_of

NAN = float("nan")

# Krippendorff, K. (2011). "Computing Krippendorff's Alpha-Reliability", the 4 observers x 12 units
# example with missing data (also Content Analysis, 4th ed., 2019, ch. 12). Published: nominal 0.743,
# ordinal 0.815, interval 0.849, ratio 0.797.
K2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]


@pytest.mark.parametrize(
    ("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)]
)
def test_krippendorff_alpha_matches_the_2011_worked_example(level, published):
    assert krippendorff_alpha(K2011, level) == pytest.approx(published, abs=5e-4)


def test_krippendorff_nominal_by_the_coincidence_matrix():
    """Hand computation of nominal alpha from the coincidence matrix (Krippendorff 2011, section C)."""
    data = [[1, 2, 1, 2, 1], [1, 2, 2, 2, NAN], [1, 1, 2, 2, 1]]
    o: dict[tuple[float, float], float] = {}
    for u in range(5):
        vals = [r[u] for r in data if r[u] == r[u]]
        m = len(vals)
        for i, x in enumerate(vals):
            for j, y in enumerate(vals):
                if i != j:
                    o[(x, y)] = o.get((x, y), 0.0) + 1.0 / (m - 1)
    n_c: dict[float, float] = {}
    for (x, _), v in o.items():
        n_c[x] = n_c.get(x, 0.0) + v
    n = sum(n_c.values())
    d_o = sum(v for (x, y), v in o.items() if x != y)
    d_e = sum(n_c[x] * n_c[y] for x in n_c for y in n_c if x != y) / (n - 1)
    assert krippendorff_alpha(data, "nominal") == pytest.approx(1 - d_o / d_e)


def test_krippendorff_undefined_cases_are_none():
    assert krippendorff_alpha([[3, 3, 3], [3, 3, 3]], "ordinal") is None  # one value: D_e = 0
    assert krippendorff_alpha([[1, NAN, NAN], [NAN, 2, NAN]], "nominal") is None  # nothing pairable
    assert krippendorff_alpha([], "nominal") is None
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(K2011, "cardinal")


def test_cohen_kappa_unweighted_textbook_example():
    """Wikipedia "Cohen's kappa", worked example: 50 applications, both yes 20, A yes/B no 5, A no/B yes
    10, both no 15 -> p_o = 0.7, p_e = 0.5, kappa = 0.4."""
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert weighted_kappa(a, b, None) == pytest.approx(0.4)


@pytest.mark.parametrize("weights", ["quadratic", "linear", None])
def test_weighted_kappa_matches_sklearn(weights):
    from sklearn.metrics import cohen_kappa_score

    rng = random.Random(3)
    human = [rng.randint(1, 5) for _ in range(80)]
    judge = [min(5, max(1, h + rng.choice([-2, -1, 0, 0, 0, 1]))) for h in human]
    ref = cohen_kappa_score(judge, human, weights=weights)
    assert weighted_kappa(judge, human, weights) == pytest.approx(ref, rel=1e-12)
    # a declared scale whose extreme is never used changes the weights as in sklearn's labels=
    judge2 = [min(4, j) for j in judge]
    human2 = [min(4, h) for h in human]
    ref2 = cohen_kappa_score(judge2, human2, weights=weights, labels=[1, 2, 3, 4, 5])
    assert weighted_kappa(judge2, human2, weights, categories=[1, 2, 3, 4, 5]) == pytest.approx(ref2)


def test_kappa_rounds_to_labels_drops_nan_and_is_none_when_undefined():
    assert weighted_kappa([3.5, 2.0, NAN], [4.0, 2.0, 1.0]) == 1.0  # 3.5 -> 4, the NaN pair dropped
    assert weighted_kappa([3, 3, 3], [3, 3, 3]) is None  # chance agreement already perfect
    assert weighted_kappa([], []) is None
    with pytest.raises(ValueError):
        weighted_kappa([1], [1, 2])


def test_spearman_exact_within_one_and_confusion():
    from scipy.stats import spearmanr

    a = [1, 2, 3, 4, 5, 3, NAN, 2]
    b = [2, 2, 3, 5, 3, 1, 4, NAN]
    keep_a, keep_b = [1, 2, 3, 4, 5, 3], [2, 2, 3, 5, 3, 1]
    assert spearman(a, b) == pytest.approx(spearmanr(keep_a, keep_b).statistic)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1], [2]) is None
    assert exact_agreement(a, b) == pytest.approx(2 / 6)
    assert within_one(a, b) == pytest.approx(4 / 6)
    assert exact_agreement([], []) is None and within_one([NAN], [1]) is None
    labels, m = confusion(a, b)
    assert labels == [1, 2, 3, 4, 5]
    assert m[0][1] == 1 and m[1][1] == 1 and m[2][2] == 1 and m[3][4] == 1 and m[4][2] == 1 and m[2][0] == 1
    assert sum(map(sum, m)) == 6


# Shrout, P. E., & Fleiss, J. L. (1979). Intraclass correlations: uses in assessing rater reliability.
# Psychological Bulletin 86(2), Table 2: 6 targets x 4 judges; Table 4 gives ICC(1,1) = .17.
SF1979 = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


def test_icc_matches_shrout_fleiss_table_2():
    rf = repeat_figures(SF1979)
    assert rf.icc == pytest.approx(0.17, abs=0.005)
    assert rf.icc_items == 6 and rf.items == 6


def test_icc_by_one_way_anova_and_its_f_interval():
    """ICC(1,1) from scipy's one-way ANOVA F (f_oneway, items as groups) and the F-based CI written
    out from McGraw & Wong (1996) Table 7, case 1."""
    from scipy.stats import f, f_oneway

    n, k = len(SF1979), 4
    fobs = f_oneway(*SF1979).statistic
    icc = (fobs - 1) / (fobs + k - 1)
    fl = fobs / f.ppf(0.975, n - 1, n * (k - 1))
    fu = fobs * f.ppf(0.975, n * (k - 1), n - 1)
    rf = repeat_figures(SF1979)
    assert rf.icc == pytest.approx(icc)
    assert rf.icc_ci95_low == pytest.approx((fl - 1) / (fl + k - 1))
    assert rf.icc_ci95_high == pytest.approx((fu - 1) / (fu + k - 1))
    assert rf.icc_ci95_low < rf.icc < rf.icc_ci95_high


def test_flip_rate_spread_and_nan_repeats():
    import statistics

    values = [[3, 3, 3], [2, 3, 3], [4, NAN, 4], [5, 1, NAN], [NAN, NAN, 2], [1, 2, 3]]
    rf = repeat_figures(values)
    # items with >= 2 finite repeats: all but the 5th; flipped: 2nd, 4th, 6th
    assert rf.items == 5 and rf.flip_rate == pytest.approx(3 / 5)
    sds = [statistics.stdev(r) for r in ([3, 3, 3], [2, 3, 3], [4, 4], [5, 1], [1, 2, 3])]
    assert rf.spread == pytest.approx(sum(sds) / 5)
    assert rf.icc_items == 3  # only complete rows enter the ICC


def test_repeat_figures_degenerate():
    assert repeat_figures([]).flip_rate is None and repeat_figures([]).icc is None
    const = repeat_figures([[2, 2], [2, 2], [2, 2]])
    assert const.flip_rate == 0.0 and const.spread == 0.0 and const.icc is None  # 0/0
    perfect = repeat_figures([[1, 1], [3, 3], [5, 5]])
    assert perfect.icc == 1.0 and (perfect.icc_ci95_low, perfect.icc_ci95_high) == (1.0, 1.0)
    single = repeat_figures([[1], [2]])
    assert single.items == 0 and single.flip_rate is None and single.icc is None


def test_bootstrap_ci_is_deterministic_and_brackets_the_statistic():
    rng = random.Random(5)
    cols = [
        (h, min(5, max(1, h + rng.choice([-1, 0, 0, 1])))) for h in (rng.randint(1, 5) for _ in range(60))
    ]

    def kappa(sample):
        return weighted_kappa([c[0] for c in sample], [c[1] for c in sample])

    ci = bootstrap_ci(kappa, cols, reps=300, seed=1)
    assert ci == bootstrap_ci(kappa, cols, reps=300, seed=1)
    assert ci is not None and ci[0] < (kappa(cols) or 0) < ci[1]
    assert ci != bootstrap_ci(kappa, cols, reps=300, seed=2)
    # numpy's percentile of the same resamples (drawn the same way) is the reference
    import numpy as np

    r = random.Random(1)
    draws = [kappa([cols[r.randrange(60)] for _ in range(60)]) for _ in range(300)]
    assert ci == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))


def test_bootstrap_ci_none_when_mostly_undefined_and_alpha_columns_round_trip():
    assert bootstrap_ci(lambda s: None, [1, 2, 3]) is None
    assert bootstrap_ci(lambda s: 1.0, []) is None
    cols = columns_of(K2011)
    assert len(cols) == 12 and rows_of(cols)[1][9] == 5
    ci = bootstrap_ci(lambda s: krippendorff_alpha(rows_of(s), "nominal"), cols, reps=200, seed=0)
    assert ci is not None and ci[0] <= 0.743 <= ci[1] and not math.isnan(ci[0])


# ------------------------------------------------------------------ α without the package, fast CIs


def _random_reliability(seed, raters, units, kind):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(seed)
    if kind == "ordinal":
        x = rng.integers(1, 6, (raters, units)).astype(float)
    elif kind == "thirds":  # mean of 3 repeats: few distinct values
        x = np.round(rng.normal(3, 1, (raters, units)) * 3) / 3
    else:  # continuous: more than COINCIDENCE_MAX_VALUES distinct values
        x = rng.normal(3, 1, (raters, units))
    x[rng.random(x.shape) < 0.2] = np.nan
    return x


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_alpha_equals_the_krippendorff_package_on_k2011_and_random_data(level):
    import krippendorff
    import numpy as np

    ref = krippendorff.alpha(reliability_data=np.array(K2011, dtype=float), level_of_measurement=level)
    assert krippendorff_alpha(K2011, level) == pytest.approx(ref, abs=1e-9)
    for seed in range(12):
        kind = ("ordinal", "thirds", "continuous")[seed % 3]
        x = _random_reliability(seed, 2 + seed % 3, 30 + 8 * seed, kind)
        if kind == "continuous":
            assert len(np.unique(x[~np.isnan(x)])) > al.COINCIDENCE_MAX_VALUES  # the other code path
        ref = krippendorff.alpha(reliability_data=x, level_of_measurement=level)
        assert krippendorff_alpha(x.tolist(), level) == pytest.approx(ref, abs=1e-9)


def _expand(data, pat, counts):
    """The units of a resample given as pattern counts (units of one pattern are interchangeable)."""
    import numpy as np

    cols = bs.columns_of(data)
    pat_of = al._alpha_patterns(data)
    assert pat_of is not None
    # map every unit to its pattern row, then take counts[p] units of pattern p
    x = np.array(data, dtype=float).T
    reps = {}
    for u, col in enumerate(x):
        fin = sorted(v for v in col if v == v)
        key = tuple(fin) if len(fin) >= 2 else ()
        reps.setdefault(key, u)
    out = []
    for p, c in enumerate(counts):
        codes = [int(k) for k in pat.codes[p] if k < len(pat.values)]
        key = tuple(float(pat.values[k]) for k in codes) if len(codes) >= 2 else ()
        out += [cols[reps[key]]] * int(c)
    return out


# Nominal, ordinal and ratio data with many distinct values take the generic bootstrap (tested below): they
# have no counts form to compare here.
@pytest.mark.parametrize(
    ("level", "kind"),
    [(lv, "thirds") for lv in ("nominal", "ordinal", "interval", "ratio")] + [("interval", "continuous")],
)
def test_alpha_of_a_resample_from_its_counts_is_alpha_of_the_expanded_units(level, kind):
    import numpy as np

    data = _random_reliability(3, 3, 50, kind).tolist()
    pat = al._alpha_patterns(data)
    assert pat is not None
    counts = next(bs.resample_counts(pat.freq.tolist(), 8, seed=4))
    if len(pat.values) <= al.COINCIDENCE_MAX_VALUES:
        o = np.asarray(al._coincidence_rows(pat).T.tocsr() @ counts.T).T.reshape(
            len(counts), len(pat.values), -1
        )
        got = al._alpha_from_coincidences(level, pat.values, o)
    else:
        assert level == "interval"
        got = al._IntervalMoments(pat).alpha(counts)
    for row, value in zip(counts, got, strict=True):
        expected = krippendorff_alpha(bs.rows_of(_expand(data, pat, row)), level)
        assert value == pytest.approx(expected, abs=1e-9)


def _kappa_pairs(seed, n=50):
    rng = random.Random(seed)
    human = [rng.randint(1, 5) for _ in range(n)]
    judge = [min(5, max(1, h + rng.choice([-2, -1, 0, 0, 1]))) + rng.choice([0, 0, 0.5]) for h in human]
    judge[3] = NAN
    return judge, human


@pytest.mark.parametrize("weights", ["quadratic", "linear", None])
@pytest.mark.parametrize("categories", [None, [1, 2, 3, 4, 5, 6]])
def test_kappa_of_a_resample_table_is_weighted_kappa_of_the_expanded_pairs(weights, categories):
    import numpy as np

    a, b = _kappa_pairs(1, n=12)  # small: resamples often miss categories (positions then shift)
    cats, declared, freq = bs._kappa_cells(a, b, categories)
    k = len(cats)
    cell_pairs = [(float(cats[c // k]), float(cats[c % k])) for c in range(k * k)] + [(NAN, 1.0)]
    for counts in bs.resample_counts(freq.tolist(), 60, seed=2):
        got = bs._kappa_from_tables(counts[:, : k * k].reshape(-1, k, k), declared, weights)
        for row, value in zip(counts, got, strict=True):
            pairs = [cell_pairs[c] for c in range(k * k + 1) for _ in range(int(row[c]))]
            ref = weighted_kappa([p[0] for p in pairs], [p[1] for p in pairs], weights, categories)
            if ref is None:
                assert np.isnan(value)
            else:
                assert value == ref  # the same integer sums, the same divisions: bit for bit


@pytest.mark.parametrize(
    ("level", "kind"),
    [
        ("nominal", "ordinal"),
        ("ordinal", "ordinal"),
        ("interval", "thirds"),
        ("ratio", "thirds"),
        ("interval", "continuous"),
    ],
)
def test_alpha_ci_estimates_what_the_generic_bootstrap_estimates(level, kind):
    data = _random_reliability(11, 3, 40, kind)
    data[1] = data[0] + (data[1] - data[0]) * 0.3  # some agreement
    if kind == "ordinal":
        data = data.round()
    rows = data.tolist()
    fast = alpha_ci(rows, level, reps=4000, seed=1)
    slow = bootstrap_ci(lambda u: krippendorff_alpha(rows_of(u), level), columns_of(rows), reps=4000, seed=1)
    assert fast is not None and slow is not None
    assert fast == pytest.approx(slow, abs=0.02)
    assert alpha_ci(rows, level, reps=300, seed=3) == alpha_ci(rows, level, reps=300, seed=3)


@pytest.mark.parametrize("weights", ["quadratic", "linear", None])
def test_kappa_ci_estimates_what_the_generic_bootstrap_estimates(weights):
    a, b = _kappa_pairs(5, n=60)
    fast = kappa_ci(a, b, weights, reps=4000, seed=1)
    slow = bootstrap_ci(
        lambda p: weighted_kappa([x for x, _ in p], [y for _, y in p], weights),
        list(zip(a, b, strict=True)),
        reps=4000,
        seed=1,
    )
    assert fast is not None and slow is not None
    assert fast == pytest.approx(slow, abs=0.02)
    assert fast[0] < (weighted_kappa(a, b, weights) or 0) < fast[1]


def test_fast_cis_degenerate_cases_are_none():
    assert alpha_ci([], "nominal") is None
    assert alpha_ci([[3, 3, 3], [3, 3, 3]], "ordinal") is None  # α undefined on every resample
    assert alpha_ci([[1, NAN, NAN], [NAN, 2, NAN]], "interval") is None  # nothing pairable
    assert alpha_ci([[1.0, 2.0], [1.0, NAN]], "nominal") is None  # one pairable unit, one value
    with pytest.raises(ValueError, match="level"):
        alpha_ci(K2011, "cardinal")
    assert kappa_ci([], []) is None
    assert kappa_ci([3, 3, 3], [3, 3, 3]) is None  # chance agreement perfect on every resample
    assert kappa_ci([NAN, NAN], [1, 2]) is None  # no pair
    with pytest.raises(ValueError):
        kappa_ci([1], [1, 2])
    with pytest.raises(ValueError):
        kappa_ci([1], [1], "cubic")  # type: ignore[arg-type]


def test_ratio_with_many_values_falls_back_to_the_generic_bootstrap_with_a_cap():
    data = _random_reliability(2, 2, 80, "continuous").tolist()
    slow = bootstrap_ci(lambda u: krippendorff_alpha(rows_of(u), "ratio"), columns_of(data), reps=200, seed=0)
    assert alpha_ci(data, "ratio", reps=200, seed=0) == slow
    big = _random_reliability(2, 2, bs.GENERIC_MAX_ITEMS + 1, "continuous").tolist()
    assert alpha_ci(big, "ratio", reps=10) is None
    assert krippendorff_alpha(big, "ratio") is not None  # the point estimate is still there
