"""Repeats, judge panels and human labels in the local engine (httpx.MockTransport), the records they
leave, and the nemo submission without the extension block."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.backends.nemo import NemoBackend
from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.engine import RunOptions, run_plan_async
from mlflow_nemo_judge.errors import ConfigError, EvaluationError, SecretError
from mlflow_nemo_judge.plan import build_plan
from mlflow_nemo_judge.results import NAN, Judgment, MetricOutcome, SampleRecord
from mlflow_nemo_judge.scoring.judgments import headline, reduce_values
from tests.fixtures.seed_config import seed_config

TASK = "consult_summary_eval"
KEY = f"{TASK}/completeness"
JUDGE_URL = "http://judge.test/v1/chat/completions"
PANEL_URL = "http://panel.test/v1/chat/completions"
TARGET_URL = "http://target.test/v1/chat/completions"
TARGET = {"type": "model", "model": {"api_endpoint": {"url": TARGET_URL, "model_id": "tgt", "api_key": "tk"}}}


def _chat(text: str) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }


def _rows(tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    p = tmp_path / "rows.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    return str(p)


def _config(tmp_path: Path, block: dict[str, Any] | None, n: int = 3, **row: Any) -> dict[str, Any]:
    rows = [{"ID": f"r{i}", "content": f"consult number {i}", **row} for i in range(n)]
    cfg = seed_config(files_url=_rows(tmp_path, rows), judge_url=JUDGE_URL, judge_model="mock/judge")
    del cfg["tasks"][TASK]["metrics"]["correctness"]  # one judge metric keeps the call counts plain
    if block is not None:
        cfg["mlflow_nemo_judge"] = block
    return cfg


class Judges:
    """A MockTransport handler: the target summarises; judge ``model`` answers ``RATING: <score>`` where
    the score comes from ``rate(model, seed, row number)``; every judge request body is kept."""

    def __init__(self, rate: Any = None, status: dict[str, int] | None = None) -> None:
        self.rate = rate or (lambda model, seed, n: 1 + ((seed or 0) + n) % 5)
        self.status = status or {}
        self.bodies: list[dict[str, Any]] = []
        self.auth: dict[str, str | None] = {}

    def __call__(self, req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        if str(req.url) == TARGET_URL:
            return httpx.Response(200, json=_chat("summary of " + body["messages"][-1]["content"]))
        self.bodies.append(body)
        self.auth[body["model"]] = req.headers.get("authorization")
        if body["model"] in self.status:
            return httpx.Response(self.status[body["model"]], json={"error": {"message": "no"}})
        n = int(re.search(r"consult number (\d+)", body["messages"][-1]["content"]).group(1))
        score = self.rate(body["model"], body.get("seed"), n)
        return httpx.Response(200, json=_chat("no rating here" if score is None else f"RATING: {score}"))


def _run(cfg: dict[str, Any], handler: Any, **kw: Any) -> Any:
    plan = build_plan(load_config(cfg), load_target(TARGET), judge_repeats=kw.pop("judge_repeats", None))

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await run_plan_async(plan, RunOptions(http_client=http, progress_bar=False, **kw))

    kw.setdefault("cache", False)
    return asyncio.run(go())


def _outcomes(res: Any) -> list[MetricOutcome]:
    return [s.metrics["completeness"] for s in res.iter_samples()]


# ---------------------------------------------------------------------------------------------- repeats


def test_k_repeats_make_k_calls_per_sample_with_distinct_seeds_and_keep_every_judgment(tmp_path):
    judges = Judges()
    cfg = _config(tmp_path, {"reliability": {"repeats": 3, "seed": 10, "temperature": 0.7}})
    res = _run(cfg, judges)
    assert len(judges.bodies) == 3 * 3  # 3 samples × 3 repeats × 1 judge
    per_row: dict[str, list[int]] = {}
    for b in judges.bodies:
        assert b["temperature"] == 0.7
        per_row.setdefault(b["messages"][-1]["content"], []).append(b["seed"])
    assert all(sorted(seeds) == [10, 11, 12] for seeds in per_row.values())
    for n, out in enumerate(_outcomes(res)):
        assert [(j.judge, j.repeat, j.seed, j.temperature) for j in out.judgments] == [
            ("mock_judge", r, 10 + r, 0.7) for r in range(3)
        ]
        ratings = [1 + (10 + r + n) % 5 for r in range(3)]
        assert [j.scores["completeness"] for j in out.judgments] == ratings
        assert out.scores["completeness"] == pytest.approx(sum(ratings) / 3)  # reducer: mean by default
        assert out.raw == out.judgments[0].raw and out.error is None
    line = json.loads((res.samples_path).read_text().splitlines()[0])
    assert len(line["metrics"]["completeness"]["judgments"]) == 3  # the spill file keeps every repeat


def test_judge_repeats_override_and_its_range(tmp_path):
    judges = Judges()
    cfg = _config(tmp_path, {"reliability": {"repeats": 5, "metrics": {KEY: {"repeats": 4}}}}, n=2)
    res = _run(cfg, judges, judge_repeats=2)
    assert len(judges.bodies) == 2 * 2
    assert sorted(b["seed"] for b in judges.bodies) == [0, 0, 1, 1]  # seed 0 by default with repeats
    assert all(len(o.judgments) == 2 for o in _outcomes(res))
    # The override alone turns repeats on, also for a config without the block.
    plan = build_plan(load_config(_config(tmp_path, None)), load_target(TARGET), judge_repeats=3)
    rp = plan.tasks[0].metrics[0].reliability
    assert rp is not None and rp.repeats == 3 and rp.multi and rp.seed_for(2) == 2
    for bad in (0, 101, True):
        with pytest.raises(ConfigError) as info:
            build_plan(load_config(cfg), load_target(TARGET), judge_repeats=bad)
        assert info.value.path == "--judge-repeats"


def test_one_judgment_is_todays_request_and_record(tmp_path):
    plain, with_block = Judges(), Judges()
    res_plain = _run(_config(tmp_path, None), plain)
    res_block = _run(_config(tmp_path, {"reliability": {"repeats": 1, "metrics": {KEY: {}}}}), with_block)
    assert plain.bodies == with_block.bodies and all("seed" not in b for b in plain.bodies)
    a, b = res_plain.samples_path.read_text(), res_block.samples_path.read_text()
    strip = re.compile(r'"timing": \[\d+, \d+\]|"timings": \{[^}]*\}')  # wall-clock times differ
    assert strip.sub("", a) == strip.sub("", b)
    assert '"judgments"' not in a and '"human"' not in a


def test_cache_does_not_collapse_repeats_and_serves_each_its_own_reply(tmp_path):
    judges = Judges()
    cfg = _config(tmp_path, {"reliability": {"repeats": 3}}, n=2)
    first = _run(cfg, judges, cache=True, cache_dir=tmp_path / "cache")
    assert len(judges.bodies) == 2 * 3  # three repeats are three calls, not one call served thrice
    again = Judges()
    second = _run(cfg, again, cache=True, cache_dir=tmp_path / "cache")
    assert again.bodies == [] and second.usage.cache_hits == 2 * 3 + 2  # judges + targets, all cached
    for a, b in zip(_outcomes(first), _outcomes(second), strict=True):
        assert [j.scores for j in a.judgments] == [j.scores for j in b.judgments]
        assert len({j.scores["completeness"] for j in a.judgments}) == 3  # repeats kept their own replies


# ------------------------------------------------------------------------------------------------ panels


def _panel_block(**metric: Any) -> dict[str, Any]:
    panel = [
        {"api_endpoint": {"url": JUDGE_URL, "model_id": "mock/judge", "api_key": "k1"}},
        {"api_endpoint": {"url": PANEL_URL, "model_id": "mock/judge-noisy", "api_key_env": "PANEL_KEY"}},
    ]
    return {"reliability": {"metrics": {KEY: {"panel": panel, **metric}}}}


def test_a_panel_calls_each_judge_with_its_own_key_and_reduces_across_judges(tmp_path, monkeypatch):
    monkeypatch.setenv("PANEL_KEY", "sk-panel")
    judges = Judges(rate=lambda model, seed, n: 2 if model == "mock/judge" else 5)
    res = _run(_config(tmp_path, _panel_block(repeats=2, reducer="median")), judges)
    models = [b["model"] for b in judges.bodies]
    assert models.count("mock/judge") == 3 * 2 and models.count("mock/judge-noisy") == 3 * 2
    assert judges.auth == {"mock/judge": "Bearer k1", "mock/judge-noisy": "Bearer sk-panel"}
    out = _outcomes(res)[0]
    assert [(j.judge, j.repeat) for j in out.judgments] == [
        ("mock_judge", 0),
        ("mock_judge", 1),
        ("mock_judge-noisy", 0),
        ("mock_judge-noisy", 1),
    ]
    assert out.scores["completeness"] == 3.5  # median of the judges' medians (2 and 5)
    plan = build_plan(load_config(_config(tmp_path, _panel_block())), load_target(TARGET))
    rp = plan.tasks[0].metrics[0].reliability
    assert rp is not None and rp.labels == ["mock_judge", "mock_judge-noisy"] and rp.panel
    assert rp.judges[1][1].api_key == "sk-panel" and rp.judges[1][1].endpoint.url == PANEL_URL


def test_a_panel_member_without_its_key_is_refused_at_its_path(tmp_path, monkeypatch):
    monkeypatch.delenv("PANEL_KEY", raising=False)
    with pytest.raises(SecretError) as info:
        build_plan(load_config(_config(tmp_path, _panel_block())), load_target(TARGET))
    assert info.value.path == f"mlflow_nemo_judge.reliability.metrics.{KEY}.panel[1].api_endpoint.api_key_env"
    # validate --no-secrets plans without reading keys
    build_plan(load_config(_config(tmp_path, _panel_block())), load_target(TARGET), resolve_secrets=False)


def test_an_unhealthy_panel_judge_stops_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PANEL_KEY", "sk-panel")
    judges = Judges(status={"mock/judge-noisy": 401})
    with pytest.raises(EvaluationError, match="evaluation stopped"):
        _run(_config(tmp_path, _panel_block()), judges)


def test_unparseable_judgments_are_excluded_from_the_headline(tmp_path):
    # repeat 1 (seed 1) never parses; row 1 has no parseable repeat at all
    def rate(model: str, seed: int, n: int) -> int | None:
        return None if seed == 1 or n == 1 else 4 - seed

    res = _run(_config(tmp_path, {"reliability": {"repeats": 3}}), Judges(rate=rate))
    ok, none, _ = _outcomes(res)
    assert math.isnan(ok.judgments[1].scores["completeness"])
    assert ok.scores["completeness"] == 3.0 and ok.error is None  # mean of 4 and 2
    assert math.isnan(none.scores["completeness"])
    assert none.error is not None and "mock_judge r1:" in none.error and "mock_judge r3:" in none.error
    stats = res.tasks[TASK]["completeness"]["completeness"].stats
    assert stats.count == 2 and stats.nan_count == 1  # the headline is what the aggregate counts


# ---------------------------------------------------------------------------------------------- reducers


def test_reducers():
    assert reduce_values([1, 2, 4, NAN], "mean") == pytest.approx(7 / 3)
    assert reduce_values([1, 2, 4, 10], "median") == 3.0  # even count: mean of the two middle values
    assert reduce_values([3, 3, 5, NAN], "majority") == 3.0
    assert reduce_values([3, 3, 4, 4, 5], "majority") == 3.5  # tied modes: their median
    assert reduce_values([1, 2, 3], "majority") == 2.0  # every value a mode
    for r in ("mean", "median", "majority"):
        assert math.isnan(reduce_values([NAN, NAN], r)) and math.isnan(reduce_values([], r))
    with pytest.raises(ValueError):
        reduce_values([1], "mode")


def test_headline_reduces_each_judge_then_the_judges():
    js = [
        Judgment("a", 0, {"s": 1.0}),
        Judgment("a", 1, {"s": 2.0}),
        Judgment("a", 2, {"s": 3.0}),
        Judgment("b", 0, {"s": 5.0}),
        Judgment("b", 1, {"s": NAN}, error="no match"),
    ]
    scores, err = headline(["s"], js, "mean")
    assert scores == {"s": pytest.approx((2.0 + 5.0) / 2)} and err is None  # not the pooled mean 2.75
    scores, err = headline(["s"], [Judgment("a", 0, {"s": NAN}, error="x"), Judgment("b", 0, {})], "mean")
    assert math.isnan(scores["s"]) and err == "a r1: x"


# ----------------------------------------------------------------------------------------- human labels


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("4", 4.0), (3, 3.0), (2.0, 2.0), ("", NAN), (None, NAN), ("good", NAN), (True, 1.0), ([1], NAN)],
)
def test_human_labels_are_read_from_the_row(tmp_path, cell, expected):
    block = {"reliability": {"metrics": {KEY: {"human_labels": {"completeness": "human_completeness"}}}}}
    cfg = _config(tmp_path, block, n=2, human_completeness=cell)
    # the second row is labelled 5 (a column that no row fills is bad input, refused by the data scan)
    rows = Path(cfg["tasks"][TASK]["dataset"]["files_url"])
    first, second = rows.read_text().splitlines()
    rows.write_text(first + "\n" + json.dumps({**json.loads(second), "human_completeness": 5}) + "\n")
    res = _run(cfg, Judges())
    out, labelled = _outcomes(res)
    got = out.human["completeness"]
    assert (math.isnan(got) and math.isnan(expected)) or got == expected
    assert labelled.human == {"completeness": 5.0}
    line = json.loads(res.samples_path.read_text().splitlines()[0])
    assert line["metrics"]["completeness"]["human"] == {"completeness": None if math.isnan(expected) else got}


def test_human_labels_survive_a_target_failure(tmp_path):
    block = {"reliability": {"metrics": {KEY: {"human_labels": {"completeness": "h"}}}}}
    cfg = _config(tmp_path, block, n=2, h=5)
    judges = Judges()

    def handler(req: httpx.Request) -> httpx.Response:
        if str(req.url) == TARGET_URL and "number 1" in req.content.decode():
            return httpx.Response(400, json={"error": {"message": "bad"}})
        return judges(req)

    outs = _outcomes(_run(cfg, handler))
    assert outs[1].error and outs[1].human == {"completeness": 5.0}


# ------------------------------------------------------------------------------------------------ records


def test_outcome_round_trip_and_old_lines():
    j = [
        Judgment("a", 0, {"s": 3.0}, raw="RATING: 3", timing=(1, 2), usage={"p": 1}, seed=0, temperature=0.5),
        Judgment("a", 1, {"s": NAN}, error="no match", seed=1),
    ]
    out = MetricOutcome(scores={"s": 3.0}, raw="RATING: 3", judgments=j, human={"s": NAN})
    d = json.loads(json.dumps(out.to_dict()))  # strict JSON: NaN became null
    assert d["judgments"][1]["scores"] == {"s": None} and d["human"] == {"s": None}
    back = MetricOutcome.from_dict(d)
    assert [x.to_dict() for x in back.judgments] == [x.to_dict() for x in j]
    assert math.isnan(back.human["s"]) and back.judgments[0].timing == (1, 2)
    single = MetricOutcome(scores={"s": 1.0}, judgments=[j[0]])
    assert "judgments" not in single.to_dict()  # one judgment is the outcome itself
    old = {"task": "t", "index": 0, "item_id": "0", "item": {}, "metrics": {"m": {"scores": {"s": 2}}}}
    rec = SampleRecord.from_dict(old)
    assert rec.metrics["m"].judgments == [] and rec.metrics["m"].human == {}
    assert rec.metrics["m"].to_dict() == {"scores": {"s": 2.0}, "raw": None, "error": None}


# ------------------------------------------------------------------------------------------ nemo backend


def test_the_nemo_submission_has_no_extension_block_and_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("PANEL_KEY", raising=False)  # the panel is not sent, so its key is not needed
    cfg = seed_config(files_url="hf://datasets/ns/data", judge_url=JUDGE_URL)
    plain = copy.deepcopy(cfg)
    block = _panel_block(repeats=2)
    block["reliability"]["metrics"][KEY]["panel"][0]["api_endpoint"]["api_key"] = "sk-secret-panel"
    cfg["mlflow_nemo_judge"] = block
    backend = NemoBackend("http://nemo.test", http=httpx.Client(transport=httpx.MockTransport(Judges())))
    config = load_config(cfg)
    with caplog.at_level(logging.WARNING, logger="mlflow_nemo_judge.backends.nemo.backend"):
        sent, _ = backend.submission(config, load_target(TARGET))
    assert "mlflow_nemo_judge" not in sent
    assert sent == backend.submission(load_config(plain), load_target(TARGET))[0]
    assert "mlflow_nemo_judge" in config.to_dict()  # the user's config keeps it
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert f"{KEY} x2" in text and "judge panels" in text and "sk-secret-panel" not in text
    assert "human-label agreement" in text
