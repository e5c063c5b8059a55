"""The mock LLM server: OpenAI shapes, deterministic mock models, the mock judge, faults, concurrency.

Every test talks HTTP to a loopback server, as the package's clients will. Waits (latency, the timeout
fault) go through an injected sleep, so tests observe them instead of timing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import signal
import socket
import statistics
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlflow_nemo_judge
from mlflow_nemo_judge.testing.mock_llm import (
    MOCK_MODELS,
    OWNED_BY,
    FaultConfig,
    MockLLMServer,
    start_subprocess,
)

# The package's own seed data: 30 consults; these four carry deliberately useless reference summaries.
DATA = Path(mlflow_nemo_judge.__file__).parent / "demo_data" / "doctor_consults.jsonl"
USELESS_IDS = {"D004", "D011", "D019", "D027"}

TARGET_SYSTEM = "Given a full medical consultation, please provide a 50 word summary of the consultation."
COMPLETENESS_SYSTEM = (
    "\nYou are a judge. Rate how complete the summary is \non a scale from 1 to 5:\n"
    "1 = missing critical information … 5 = fully complete\nPlease respond with RATING: <number>\n"
)
CORRECTNESS_SYSTEM = (
    "\nYou are a judge. Rate the summary's correctness \n(no false info) on a scale 1-5:\n"
    "1 = many inaccuracies … 5 = completely accurate\nPlease respond with RATING: <number>\n"
)
DOCUMENT = (
    "Date: 2025-04-01\n"
    "Chief Complaint (CC): Cough and fever\n"
    "History of Present Illness (HPI): three-day history of productive cough with yellow sputum and "
    "low-grade fevers peaking at 38.5 C. He denies pleuritic chest pain but reports mild shortness of "
    "breath while climbing stairs.\n"
    "Past Medical History (PMH): Essential hypertension well-controlled on lisinopril.\n"
    "Physical Examination (PE): T 38.1 C, HR 96 bpm. Lungs: bronchial breath sounds with crackles at "
    "right base.\n"
    "Assessment & Plan: Discussed likely community-acquired pneumonia. Initiated amoxicillin-clavulanate "
    "875 mg twice daily for 10 days, advised rest and hydration.\n"
    "Labs / Imaging Ordered: CBC with differential, chest radiograph."
)
RATING_RE = re.compile(r"RATING:\s*(\d+)")


def judge_user(document: str, summary: str) -> str:
    return f"\nFull Consult: {document}\nSummary: {summary}\n"


@pytest.fixture(scope="module")
def server() -> Iterator[MockLLMServer]:
    with MockLLMServer() as srv:
        yield srv


@pytest.fixture
def srv(server: MockLLMServer) -> Iterator[MockLLMServer]:
    """The shared server with a clean log and no faults or latency left over from another test."""
    server.set_faults(None)
    server.set_latency(0.0)
    server.clear_log()
    yield server


@pytest.fixture
def client(srv: MockLLMServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, timeout=10.0) as c:
        yield c


def chat(
    client: httpx.Client, model: str, user: str, system: str | None = None, **params: Any
) -> httpx.Response:
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": user}
    ]
    return client.post("/chat/completions", json={"model": model, "messages": messages, **params})


def content(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    text: str = response.json()["choices"][0]["message"]["content"]
    return text


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{3,}", text.lower())}


# ---------------------------------------------------------------------------------- protocol basics


def test_server_identifies_itself_as_a_mock(client: httpx.Client, srv: MockLLMServer) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", srv.base_url) and srv.port > 0
    models = client.get("/models").json()
    assert models["object"] == "list"
    assert {m["id"] for m in models["data"]} == set(MOCK_MODELS)
    assert all(m["owned_by"] == OWNED_BY == "mlflow-nemo-judge-mock" for m in models["data"])
    assert client.get(f"{srv.base_url[:-3]}/health").json()["status"] == "ok"

    response = chat(client, "mock/echo", "hello there world")
    body = response.json()
    assert body["system_fingerprint"] == "mock"
    assert body["id"].startswith("chatcmpl-mock-")
    assert body["object"] == "chat.completion" and body["model"] == "mock/echo"
    assert isinstance(body["created"], int)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hello there world"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert "mock" in response.headers["server"]


def test_errors_are_openai_shaped(client: httpx.Client) -> None:
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"

    bad_json = client.post(
        "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["type"] == "invalid_request_error"

    for model in ("gpt-4o", "mock/does-not-exist"):
        unknown = chat(client, model, "hi")
        assert unknown.status_code == 404
        assert f"The model `{model}` does not exist" in unknown.json()["error"]["message"]

    assert client.get("/chat/completions").status_code == 405
    assert client.post("/chat/completions", json={"model": "mock/echo", "messages": []}).status_code == 400


def test_keep_alive_serves_several_requests_on_one_connection(srv: MockLLMServer) -> None:
    body = json.dumps({"model": "mock/echo", "messages": [{"role": "user", "content": "ping"}]}).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(request + request)  # pipelined on one connection
        received = b""
        while received.count(b'"content":"ping"') < 2:
            chunk = sock.recv(65536)
            assert chunk, f"server closed a keep-alive connection early: {received!r}"
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert b"Connection: keep-alive" in received


# ----------------------------------------------------------------------------------- mock summarizers


def test_faithful_summary_copies_the_document_and_poor_summary_does_not(client: httpx.Client) -> None:
    user = f"Full Consult: {DOCUMENT}"
    faithful = content(chat(client, "mock/faithful-summarizer", user, TARGET_SYSTEM, max_tokens=200))
    assert 20 <= len(faithful.split()) <= 60
    assert faithful.startswith("Chief Complaint (CC): Cough and fever")
    assert "Full Consult" not in faithful
    for line in faithful.splitlines():
        assert line in DOCUMENT, f"not verbatim: {line!r}"
    assert "pneumonia" in faithful

    poor = content(chat(client, "mock/poor-summarizer", user, TARGET_SYSTEM))
    assert len(poor.split()) < 30
    overlap = len(words(poor) & words(DOCUMENT)) / len(words(poor))
    assert overlap < 0.3, poor

    assert content(chat(client, "mock/echo", user)) == user
    # Deterministic: the same request gets the same text.
    assert content(chat(client, "mock/faithful-summarizer", user, TARGET_SYSTEM)) == faithful


def test_max_tokens_truncates_with_finish_reason_length(client: httpx.Client) -> None:
    response = chat(client, "mock/echo", "one two three four five six", max_tokens=4).json()
    assert response["choices"][0]["message"]["content"] == "one two three four"
    assert response["choices"][0]["finish_reason"] == "length"
    assert response["usage"]["completion_tokens"] == 4

    completion = client.post(
        "/completions", json={"model": "mock/faithful-summarizer", "prompt": DOCUMENT, "max_tokens": 5}
    ).json()
    assert completion["object"] == "text_completion"
    assert completion["id"].startswith("cmpl-mock-") and completion["system_fingerprint"] == "mock"
    assert len(completion["choices"][0]["text"].split()) == 5
    assert completion["choices"][0]["finish_reason"] == "length"


def test_streaming_yields_the_same_text_as_a_plain_response(client: httpx.Client) -> None:
    user = f"Full Consult: {DOCUMENT}"
    plain = content(chat(client, "mock/faithful-summarizer", user, TARGET_SYSTEM))
    streamed = chat(client, "mock/faithful-summarizer", user, TARGET_SYSTEM, stream=True)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == plain
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# ---------------------------------------------------------------------------------------- mock judge


def rating(client: httpx.Client, system: str, document: str, summary: str, model: str = "mock/judge") -> int:
    match = RATING_RE.search(content(chat(client, model, judge_user(document, summary), system)))
    assert match, "no RATING marker"
    return int(match.group(1))


def test_judge_separates_good_and_useless_summaries_on_the_seed_dataset(client: httpx.Client) -> None:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 30 and {row["ID"] for row in rows} >= USELESS_IDS
    scores: dict[str, dict[str, list[int]]] = {
        kind: {"completeness": [], "correctness": []} for kind in ("faithful", "poor", "reference")
    }
    reference_by_id: dict[str, tuple[int, int]] = {}
    for row in rows:
        target_user = f"Full Consult: {row['content']}"
        candidates = {
            "faithful": content(
                chat(client, "mock/faithful-summarizer", target_user, TARGET_SYSTEM, max_tokens=200)
            ),
            "poor": content(chat(client, "mock/poor-summarizer", target_user, TARGET_SYSTEM, max_tokens=200)),
            "reference": row["summary"],
        }
        for kind, summary in candidates.items():
            complete = rating(client, COMPLETENESS_SYSTEM, row["content"], summary)
            correct = rating(client, CORRECTNESS_SYSTEM, row["content"], summary)
            scores[kind]["completeness"].append(complete)
            scores[kind]["correctness"].append(correct)
        reference_by_id[row["ID"]] = (
            scores["reference"]["completeness"][-1],
            scores["reference"]["correctness"][-1],
        )

    useful = [pair for row_id, pair in reference_by_id.items() if row_id not in USELESS_IDS]
    for row_id in sorted(USELESS_IDS):
        complete, correct = reference_by_id[row_id]
        assert complete <= 2 and correct <= 2, (row_id, complete, correct)
        assert complete < min(c for c, _ in useful) and correct < min(c for _, c in useful)

    others = [i for i, row in enumerate(rows) if row["ID"] not in USELESS_IDS]
    for metric in ("completeness", "correctness"):
        high = sum(scores["faithful"][metric][i] >= 4 for i in others)
        assert high >= 0.8 * len(others), (metric, scores["faithful"][metric])
        faithful_mean = statistics.mean(scores["faithful"][metric])
        poor_mean = statistics.mean(scores["poor"][metric])
        assert faithful_mean - poor_mean >= 1.5, (metric, faithful_mean, poor_mean)
        assert all(1 <= s <= 5 for kind in scores for s in scores[kind][metric])


def test_judge_scores_an_empty_summary_at_the_minimum(client: httpx.Client) -> None:
    assert rating(client, COMPLETENESS_SYSTEM, DOCUMENT, "") == 1
    assert rating(client, CORRECTNESS_SYSTEM, DOCUMENT, "") == 1
    ten_point = COMPLETENESS_SYSTEM.replace("from 1 to 5", "from 0 to 10")
    assert rating(client, ten_point, DOCUMENT, "") == 0
    assert rating(client, ten_point, DOCUMENT, DOCUMENT) == 10


def test_judge_follows_the_requested_answer_format(client: httpx.Client) -> None:
    summary = "Chief Complaint (CC): Cough and fever. Discussed likely community-acquired pneumonia."
    json_system = (
        "You are a judge. Rate how complete the summary is on a scale 1-5. "
        'Answer only with JSON like {"completeness": <n>, "explanation": "<why>"}.'
    )
    answer = json.loads(content(chat(client, "mock/judge", judge_user(DOCUMENT, summary), json_system)))
    assert set(answer) == {"completeness", "explanation"} and 1 <= answer["completeness"] <= 5

    score_marker = COMPLETENESS_SYSTEM.replace("RATING: <number>", "Score: <n>")
    text = content(chat(client, "mock/judge", judge_user(DOCUMENT, summary), score_marker))
    assert re.search(r"^Score: [1-5]$", text, re.M) and "RATING" not in text

    thinking = content(chat(client, "mock/judge-think", judge_user(DOCUMENT, summary), CORRECTNESS_SYSTEM))
    assert re.fullmatch(r"<think>.+</think>\n.*\nRATING: 5", thinking, re.S), thinking
    plain = content(chat(client, "mock/judge", judge_user(DOCUMENT, summary), CORRECTNESS_SYSTEM))
    assert RATING_RE.search(plain) and "<think>" not in plain

    # No system prompt: the instructions after the summary are read, and not scored as summary text.
    inline = (
        judge_user(DOCUMENT, summary) + "\nRate how complete the summary is from 1 to 10.\nRATING: <number>"
    )
    assert re.search(r"\nRATING: (10|[1-9])$", content(chat(client, "mock/judge", inline)))

    malformed = content(
        chat(client, "mock/judge-malformed", judge_user(DOCUMENT, summary), CORRECTNESS_SYSTEM)
    )
    assert "RATING" not in malformed and not re.search(r"\d", malformed)


# -------------------------------------------------------------------------------------------- faults


def test_rate_limit_fault_sends_retry_after(client: httpx.Client, srv: MockLLMServer) -> None:
    srv.set_faults(FaultConfig(rate_limit=1.0, retry_after=0.05))
    for _ in range(5):
        response = chat(client, "mock/echo", "hi")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "0.05"
        assert response.headers["retry-after-ms"] == "50"
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert [(e.status, e.fault) for e in srv.requests] == [(429, "rate_limit")] * 5


def test_server_error_drop_and_malformed_faults(client: httpx.Client, srv: MockLLMServer) -> None:
    srv.set_faults(FaultConfig(server_error=1.0))
    response = chat(client, "mock/echo", "hi")
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"

    srv.set_faults(FaultConfig(drop=1.0))
    with pytest.raises(httpx.TransportError):
        chat(client, "mock/echo", "hi")
    assert srv.requests[-1].status == 0 and srv.requests[-1].fault == "drop"

    srv.set_faults(FaultConfig(malformed=1.0))
    response = chat(client, "mock/echo", "hi")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)

    srv.set_faults(FaultConfig(think=1.0))
    assert content(chat(client, "mock/echo", "hi")) == "<think>some reasoning</think>\nhi"

    srv.set_faults(None)
    assert content(chat(client, "mock/echo", "hi")) == "hi"


def test_timeout_fault_outlasts_the_client_timeout() -> None:
    # The server's wait never ends on its own (stop() cancels it), so only the client's timeout can fire.
    requested: list[float] = []
    entered = threading.Event()

    async def never_ending(seconds: float) -> None:
        requested.append(seconds)
        entered.set()
        await asyncio.Event().wait()

    faults = FaultConfig(timeout=1.0, timeout_seconds=5.0)
    with MockLLMServer(faults=faults, sleep=never_ending) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=0.3) as short, pytest.raises(httpx.ReadTimeout):
            chat(short, "mock/echo", "hi")
        assert entered.wait(10), "the server never started the timeout fault's wait"
        assert requested == [5.0]
        assert [(e.fault, e.status) for e in srv.requests] == [("timeout", 0)]


def test_transient_faults_hit_about_their_rate_and_are_reproducible(srv: MockLLMServer) -> None:
    def run() -> list[str | None]:
        srv.set_faults(FaultConfig.transient(0.2))
        srv.clear_log()
        transport = httpx.HTTPTransport(retries=0)
        with httpx.Client(base_url=srv.base_url, timeout=10.0, transport=transport) as c:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):  # the drop fault
                    chat(c, "mock/echo", "hi")
        return [e.fault for e in srv.requests]

    first = run()
    assert len(first) == 200
    faulted = sum(f is not None for f in first)
    assert 20 <= faulted <= 60, faulted
    assert {f for f in first if f} == {"rate_limit", "server_error", "drop"}
    assert run() == first  # same seed, same config: the same faults on the same requests


def test_only_models_limits_faults(client: httpx.Client, srv: MockLLMServer) -> None:
    srv.set_faults(FaultConfig(server_error=1.0, only_models=["mock/judge"]))
    assert chat(client, "mock/echo", "hi").status_code == 200
    assert chat(client, "mock/judge", judge_user(DOCUMENT, "cough")).status_code == 500


def test_fault_config_validates() -> None:
    with pytest.raises(ValueError, match="probability"):
        FaultConfig(drop=1.5)
    with pytest.raises(ValueError, match="sum"):
        FaultConfig(drop=0.6, server_error=0.6)
    with pytest.raises(ValueError, match="unknown"):
        FaultConfig.from_dict({"dropp": 0.1})
    split = FaultConfig.transient(0.3)
    assert split.rate_limit == split.server_error == split.drop == pytest.approx(0.1)


# ------------------------------------------------------------------------------ concurrency and admin


def test_latency_does_not_serialise_concurrent_requests() -> None:
    # A barrier as the server's sleep: no request's latency ends before all 64 are inside it, so a
    # server that handled requests one at a time would never answer the first (the client times out).
    n = 64
    requested: list[float] = []
    all_waiting = asyncio.Event()

    async def barrier(seconds: float) -> None:
        requested.append(seconds)
        if len(requested) == n:
            all_waiting.set()
        await all_waiting.wait()

    async def burst(base_url: str) -> list[int]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=base_url, timeout=10.0, limits=limits) as c:
            payload = {"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}
            responses = await asyncio.gather(*(c.post("/chat/completions", json=payload) for _ in range(n)))
            return [r.status_code for r in responses]

    with MockLLMServer(latency=0.2, sleep=barrier) as srv:
        statuses = asyncio.run(burst(srv.base_url))
    assert statuses == [200] * n
    assert requested == [0.2] * n


def test_request_log_and_admin_config() -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    ticks = itertools.count(1_000.0)  # an injected clock: log times are exactly what it handed out
    with (
        MockLLMServer(sleep=record, clock=lambda: next(ticks)) as srv,
        httpx.Client(base_url=srv.base_url, timeout=10.0) as client,
    ):
        _check_request_log_and_admin_config(client, srv, waits)


def _check_request_log_and_admin_config(client: httpx.Client, srv: MockLLMServer, waits: list[float]) -> None:
    first = chat(client, "mock/echo", "logged", max_tokens=7).json()
    chat(client, "nope", "unknown")
    entries = srv.requests
    assert [(e.path, e.model, e.status, e.fault) for e in entries] == [
        ("/v1/chat/completions", "mock/echo", 200, None),
        ("/v1/chat/completions", "nope", 404, None),
    ]
    assert entries[0].body["max_tokens"] == 7 and entries[0].body["messages"][0]["content"] == "logged"
    assert entries[0].time == 1_000.0 < first["created"] < entries[1].time  # arrival, answer, next arrival
    assert waits == []  # no latency configured: the server never waited

    remote = client.get(f"{srv.base_url[:-3]}/mock/requests").json()
    assert remote["total"] == 2 and remote["requests"][0]["model"] == "mock/echo"

    admin = f"{srv.base_url[:-3]}/mock/config"
    updated = client.post(admin, json={"latency": 0.3, "faults": {"rate_limit": 0.5}})
    assert updated.status_code == 200 and updated.json()["latency"] == 0.3
    assert srv.latency == 0.3 and srv.faults == FaultConfig(rate_limit=0.5)
    client.post(admin, json={"faults": None})
    assert content(chat(client, "mock/echo", "slow")) == "slow"
    assert waits == [0.3]  # the configured latency was applied to the model request, once
    assert client.post(admin, json={"latency": -1}).status_code == 400
    assert client.post(admin, json={"faults": {"bogus": 1}}).status_code == 400
    srv.clear_log()
    assert srv.requests == [] and srv.request_count == 0


def test_subprocess_mode_serves_until_sigterm() -> None:
    process, base_url = start_subprocess(latency=0.0, rate_limit=0.0)
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url)
        with httpx.Client(base_url=base_url, timeout=10.0) as c:
            assert content(chat(c, "mock/echo", "from a child process")) == "from a child process"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_per_request_faults_do_not_depend_on_arrival_order():
    from mlflow_nemo_judge.testing.mock_llm.faults import FaultInjector

    cfg = FaultConfig.transient(0.5, per_request=True)

    def draws(order: list[str]) -> dict[str, list[str | None]]:
        inj, out = FaultInjector(cfg, seed=7), {}
        for key in order:  # each key sent three times (a retry draws again)
            out.setdefault(key, []).append(inj.draw("m", "m", key)[0])
        return out

    keys = [f"body-{i}" for i in range(20)]
    forward = draws([k for k in keys for _ in range(3)])
    interleaved = draws([k for _ in range(3) for k in reversed(keys)])
    assert forward == interleaved
    assert len({f for fs in forward.values() for f in fs}) > 1  # faults and clean answers both drawn


# ------------------------------------------------------------- judge variants, wrong on purpose (issue 13)

PAIRWISE_SYSTEM = "Which summary is better? Answer WINNER: A, WINNER: B or WINNER: TIE"
WINNER_RE = re.compile(r"WINNER:\s*(A|B|TIE)\s*$")


def seed_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_noisy_judge_differs_across_seeds_is_stable_per_request_and_still_at_temperature_0(
    client: httpx.Client,
) -> None:
    rows = seed_rows()
    moved = 0
    for row in rows:
        user = judge_user(row["content"], row["summary"])
        base = rating(client, COMPLETENESS_SYSTEM, row["content"], row["summary"])
        noisy = []
        for seed in range(5):
            body = {"seed": seed, "temperature": 0.7}
            text = content(chat(client, "mock/judge-noisy", user, COMPLETENESS_SYSTEM, **body))
            assert text == content(chat(client, "mock/judge-noisy", user, COMPLETENESS_SYSTEM, **body))
            match = RATING_RE.search(text)
            assert match, text
            noisy.append(int(match.group(1)))
        assert all(abs(n - base) <= 1 and 1 <= n <= 5 for n in noisy), (row["ID"], base, noisy)
        moved += sum(n != base for n in noisy)
        for seed in range(3):  # temperature 0: the mock judge's own score, whatever the seed
            cold = content(
                chat(client, "mock/judge-noisy", user, COMPLETENESS_SYSTEM, seed=seed, temperature=0)
            )
            assert RATING_RE.findall(cold) == [str(base)]
    # About min(0.7, 1)/2 = 35 % of answers move (fewer at the clamped ends of the scale): some, not all.
    assert 0.1 * 150 < moved < 0.45 * 150, moved


def test_lenient_judge_is_one_point_higher_capped_at_the_top(client: httpx.Client) -> None:
    seen = set()
    for row in seed_rows()[:12]:
        base = rating(client, COMPLETENESS_SYSTEM, row["content"], row["summary"])
        lenient = rating(client, COMPLETENESS_SYSTEM, row["content"], row["summary"], "mock/judge-lenient")
        assert lenient == min(5, base + 1), (row["ID"], base, lenient)
        seen.add(base)
    assert 5 in seen and min(seen) <= 2  # both the cap and the +1 were exercised
    ten_point = COMPLETENESS_SYSTEM.replace("from 1 to 5", "from 0 to 10")
    assert rating(client, ten_point, DOCUMENT, "", "mock/judge-lenient") == 1
    assert rating(client, ten_point, DOCUMENT, DOCUMENT, "mock/judge-lenient") == 10


def pairwise(client: httpx.Client, model: str, document: str, a: str, b: str) -> str | None:
    user = f"Consult: {document}\n\nA: {a}\n\nB: {b}"
    match = WINNER_RE.search(content(chat(client, model, user, PAIRWISE_SYSTEM)))
    return match.group(1) if match else None


def test_pairwise_judge_prefers_the_summary_the_mock_judge_scores_higher(client: httpx.Client) -> None:
    good = "Chief Complaint (CC): Cough and fever. Discussed likely community-acquired pneumonia."
    poor = "Patient seen today for a routine visit. Nothing remarkable noted."
    assert pairwise(client, "mock/judge-pairwise", DOCUMENT, good, poor) == "A"
    assert pairwise(client, "mock/judge-pairwise", DOCUMENT, poor, good) == "B"
    assert pairwise(client, "mock/judge-pairwise", DOCUMENT, good, good) == "TIE"
    labelled = f"Consult: {DOCUMENT}\n\nSummary A: {poor}\n\nSummary B: {good}"
    assert WINNER_RE.search(content(chat(client, "mock/judge-pairwise", labelled, PAIRWISE_SYSTEM)))[1] == "B"
    # Without both labelled candidates there is no verdict to parse.
    missing = content(
        chat(client, "mock/judge-pairwise", f"Consult: {DOCUMENT}\n\nA: {good}", PAIRWISE_SYSTEM)
    )
    assert "WINNER" not in missing


def test_biased_pairwise_judge_answers_a_in_about_its_share_of_prompts(client: httpx.Client) -> None:
    from mlflow_nemo_judge.testing.mock_llm.judges import BIASED_SHARE

    rows = seed_rows()
    poor = "Patient seen today for a routine visit. Nothing remarkable noted."
    fair = [pairwise(client, "mock/judge-pairwise", r["content"], poor, r["summary"]) for r in rows]
    biased = [pairwise(client, "mock/judge-pairwise-biased", r["content"], poor, r["summary"]) for r in rows]
    useful = [i for i, r in enumerate(rows) if r["ID"] not in USELESS_IDS]
    assert all(fair[i] == "B" for i in useful)
    flipped = sum(biased[i] == "A" for i in useful)
    assert all(biased[i] in ("A", fair[i]) for i in range(len(rows)))  # biased only ever towards A
    assert 0.1 * len(useful) <= flipped <= 0.5 * len(useful), (flipped, BIASED_SHARE)
    again = [pairwise(client, "mock/judge-pairwise-biased", r["content"], poor, r["summary"]) for r in rows]
    assert again == biased  # seeded by the prompt: one request is always answered the same


def test_judge_variants_are_listed_as_mock_models(client: httpx.Client) -> None:
    listed = {m["id"] for m in client.get("/models").json()["data"]}
    variants = {"mock/judge-noisy", "mock/judge-lenient", "mock/judge-pairwise", "mock/judge-pairwise-biased"}
    assert variants <= listed and variants <= set(MOCK_MODELS)
