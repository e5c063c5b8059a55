"""The local engine: unit tests over httpx.MockTransport, end-to-end tests over the loopback mock models."""

import asyncio
import json
import math
import re

import httpx
import pytest

from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.engine import RunOptions, run_local, run_plan_async
from mlflow_nemo_judge.errors import EvaluationError
from mlflow_nemo_judge.plan import build_plan
from mlflow_nemo_judge.testing.mock_llm import FaultConfig, MockLLMServer
from tests.fixtures.paths import USELESS_IDS, shared_data
from tests.fixtures.seed_config import seed_config

JUDGE_URL = "http://judge.test/v1/chat/completions"
TARGET_URL = "http://target.test/v1/chat/completions"


def _rows(tmp_path, n=6):
    p = tmp_path / "rows.jsonl"
    p.write_text("\n".join(json.dumps({"ID": f"r{i}", "content": f"consult number {i}"}) for i in range(n)))
    return p


def _chat(text, finish="stop"):
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }


def _run(cfg, target, handler, **kw):
    plan = build_plan(load_config(cfg), load_target(target))

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await run_plan_async(
                plan, RunOptions(cache=False, http_client=http, progress_bar=False, **kw)
            )

    return asyncio.run(go())


TARGET = {"type": "model", "model": {"api_endpoint": {"url": TARGET_URL, "model_id": "tgt", "api_key": "tk"}}}


def test_judge_scores_unparseable_outputs_as_nan_with_raw_text(tmp_path):
    seen = []

    def handler(req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        seen.append((str(req.url), body["model"], req.headers.get("authorization")))
        if str(req.url) == TARGET_URL:
            return httpx.Response(200, json=_chat("summary of " + body["messages"][1]["content"]))
        n = int(re.search(r"consult number (\d+)", body["messages"][1]["content"]).group(1))
        if n == 2:
            return httpx.Response(200, json=_chat("I would say it is decent."))  # no RATING marker
        return httpx.Response(200, json=_chat(f"RATING: {n % 5 + 1}"))

    res = _run(
        seed_config(files_url=str(_rows(tmp_path)), judge_url=JUDGE_URL, openai_api_key="jk"), TARGET, handler
    )
    score = res.tasks["consult_summary_eval"]["completeness"]["completeness"]
    # rows 0..5 → ratings 1,2,NaN,4,5,1
    assert score.stats.count == 5 and score.stats.nan_count == 1
    assert score.value == pytest.approx((1 + 2 + 4 + 5 + 1) / 5)
    samples = list(res.iter_samples())
    assert [s.item_id for s in samples] == [f"r{i}" for i in range(6)]  # item order despite concurrency
    bad = samples[2].metrics["completeness"]
    assert math.isnan(bad.scores["completeness"]) and bad.raw == "I would say it is decent."
    assert "no match" in (bad.error or "")
    # keys go only to their own endpoint
    assert {a for u, _, a in seen if u == TARGET_URL} == {"Bearer tk"}
    assert {a for u, _, a in seen if u == JUDGE_URL} == {"Bearer jk"}
    assert res.usage.requests == 6 * 3 and res.usage.samples == 6


def test_failed_judge_call_is_nan_with_reason_not_zero(tmp_path):
    def handler(req):
        if str(req.url) == TARGET_URL:
            return httpx.Response(200, json=_chat("s"))
        if "correctness" not in req.content.decode():  # the other judge answers: the run measures
            return httpx.Response(200, json=_chat("RATING: 4"))
        return httpx.Response(500, json={"error": {"message": "judge overloaded"}})

    cfg = seed_config(files_url=str(_rows(tmp_path, 2)), judge_url=JUDGE_URL)
    cfg["params"] = {"max_retries": 0}
    res = _run(cfg, TARGET, handler)
    score = res.tasks["consult_summary_eval"]["correctness"]["correctness"]
    assert score.value is None and score.stats.count == 0 and score.stats.nan_count == 2
    out = next(res.iter_samples()).metrics["correctness"]
    assert "judge call failed" in out.error and "judge overloaded" in out.error


def test_target_failure_recorded_per_sample(tmp_path):
    def handler(req):
        body = json.loads(req.content)
        if str(req.url) == TARGET_URL:
            if "number 1" in body["messages"][1]["content"]:
                return httpx.Response(503, json={"error": {"message": "down"}})
            return httpx.Response(200, json=_chat("s", finish="length"))
        return httpx.Response(200, json=_chat("RATING: 3"))

    cfg = seed_config(files_url=str(_rows(tmp_path, 3)), judge_url=JUDGE_URL)
    cfg["params"] = {"max_retries": 1}
    res = _run(cfg, TARGET, handler)
    samples = list(res.iter_samples())
    assert samples[1].target_error and "503" in samples[1].target_error
    assert "no target output" in samples[1].metrics["completeness"].error
    assert samples[0].finish_reason == "length" and res.usage.truncated_outputs == 2
    st = res.tasks["consult_summary_eval"]["completeness"]["completeness"].stats
    assert st.count == 2 and st.nan_count == 1


def test_wrong_key_stops_the_run(tmp_path):
    def handler(req):
        return httpx.Response(401, json={"error": {"message": "invalid api key"}})

    with pytest.raises(EvaluationError, match="401"):
        _run(seed_config(files_url=str(_rows(tmp_path)), judge_url=JUDGE_URL), TARGET, handler)


def test_request_body_merges_global_params_and_template(tmp_path):
    bodies = []

    def handler(req):
        body = json.loads(req.content)
        bodies.append(body)
        return httpx.Response(200, json=_chat("RATING: 4" if str(req.url) == JUDGE_URL else "s"))

    cfg = seed_config(files_url=str(_rows(tmp_path, 1)), judge_url=JUDGE_URL)
    cfg["params"] = {"temperature": 0.5, "max_tokens": 50}
    cfg["tasks"]["consult_summary_eval"]["metrics"]["completeness"]["params"]["model"]["prompt"] = {
        "inference_params": {"temperature": 0.1, "max_tokens": 20, "request_timeout": 5, "max_retries": 2},
        "system_prompt": "detailed thinking off",
    }
    _run(cfg, TARGET, handler)
    target_body = next(b for b in bodies if b["model"] == "tgt")
    assert target_body["max_tokens"] == 200 and target_body["temperature"] == 0.5  # task template wins
    judge_bodies = [b for b in bodies if b["model"] == "gpt-4.1"]
    with_prompt = next(b for b in judge_bodies if b["messages"][0]["content"] == "detailed thinking off")
    assert with_prompt["temperature"] == 0.1 and with_prompt["max_tokens"] == 20
    assert "request_timeout" not in with_prompt and "max_retries" not in with_prompt


def test_reasoning_is_stripped_before_parsing(tmp_path):
    def handler(req):
        if str(req.url) == TARGET_URL:
            return httpx.Response(200, json=_chat("s"))
        return httpx.Response(200, json=_chat("<think>maybe RATING: 1?</think>\nRATING: 5"))

    cfg = seed_config(files_url=str(_rows(tmp_path, 2)), judge_url=JUDGE_URL)
    cfg["tasks"]["consult_summary_eval"]["metrics"]["completeness"]["params"]["model"]["prompt"] = {
        "reasoning_params": {"end_token": "</think>"}
    }
    res = _run(cfg, TARGET, handler)
    assert res.tasks["consult_summary_eval"]["completeness"]["completeness"].value == 5.0
    assert res.tasks["consult_summary_eval"]["correctness"]["correctness"].value == 5.0


def test_simple_metrics_and_groups(tmp_path):
    p = tmp_path / "qa.jsonl"
    p.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"q": "capital of France?", "ref": "Paris", "n": "4"},
                {"q": "2+2?", "ref": "four", "n": "5"},
            ]
        )
    )
    cfg = {
        "type": "custom",
        "name": "qa",
        "tasks": {
            "qa": {
                "type": "chat-completion",
                "dataset": {"files_url": str(p)},
                "params": {"template": {"messages": [{"role": "user", "content": "{{ item.q }}"}]}},
                "metrics": {
                    "sc": {
                        "type": "string-check",
                        "params": {
                            "check": [
                                "{{ sample.output_text | lower }}",
                                "contains",
                                "{{ item.ref | lower }}",
                            ]
                        },
                    },
                    "nc": {
                        "type": "number-check",
                        "params": {"check": ["absolute difference", "{{ item.n }}", "4", "epsilon", 0.5]},
                    },
                    "em": {"type": "em", "params": {"reference": "{{ item.ref }}"}},
                    "f1": {"type": "f1", "params": {"reference": "{{ item.ref }}"}},
                    "bleu": {"type": "bleu", "params": {"references": ["{{ item.ref }}"]}},
                },
            }
        },
        "groups": {"all": {"tasks": ["qa"]}},
    }

    def handler(req):
        q = json.loads(req.content)["messages"][0]["content"]
        return httpx.Response(200, json=_chat("Paris" if "France" in q else "It is 4"))

    res = _run(cfg, TARGET, handler)
    m = res.tasks["qa"]
    assert m["sc"]["string-check"].value == 0.5
    assert m["nc"]["number-check"].value == 0.5
    assert m["em"]["em"].value == 0.5
    assert m["f1"]["f1"].value == pytest.approx(0.5)
    assert m["bleu"]["sentence"].stats.count == 2 and m["bleu"]["corpus"].stats is None
    assert res.groups["all"]["sc"]["string-check"].value == 0.5
    doc = res.to_nemo_dict()
    assert set(doc["tasks"]["qa"]["metrics"]["bleu"]["scores"]) == {"sentence", "corpus"}


# ------------------------------------------------------------------------------------ loopback end to end


def _seed_on_mock(srv, limit=25):
    url = f"{srv.base_url}/chat/completions"
    cfg = seed_config(files_url=str(shared_data()), judge_url=url, judge_model="mock/judge")
    cfg["tasks"]["consult_summary_eval"]["dataset"]["limit"] = limit
    return cfg, url


def _as_data_task(cfg):
    task = cfg["tasks"]["consult_summary_eval"]
    task["type"] = "data"
    del task["params"]
    for m in task["metrics"].values():
        for msg in m["params"]["template"]["messages"]:
            msg["content"] = msg["content"].replace("sample.output_text", "item.summary")
    return cfg


def test_seed_config_as_data_task_ranks_useless_summaries_lowest():
    with MockLLMServer() as srv:
        cfg, _ = _seed_on_mock(srv)
        res = run_local(
            _as_data_task(cfg), {"type": "rows", "rows": [{"unused": 1}]}, cache=False, progress_bar=False
        )
    samples = list(res.iter_samples())
    assert len(samples) == 25
    for metric in ("completeness", "correctness"):
        useless = [s.metrics[metric].scores[metric] for s in samples if s.item_id in USELESS_IDS]
        others = [s.metrics[metric].scores[metric] for s in samples if s.item_id not in USELESS_IDS]
        assert len(useless) == 3  # C001, C011, C021 are within the first 25
        assert max(useless) < min(others), (metric, useless, others)
    doc = res.to_nemo_dict()
    st = doc["tasks"]["consult_summary_eval"]["metrics"]["completeness"]["scores"]["completeness"]["stats"]
    assert st["count"] == 25 and st["nan_count"] == 0 and {"mean", "stddev", "ci95_low"} <= set(st)


def test_faithful_target_beats_poor_target_end_to_end():
    means = {}
    with MockLLMServer() as srv:
        cfg, url = _seed_on_mock(srv, limit=10)
        for model in ("mock/faithful-summarizer", "mock/poor-summarizer"):
            t = {"type": "model", "model": {"api_endpoint": {"url": url, "model_id": model}}}
            res = run_local(cfg, t, cache=False, progress_bar=False)
            means[model] = res.tasks["consult_summary_eval"]["completeness"]["completeness"].value
    assert means["mock/faithful-summarizer"] - means["mock/poor-summarizer"] >= 1.5


def test_transient_faults_change_nothing_but_retries():
    with MockLLMServer() as srv:
        cfg, url = _seed_on_mock(srv, limit=15)
        cfg["params"] = {"max_retries": 10}
        t = {"type": "model", "model": {"api_endpoint": {"url": url, "model_id": "mock/faithful-summarizer"}}}
        clean = run_local(cfg, t, cache=False, progress_bar=False)
        srv.set_faults(FaultConfig.transient(0.2))
        faulty = run_local(cfg, t, cache=False, progress_bar=False)
        faults = [r for r in srv.requests if r.fault]
    assert clean.to_nemo_dict() == faulty.to_nemo_dict()
    assert faults, "fault injection did not fire"
    assert faulty.usage.retries >= len([f for f in faults if f.fault != "think"]) > 0
    for s in faulty.iter_samples():
        assert s.target_error is None and all(o.error is None for o in s.metrics.values())


def test_response_cache_makes_a_rerun_call_nothing(tmp_path):
    with MockLLMServer() as srv:
        cfg, url = _seed_on_mock(srv, limit=5)
        t = {"type": "model", "model": {"api_endpoint": {"url": url, "model_id": "mock/faithful-summarizer"}}}
        first = run_local(cfg, t, cache=True, cache_dir=tmp_path, progress_bar=False)
        n = len(srv.requests)
        second = run_local(cfg, t, cache=True, cache_dir=tmp_path, progress_bar=False)
        assert len(srv.requests) == n == 15
    assert second.usage.requests == 0 and second.usage.cache_hits == 15
    assert first.to_nemo_dict() == second.to_nemo_dict()


def test_progress_callback_reaches_total():
    seen = []
    with MockLLMServer() as srv:
        cfg, url = _seed_on_mock(srv, limit=6)
        t = {"type": "model", "model": {"api_endpoint": {"url": url, "model_id": "mock/echo"}}}
        run_local(
            cfg, t, cache=False, progress_bar=False, on_progress=lambda task, d, tot: seen.append((d, tot))
        )
    assert seen[-1] == (6, 6) and [d for d, _ in seen] == list(range(1, 7))


def test_null_or_empty_target_output_is_a_target_error_not_an_empty_answer():
    """20 % null replies: those rows are NaN with the reason, the other rows score as in a clean run."""
    faithful = "mock/faithful-summarizer"
    with MockLLMServer() as srv:
        cfg, url = _seed_on_mock(srv, limit=30)
        t = {"type": "model", "model": {"api_endpoint": {"url": url, "model_id": faithful}}}
        clean = {s.item_id: s for s in run_local(cfg, t, cache=False, progress_bar=False).iter_samples()}
        srv.set_faults(FaultConfig(null_content=0.15, empty_content=0.05, only_models=[faithful]))
        faulty = run_local(cfg, t, cache=False, progress_bar=False)
    samples = list(faulty.iter_samples())
    empty = [s for s in samples if not (s.output_text or "").strip()]
    assert 0 < len(empty) < 30
    for s in empty:
        assert s.target_error is not None and s.target_error.startswith("the target returned no content")
        assert "finish_reason=" in s.target_error
        for out in s.metrics.values():
            assert all(math.isnan(v) for v in out.scores.values()) and out.raw is None
    kept = [s for s in samples if s not in empty]
    for metric in ("completeness", "correctness"):
        score = faulty.tasks["consult_summary_eval"][metric][metric]
        assert score.stats.nan_count == len(empty) and score.stats.count == len(kept)
        expected = [clean[s.item_id].metrics[metric].scores[metric] for s in kept]
        assert [s.metrics[metric].scores[metric] for s in kept] == expected
        assert score.value == pytest.approx(sum(expected) / len(expected))


@pytest.mark.parametrize("fault", ["target-empty", "judge-unparseable"])
def test_a_run_in_which_no_score_could_be_computed_fails_instead_of_finishing(fault):
    """Every target reply empty, or every judge reply unparseable: nothing was measured, so the run
    fails with one line and the first row's reason, not a result of 100 % NaN."""
    faithful = "mock/faithful-summarizer"
    with MockLLMServer() as srv:
        cfg, url = _seed_on_mock(srv, limit=6)
        t = {"type": "model", "model": {"api_endpoint": {"url": url, "model_id": faithful}}}
        if fault == "target-empty":
            srv.set_faults(FaultConfig(empty_content=1.0, only_models=[faithful]))
        else:  # the judge answers, but never in the format the parsers ask for
            for m in cfg["tasks"]["consult_summary_eval"]["metrics"].values():
                for score in m["params"]["scores"].values():
                    score["parser"]["pattern"] = r"NEVER-IN-A-REPLY (\d)"
        with pytest.raises(EvaluationError) as info:
            run_local(cfg, t, cache=False, progress_bar=False)
    line = str(info.value)
    assert "\n" not in line and "measured nothing" in line and "all 6 sample(s)" in line
    reason = "the target returned no content" if fault == "target-empty" else "NEVER-IN-A-REPLY"
    assert reason in line


def test_a_template_error_on_one_row_is_that_rows_error_in_every_template(tmp_path):
    """Target template, judge template and simple-metric params: one policy, a per-row error."""
    rows = tmp_path / "rows.jsonl"
    lines = [{"ID": f"r{i}", "content": f"consult number {i}", "ref": "x"} for i in range(4)]
    rows.write_text("\n".join(json.dumps(r) for r in lines))
    cfg = seed_config(files_url=str(rows), judge_url=JUDGE_URL)
    metrics = cfg["tasks"]["consult_summary_eval"]["metrics"]
    metrics["completeness"]["params"]["template"]["messages"][1]["content"] += " Ref: {{ item.ref }}"
    metrics["check"] = {
        "type": "string-check",
        "params": {"check": ["{{ item.ref }}", "equals", "x"]},
    }

    def handler(req):
        if str(req.url) == TARGET_URL:
            return httpx.Response(200, json=_chat("a summary"))
        return httpx.Response(200, json=_chat("RATING: 3"))

    plan = build_plan(load_config(cfg), load_target(TARGET))
    # The plan checks every row's variables; rows that change afterwards (or a template error only the
    # row's data can cause at render time) reach the engine, which must keep the error to the row.
    del lines[1]["content"]  # the target template needs it
    del lines[2]["ref"]  # the judge template and the string-check need it
    rows.write_text("\n".join(json.dumps(r) for r in lines))

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await run_plan_async(plan, RunOptions(cache=False, http_client=http, progress_bar=False))

    res = asyncio.run(go())
    samples = list(res.iter_samples())
    assert [s.item_id for s in samples] == ["r0", "r1", "r2", "r3"]
    assert samples[1].target_error and "content" in samples[1].target_error
    assert all(math.isnan(v) for o in samples[1].metrics.values() for v in o.scores.values())
    bad = samples[2].metrics
    assert (
        math.isnan(bad["completeness"].scores["completeness"])
        and "judge template" in bad["completeness"].error
    )
    assert bad["correctness"].scores["correctness"] == 3  # its own template renders
    assert math.isnan(bad["check"].scores["string-check"]) and bad["check"].error
    assert samples[0].metrics["check"].scores["string-check"] == 1.0
