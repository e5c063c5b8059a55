"""The reliability analysis and report: figures from hand-built records (written to a spill file the way
the engine writes them) checked against direct computations with independent libraries (krippendorff,
scikit-learn, scipy, numpy), the §4 metric keys exactly, report.json round trip, markdown and plots."""

from __future__ import annotations

import json
import math
import random

import krippendorff
import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from mlflow_nemo_judge.config import load_config
from mlflow_nemo_judge.reliability import ReliabilityReport, analyze
from mlflow_nemo_judge.results import EvalResult, Judgment, MetricOutcome, SampleRecord

NAN = float("nan")
JUDGES = ["mock/judge", "mock/judge-noisy"]
LABELS = ["mock_judge", "mock_judge-noisy"]
S = "reliability/t/m/q"


def _config(metric_block=None, *, block=None, score_type="int"):
    ep = {"url": "http://127.0.0.1:9/v1", "model_id": "mock/judge"}
    d = {
        "type": "custom",
        "tasks": {
            "t": {
                "type": "data",
                "metrics": {
                    "m": {
                        "type": "llm-judge",
                        "params": {
                            "model": {"api_endpoint": ep},
                            "template": {"messages": [{"role": "user", "content": "{{ item.x }}"}]},
                            "scores": {
                                "q": {"type": score_type, "parser": {"type": "regex", "pattern": "(\\d)"}}
                            },
                        },
                    },
                    "exact": {
                        "type": "string-check",
                        "params": {"check": ["{{sample.output_text}}", "==", "a"]},
                    },
                },
            }
        },
    }
    if metric_block is not None or block is not None:
        rel = dict(block or {})
        if metric_block is not None:
            rel["metrics"] = {"t/m": metric_block}
        d["mlflow_nemo_judge"] = {"reliability": rel}
    return load_config(d)


def _panel():
    return [{"api_endpoint": {"url": "http://127.0.0.1:9/v1", "model_id": m}} for m in JUDGES]


def _result(tmp_path, records, backend="local"):
    path = tmp_path / "samples.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    return EvalResult(tasks={}, samples_path=path, backend=backend)


def _record(i, values, *, human=None, item=None, headline=None):
    """values[judge_label] = [repeat values]; the headline as the engine reduces (mean of judge means)."""
    judgments = [
        Judgment(judge=j, repeat=r, scores={"q": v}) for j, reps in values.items() for r, v in enumerate(reps)
    ]
    if headline is None:
        means = [np.nanmean(reps) for reps in values.values() if any(math.isfinite(v) for v in reps)]
        headline = float(np.mean(means)) if means else NAN
    out = MetricOutcome(scores={"q": headline}, judgments=judgments if len(judgments) > 1 else [])
    if human is not None:
        out.human = {"q": human}
    return SampleRecord(
        task="t",
        index=i,
        item_id=f"r{i}",
        item=item or {"x": f"item {i}"},
        metrics={"m": out, "exact": MetricOutcome(scores={"exact": 1.0})},
    )


def _data(n=24, k=3, seed=7):
    """Ratings 1-5: a true quality per item, the primary judge near it, the noisy one noisier."""
    rng = random.Random(seed)
    truth = [rng.randint(1, 5) for _ in range(n)]
    clip = lambda v: float(min(5, max(1, v)))  # noqa: E731
    a = [[clip(t + rng.choice([0, 0, 0, 1, -1])) for _ in range(k)] for t in truth]
    b = [[clip(t + rng.choice([0, 1, -1, 2, -2])) for _ in range(k)] for t in truth]
    human = [clip(t + rng.choice([0, 0, 1, -1])) for t in truth]
    return a, b, human


def _half_up(values):
    return [math.floor(v + 0.5) for v in values]


def _icc1(rows):
    """ICC(1,1) from the one-way ANOVA mean squares (Shrout & Fleiss 1979, Case 1)."""
    x = np.array(rows, dtype=float)
    n, k = x.shape
    means = x.mean(axis=1)
    bms = k * ((means - x.mean()) ** 2).sum() / (n - 1)
    wms = ((x - means[:, None]) ** 2).sum() / (n * (k - 1))
    return (bms - wms) / (bms + (k - 1) * wms)


@pytest.fixture()
def panel_report(tmp_path):
    a, b, human = _data()
    records = [_record(i, {LABELS[0]: a[i], LABELS[1]: b[i]}, human=human[i]) for i in range(len(a))]
    cfg = _config({"repeats": 3, "panel": _panel(), "human_labels": {"q": "human_q"}})
    report = analyze(cfg, _result(tmp_path, records))
    assert report is not None
    return report, a, b, human, records


def test_panel_with_repeats_and_humans_equals_direct_computations(panel_report):
    report, a, b, human, records = panel_report
    m = report.metrics()
    rows = a + b  # pooled: one row per (item, judge)
    flips = sum(1 for r in rows if len(set(r)) > 1) / len(rows)
    assert m[f"{S}/repeats"] == 3 and m[f"{S}/items"] == len(rows)
    assert m[f"{S}/flip_rate"] == pytest.approx(flips)
    assert m[f"{S}/repeat_spread"] == pytest.approx(float(np.mean([np.std(r, ddof=1) for r in rows])))
    assert m[f"{S}/icc"] == pytest.approx(_icc1(rows))
    assert m[f"{S}/icc/ci95_low"] < m[f"{S}/icc"] < m[f"{S}/icc/ci95_high"]
    assert m[f"{S}/judge/{LABELS[0]}/icc"] == pytest.approx(_icc1(a))
    assert m[f"{S}/judge/{LABELS[1]}/flip_rate"] == pytest.approx(sum(len(set(r)) > 1 for r in b) / len(b))

    # panel: the judges' per-item means (reducer mean) as raters
    ma, mb = [float(np.mean(r)) for r in a], [float(np.mean(r)) for r in b]
    ref_alpha = krippendorff.alpha(reliability_data=np.array([ma, mb]), level_of_measurement="ordinal")
    assert m[f"{S}/judges"] == 2
    assert m[f"{S}/alpha"] == pytest.approx(ref_alpha)
    assert m[f"{S}/alpha/ci95_low"] <= m[f"{S}/alpha"] <= m[f"{S}/alpha/ci95_high"]
    kappa = cohen_kappa_score(_half_up(ma), _half_up(mb), weights="quadratic")
    pair = f"{S}/kappa/{LABELS[0]}__{LABELS[1]}"
    assert m[pair] == pytest.approx(kappa)
    assert m[f"{pair}/ci95_low"] <= m[pair] <= m[f"{pair}/ci95_high"]
    assert m[f"{pair}/ci95_high"] - m[f"{pair}/ci95_low"] > 0  # a real interval, not the point twice
    assert m[f"{S}/judge/{LABELS[1]}/mean"] == pytest.approx(np.mean(mb))

    # humans against the headline (mean of the two judges' means, rounded half-up for κ / exact / ±1)
    head = [r.metrics["m"].scores["q"] for r in records]
    hk = cohen_kappa_score(_half_up(head), _half_up(human), weights="quadratic")
    assert m[f"{S}/human/n"] == len(human)
    assert m[f"{S}/human/kappa"] == pytest.approx(hk)
    assert m[f"{S}/human/kappa/ci95_low"] <= hk <= m[f"{S}/human/kappa/ci95_high"]
    assert m[f"{S}/human/spearman"] == pytest.approx(spearmanr(head, human).statistic)
    exact = np.mean([x == y for x, y in zip(_half_up(head), human, strict=True)])
    assert m[f"{S}/human/exact"] == pytest.approx(exact)
    w1 = np.mean([abs(x - y) <= 1 for x, y in zip(_half_up(head), human, strict=True)])
    assert m[f"{S}/human/within1"] == pytest.approx(w1)
    jk = cohen_kappa_score(_half_up(mb), _half_up(human), weights="quadratic")
    assert m[f"{S}/human/judge/{LABELS[1]}/kappa"] == pytest.approx(jk)
    # the confusion matrix counts every pair once, rows = judge
    h = report.scores[0].human
    assert h is not None and sum(map(sum, h.matrix)) == len(human)
    i, j = h.labels.index(_half_up(head)[0]), h.labels.index(human[0])
    assert h.matrix[i][j] >= 1


def test_keys_are_exactly_the_designed_ones(panel_report):
    report = panel_report[0]
    repeat = ["flip_rate", "repeat_spread", "icc", "icc/ci95_low", "icc/ci95_high", "items"]
    expected = {f"{S}/repeats", f"{S}/judges", f"{S}/alpha", f"{S}/alpha/ci95_low", f"{S}/alpha/ci95_high"}
    expected |= {f"{S}/{x}" for x in repeat}
    expected |= {f"{S}/judge/{j}/{x}" for j in LABELS for x in [*repeat, "mean"]}
    pair = f"{S}/kappa/{LABELS[0]}__{LABELS[1]}"
    expected |= {pair, f"{pair}/ci95_low", f"{pair}/ci95_high"}
    human = ["n", "kappa", "kappa/ci95_low", "kappa/ci95_high", "spearman", "exact", "within1"]
    expected |= {f"{S}/human/{x}" for x in human}
    expected |= {f"{S}/human/judge/{j}/{x}" for j in LABELS for x in ("kappa", "spearman", "exact")}
    assert set(report.metrics()) == expected
    assert all(math.isfinite(v) for v in report.metrics().values())
    # the string-check metric of the same task is no judge: nothing about it
    assert [s.metric for s in report.scores] == ["m"]


def test_report_json_round_trips_and_markdown_states_the_figures(panel_report, tmp_path):
    report = panel_report[0]
    text = report.to_json()
    back = ReliabilityReport.from_dict(json.loads(text))
    assert back == report and back.metrics() == report.metrics()
    md = report.markdown()
    sr = report.scores[0]
    assert f"{sr.alpha:.3g}" in md and f"{sr.repeat.icc:.3g}" in md and f"{sr.human.kappa:.3g}" in md
    assert "ordinal" in md and "reducer **mean**" in md and f"Items: {sr.items}" in md
    assert "Krippendorff" in md and "0.667" in md


def test_files_are_the_designed_artifacts_and_plots_are_png(panel_report, tmp_path):
    files = panel_report[0].files(tmp_path / "art")
    base = "nemo_judge/reliability"
    plots = {f"{base}/plots/t/m/q/{n}" for n in ("repeat_spread.png", "agreement.png", "human_confusion.png")}
    assert set(files) == {f"{base}/report.md", f"{base}/report.json", f"{base}/t/m/q/confusion.csv"} | plots
    for name in plots:
        assert files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = files[f"{base}/t/m/q/confusion.csv"].splitlines()
    h = panel_report[0].scores[0].human
    assert csv[0].split(",")[1:] == [f"{v:g}" for v in h.labels]
    assert sum(int(c) for line in csv[1:] for c in line.split(",")[1:]) == h.n
    assert ReliabilityReport.from_dict(json.loads(files[f"{base}/report.json"])) == panel_report[0]


def test_plain_run_gives_none(tmp_path):
    records = [_record(i, {LABELS[0]: [float(i % 5 + 1)]}) for i in range(5)]
    assert analyze(_config(), _result(tmp_path, records)) is None


def test_nan_judgments_are_excluded_and_counted(tmp_path):
    a = [[3.0, 3.0, NAN], [4.0, 5.0, 4.0], [NAN, NAN, NAN], [2.0, 2.0, 2.0], [1.0, 2.0, 1.0]]
    records = [_record(i, {LABELS[0]: a[i]}) for i in range(len(a))]
    report = analyze(_config({"repeats": 3}), _result(tmp_path, records))
    assert report is not None
    sr = report.scores[0]
    assert sr.judgments == 15 and sr.nan_judgments == 4
    m = report.metrics()
    # item 0 counts with its two finite repeats (no flip); item 2 has none; flips: items 1 and 4
    assert m[f"{S}/items"] == 4 and m[f"{S}/flip_rate"] == pytest.approx(2 / 4)
    assert m[f"{S}/icc"] == pytest.approx(_icc1([a[1], a[3], a[4]]))  # complete rows only
    assert not any(k.startswith(f"{S}/alpha") or "/judge/" in k for k in m)  # one judge: no panel keys
    assert "4 of 15 judgments were unparseable (NaN)" in report.markdown()


def test_human_labels_only_from_the_dataset_row_of_a_nemo_result(tmp_path):
    judge = [5.0, 4.0, 3.0, 2.0, 1.0, 4.0, 3.0, 5.0]
    cells = ["5", 4, "", 2, "n/a", 3, 3, None]
    records = [
        _record(i, {LABELS[0]: [v]}, item={"x": "…", "human_q": cells[i]}) for i, v in enumerate(judge)
    ]
    report = analyze(_config({"human_labels": {"q": "human_q"}}), _result(tmp_path, records, backend="nemo"))
    assert report is not None and report.backend == "nemo"
    m = report.metrics()
    keep = [0, 1, 3, 5, 6]
    x, y = [judge[i] for i in keep], [float(cells[i]) for i in keep]
    assert m[f"{S}/human/n"] == 5 and report.scores[0].human.missing == 3
    assert m[f"{S}/human/kappa"] == pytest.approx(cohen_kappa_score(x, y, weights="quadratic"))
    assert m[f"{S}/human/spearman"] == pytest.approx(spearmanr(x, y).statistic)
    assert set(m) <= {
        f"{S}/human/{k}"
        for k in ("n", "kappa", "kappa/ci95_low", "kappa/ci95_high", "spearman", "exact", "within1")
    }
    files = report.files(tmp_path / "art")
    # no panel: the agreement plot is the judge × human confusion heat map; no repeat plot
    assert "nemo_judge/reliability/plots/t/m/q/agreement.png" in files
    assert "nemo_judge/reliability/plots/t/m/q/repeat_spread.png" not in files
    assert "3 items have no usable human label" in report.markdown()


def test_judge_repeats_flag_without_a_block_is_analysed(tmp_path):
    """--judge-repeats runs repeats that no config declares: the records say so, and that counts."""
    records = [_record(i, {LABELS[0]: [1.0 + i % 3, 1.0 + (i + i % 2) % 3]}) for i in range(10)]
    report = analyze(_config(), _result(tmp_path, records))
    assert report is not None and report.scores[0].repeats == 2 and report.scores[0].declared_repeats == 1
    assert report.metrics()[f"{S}/repeats"] == 2


def test_interval_panel_has_alpha_but_no_kappa_keys(tmp_path):
    rng = random.Random(3)
    a = [rng.random() for _ in range(15)]
    b = [v + rng.gauss(0, 0.2) for v in a]
    records = [_record(i, {LABELS[0]: [a[i]], LABELS[1]: [b[i]]}) for i in range(15)]
    report = analyze(_config({"panel": _panel()}, score_type="float"), _result(tmp_path, records))
    assert report is not None
    m = report.metrics()
    ref = krippendorff.alpha(reliability_data=np.array([a, b]), level_of_measurement="interval")
    assert m[f"{S}/alpha"] == pytest.approx(ref)
    assert not any("/kappa" in k for k in m)
    sr = report.scores[0]
    assert sr.level == "interval" and sr.pairwise[f"{LABELS[0]}__{LABELS[1]}"] == pytest.approx(ref)
    assert "agreement.png" in "".join(report.files(tmp_path / "art"))


def test_low_alpha_is_warned_in_plain_words(tmp_path):
    rng = random.Random(5)
    records = [
        _record(i, {LABELS[0]: [float(rng.randint(1, 5))], LABELS[1]: [float(rng.randint(1, 5))]})
        for i in range(40)
    ]
    report = analyze(_config({"panel": _panel()}), _result(tmp_path, records))
    assert report is not None and report.scores[0].alpha is not None and report.scores[0].alpha < 0.667
    assert "the judges do not agree well enough to trust a single judge" in report.markdown()


def test_a_nemo_result_of_a_panel_config_says_what_did_not_run(tmp_path):
    """NeMo judges once with params.model: the declared repeats and panel are named as not run."""
    records = [
        _record(i, {LABELS[0]: [float(i % 5 + 1)]}, item={"x": "…", "human_q": i % 5 + 1}) for i in range(6)
    ]
    cfg = _config({"repeats": 3, "panel": _panel(), "human_labels": {"q": "human_q"}})
    report = analyze(cfg, _result(tmp_path, records, backend="nemo"))
    assert report is not None
    m = report.metrics()
    assert m[f"{S}/human/exact"] == 1.0 and not any("/repeats" in k or "/alpha" in k for k in m)
    assert "repeats and panels run on the local backend only" in report.markdown()


def test_intervals_are_the_fast_bootstraps_of_the_same_figures(panel_report):
    """α's and κ's intervals come from ``alpha_ci`` / ``kappa_ci`` (pattern counts, seed 0, 1000
    resamples) on exactly the data the point figures use."""
    from mlflow_nemo_judge.scoring.bootstrap import alpha_ci, kappa_ci

    report, a, b, human, records = panel_report
    m = report.metrics()
    ma, mb = [float(np.mean(r)) for r in a], [float(np.mean(r)) for r in b]
    assert (m[f"{S}/alpha/ci95_low"], m[f"{S}/alpha/ci95_high"]) == alpha_ci([ma, mb], "ordinal")
    head = [r.metrics["m"].scores["q"] for r in records]
    ci = kappa_ci(head, human, "quadratic")
    assert (m[f"{S}/human/kappa/ci95_low"], m[f"{S}/human/kappa/ci95_high"]) == ci
