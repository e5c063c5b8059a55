"""The second pass (a call whose retries ran out gets one more round after a cool-down) and the
``prior_records`` hook (kept records replace their rows' model calls)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.engine import RunOptions, run_plan_async
from mlflow_nemo_judge.errors import EndpointError
from mlflow_nemo_judge.http.health import HealthPolicy
from mlflow_nemo_judge.http.openai import Endpoint, OpenAIClient
from mlflow_nemo_judge.plan import build_plan
from mlflow_nemo_judge.results import MetricOutcome, SampleRecord, Usage
from mlflow_nemo_judge.testing.mock_llm import FaultConfig, MockLLMServer
from tests.fixtures.paths import SEED_DATA
from tests.fixtures.seed_config import seed_config

URL = "http://judge.local/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "Rate this."}]}
OK = {"choices": [{"message": {"role": "assistant", "content": "RATING: 4"}, "finish_reason": "stop"}]}


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _client_call(failures: int, **kw: Any) -> tuple[Any, OpenAIClient, Sleeps, int]:
    """One call to a handler that answers 503 ``failures`` times, then 200."""
    seen = 0

    def handler(_req: httpx.Request) -> httpx.Response:
        nonlocal seen
        seen += 1
        return (
            httpx.Response(503, json={"error": {"message": "busy"}})
            if seen <= failures
            else httpx.Response(200, json=OK)
        )

    sleeps = Sleeps()

    async def go() -> tuple[Any, OpenAIClient]:
        transport = httpx.MockTransport(handler)
        client = OpenAIClient(transport, usage=Usage(), sleep=sleeps, rng_seed=0, max_retries=5, **kw)
        try:
            return await client.call(Endpoint(URL, "m"), BODY), client
        except EndpointError as exc:
            return exc, client

    out, client = asyncio.run(go())
    return out, client, sleeps, seen


def test_a_call_whose_retries_ran_out_gets_a_second_round_after_a_cool_down() -> None:
    res, client, sleeps, seen = _client_call(6)  # the main round's 6 attempts all fail
    assert not isinstance(res, Exception) and res.text == "RATING: 4" and res.attempts == 7
    assert seen == 7 and client.usage.second_rounds == 1 and client.usage.failed_requests == 0
    # Five backoffs, then a cool-down one exponential step longer than the last backoff.
    assert len(sleeps.delays) == 6 and sleeps.delays[5] >= 0.5 * 2**5 * 0.5
    # The call never counted as failed: it succeeded in its second round.
    health = client.health(URL, "m")
    assert health.ok_calls == 1 and health.failed_calls == 0


def test_a_call_fails_only_after_its_second_round_too() -> None:
    # (An endpoint that never answered would be condemned after 8 attempts: see test_endpoint_health.)
    err, client, sleeps, seen = _client_call(100, health=HealthPolicy(fail_first=100))
    assert isinstance(err, EndpointError) and "failed after 12 attempt(s)" in str(err) and err.status == 503
    assert seen == 12 and client.usage.failed_requests == 1 and len(sleeps.delays) == 11
    assert client.health(URL, "m").failed_calls == 1
    # Without the second round (as before), 6 attempts.
    err, client, _, seen = _client_call(100, second_round=False, health=HealthPolicy(fail_first=100))
    assert isinstance(err, EndpointError) and seen == 6 and client.usage.second_rounds == 0


def test_a_non_retryable_status_gets_no_second_round() -> None:
    def handler(_req: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "bad"}})

    async def go() -> tuple[BaseException, Usage]:
        usage = Usage()
        client = OpenAIClient(httpx.MockTransport(handler), usage=usage, sleep=Sleeps())
        with pytest.raises(EndpointError) as info:
            await client.call(Endpoint(URL, "m"), BODY)
        return info.value, usage

    err, usage = asyncio.run(go())
    assert "HTTP 400" in str(err) and usage.requests == 1 and usage.second_rounds == 0


def _hundred_rows(tmp_path: Path) -> Path:
    """100 rows made from the seed consults (cycled, with distinct ids)."""
    seed = [json.loads(line) for line in SEED_DATA.read_text().splitlines() if line.strip()]
    out = tmp_path / "consults100.jsonl"
    rows = [{**seed[i % len(seed)], "ID": f"X{i:03d}"} for i in range(100)]
    out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_forty_percent_transient_faults_lose_no_sample(tmp_path: Path, seed: int) -> None:
    # per_request: each call's faults follow from the seed and the call itself, not from the order in
    # which concurrent requests arrive, so each seed is the same run every time (seed 11 loses a
    # sample without the second round: the test can fail).
    with MockLLMServer(faults=FaultConfig.transient(0.4, per_request=True), seed=seed) as srv:
        url = f"{srv.base_url}/chat/completions"
        cfg = seed_config(files_url=str(_hundred_rows(tmp_path)), judge_url=url, judge_model="mock/judge")
        task = cfg["tasks"]["consult_summary_eval"]
        task["dataset"]["limit"] = 100
        del task["metrics"]["correctness"]  # target + one judge: 200 calls a run
        target = {
            "type": "model",
            "model": {"api_endpoint": {"url": url, "model_id": "mock/faithful-summarizer"}},
        }
        plan = build_plan(load_config(cfg), load_target(target))
        opts = RunOptions(cache=False, progress_bar=False, backoff_base=0.005, backoff_max=0.02)
        res = asyncio.run(run_plan_async(plan, opts))
        faulted = [r for r in srv.requests if r.fault]
    assert len(faulted) > 100  # ~40 % of ~330 requests
    samples = list(res.iter_samples())
    assert len(samples) == 100
    lost = [s.item_id for s in samples if s.target_error or any(o.error for o in s.metrics.values())]
    assert lost == []
    score = res.tasks["consult_summary_eval"]["completeness"]["completeness"]
    assert score.stats is not None and score.stats.nan_count == 0 and score.stats.count == 100
    assert res.usage.failed_requests == 0


def _chat(text: str) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


def test_prior_records_are_kept_without_model_calls(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"ID": f"r{i}", "content": f"consult {i}"}) for i in range(8)))
    cfg = seed_config(files_url=str(rows), judge_url="http://judge.test/v1/chat/completions")
    target = {"type": "model", "model": {"api_endpoint": {"url": "http://t.test/v1", "model_id": "t"}}}
    calls: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        text = req.content.decode()
        calls.append(text)
        return httpx.Response(200, json=_chat("RATING: 2" if "judge" in str(req.url) else "summary"))

    def kept(task: str, index: int) -> SampleRecord | None:
        if index % 2:
            return None  # odd rows are computed afresh
        rec = SampleRecord(
            task=task, index=index, item_id=f"r{index}", item={"kept": True}, output_text="old"
        )
        rec.metrics = {
            "completeness": MetricOutcome(scores={"completeness": 5.0}, raw="RATING: 5"),
            "correctness": MetricOutcome(scores={"correctness": math.nan}, error="unparseable"),
        }
        return rec

    seen: list[SampleRecord] = []
    plan = build_plan(load_config(cfg), load_target(target))

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            opts = RunOptions(
                cache=False, http_client=http, progress_bar=False, prior_records=kept, on_record=seen.append
            )
            return await run_plan_async(plan, opts)

    res = asyncio.run(go())
    assert len(calls) == 4 * 3  # only the 4 odd rows called the target and two judges
    assert all("consult 0" not in c and "consult 2" not in c for c in calls)
    assert [r.index for r in seen] == list(range(8))
    samples = list(res.iter_samples())
    assert [s.index for s in samples] == list(range(8))
    assert samples[0].item == {"kept": True} and samples[0].output_text == "old"  # kept as is
    assert samples[1].output_text == "summary"
    completeness = res.tasks["consult_summary_eval"]["completeness"]["completeness"]
    assert completeness.value == pytest.approx((4 * 5 + 4 * 2) / 8)
    correctness = res.tasks["consult_summary_eval"]["correctness"]["correctness"]
    assert correctness.stats is not None and correctness.stats.nan_count == 4
    assert res.usage.samples == 8


def test_kept_records_count_in_corpus_bleu_and_empty_cached_outputs_are_target_errors(tmp_path: Path) -> None:
    # The spill file does not store corpus BLEU's (candidate, references) pair: a kept record must get it
    # back, or a --retry-errors run would compute corpus BLEU over the re-run rows only.
    rows = tmp_path / "rows.jsonl"
    outputs = ["the cat sat on the mat", "a dog ran far away", "   ", "birds fly south in winter"]
    rows.write_text(
        "\n".join(
            json.dumps({"ID": f"r{i}", "output": out, "ref": ref})
            for i, (out, ref) in enumerate(
                zip(outputs, ["the cat sat on a mat", "a dog ran away", "x", "birds fly south"], strict=True)
            )
        )
    )
    cfg = {
        "type": "custom",
        "tasks": {
            "t": {
                "type": "data",
                "metrics": {"bleu": {"type": "bleu", "params": {"references": ["{{ item.ref }}"]}}},
            }
        },
    }
    target = {"type": "cached_outputs", "cached_outputs": {"files_url": str(rows)}}
    plan = build_plan(load_config(cfg), load_target(target))
    first = asyncio.run(run_plan_async(plan, RunOptions(cache=False, progress_bar=False)))
    records = {r.index: SampleRecord.from_dict(r.to_dict()) for r in first.iter_samples()}
    assert records[2].target_error == "the row's cached output is empty"  # not judged as ""
    assert math.isnan(records[2].metrics["bleu"].scores["sentence"])
    assert first.tasks["t"]["bleu"]["sentence"].stats.count == 3

    kept = asyncio.run(
        run_plan_async(
            plan, RunOptions(cache=False, progress_bar=False, prior_records=lambda _t, i: records.get(i))
        )
    )
    corpus = first.tasks["t"]["bleu"]["corpus"].value
    assert corpus is not None and corpus > 0
    assert kept.tasks["t"]["bleu"]["corpus"].value == pytest.approx(corpus)
