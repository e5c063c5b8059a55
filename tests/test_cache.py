"""ResponseCache: keys, persistence, batched commits, crash survival, and graceful degradation."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
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
        cache.put("k", {"choices": []})
        assert cache.get("k") == {"choices": []}
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


def test_commits_are_batched_by_count_and_flush(tmp_path: Path) -> None:
    db = tmp_path / CACHE_FILE_NAME
    with ResponseCache(tmp_path, commit_every=3, commit_interval=0) as cache:
        cache.put("1", RESPONSE)
        cache.put("2", RESPONSE)
        # Not yet committed, but visible to the cache's own connection.
        assert committed_count(db) == 0
        assert cache.get("2") == RESPONSE
        cache.put("3", RESPONSE)
        assert committed_count(db) == 3
        cache.put("4", RESPONSE)
        assert committed_count(db) == 3
        cache.flush()
        assert committed_count(db) == 4
        # WAL + synchronous=NORMAL is what makes many small commits cheap.
        assert cache._store is not None and cache._store.con is not None
        assert cache._store.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cache._store.con.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_commits_after_interval_without_further_puts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interval commit is driven by a timer; a fake timer lets the test fire it explicitly."""
    import mlflow_nemo_judge.http.cache as cache_mod

    armed: list[FakeTimer] = []

    class FakeTimer:
        def __init__(self, interval: float, fn: Callable[[], None]) -> None:
            self.interval, self.fn, self.daemon, self.cancelled = interval, fn, False, False
            armed.append(self)

        def start(self) -> None:
            pass

        def cancel(self) -> None:
            self.cancelled = True

    monkeypatch.setattr(cache_mod, "_Timer", FakeTimer)
    db = tmp_path / CACHE_FILE_NAME
    with ResponseCache(tmp_path, commit_every=1000, commit_interval=0.05) as cache:
        cache.put("1", RESPONSE)
        cache.put("2", RESPONSE)
        assert len(armed) == 1 and armed[0].interval == 0.05 and armed[0].daemon
        assert committed_count(db) == 0
        armed[0].fn()  # the interval elapses with no further puts
        assert committed_count(db) == 2
        cache.put("3", RESPONSE)
        assert len(armed) == 2  # re-armed for the next uncommitted put


def test_committed_entries_survive_a_killed_process(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from mlflow_nemo_judge.http.cache import ResponseCache\n"
        "c = ResponseCache(Path(sys.argv[1]), commit_every=200, commit_interval=60)\n"
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
        # The batch of 200 was committed; the last 50 were still pending when the process died.
        assert cache.stats() == 200
        assert cache.get("199") == {"choices": [{"text": "199"}]}


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
    with ResponseCache(tmp_path, commit_every=7) as cache:

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


def test_many_puts_share_few_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-put commits (an fsync each) are what would make a big run slow; count them, not seconds."""
    import mlflow_nemo_judge.http.cache as cache_mod

    commits = 0
    real_commit = cache_mod._Store.commit

    def counting_commit(self: Any) -> None:
        nonlocal commits
        commits += self.pending > 0 and self.con is not None
        real_commit(self)

    monkeypatch.setattr(cache_mod._Store, "commit", counting_commit)
    with ResponseCache(tmp_path, commit_interval=0) as cache:
        for i in range(5000):
            cache.put(str(i), RESPONSE)
    assert commits == 5000 // 200  # commit_every=200; close() finds nothing left over
    assert committed_count(tmp_path / CACHE_FILE_NAME) == 5000
