"""ResponseCache: keys (headers, credentials), persistence, per-put durability, empty replies, degradation."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from mlflow_nemo_judge.http.cache import CACHE_FILE_NAME, ResponseCache, cache_key, default_cache_dir

RESPONSE = {"choices": [{"message": {"role": "assistant", "content": "héllo"}, "finish_reason": "stop"}]}


def committed_count(db: Path) -> int:
    """Rows visible to an independent connection, i.e. what has really been committed."""
    con = sqlite3.connect(str(db))
    try:
        return int(con.execute("SELECT count(*) FROM responses").fetchone()[0])
    finally:
        con.close()


def test_default_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEMO_JUDGE_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.setenv("NEMO_JUDGE_CACHE_DIR", "")
    assert default_cache_dir() == tmp_path / "xdg" / "mlflow-nemo-judge"
    monkeypatch.delenv("NEMO_JUDGE_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "mlflow-nemo-judge"


def test_default_path_uses_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEMO_JUDGE_CACHE_DIR", str(tmp_path / "c"))
    with ResponseCache() as cache:
        assert cache.enabled
        assert cache.path == tmp_path / "c" / CACHE_FILE_NAME
    assert (tmp_path / "c" / CACHE_FILE_NAME).is_file()


def test_key_is_canonical_sha256() -> None:
    body = {"messages": [{"role": "user", "content": "é"}], "temperature": 0}
    expected = json.dumps(
        {"url": "u", "model": "m", "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert cache_key("u", "m", body) == hashlib.sha256(expected.encode("utf-8")).hexdigest()
    # Order of keys does not matter; every component does.
    reordered = {"temperature": 0, "messages": [{"content": "é", "role": "user"}]}
    assert cache_key("u", "m", reordered) == cache_key("u", "m", body)
    assert ResponseCache.key("u", "m", body) == cache_key("u", "m", body)
    assert cache_key("u2", "m", body) != cache_key("u", "m", body)
    assert cache_key("u", "m2", body) != cache_key("u", "m", body)
    assert cache_key("u", "m", {**body, "temperature": 1}) != cache_key("u", "m", body)


def test_put_get_roundtrip_and_overwrite(tmp_path: Path) -> None:
    with ResponseCache(tmp_path) as cache:
        assert cache.get("k") is None
        cache.put("k", RESPONSE)
        assert cache.get("k") == RESPONSE
        other = {"choices": [{"text": "other"}]}
        cache.put("k", other)
        assert cache.get("k") == other
        assert cache.stats() == 1
        assert len(cache) == 1


def test_path_may_name_the_file(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "mine.sqlite"
    with ResponseCache(db) as cache:
        cache.put("k", RESPONSE)
    assert db.is_file()
    assert committed_count(db) == 1


def test_persists_across_instances(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put("a", RESPONSE)
    cache.close()
    cache.close()  # idempotent
    assert not cache.enabled
    with ResponseCache(tmp_path) as again:
        assert again.get("a") == RESPONSE
        assert again.stats() == 1


def test_every_put_is_committed_at_once(tmp_path: Path) -> None:
    db = tmp_path / CACHE_FILE_NAME
    with ResponseCache(tmp_path) as cache:
        cache.put("1", RESPONSE)
        assert committed_count(db) == 1  # visible to another connection: committed, no flush needed
        cache.put("2", RESPONSE)
        assert committed_count(db) == 2
        # WAL + synchronous=NORMAL is what makes a commit per put cheap (no fsync per commit).
        assert cache._store is not None and cache._store.con is not None
        assert cache._store.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cache._store.con.execute("PRAGMA synchronous").fetchone()[0] == 1


@pytest.mark.timeout(60)
def test_every_put_survives_a_killed_process(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from mlflow_nemo_judge.http.cache import ResponseCache\n"
        "c = ResponseCache(Path(sys.argv[1]))\n"
        "for i in range(250):\n"
        "    c.put(str(i), {'choices': [{'text': str(i)}]})\n"
        "os._exit(0)  # no close(), no finalizers: like a SIGKILL\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    with ResponseCache(tmp_path) as cache:
        assert cache.stats() == 250  # not one put lost, though nothing was flushed or closed
        assert cache.get("249") == {"choices": [{"text": "249"}]}


@pytest.mark.parametrize(
    "reply",
    [
        {"choices": [{"message": {"role": "assistant", "content": None}, "finish_reason": "length"}]},
        {"choices": [{"message": {"role": "assistant", "content": ""}}]},
        {"choices": [{"message": {"role": "assistant", "content": "  \n"}}]},
        {"choices": [{"message": {"role": "assistant", "content": [{"type": "text", "text": ""}]}}]},
        {"choices": [{"text": None}]},
        {"choices": []},
    ],
)
def test_a_reply_without_text_is_never_cached_nor_replayed(tmp_path: Path, reply: dict[str, Any]) -> None:
    db = tmp_path / CACHE_FILE_NAME
    with ResponseCache(tmp_path) as cache:
        cache.put("k", reply)
        assert cache.get("k") is None and committed_count(db) == 0
    # One stored by an older version (which cached anything well-formed) reads as a miss.
    con = sqlite3.connect(str(db))
    with con:
        con.execute("INSERT INTO responses VALUES ('old', ?, 0)", (json.dumps(reply),))
    con.close()
    with ResponseCache(tmp_path) as cache:
        assert cache.get("old") is None
        cache.put("old", RESPONSE)  # the fresh answer overwrites it
        assert cache.get("old") == RESPONSE


def test_key_includes_routing_headers_but_no_credentials() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    plain = cache_key("u", "m", body)
    # No headers (or only credentials) keeps the key of older versions, so their caches stay valid.
    assert cache_key("u", "m", body, {}) == plain
    creds = {
        "Authorization": "Bearer a",
        "api-key": "b",
        "X-API-Key": "c",
        "Proxy-Authorization": "d",
        "X-Goog-Api-Key": "e",
        "X-Auth-Token": "f",
        "Cookie": "g=1",
        "X-Client-Secret": "h",
    }
    assert cache_key("u", "m", body, creds) == plain
    assert cache_key("u", "m", body, {k: v + "-rotated" for k, v in creds.items()}) == plain
    # A routing header tells two deployments behind one URL apart; names are case-insensitive.
    a = cache_key("u", "m", body, {"X-Deployment": "a", **creds})
    b = cache_key("u", "m", body, {"X-Deployment": "b"})
    assert len({plain, a, b}) == 3
    assert cache_key("u", "m", body, {"x-deployment": "a"}) == a


def test_corrupted_file_disables_cache_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / CACHE_FILE_NAME).write_bytes(b"this is not a sqlite database at all " * 50)
    with caplog.at_level(logging.WARNING, logger="mlflow_nemo_judge.http.cache"):
        cache = ResponseCache(tmp_path)
    assert not cache.enabled
    assert any("without cache" in r.getMessage() for r in caplog.records)
    cache.put("k", RESPONSE)
    assert cache.get("k") is None
    assert cache.stats() == 0
    cache.clear()
    cache.flush()
    cache.close()


def test_unopenable_location_disables_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="mlflow_nemo_judge.http.cache"):
        cache = ResponseCache(blocker / "sub")  # parent is a file: cannot mkdir
    assert not cache.enabled
    assert caplog.records


def test_disabled_null_object() -> None:
    cache = ResponseCache.disabled()
    assert not cache.enabled
    cache.put("k", RESPONSE)
    assert cache.get("k") is None
    assert cache.stats() == 0
    with cache:
        pass
    assert "disabled" in repr(cache)


def test_clear(tmp_path: Path) -> None:
    with ResponseCache(tmp_path) as cache:
        for i in range(5):
            cache.put(str(i), RESPONSE)
        cache.clear()
        assert cache.stats() == 0
        assert cache.get("1") is None
    assert committed_count(tmp_path / CACHE_FILE_NAME) == 0


def test_safe_from_several_threads(tmp_path: Path) -> None:
    with ResponseCache(tmp_path) as cache:

        def work(t: int) -> None:
            for i in range(100):
                cache.put(f"{t}-{i}", {"choices": [{"text": f"{t}-{i}"}]})
                assert cache.get(f"{t}-{i}") is not None

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert cache.stats() == 400
    assert committed_count(tmp_path / CACHE_FILE_NAME) == 400


@pytest.mark.timeout(120)
def test_force_makes_a_new_run_but_the_cache_still_answers(
    seed_eval: dict[str, Any], mlflow_uri: str, judge_cache: Path
) -> None:
    """``--force`` is about MLflow runs (a new one instead of reusing the finished one); the answers
    still come from the cache. ``--no-cache`` (``cache=False``) is what calls the endpoints again."""
    from mlflow_nemo_judge.pipeline import evaluate

    server = seed_eval["server"]
    kw: dict[str, Any] = {"tracking_uri": mlflow_uri, "limit": 3, "progress_bar": False}
    first = evaluate(seed_eval["config"], seed_eval["faithful"], **kw)
    calls = server.request_count
    assert calls == 9 and first.result.usage.cache_hits == 0
    forced = evaluate(seed_eval["config"], seed_eval["faithful"], force=True, **kw)
    assert forced.run_ids != first.run_ids and forced.reused == [False]
    assert server.request_count == calls and forced.result.usage.cache_hits == 9
    recalled = evaluate(seed_eval["config"], seed_eval["faithful"], force=True, cache=False, **kw)
    assert server.request_count == calls + 9 and recalled.result.usage.cache_hits == 0


def test_two_deployments_behind_one_url_routed_by_a_header_do_not_share_answers(tmp_path: Path) -> None:
    import asyncio

    import httpx

    from mlflow_nemo_judge.http.openai import Endpoint, OpenAIClient
    from mlflow_nemo_judge.results import Usage

    def handler(req: httpx.Request) -> httpx.Response:
        who = req.headers.get("x-deployment", "?")
        return httpx.Response(200, json={"choices": [{"message": {"content": f"from {who}"}}]})

    body = {"messages": [{"role": "user", "content": "hi"}]}
    url = "http://gateway.test/v1/chat/completions"

    async def go() -> list[str | None]:
        with ResponseCache(tmp_path) as cache:
            client = OpenAIClient(httpx.MockTransport(handler), usage=Usage(), cache=cache)
            texts = []
            for dep, key in (("a", "key-one-1111"), ("b", "key-one-1111"), ("a", "key-two-2222")):
                ep = Endpoint(url, "m", api_key=key, headers={"X-Deployment": dep, "X-Api-Key": key})
                texts.append((await client.call(ep, body)).text)
            assert client.usage.requests == 2 and client.usage.cache_hits == 1  # a key rotation still hits
            return texts

    assert asyncio.run(go()) == ["from a", "from b", "from a"]
    stored = sqlite3.connect(str(tmp_path / CACHE_FILE_NAME)).execute("SELECT response FROM responses")
    assert not any("key-one" in r or "key-two" in r for (r,) in stored)
