"""``analyze(config, result)``: the reliability figures of one finished evaluation, in one streamed pass.

For every score ``S`` of every ``llm-judge`` metric the pass keeps, per item, only numbers: each
judgment's value (judge × repeat), the headline score and the human label. They are stored as columns of
``array('d')`` (one per (judge, repeat), NaN where a judgment is missing), so the memory bound is
``8 bytes × items × (judges × repeats + 2)`` per score — no texts, no records — and 100k items with a
3-judge panel and 5 repeats cost ~13 MB per score. The figures (repeat stability, panel agreement,
agreement with human labels) are then computed from those columns with ``scoring.agreement``, ``.alpha``
and ``.bootstrap``, one score at a time (its rows are expanded into Python lists for that score only,
then dropped).

Cost: the α and κ intervals are a 1000-resample bootstrap over items (``bootstrap.alpha_ci`` /
``kappa_ci``: resamples as pattern counts, no re-expanded items). Measured, 2 judges × 3 repeats + human
labels, ordinal: ~0.25 s for both intervals at 100k items (was ~11 s at 2000 items, linear in items);
continuous interval scores, every item distinct, ~1.6 s at 100k (n draws per resample are unavoidable).

Human labels come from ``MetricOutcome.human`` (the local engine fills it), else — for results fetched
from NeMo, whose records lack it — from the dataset row itself, ``rec.item[column]`` as the config's
``human_labels`` declares, converted like the engine converts them. κ, exact/±1 agreement and the
confusion matrix compare integer labels (``scoring.agreement`` rounds half-up): a mean of repeats (3.33)
is compared on the rating scale it summarises; Spearman uses the unrounded values.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.reliability.report import (
    Distribution,
    HumanAgreement,
    JudgeHuman,
    ReliabilityReport,
    RepeatStats,
    ScoreReliability,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.config.models import EvalConfig
    from mlflow_nemo_judge.config.reliability_settings import MetricSettings
    from mlflow_nemo_judge.results import EvalResult, MetricOutcome, SampleRecord
    from mlflow_nemo_judge.scoring.agreement import Weights

NAN = float("nan")
BOOTSTRAP_REPS = 1000
BOOTSTRAP_SEED = 0
DISCRETE_BARS = 12  # up to this many distinct spread values get a bar each, more a histogram
SPREAD_BINS = 20


@dataclass
class _Series:
    """The numbers of one score, a column per (judge, repeat), a row per item."""

    cols: dict[tuple[str, int], array[float]] = field(default_factory=dict)
    headline: array[float] = field(default_factory=lambda: array("d"))
    human: array[float] = field(default_factory=lambda: array("d"))
    judgments: int = 0
    nan_judgments: int = 0

    @property
    def n(self) -> int:
        return len(self.headline)

    def add(self, values: Iterable[tuple[str, int, float]], headline: float, human: float) -> None:
        n = self.n
        for judge, repeat, v in values:
            col = self.cols.get((judge, repeat))
            if col is None:
                col = self.cols[(judge, repeat)] = array("d", [NAN]) * n
            if len(col) == n:  # a second judgment of the same (judge, repeat) keeps the first
                col.append(v)
            self.judgments += 1
            self.nan_judgments += not math.isfinite(v)
        for col in self.cols.values():
            if len(col) == n:
                col.append(NAN)
        self.headline.append(headline)
        self.human.append(human)


def _label_value(cell: Any, score_type: str) -> float:
    """A human label cell converted like the engine does (``scoring.parsing.convert_value`` for the
    score's type); NaN when it is missing, empty or not a number / bool of that type."""
    from mlflow_nemo_judge.scoring.parsing import convert_value

    if isinstance(cell, str) and not cell.strip():
        return NAN
    if not isinstance(cell, (str, int, float, bool)):
        return NAN
    return convert_value(cell, score_type).value


def _human(rec: SampleRecord, out: MetricOutcome, score: str, column: str | None, score_type: str) -> float:
    if score in out.human:
        return float(out.human[score])
    if column is None:
        return NAN
    if column in rec.item:
        return _label_value(rec.item[column], score_type)
    folded = {str(k).lower(): v for k, v in rec.item.items()}  # in case a service lower-cased the keys
    return _label_value(folded.get(column.lower()), score_type)


def _judgments(out: MetricOutcome, score: str, primary: str) -> list[tuple[str, int, float]]:
    """(judge, repeat, value) of every judgment; a plain record is one judgment by the primary judge."""
    if out.judgments:
        return [(j.judge, j.repeat, float(j.scores.get(score, NAN))) for j in out.judgments]
    return [(primary, 0, float(out.scores.get(score, NAN)))]


def analyze(config: EvalConfig, result: EvalResult) -> ReliabilityReport | None:
    """The reliability report of ``result`` under ``config``'s ``mlflow_nemo_judge.reliability`` block.

    None when the config declares no repeats, panel or human labels and no record holds more than one
    judgment (a plain run: nothing to measure). ``result.iter_samples()`` is read exactly once.
    """
    from mlflow_nemo_judge.config.reliability_settings import metric_settings

    settings = metric_settings(config)
    series: dict[tuple[str, str, str], _Series] = {}
    multi: set[tuple[str, str]] = set()  # metrics some record judged more than once
    for rec in result.iter_samples():
        for mname, out in rec.metrics.items():
            st = settings.get((rec.task, mname))
            if st is None:  # not an llm-judge metric: nothing repeated, nothing to agree on
                continue
            if len(out.judgments) > 1:
                multi.add((rec.task, mname))
            for score in st.levels:
                column = st.human_labels.get(score)
                s = series.setdefault((rec.task, mname, score), _Series())
                human = _human(rec, out, score, column, st.score_types.get(score, "float"))
                s.add(_judgments(out, score, st.judges[0]), float(out.scores.get(score, NAN)), human)
    reports: list[ScoreReliability] = []
    for (task, mname, score), s in series.items():
        st = settings[(task, mname)]
        declared = st.repeats > 1 or st.panel is not None or score in st.human_labels
        if not declared and (task, mname) not in multi and not any(map(math.isfinite, s.human)):
            continue
        reports.append(_score(st, score, s))
    if not reports:
        return None
    return ReliabilityReport(scores=reports, backend=result.backend)


# ------------------------------------------------------------------------------------------ figures


def _score(st: MetricSettings, score: str, s: _Series) -> ScoreReliability:
    judges = list(
        dict.fromkeys([j for j in st.judges if any(k[0] == j for k in s.cols)] + [k[0] for k in s.cols])
    )
    k = max((r + 1 for _, r in s.cols), default=1)
    level = st.levels[score]
    sr = ScoreReliability(
        task=st.task,
        metric=st.metric,
        score=score,
        level=level,
        reducer=st.reducer,
        repeats=k,
        declared_repeats=st.repeats,
        declared_judges=len(st.judges),
        judges=judges,
        items=s.n,
        judgments=s.judgments,
        nan_judgments=s.nan_judgments,
    )
    rows = {j: _rows(s, j, k) for j in judges}
    if k > 1:
        sr.repeat = _repeat_stats([row for j in judges for row in rows[j]])
        sr.spread = _distribution([row for j in judges for row in rows[j]])
        if len(judges) > 1:
            sr.repeat_by_judge = {j: _repeat_stats(rows[j]) for j in judges}
    reduce = _reducer(st.reducer)
    per_judge = {j: [reduce(row) for row in rows[j]] for j in judges}
    if len(judges) > 1:
        _panel(sr, per_judge)
    if score in st.human_labels or any(map(math.isfinite, s.human)):
        sr.human = _human_agreement(
            level, list(s.headline), list(s.human), per_judge if len(judges) > 1 else {}
        )
    return sr


def _rows(s: _Series, judge: str, k: int) -> list[list[float]]:
    """``rows[item][repeat]`` of one judge (NaN where a repeat is missing)."""
    cols = [s.cols.get((judge, r)) for r in range(k)]
    return [[c[i] if c is not None else NAN for c in cols] for i in range(s.n)]


def _reducer(name: str) -> Callable[[Sequence[float]], float]:
    """The config's reducer over one judge's repeats of one item (NaN excluded; all NaN → NaN)."""
    from mlflow_nemo_judge.scoring.judgments import reduce_values

    return lambda values: reduce_values(values, name)


def _repeat_stats(rows: Sequence[Sequence[float]]) -> RepeatStats:
    from mlflow_nemo_judge.scoring.agreement import repeat_figures

    f = repeat_figures(rows)
    return RepeatStats(
        items=f.items,
        flip_rate=f.flip_rate,
        spread=f.spread,
        icc=f.icc,
        icc_low=f.icc_ci95_low,
        icc_high=f.icc_ci95_high,
    )


def _distribution(rows: Sequence[Sequence[float]]) -> Distribution | None:
    """Counts of the within-item sample stddev of every row with ≥ 2 finite repeats."""
    sds = []
    for row in rows:
        finite = [v for v in row if math.isfinite(v)]
        if len(finite) >= 2:
            # math.fsum, not statistics.stdev: that one's exact fractions cost seconds at 100k items
            m = math.fsum(finite) / len(finite)
            sd = math.sqrt(math.fsum((v - m) ** 2 for v in finite) / (len(finite) - 1))
            sds.append(round(sd, 9))
    if not sds:
        return None
    distinct = sorted(set(sds))
    if len(distinct) <= DISCRETE_BARS:
        return Distribution(values=distinct, counts=[sds.count(v) for v in distinct])
    top = max(distinct)
    width = top / SPREAD_BINS
    counts = [0] * SPREAD_BINS
    for v in sds:
        counts[min(int(v / width), SPREAD_BINS - 1)] += 1
    return Distribution(values=[i * width for i in range(SPREAD_BINS)], counts=counts, width=width)


def _pairwise_stat(level: str) -> Callable[[Sequence[float], Sequence[float]], float | None]:
    from mlflow_nemo_judge.scoring.agreement import weighted_kappa
    from mlflow_nemo_judge.scoring.alpha import krippendorff_alpha

    if level == "ordinal":
        return lambda a, b: weighted_kappa(a, b, "quadratic")
    if level == "nominal":
        return lambda a, b: weighted_kappa(a, b, None)
    return lambda a, b: krippendorff_alpha([a, b], "interval")


def _panel(sr: ScoreReliability, per_judge: dict[str, list[float]]) -> None:
    """α over the panel (with a bootstrap CI over items), pairwise κ, and each judge's mean."""
    from mlflow_nemo_judge.scoring.alpha import krippendorff_alpha
    from mlflow_nemo_judge.scoring.bootstrap import alpha_ci, kappa_ci

    judges = list(per_judge)
    data = [per_judge[j] for j in judges]
    sr.alpha_items = sum(1 for i in range(sr.items) if sum(math.isfinite(d[i]) for d in data) >= 2)
    sr.alpha = krippendorff_alpha(data, sr.level)
    ci = alpha_ci(data, sr.level, reps=BOOTSTRAP_REPS, seed=BOOTSTRAP_SEED)
    if ci is not None:
        sr.alpha_low, sr.alpha_high = ci
    stat = _pairwise_stat(sr.level)
    weights: dict[str, Weights] = {"ordinal": "quadratic", "nominal": None}
    for i, a in enumerate(judges):
        for b in judges[i + 1 :]:
            sr.pairwise[f"{a}__{b}"] = stat(per_judge[a], per_judge[b])
            if sr.level in weights:  # κ levels: a bootstrap CI like α's (interval pairs are α, no CI)
                kci = kappa_ci(
                    per_judge[a], per_judge[b], weights[sr.level], reps=BOOTSTRAP_REPS, seed=BOOTSTRAP_SEED
                )
                if kci is not None:
                    sr.pairwise_ci[f"{a}__{b}"] = [kci[0], kci[1]]
    for j in judges:
        finite = [v for v in per_judge[j] if math.isfinite(v)]
        sr.judge_means[j] = sum(finite) / len(finite) if finite else None


def _integers(values: Sequence[float]) -> bool:
    return all(v == math.floor(v) for v in values)


def _human_agreement(
    level: str, headline: list[float], human: list[float], per_judge: dict[str, list[float]]
) -> HumanAgreement:
    """The headline against the humans (and, with a panel, each judge's reduced score against them).

    κ only for ordinal (quadratic weights) and nominal (unweighted) scores; Spearman not for nominal
    ones (categories have no order); exact / ±1 agreement and the confusion matrix compare integer
    labels (``scoring.agreement`` rounds half-up), so an interval score gets them only when every value
    is a whole number already — rounding 0.73 to 1 would report an agreement nobody rated.
    """
    from mlflow_nemo_judge.scoring import agreement as ag
    from mlflow_nemo_judge.scoring.bootstrap import kappa_ci

    weights: ag.Weights = "quadratic" if level == "ordinal" else None
    keep = [
        i
        for i, (a, b) in enumerate(zip(headline, human, strict=True))
        if math.isfinite(a) and math.isfinite(b)
    ]
    h = HumanAgreement(n=len(keep), missing=sum(1 for v in human if not math.isfinite(v)))
    if not keep:
        return h
    a = [headline[i] for i in keep]
    b = [human[i] for i in keep]
    discrete = level in ("ordinal", "nominal")
    labels = discrete or _integers(a + b)
    if discrete:
        h.kappa = ag.weighted_kappa(a, b, weights)
        ci = kappa_ci(a, b, weights, reps=BOOTSTRAP_REPS, seed=BOOTSTRAP_SEED)
        if ci is not None:
            h.kappa_low, h.kappa_high = ci
    if level != "nominal":
        h.spearman = ag.spearman(a, b)
    if labels:
        h.exact = ag.exact_agreement(a, b)
        h.within1 = ag.within_one(a, b) if level != "nominal" else None
        cats, matrix = ag.confusion(a, b)
        h.labels = [float(c) for c in cats]
        h.matrix = [[int(c) for c in row] for row in matrix]
    for judge, values in per_judge.items():
        pick = [i for i in range(len(values)) if math.isfinite(values[i]) and math.isfinite(human[i])]
        x, y = [values[i] for i in pick], [human[i] for i in pick]
        jh = JudgeHuman(n=len(pick))
        if pick:
            jh.kappa = ag.weighted_kappa(x, y, weights) if discrete else None
            jh.spearman = ag.spearman(x, y) if level != "nominal" else None
            jh.exact = ag.exact_agreement(x, y) if discrete or _integers(x + y) else None
        h.judges[judge] = jh
    return h
