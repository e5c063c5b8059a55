"""The registry gate: champion vs challenger on the same items, a verdict under a policy, the alias moved
only on GO, and the decision recorded as an MLflow run (mock targets and judge on loopback)."""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge.errors import ConfigError
from mlflow_nemo_judge.gate import cli as gate_cli
from mlflow_nemo_judge.gate import gate
from mlflow_nemo_judge.gate.decision import binom_two_sided, decide, paired_effect
from mlflow_nemo_judge.gate.policy import Policy, load_policy, resolve

COMPLETENESS = "consult_summary_eval/completeness/completeness"
CORRECTNESS = "consult_summary_eval/correctness/correctness"
STYLE = "consult_summary_eval/house_style/string-check"
LIMIT = 12  # >= the default min_items (10), small enough to keep each evaluation about a second


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _gate(seed_eval: dict[str, Any], uri: str, who: str, **kw: Any) -> Any:
    kw.setdefault("limit", LIMIT)
    return gate(
        kw.pop("config", seed_eval["config"]),
        seed_eval[who],
        model="summarizer",
        experiment="gate",
        tracking_uri=uri,
        progress_bar=False,
        **kw,
    )


def _holder(uri: str) -> Any:
    return _client(uri).get_model_version_by_alias("summarizer", "champion")


def _holder_version(uri: str) -> str:
    return str(_holder(uri).version)  # an int from some stores, a str from others


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlflow-nemo-judge")
    gate_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def _with_house_style(config: dict[str, Any]) -> dict[str, Any]:
    """The seed config plus a binary "house style" check: summaries must start with "Patient". The poor
    mock does, the faithful one never does: a guard rail the better summarizer regresses on."""
    cfg = copy.deepcopy(config)
    cfg["tasks"]["consult_summary_eval"]["metrics"]["house_style"] = {
        "type": "string-check",
        "params": {"check": ["{{ sample.output_text }}", "startswith", "Patient"]},
    }
    return cfg


# ------------------------------------------------------------------------------------- statistics


def _ratings(seed: int, n: int) -> tuple[list[float], list[float]]:
    """Judge-like 1-5 ratings, the challenger usually a little better."""
    rng = random.Random(seed)
    champ = [float(rng.randint(1, 5)) for _ in range(n)]
    chall = [float(min(5, c + rng.choice([0, 0, 1, 1, 2, -1]))) for c in champ]
    return champ, chall


def test_ordinal_ratings_use_wilcoxon_and_a_bootstrap_interval():
    from scipy import stats

    champ, chall = _ratings(7, 40)
    pe = paired_effect(champ, chall, 0.95)
    assert pe.test == "Wilcoxon signed-rank (Pratt, exact), bootstrap CI"
    assert pe.n == 40 and pe.effect == pytest.approx((sum(chall) - sum(champ)) / 40)
    assert pe.ci_low < pe.effect < pe.ci_high
    # Pratt's statistic, exact conditional on the tied ranks: close to scipy's tie-corrected normal p
    ref = stats.wilcoxon(chall, champ, zero_method="pratt", method="asymptotic", correction=True)
    assert pe.p_value == pytest.approx(ref.pvalue, rel=0.2)
    narrow = paired_effect(champ, chall, 0.9)
    assert pe.ci_low < narrow.ci_low and narrow.ci_high < pe.ci_high  # at the policy's confidence


def test_continuous_scores_use_the_paired_t_at_30_pairs():
    from scipy import stats

    rng = random.Random(11)
    champ = [rng.random() for _ in range(40)]
    chall = [min(1.0, c + rng.gauss(0.05, 0.1)) for c in champ]
    diffs = [b - a for a, b in zip(champ, chall, strict=True)]
    for conf in (0.9, 0.95, 0.99):
        pe = paired_effect(champ, chall, conf)
        ref = stats.ttest_rel(chall, champ)
        lo, hi = stats.t.interval(conf, len(diffs) - 1, loc=sum(diffs) / 40, scale=stats.sem(diffs))
        assert pe.test == "paired t-test"
        assert pe.p_value == pytest.approx(ref.pvalue, rel=1e-6)
        assert (pe.ci_low, pe.ci_high) == (pytest.approx(lo, rel=1e-7), pytest.approx(hi, rel=1e-7))
    few = paired_effect(champ[:12], chall[:12], 0.95)  # below 30 pairs: a sign-flip permutation test
    assert few.test.startswith("sign-flip permutation (exact)")


def test_gate_and_compare_report_the_same_test_effect_and_interval():
    """``compare`` (``paired_test(a, b)``: b - a at 95 %) and the gate answer alike on the same runs."""
    from mlflow_nemo_judge.scoring.paired_tests import paired_test

    champ, chall = _ratings(3, 24)
    pol = resolve(
        Policy(primary="a", scores={"a": {}, "b": {"direction": "lower", "margin": 1}}), ["t/m/a", "t/m/b"]
    )
    d = decide(
        pol,
        {"t/m/a": _values(champ), "t/m/b": _values(champ)},
        {"t/m/a": _values(chall), "t/m/b": _values(chall)},
    )
    higher, lower = d.scores
    ref = paired_test(champ, chall)  # what compare reports for run a = champion, run b = challenger
    assert ref.kind == "ordinal" and ref.test.startswith("Wilcoxon")
    got = (higher.test, higher.effect, higher.ci_low, higher.ci_high, higher.p_value, higher.n)
    assert got == (ref.test, ref.mean_diff, ref.ci95_low, ref.ci95_high, ref.p_value, ref.n)
    # a lower-is-better score: the effect is champion - challenger, i.e. compare with the runs swapped
    swapped = paired_test(chall, champ)
    got = (lower.test, lower.effect, lower.ci_low, lower.ci_high, lower.p_value)
    assert got == (swapped.test, swapped.mean_diff, swapped.ci95_low, swapped.ci95_high, swapped.p_value)
    assert lower.effect == pytest.approx(-higher.effect)
    # at the policy's confidence, not compare's fixed 95 %
    pol90 = resolve(Policy(primary="a", scores={"a": {}}, confidence=0.9), ["t/m/a"])
    f90 = decide(pol90, {"t/m/a": _values(champ)}, {"t/m/a": _values(chall)}).scores[0]
    ref90 = paired_test(champ, chall, confidence=0.9)
    assert (f90.ci_low, f90.ci_high) == (ref90.ci95_low, ref90.ci95_high) != (ref.ci95_low, ref.ci95_high)


def test_binary_scores_use_exact_mcnemar_and_agresti_min():
    from scipy import stats

    # 2x2 table of (champion, challenger): 9 improvements, 3 regressions, 18 ties.
    pairs = [(0, 1)] * 9 + [(1, 0)] * 3 + [(1, 1)] * 10 + [(0, 0)] * 8
    pe = paired_effect([float(a) for a, _ in pairs], [float(b) for _, b in pairs], 0.95)
    assert pe.test == "exact McNemar, Agresti-Min interval"
    assert pe.p_value == pytest.approx(stats.binomtest(3, 12, 0.5).pvalue, rel=1e-12)
    n, b, c = 30 + 2, 9.5, 3.5
    z = stats.norm.ppf(0.975)
    centre = (b - c) / n
    half = z * math.sqrt((b + c) - (b - c) ** 2 / n) / n
    assert pe.effect == pytest.approx(6 / 30)
    assert (pe.ci_low, pe.ci_high) == (pytest.approx(centre - half), pytest.approx(centre + half))
    # lower is better on a 0/1 score: the same table read the other way round
    low = paired_effect([float(a) for a, _ in pairs], [float(b) for _, b in pairs], 0.95, "lower")
    assert low.effect == pytest.approx(-6 / 30) and low.p_value == pe.p_value
    assert (low.ci_low, low.ci_high) == (pytest.approx(-pe.ci_high), pytest.approx(-pe.ci_low))


def test_degenerate_differences_never_give_p_zero():
    ones = [1.0] * 12
    same = paired_effect(ones, [3.0] * 12, 0.95)
    assert same.p_value == pytest.approx(2 * 0.5**12) and same.p_value > 0
    assert (same.ci_low, same.ci_high) == (2.0, 2.0) and "sign" in same.test
    assert paired_effect([2.0] * 12, [3.0] * 12, 0.95, "lower").effect == -1.0
    zero = paired_effect([3.0] * 12, [3.0] * 12, 0.95)
    assert zero.p_value == 1.0 and (zero.effect, zero.ci_low, zero.ci_high) == (0.0, 0.0, 0.0)
    assert paired_effect(ones, ones, 0.95).p_value == 1.0  # binary: no discordant pair
    assert binom_two_sided(0, 0) == 1.0


def _values(xs: list[float]) -> dict[tuple[str, str, int], float]:
    return {("t", f"i{i}", 0): x for i, x in enumerate(xs)}


def test_decision_rules_direction_margins_and_budgets():
    keys = ["t/m/a", "t/m/b"]
    pol = resolve(
        Policy(primary="a", scores={"a": {"direction": "lower", "min_effect": 0.5}, "b": {"margin": 0.2}}),
        keys,
    )
    base = [3.0, 2.0, 4.0, 3.0, 2.0, 3.0, 4.0, 2.0, 3.0, 3.0, 2.0, 4.0]
    lower = [x - 1 for x in base]  # a: lower is better, one point better everywhere
    champ = {"t/m/a": _values(base), "t/m/b": _values(base)}
    go = decide(pol, champ, {"t/m/a": _values(lower), "t/m/b": _values(base)})
    assert go.verdict == "GO" and go.scores[0].effect == pytest.approx(1.0)
    # higher on a lower-is-better score: a clear loss
    loss = decide(pol, champ, {"t/m/a": _values([x + 1 for x in base]), "t/m/b": _values(base)})
    assert loss.verdict == "NO-GO" and "not better" in loss.reasons[0]
    # better, but not by min_effect: confidently below 0.5
    small = decide(pol, champ, {"t/m/a": _values([x - 0.1 for x in base]), "t/m/b": _values(base)})
    assert small.verdict == "NO-GO"
    # wide noise around zero on a: neither shown nor refuted (a narrow one would be NO-GO: < min_effect)
    noisy = [x + d for x, d in zip(base, [2.0, -2.0] * 6, strict=True)]
    unsure = decide(pol, champ, {"t/m/a": _values(noisy), "t/m/b": _values(base)})
    assert unsure.verdict == "INCONCLUSIVE"
    # a large mean gain (1 >= min_effect) that the interval does not separate from 0 is not GO
    lucky = [x - 1 + d for x, d in zip(base, [4.0, -4.0] * 6, strict=True)]
    unshown = decide(pol, champ, {"t/m/a": _values(lucky), "t/m/b": _values(base)})
    assert unshown.scores[0].effect == pytest.approx(1.0) and unshown.verdict == "INCONCLUSIVE"
    # the champion's NaN share over budget: the baseline cannot be measured
    holes = {"t/m/a": _values([math.nan] * 3 + base[3:]), "t/m/b": _values(base)}
    assert decide(pol, holes, {"t/m/a": _values(lower), "t/m/b": _values(base)}).verdict == "INCONCLUSIVE"
    # the challenger's: NO-GO whatever else it wins
    nan_chall = {"t/m/a": _values([math.nan] * 3 + lower[3:]), "t/m/b": _values(base)}
    bad = decide(pol, champ, nan_chall)
    assert bad.verdict == "NO-GO" and "NaN share 25.0%" in bad.reasons[0]


def test_policy_errors_are_one_line_and_name_the_file(tmp_path):
    keys = [COMPLETENESS, CORRECTNESS]
    cases = {
        "confidence: 1.5\n": "confidence",
        "scores:\n  completeness: {direction: up}\n": "scores.completeness.direction",
        "primary: completeness\nscores:\n  completeness: {margin: 0.1}\n": "takes min_effect",
        "scores:\n  helpfulness: {}\n": "'helpfulness' is not a score of the config",
        "min_itemz: 3\n": "min_itemz",
    }
    for i, (text, expected) in enumerate(cases.items()):
        path = tmp_path / f"p{i}.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            resolve(*load_policy(path)[:1], keys, load_policy(path)[1])
        msg = str(err.value)
        assert str(path) in msg and expected in msg and "\n" not in msg, msg
        assert err.value.exit_code == 2


# --------------------------------------------------------------------------------- end to end


@pytest.mark.timeout(120)
def test_clear_win_goes_moves_the_alias_and_reads_back(seed_eval, mlflow_uri, judge_cache):
    first = _gate(seed_eval, mlflow_uri, "poor")  # no champion yet: judged alone, becomes the first
    assert first.verdict == "GO" and first.promoted and first.champion is None
    poor_version = _holder_version(mlflow_uri)

    gd = _gate(seed_eval, mlflow_uri, "faithful", policy={"scores": {"completeness": {"min_effect": 1}}})
    assert gd.verdict == "GO" and gd.exit_code == 0 and gd.promoted
    holder = _holder(mlflow_uri)
    assert str(holder.version) == gd.challenger.version != poor_version
    assert gd.champion is not None and gd.champion.version == poor_version

    cl = _client(mlflow_uri)
    run = cl.get_run(gd.decision_run_id)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    assert tags["nemo_judge.gate.verdict"] == "GO" and tags["nemo_judge.gate.promoted"] == "true"
    assert tags["nemo_judge.gate.challenger_run"] == gd.challenger.run_id
    assert tags["nemo_judge.gate.champion_run"] == gd.champion.run_id
    assert params[f"gate/{COMPLETENESS}/min_effect"] == "1" and params["gate.primary"] == COMPLETENESS
    assert metrics[f"gate/{COMPLETENESS}/effect"] > 1 and metrics["gate/shared_items"] == LIMIT
    assert metrics[f"gate/{COMPLETENESS}/p_value"] > 0
    doc = json.loads(
        Path(cl.download_artifacts(run.info.run_id, "nemo_judge/gate/decision.json")).read_text()
    )
    assert doc["decision"]["verdict"] == "GO" and doc["policy"]["scores"]["completeness"]["min_effect"] == 1
    assert holder.tags["nemo_judge.gate.verdict"] == "GO"
    assert cl.get_model_version("summarizer", poor_version).tags["nemo_judge.gate.last_challenge"] == "GO"
    # the decision run is no evaluation: leaderboards do not list it
    from mlflow_nemo_judge.compare import leaderboard

    assert gd.decision_run_id not in set(leaderboard("gate", tracking_uri=mlflow_uri)["run_id"])


@pytest.mark.timeout(120)
def test_clear_loss_is_no_go_on_the_command_line(seed_eval, mlflow_uri, judge_cache, tmp_path, capsys):
    _gate(seed_eval, mlflow_uri, "faithful")
    champion = _holder_version(mlflow_uri)
    config, target = tmp_path / "config.json", tmp_path / "poor.json"
    config.write_text(json.dumps(seed_eval["config"]))
    target.write_text(json.dumps(seed_eval["poor"]))
    common = ["--model", "summarizer", "--experiment", "gate", "--tracking-uri", mlflow_uri]
    common += ["--limit", str(LIMIT), "--no-progress"]
    args = _parse(["gate", str(config), "--challenger", str(target), *common])
    assert gate_cli.command(args) == 1
    out = capsys.readouterr().out
    assert "verdict: NO-GO" in out and COMPLETENESS in out and "decision run:" in out
    assert _holder_version(mlflow_uri) == champion
    assert len(_client(mlflow_uri).search_model_versions("name='summarizer'")) == 1  # never registered
    # the finished challenger run itself, by id (its config checked against CONFIG), as JSON
    runs = _client(mlflow_uri).search_runs(
        [_client(mlflow_uri).get_experiment_by_name("gate").experiment_id],
        "tags.`nemo_judge.target` = 'mock/poor-summarizer'",
    )
    args = _parse(["gate", str(config), "--challenger", runs[0].info.run_id, "--output", "json", *common])
    assert gate_cli.command(args) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["verdict"] == "NO-GO" and payload["challenger"]["run_id"] == runs[0].info.run_id


@pytest.mark.timeout(120)
def test_main_score_win_with_guard_rail_regression_is_no_go(seed_eval, mlflow_uri, judge_cache):
    cfg = _with_house_style(seed_eval["config"])
    _gate(seed_eval, mlflow_uri, "poor", config=cfg)
    champion = _holder_version(mlflow_uri)
    policy = {"primary": "completeness", "scores": {"completeness": {}, "house_style": {"margin": 0.1}}}
    gd = _gate(seed_eval, mlflow_uri, "faithful", config=cfg, policy=policy)
    assert gd.verdict == "NO-GO" and gd.exit_code == 1 and not gd.promoted
    primary, style = gd.decision.scores
    assert primary.key == COMPLETENESS and primary.outcome == "GO" and primary.effect > 0
    assert style.key == STYLE and style.outcome == "NO-GO" and "exact McNemar" in style.test
    assert style.ci_high is not None and style.ci_high < -0.1
    assert any("house_style" in r and "regressed" in r for r in gd.decision.reasons)
    assert _holder_version(mlflow_uri) == champion


@pytest.mark.timeout(120)
def test_too_few_shared_items_is_inconclusive(seed_eval, mlflow_uri, judge_cache):
    _gate(seed_eval, mlflow_uri, "poor", limit=4, policy={"min_items": 3})
    champion = _holder_version(mlflow_uri)
    gd = _gate(seed_eval, mlflow_uri, "faithful", limit=4)  # default min_items 10
    assert gd.verdict == "INCONCLUSIVE" and gd.exit_code == 3
    assert "only 4 shared items" in gd.decision.reasons[0]
    assert _holder_version(mlflow_uri) == champion
    tags = _client(mlflow_uri).get_run(gd.decision_run_id).data.tags
    assert tags["nemo_judge.gate.verdict"] == "INCONCLUSIVE"


@pytest.mark.timeout(120)
def test_challenger_nan_over_budget_is_no_go(seed_eval, mlflow_uri, judge_cache):
    from mlflow_nemo_judge.testing.mock_llm.faults import FaultConfig

    _gate(seed_eval, mlflow_uri, "poor")
    champion = _holder_version(mlflow_uri)
    # The faithful summarizer now answers some requests with empty content: those items are never judged.
    seed_eval["server"].set_faults(FaultConfig(empty_content=0.4, only_models=["mock/faithful-summarizer"]))
    gd = _gate(seed_eval, mlflow_uri, "faithful", policy={"nan_budget": 0.05})
    assert gd.verdict == "NO-GO"
    share = gd.decision.scores[0].nan_share_challenger
    assert 0.05 < share < 1 and gd.decision.scores[0].nan_share_champion == 0
    assert all("challenger NaN share" in r for r in gd.decision.reasons)
    assert _holder_version(mlflow_uri) == champion


@pytest.mark.timeout(180)
def test_evaluate_alias_follows_the_policy(seed_eval, mlflow_uri, judge_cache):
    from mlflow_nemo_judge import evaluate

    def run(targets: list[str]) -> Any:
        return evaluate(
            seed_eval["config"],
            [seed_eval[t] for t in targets],
            experiment="reg",
            tracking_uri=mlflow_uri,
            limit=LIMIT,
            register_model="summarizer",
            alias="champion",
            progress_bar=False,
        )

    run(["poor"])  # no champion: the alias goes to the best primary score, here the only target
    poor_version = _holder_version(mlflow_uri)
    ev = run(["poor", "faithful"])  # faithful is gated against the poor champion: GO
    faithful_model = _client(mlflow_uri).get_run(ev.run_ids[1]).data.tags["nemo_judge.logged_model_id"]
    holder = _holder(mlflow_uri)
    assert str(holder.version) != poor_version and holder.source == f"models:/{faithful_model}"
    # a rerun gates poor against the faithful champion: NO-GO, the alias stays
    run(["poor", "faithful"])
    assert _holder_version(mlflow_uri) == str(holder.version)
    cl = _client(mlflow_uri)
    exp = cl.get_experiment_by_name("reg").experiment_id
    verdicts = [
        r.data.tags["nemo_judge.gate.verdict"]
        for r in cl.search_runs([exp], "tags.`nemo_judge.role` = 'gate'")
    ]
    assert sorted(verdicts) == ["GO", "NO-GO"]


def test_bad_policy_is_refused_before_any_run(seed_eval, mlflow_uri, tmp_path):
    config, target, policy = tmp_path / "c.json", tmp_path / "t.json", tmp_path / "policy.yaml"
    config.write_text(json.dumps(seed_eval["config"]))
    target.write_text(json.dumps(seed_eval["faithful"]))
    policy.write_text("primary: helpfulness\n")
    args = _parse(
        [
            "gate",
            str(config),
            "--challenger",
            str(target),
            "--model",
            "m",
            "--policy",
            str(policy),
            "--tracking-uri",
            mlflow_uri,
            "--experiment",
            "never",
        ]
    )
    with pytest.raises(ConfigError) as err:
        gate_cli.command(args)
    assert str(policy) in str(err.value) and "primary" in str(err.value)
    assert seed_eval["server"].request_count == 0
    assert _client(mlflow_uri).get_experiment_by_name("never") is None
