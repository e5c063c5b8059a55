"""Position-swapped pairwise judging (``reliability.pairwise``) against rule-following judges served by
``httpx.MockTransport``: what is sent (both orders, the row's fields), how verdicts become outcomes,
the counts, win rates, position inconsistency, Bradley–Terry order, and the report's files."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.config import load_config
from mlflow_nemo_judge.errors import EvaluationError
from mlflow_nemo_judge.reliability.pairwise import judge_pairwise, pairwise_specs, parse_verdict
from mlflow_nemo_judge.reliability.pairwise_report import PairwiseReport
from mlflow_nemo_judge.results import EvalResult, MetricOutcome, SampleRecord
from tests.fixtures.seed_config import seed_config

PW_URL = "http://pairwise.test/v1/chat/completions"
PW_KEY = "sk-pairwise-secret-0123456789"
TASK = "consult_summary_eval"
pytestmark = pytest.mark.timeout(60)


def _config(**block: Any) -> Any:
    cfg = seed_config(files_url="rows.jsonl", judge_url="http://judge.test/v1/chat/completions")
    pw = {
        "model": {"api_endpoint": {"url": PW_URL, "model_id": "mock/judge-pairwise", "api_key": PW_KEY}},
        "template": {
            "messages": [
                {"role": "system", "content": "Which summary is better? Answer WINNER: A, B or TIE"},
                {
                    "role": "user",
                    "content": "Consult: {{ item.content }}\n\nA: {{ output_a }}\n\nB: {{ output_b }}",
                },
            ]
        },
        "parser": {"type": "regex", "pattern": r"WINNER:\s*(\w+)"},
        **block,
    }
    cfg["mlflow_nemo_judge"] = {"pairwise": {TASK: pw}}
    return load_config(cfg)


def _result(
    tmp: Path, name: str, outputs: Sequence[str | None], ids: Sequence[str] | None = None
) -> EvalResult:
    """A finished result whose spill file holds one record per output (None: the target failed)."""
    path = tmp / f"{name}.jsonl"
    ids = ids or [f"r{i}" for i in range(len(outputs))]
    with open(path, "w", encoding="utf-8") as fh:
        for i, (item_id, out) in enumerate(zip(ids, outputs, strict=True)):
            rec = SampleRecord(
                task=TASK,
                index=i,
                item_id=item_id,
                item={"ID": item_id, "content": f"consult {item_id}"},
                output_text=out,
                target_error=None if out is not None else "the target returned no content",
                metrics={"completeness": MetricOutcome(scores={"completeness": 3.0})},
            )
            fh.write(json.dumps(rec.to_dict()) + "\n")
    return EvalResult(tasks={}, samples_path=path)


def _reply(text: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ]
        },
    )


def _parts(body: dict[str, Any]) -> tuple[str, str, str]:
    """(consult, output A, output B) of a pairwise request."""
    m = re.fullmatch(r"Consult: (.*)\n\nA: (.*)\n\nB: (.*)", body["messages"][1]["content"], re.S)
    assert m is not None
    return m.group(1), m.group(2), m.group(3)


def _judge(
    rule: Callable[[str, str, str], str | httpx.Response], seen: list[dict[str, Any]]
) -> httpx.MockTransport:
    def handler(req: httpx.Request) -> httpx.Response:
        assert str(req.url) == PW_URL and req.headers["authorization"] == f"Bearer {PW_KEY}"
        body = json.loads(req.content)
        seen.append(body)
        verdict = rule(*_parts(body))
        return verdict if isinstance(verdict, httpx.Response) else _reply(verdict)

    return httpx.MockTransport(handler)


def _run(cfg: Any, results: list[EvalResult], labels: list[str], transport: Any, **kw: Any) -> PairwiseReport:
    report = asyncio.run(
        judge_pairwise(
            cfg,
            results,
            labels,
            http_client=transport,
            use_cache=False,
            backoff_base=0.0,
            backoff_max=0.0,
            bootstrap_reps=200,
            **kw,
        )
    )
    assert report is not None
    return report


def test_a_judge_that_always_prefers_position_a_ties_everything_and_is_fully_inconsistent(tmp_path):
    seen: list[dict[str, Any]] = []
    outs_x = [f"x says {i}" for i in range(6)]
    outs_y = [f"y says {i} at length" for i in range(6)]
    res = [_result(tmp_path, "x", outs_x), _result(tmp_path, "y", outs_y)]
    report = _run(_config(), res, ["x", "y"], _judge(lambda c, a, b: "WINNER: A", seen))

    (task,) = report.tasks
    (pair,) = task.pairs
    assert (pair.wins, pair.ties, pair.losses, pair.unjudged) == (0, 6, 0, 0)
    assert pair.position_inconsistency == 1.0 and pair.win_rate == 0.5
    # Both orders of every item were sent, with the row's fields in the prompt.
    assert len(seen) == 12
    sent = {(_parts(b)[1], _parts(b)[2]) for b in seen}
    assert sent == {(x, y) for x, y in zip(outs_x, outs_y, strict=True)} | {
        (y, x) for x, y in zip(outs_x, outs_y, strict=True)
    }
    assert {_parts(b)[0] for b in seen} == {f"consult r{i}" for i in range(6)}
    assert all(b["model"] == "mock/judge-pairwise" for b in seen)
    m = report.metrics()
    assert m["pairwise/consult_summary_eval/x_vs_y/position_inconsistency"] == 1.0
    assert m["pairwise/consult_summary_eval/x_vs_y/ties"] == 6.0
    assert "Warning" in report.markdown() and "position inconsistency reaches 100 %" in report.markdown()


def test_a_judge_that_prefers_the_longer_output_gives_consistent_wins_and_the_bradley_terry_order(tmp_path):
    n = 8
    outs = {
        "short": [f"s{i}" for i in range(n)],
        "mid": [f"medium {i}" for i in range(n)],
        "long": [f"the longest answer {i}" for i in range(n)],
    }
    # Different item orders across results: alignment is on the item id, not the position.
    ids = [f"r{i}" for i in range(n)]
    res = [
        _result(tmp_path, "short", outs["short"], ids),
        _result(tmp_path, "mid", outs["mid"][::-1], ids[::-1]),
        _result(tmp_path, "long", outs["long"], ids),
    ]

    def longer(c: str, a: str, b: str) -> str:
        return "WINNER: A" if len(a) > len(b) else "WINNER: B" if len(b) > len(a) else "WINNER: TIE"

    seen: list[dict[str, Any]] = []
    report = _run(_config(), res, ["short", "mid", "long"], _judge(longer, seen))
    (task,) = report.tasks
    by = {(p.a, p.b): p for p in task.pairs}
    assert list(by) == [("short", "mid"), ("short", "long"), ("mid", "long")]
    for p in task.pairs:
        assert (p.wins, p.ties, p.losses, p.unjudged, p.inconsistent) == (0, 0, n, 0, 0)
        assert p.win_rate == 0.0 and p.position_inconsistency == 0.0
        assert p.ci95_low == 0.0 and 0.0 < p.ci95_high < 0.5  # Wilson at 0/8
    # The same item was compared: consult i always came with outputs of item i.
    for b in seen:
        consult, a, bb = _parts(b)
        assert consult.endswith(a.split()[-1].lstrip("s")) and consult.endswith(bb.split()[-1].lstrip("s"))
    assert task.ranks == [3, 2, 1]
    assert sum(s for s in task.strengths if s is not None) == pytest.approx(1.0)
    assert task.strengths[2] > task.strengths[1] > task.strengths[0]
    for s, ci in zip(task.strengths, task.strength_ci, strict=True):
        assert ci is not None and ci[0] <= s <= ci[1]
    m = report.metrics()
    assert m["pairwise/consult_summary_eval/mid_vs_long/win_rate"] == 0.0
    assert m["pairwise/consult_summary_eval/mid_vs_long/losses"] == n
    assert m["pairwise/consult_summary_eval/rank/long"] == 1.0
    assert {k.rsplit("/", 1)[0] for k in m if "/strength/" in k and k.endswith("ci95_low")} == {
        f"pairwise/consult_summary_eval/strength/{x}" for x in ("short", "mid", "long")
    }
    matrix = task.win_matrix()
    assert matrix[2][0] == 1.0 and matrix[0][2] == 0.0 and matrix[1][1] is None


def test_unparsed_verdicts_and_failed_calls_are_unjudged_with_their_reasons(tmp_path):
    res = [
        _result(tmp_path, "x", [f"x{i}" for i in range(6)]),
        _result(tmp_path, "y", [f"yy{i}" for i in range(6)]),
    ]

    def rule(c: str, a: str, b: str) -> str | httpx.Response:
        item = int(c[-1])
        if item == 0:
            return "I cannot decide."  # no match
        if item == 1:
            return "WINNER: C"  # not a verdict (C is not a tie value here)
        if item == 2:
            return httpx.Response(400, json={"error": {"message": "prompt too long"}})
        return "WINNER: B" if a.startswith("x") else "WINNER: A"  # y wins, consistently

    report = _run(_config(), res, ["x", "y"], _judge(rule, []))
    (pair,) = report.tasks[0].pairs
    assert (pair.wins, pair.ties, pair.losses, pair.unjudged) == (0, 0, 3, 3)
    assert pair.win_rate == 0.0 and pair.position_inconsistency == 0.0
    reasons = " | ".join(pair.reasons)
    assert "no match for pattern" in reasons and "'C' is none of A, B, TIE" in reasons
    assert "judge call failed" in reasons and "400" in reasons
    assert report.metrics()["pairwise/consult_summary_eval/x_vs_y/unjudged"] == 3.0

    # With C declared a tie value, item 1 becomes a tie.
    report = _run(_config(tie_values=["TIE", "c"]), res, ["x", "y"], _judge(rule, []))
    (pair,) = report.tasks[0].pairs
    assert (pair.ties, pair.losses, pair.unjudged) == (1, 3, 2)


def test_items_without_output_on_either_side_are_not_judged(tmp_path):
    res = [
        _result(tmp_path, "x", ["x0", None, "x2", "  ", "x4"]),
        _result(tmp_path, "y", ["y0", "y1", None, "y3", "y4"]),
    ]
    seen: list[dict[str, Any]] = []
    report = _run(_config(), res, ["x", "y"], _judge(lambda c, a, b: "WINNER: TIE", seen))
    (pair,) = report.tasks[0].pairs
    assert pair.judged == 2 and pair.unjudged == 0 and pair.ties == 2 and pair.inconsistent == 0
    assert {_parts(b)[0] for b in seen} == {"consult r0", "consult r4"}


def test_an_endpoint_that_refuses_us_stops_the_stage(tmp_path):
    # More items than the in-flight window (4 x parallelism 1): the failure must surface, not hang.
    res = [_result(tmp_path, "x", ["a"] * 30), _result(tmp_path, "y", ["b"] * 30)]
    seen: list[dict[str, Any]] = []
    refuse = _judge(lambda c, a, b: httpx.Response(401, json={"error": "bad key"}), seen)
    with pytest.raises(EvaluationError, match="pairwise judging stopped.*401"):
        _run(_config(), res, ["x", "y"], refuse, parallelism=1)
    assert len(seen) < 10  # stopped at once, not after every item


def test_a_rerun_is_served_from_the_response_cache(tmp_path):
    res = [_result(tmp_path, "x", ["a1", "a2"]), _result(tmp_path, "y", ["bb1", "bb2"])]
    seen: list[dict[str, Any]] = []
    judge = _judge(lambda c, a, b: "WINNER: A" if len(a) > len(b) else "WINNER: B", seen)
    cache = tmp_path / "cache"
    first = asyncio.run(judge_pairwise(_config(), res, ["x", "y"], http_client=judge, cache_dir=cache))
    second = asyncio.run(judge_pairwise(_config(), res, ["x", "y"], http_client=judge, cache_dir=cache))
    assert first is not None and second is not None
    assert len(seen) == 4 and first.calls == second.calls == 4
    assert first.metrics() == second.metrics()


def test_no_pairwise_block_means_no_report(tmp_path):
    cfg = load_config(seed_config(files_url="rows.jsonl"))
    res = [_result(tmp_path, "x", ["a"]), _result(tmp_path, "y", ["b"])]
    assert asyncio.run(judge_pairwise(cfg, res, ["x", "y"], use_cache=False)) is None


def test_report_round_trips_and_its_files_hold_no_secret(tmp_path):
    res = [
        _result(tmp_path, "x", [f"x{i}" for i in range(5)]),
        _result(tmp_path, "y", [f"yyy{i}" for i in range(5)]),
    ]

    def echo(c: str, a: str, b: str) -> str | httpx.Response:
        if c.endswith("r0"):  # an error body that quotes the key back
            return httpx.Response(400, json={"error": {"message": f"key {PW_KEY} not allowed for this"}})
        if c.endswith("r1"):
            return f"I was called with {PW_KEY}. WINNER: A"  # a judge text that quotes it
        return "WINNER: B" if len(b) > len(a) else "WINNER: A"

    report = _run(_config(), res, ["x", "y"], _judge(echo, []))
    files = report.files(tmp_path / "art")
    assert set(files) == {
        "nemo_judge/pairwise/report.md",
        "nemo_judge/pairwise/report.json",
        "nemo_judge/pairwise/consult_summary_eval/judgments.jsonl",
        "nemo_judge/pairwise/consult_summary_eval/win_matrix.png",
    }
    png = files["nemo_judge/pairwise/consult_summary_eval/win_matrix.png"]
    assert isinstance(png, Path) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    jpath = files["nemo_judge/pairwise/consult_summary_eval/judgments.jsonl"]
    assert isinstance(jpath, Path)
    lines = [json.loads(x) for x in jpath.read_text().splitlines()]
    assert len(lines) == 5 and [x["item_id"] for x in lines] == [f"r{i}" for i in range(5)]
    assert lines[2]["first"]["verdict"] == "B" and lines[2]["second"]["verdict"] == "A"
    assert lines[2]["outcome"] == "loss" and lines[2]["consistent"] is True
    assert lines[0]["outcome"] is None and "judge call failed" in lines[0]["reason"]
    for content in files.values():
        text = content.read_bytes() if isinstance(content, Path) else str(content).encode()
        assert PW_KEY.encode() not in text
    assert PW_KEY not in json.dumps(report.to_dict())

    back = PairwiseReport.from_dict(json.loads(str(files["nemo_judge/pairwise/report.json"])))
    assert back.metrics() == report.metrics()
    assert back.markdown() == report.markdown()
    assert all(v == v for v in report.metrics().values())  # finite only


def test_verdict_parsing_is_case_insensitive_on_the_captured_value(tmp_path):
    (spec,) = pairwise_specs(_config())
    assert parse_verdict("WINNER: b.", spec) == ("B", None)
    assert parse_verdict("WINNER: tie", spec) == ("TIE", None)
    assert parse_verdict("<think>WINNER: A</think>WINNER: B", spec) == ("B", None)
    (spec_starred,) = pairwise_specs(_config(parser={"type": "regex", "pattern": r"WINNER:\s*(\S+)"}))
    assert parse_verdict("WINNER: **b**", spec_starred) == ("B", None)  # markdown around it is dropped
    verdict, reason = parse_verdict("", spec)
    assert verdict is None and reason == "empty judge output"


def test_the_pairwise_judge_honours_the_models_reasoning_params_like_any_judge(tmp_path):
    """The pairwise judge is built by the same builder as llm-judge metrics: ``effort`` is sent as
    ``reasoning_effort`` and ``include_if_not_finished: false`` makes an unfinished reply unjudged."""

    def spec_with(include: bool) -> Any:
        model = {
            "api_endpoint": {"url": PW_URL, "model_id": "mock/judge-pairwise", "api_key": PW_KEY},
            "prompt": {
                "reasoning_params": {
                    "end_token": "</think>",
                    "effort": "low",
                    "include_if_not_finished": include,
                },
                "inference_params": {"temperature": 0.5, "max_retries": 2},
            },
        }
        (spec,) = pairwise_specs(_config(model=model, inference_params={"temperature": 0}))
        return spec

    strict, lenient = spec_with(False), spec_with(True)
    assert strict.inference == {"temperature": 0, "reasoning_effort": "low"}  # the block's params win
    assert strict.max_retries == 2
    assert parse_verdict("<think>hmm</think>WINNER: A", strict) == ("A", None)
    verdict, reason = parse_verdict("<think>WINNER: B, still thinking", strict)
    assert verdict is None and reason
    assert parse_verdict("<think>WINNER: B, still thinking", lenient) == ("B", None)


def test_a_judge_that_never_gives_a_verdict_fails_the_stage(tmp_path):
    """Every item unjudged (a format the judge never follows) measured nothing: an error with the first
    reason, not a report of unjudged counts."""
    res = [_result(tmp_path, "x", ["x0", "x1"]), _result(tmp_path, "y", ["y0", "y1"])]
    with pytest.raises(
        EvaluationError, match=r"measured nothing: no verdict for any of the 2 item.*no match"
    ):
        _run(_config(), res, ["x", "y"], _judge(lambda c, a, b: "I cannot decide.", []))
