"""Per-endpoint concurrency with adaptive (AIMD) limits: each endpoint (origin + model id) has its own
bound, configurable per model (``api_endpoint.max_concurrency``), cut on 429s and grown back while calls
succeed; one endpoint's rate limiting never slows another. Loopback only (MockTransport, mock servers)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from mlflow_nemo_judge.backends.nemo.divergence import divergences
from mlflow_nemo_judge.config import load_config, load_target
from mlflow_nemo_judge.engine import RunOptions, run_plan_async
from mlflow_nemo_judge.errors import ConfigError
from mlflow_nemo_judge.http.limits import AdaptiveLimit, AimdPolicy
from mlflow_nemo_judge.http.openai import Endpoint, OpenAIClient
from mlflow_nemo_judge.plan import build_plan
from mlflow_nemo_judge.results import Usage
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer, RateLimitConfig
from tests.fixtures.paths import SEED_DATA
from tests.fixtures.seed_config import seed_config

BODY = {"messages": [{"role": "user", "content": "Rate this."}]}
OK = {"choices": [{"message": {"role": "assistant", "content": "RATING: 4"}, "finish_reason": "stop"}]}


# -- the limit itself ---------------------------------------------------------------------------------


def test_a_burst_of_429s_is_one_decrease_and_the_limit_never_drops_below_one() -> None:
    async def go() -> AdaptiveLimit:
        lim = AdaptiveLimit(16, AimdPolicy(decrease=0.5, increase=1.0))
        epochs = [await lim.acquire() for _ in range(16)]
        for e in epochs:  # 16 requests of one round all rejected: one signal, not 16
            lim.release()
            lim.rate_limited(e, None)
        assert lim.limit == 8 and lim.decreases == 1
        for _ in range(10):  # each new round halves again, down to 1 and no lower
            e = await lim.acquire()
            lim.release()
            lim.rate_limited(e, None)
        return lim

    lim = asyncio.run(go())
    assert lim.limit == 1.0 and lim.slots == 1 and lim.lowest == 1.0


def test_the_limit_grows_back_additively_and_never_above_its_maximum() -> None:
    lim = AdaptiveLimit(8, AimdPolicy(decrease=0.5, increase=1.0))
    lim.limit = 2.0
    seen = []
    for _ in range(200):
        lim.succeeded()
        seen.append(lim.limit)
    # +1/limit per success: about one slot per limit's worth of successes (2 -> 2.5 -> 2.9 -> 3.24)
    assert seen[:3] == pytest.approx([2.5, 2.9, 2.9 + 1 / 2.9])
    assert all(b >= a for a, b in zip(seen, seen[1:], strict=False))
    assert max(seen) == 8.0 and seen[-1] == 8.0


def test_a_waiter_cancelled_after_it_was_granted_hands_its_slot_on() -> None:
    async def go() -> list[str]:
        lim = AdaptiveLimit(1, AimdPolicy())
        order: list[str] = []
        await lim.acquire()

        async def take(name: str) -> None:
            await lim.acquire()
            order.append(name)
            lim.release()

        second = asyncio.ensure_future(take("second"))
        third = asyncio.ensure_future(take("third"))
        await asyncio.sleep(0)
        lim.release()  # granted to "second"...
        second.cancel()  # ...which is cancelled before it runs: "third" must still get the slot
        await asyncio.gather(second, third, return_exceptions=True)
        assert lim.in_flight == 0
        return order

    assert asyncio.run(go()) == ["third"]


def test_aimd_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_JUDGE_AIMD_DECREASE", "0.5")
    monkeypatch.setenv("NEMO_JUDGE_AIMD_INCREASE", "2")
    assert AimdPolicy.from_settings() == AimdPolicy(decrease=0.5, increase=2.0)
    for bad in ("0", "1.5", "x"):
        monkeypatch.setenv("NEMO_JUDGE_AIMD_DECREASE", bad)
        with pytest.raises(ConfigError, match="NEMO_JUDGE_AIMD"):
            AimdPolicy.from_settings()


# -- the client: one limit per endpoint -----------------------------------------------------------


class InFlight:
    """An async MockTransport handler per model: counts requests in flight, answers after ``delay``."""

    def __init__(self, delay: float = 0.01, rejects: dict[str, int] | None = None) -> None:
        self.delay, self.rejects = delay, dict(rejects or {})
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        model = request.url.host + "/" + json.loads(request.content)["model"]
        if self.rejects.get(model, 0) > 0:
            self.rejects[model] -= 1
            return httpx.Response(429, headers={"retry-after-ms": "1"}, json={"error": {"message": "slow"}})
        self.now[model] = self.now.get(model, 0) + 1
        self.peak[model] = max(self.peak.get(model, 0), self.now[model])
        await asyncio.sleep(self.delay)
        self.now[model] -= 1
        return httpx.Response(200, json=OK)


def _run_calls(handler: InFlight, calls: list[Endpoint], **kw: Any) -> OpenAIClient:
    async def go() -> OpenAIClient:
        client = OpenAIClient(
            httpx.MockTransport(handler), usage=Usage(), backoff_base=0.001, max_retries=50, **kw
        )
        await asyncio.gather(*(client.call(ep, BODY, use_cache=False) for ep in calls))
        return client

    return asyncio.run(go())


def test_each_endpoint_has_its_own_limit_configurable_per_model() -> None:
    target = Endpoint("http://target.local/v1", "t", max_concurrency=3)
    judge = Endpoint("http://judge.local/v1", "j")  # the default: the client's max_concurrency
    other_model = Endpoint("http://judge.local/v1", "j2", max_concurrency=5)  # same origin, own limit
    handler = InFlight()
    _run_calls(handler, [target] * 30 + [judge] * 30 + [other_model] * 30, max_concurrency=8)
    # One shared semaphore of 8 would let the target take 8; each endpoint now fills its own bound.
    assert handler.peak == {"target.local/t": 3, "judge.local/j": 8, "judge.local/j2": 5}


def test_one_endpoints_429s_do_not_slow_the_others_concurrency() -> None:
    limited = Endpoint("http://slow.local/v1", "a")
    free = Endpoint("http://fast.local/v1", "b")
    handler = InFlight(rejects={"slow.local/a": 40})
    client = _run_calls(handler, [limited] * 24 + [free] * 24, max_concurrency=8)
    limits = {key[1]: lim for key, lim in client.limits.items()}  # the last loop's limits
    assert limits["slow.local"].decreases >= 1 and limits["slow.local"].lowest < 8
    assert limits["fast.local"].decreases == 0 and limits["fast.local"].limit == 8
    assert handler.peak["fast.local/b"] == 8
    assert client.usage.failed_requests == 0


def test_max_concurrency_is_validated_and_flagged_for_the_nemo_backend() -> None:
    cfg = seed_config(files_url=str(SEED_DATA))
    cfg["tasks"]["consult_summary_eval"]["metrics"]["completeness"]["params"]["model"]["api_endpoint"][
        "max_concurrency"
    ] = 0
    with pytest.raises(ConfigError, match="max_concurrency"):
        load_config(cfg)
    cfg["tasks"]["consult_summary_eval"]["metrics"]["completeness"]["params"]["model"]["api_endpoint"][
        "max_concurrency"
    ] = 4
    assert load_config(cfg) is not None
    paths = [p for p, _ in divergences(cfg)]  # the seed config's two metrics share one judge model
    assert paths == [
        f"tasks.consult_summary_eval.metrics.{m}.params.model.api_endpoint.max_concurrency"
        for m in ("completeness", "correctness")
    ]


# -- against rate-limited mock servers --------------------------------------------------------------


def test_the_limit_decreases_on_429s_and_grows_back_against_a_rate_limited_server() -> None:
    with MockLLMServer(latency=0.02, rate_limits=RateLimitConfig({"mock/judge": 50.0})) as server:
        ep = Endpoint(server.base_url, "mock/judge")

        async def go() -> tuple[float, float, float, int]:
            async with httpx.AsyncClient() as http:
                client = OpenAIClient(
                    http, usage=Usage(), max_concurrency=16, backoff_base=0.01, max_retries=20
                )
                await asyncio.gather(*(client.call(ep, BODY, use_cache=False) for _ in range(40)))
                (lim,) = client.limits.values()
                cut, decreases = lim.limit, lim.decreases
                server.set_rate_limits(None)  # the endpoint keeps up again: the limit grows back
                for _ in range(10):
                    await asyncio.gather(*(client.call(ep, BODY, use_cache=False) for _ in range(40)))
                return cut, lim.lowest, lim.limit, decreases

        cut, lowest, grown, decreases = asyncio.run(go())
    assert decreases >= 1 and lowest < 16 and cut < 16
    assert grown > cut + 2 and grown <= 16


def _two_endpoint_run(target_url: str, judge_url: str, target_max: int, judge_max: int) -> Any:
    cfg = seed_config(judge_url=judge_url, judge_model="mock/judge", files_url=str(SEED_DATA))
    for metric in cfg["tasks"]["consult_summary_eval"]["metrics"].values():
        metric["params"]["model"]["api_endpoint"]["max_concurrency"] = judge_max
    cfg["tasks"]["consult_summary_eval"]["dataset"]["limit"] = 30
    target = {
        "type": "model",
        "model": {
            "api_endpoint": {
                "url": target_url,
                "model_id": "mock/faithful-summarizer",
                "max_concurrency": target_max,
            }
        },
    }
    plan = build_plan(load_config(cfg), load_target(target), parallelism=16)
    return asyncio.run(run_plan_async(plan, RunOptions(cache=False, backoff_base=0.01, backoff_max=1.0)))


def test_target_and_judge_limited_differently_lose_no_sample_and_keep_their_limits() -> None:
    with (
        MockLLMServer(latency=0.05, rate_limits=RateLimitConfig({"mock/faithful-summarizer": 15.0})) as tsrv,
        MockLLMServer(latency=0.05, rate_limits=RateLimitConfig({"mock/judge": 30.0})) as jsrv,
    ):
        result = _two_endpoint_run(tsrv.base_url, jsrv.base_url, target_max=4, judge_max=6)
        t_stats, j_stats = tsrv.rate_limiter.stats(), jsrv.rate_limiter.stats()
    records = list(result.iter_samples())
    assert len(records) == 30
    assert all(r.target_error is None for r in records)
    assert all(m.error is None for r in records for m in r.metrics.values())
    assert result.usage.failed_requests == 0
    # The servers did rate-limit (so the run had to adapt) and never saw more than each model's limit.
    assert t_stats["refused"].get("mock/faithful-summarizer", 0) + j_stats["refused"].get("mock/judge", 0) > 0
    assert t_stats["admitted"]["mock/faithful-summarizer"] == 30
    assert j_stats["admitted"]["mock/judge"] == 60
    assert 1 <= t_stats["peak_in_flight"]["mock/faithful-summarizer"] <= 4
    assert 1 <= j_stats["peak_in_flight"]["mock/judge"] <= 6


def test_the_connection_pool_holds_every_endpoints_limit_at_once() -> None:
    """The keep-alive pool is sized to the sum of the endpoints' own limits, so it never caps the
    target and the judges together (a pool of ``parallelism`` did: 8 calls in all at the default)."""
    from mlflow_nemo_judge.engine import pool_size

    def plan_with(judge_max: int | None, parallelism: int) -> Any:
        cfg = seed_config(
            judge_url="http://judge.local/v1", judge_model="mock/judge", files_url=str(SEED_DATA)
        )
        for metric in cfg["tasks"]["consult_summary_eval"]["metrics"].values():  # two metrics, one judge
            if judge_max is not None:
                metric["params"]["model"]["api_endpoint"]["max_concurrency"] = judge_max
        target = {"type": "model", "model": {"api_endpoint": {"url": "http://t.local/v1", "model_id": "t"}}}
        return build_plan(load_config(cfg), load_target(target), parallelism=parallelism)

    assert pool_size(plan_with(None, 4)) == 8  # target 4 + judge 4
    assert pool_size(plan_with(6, 4)) == 10  # target 4 + judge's own 6
    assert pool_size(plan_with(None, 16)) == 32
