"""Persistent cache of successful model responses, so a re-run (or a resumed run) costs no API calls.

The cache is one sqlite file (``responses.sqlite``) in a cache directory. Keys are the sha256 of the
canonical JSON of ``{url, model, body}``; the API key is never part of a key and never stored, so a cache
directory can be shared or inspected without leaking secrets.

Writes are cheap: WAL journaling with ``synchronous=NORMAL`` and batched commits (every
``commit_every`` puts, or ``commit_interval`` seconds after the first uncommitted put, and on
``flush()``/``close()``), so 300k puts do not fsync 300k times. Whatever was committed survives a killed
process; at most about one second of puts can be lost.

The cache is an optimisation, never a reason for a run to fail: an unopenable or corrupted database file
logs a warning and the cache turns itself off (``enabled`` is False, ``get`` misses, ``put`` is a no-op).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

from mlflow_nemo_judge import settings

log = logging.getLogger(__name__)

CACHE_FILE_NAME = "responses.sqlite"
CACHE_DIR_ENV = "NEMO_JUDGE_CACHE_DIR"
_APP_DIR = "mlflow-nemo-judge"
# A path with one of these suffixes is taken to be the database file itself rather than a directory.
_DB_SUFFIXES = (".sqlite", ".sqlite3", ".db")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses ("
    " key TEXT PRIMARY KEY,"
    " response TEXT NOT NULL,"
    " created REAL NOT NULL"
    ") WITHOUT ROWID"
)


def default_cache_dir() -> Path:
    """``$NEMO_JUDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlflow-nemo-judge``, else ``~/.cache/…``.

    Empty variables count as unset, since an exported-but-empty variable usually means "not configured".
    """
    explicit = settings.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / _APP_DIR
    return Path.home() / ".cache" / _APP_DIR


def cache_key(url: str, model: str, body: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``{"url", "model", "body"}``.

    Canonical (sorted keys, compact separators, no ASCII escaping) so that dict ordering or formatting
    never turns an identical request into a miss. Headers, and hence the API key, are deliberately left
    out: a key rotation must not invalidate the cache, and the key must not be derivable from the file.
    """
    canonical = json.dumps(
        {"url": url, "model": model, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _resolve_db_path(path: Path | None) -> Path:
    if path is None:
        return default_cache_dir() / CACHE_FILE_NAME
    path = Path(path).expanduser()
    if path.suffix.lower() in _DB_SUFFIXES or path.is_file():
        return path
    return path / CACHE_FILE_NAME


# The commit timer's class, a module attribute so tests can fire the interval commit without waiting.
_Timer = threading.Timer


class _Store:
    """The connection and its batching state, separate from ``ResponseCache`` so that the exit-time
    finalizer and the commit timer can hold it without keeping the cache object alive."""

    def __init__(
        self, con: sqlite3.Connection, db_path: Path, commit_every: int, commit_interval: float
    ) -> None:
        self.con: sqlite3.Connection | None = con
        self.db_path = db_path
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        # RLock: the timer thread's flush and a caller's put/close may race; one lock serialises all
        # connection use (sqlite3 connections must not be used concurrently).
        self.lock = threading.RLock()
        self.pending = 0
        self.timer: threading.Timer | None = None

    # -- everything below is called with self.lock held unless noted --------------------------------

    def disable(self, what: str, exc: BaseException) -> None:
        log.warning(
            "Response cache %s disabled after an error during %s: %s; continuing without cache",
            self.db_path,
            what,
            exc,
        )
        self._cancel_timer()
        con, self.con = self.con, None
        self.pending = 0
        if con is not None:
            # Already failing; a second error while closing adds nothing worth reporting.
            with contextlib.suppress(sqlite3.Error):
                con.close()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def commit(self) -> None:
        # The timer is left armed on purpose: it then fires at most once per interval (one short-lived
        # thread per second, not one per batch) and finds nothing or only the newest puts to commit.
        if self.con is None or self.pending == 0:
            return
        try:
            self.con.commit()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc).lower() or "busy" in str(exc).lower():
                # Another process holds the write lock past our busy timeout: keep the transaction
                # open and try again at the next batch boundary instead of dropping the cache.
                log.debug("Response cache commit deferred: %s", exc)
                self._arm_timer()
                return
            self.disable("commit", exc)
            return
        except sqlite3.Error as exc:
            self.disable("commit", exc)
            return
        self.pending = 0

    def _arm_timer(self) -> None:
        if self.timer is None and self.commit_interval > 0:
            # A daemon timer bounds how much a killed process can lose even when puts stop arriving.
            timer = _Timer(self.commit_interval, self.timed_commit)
            timer.daemon = True
            self.timer = timer
            timer.start()

    def timed_commit(self) -> None:  # runs on the timer thread, takes the lock itself
        with self.lock:
            self.timer = None
            self.commit()

    def note_put(self) -> None:
        self.pending += 1
        if self.pending >= self.commit_every:
            self.commit()
        else:
            self._arm_timer()

    def close(self) -> None:
        with self.lock:
            self.commit()
            self._cancel_timer()
            con, self.con = self.con, None
            if con is not None:
                try:
                    con.close()
                except sqlite3.Error as exc:
                    log.warning("Response cache %s: error on close: %s", self.db_path, exc)


class ResponseCache:
    """sqlite-backed map from request key to the successful response JSON.

    ``path`` is the cache directory (the file ``responses.sqlite`` is created inside it) or, when it ends
    in ``.sqlite``/``.sqlite3``/``.db`` or names an existing file, the database file itself. ``None``
    means :func:`default_cache_dir`.

    Calls are synchronous and short (an indexed lookup or an insert into an open transaction), so calling
    them from the event loop thread is fine; a lock also makes them safe from several threads.
    """

    key = staticmethod(cache_key)

    def __init__(
        self, path: Path | None = None, *, commit_every: int = 200, commit_interval: float = 1.0
    ) -> None:
        if commit_every < 1:
            raise ValueError("commit_every must be >= 1")
        db_path = _resolve_db_path(path)
        self.path: Path | None = db_path
        self._store: _Store | None = None
        try:
            con = self._open(db_path)
        except (sqlite3.Error, OSError) as exc:
            log.warning("Response cache %s cannot be opened (%s); continuing without cache", db_path, exc)
            return
        self._store = _Store(con, db_path, commit_every, commit_interval)
        # Commit pending puts at interpreter exit even if the owner forgot close(); holds only the
        # store, so it does not keep this object alive.
        self._finalizer = weakref.finalize(self, self._store.close)

    @staticmethod
    def _open(db_path: Path) -> sqlite3.Connection:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are opened explicitly in put(), so the batching is ours and
        # not the sqlite3 module's implicit BEGIN heuristics. check_same_thread=False: our lock guards it.
        con = sqlite3.connect(str(db_path), timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            # These are the first statements that read the file, so a corrupt file fails here, at open.
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute(_SCHEMA)
            con.execute("SELECT count(*) FROM responses").fetchone()
        except BaseException:
            con.close()
            raise
        return con

    @classmethod
    def disabled(cls) -> ResponseCache:
        """A cache that never hits and stores nothing (for ``--no-cache`` and as the fallback)."""
        obj = cls.__new__(cls)
        obj.path = None
        obj._store = None
        return obj

    @property
    def enabled(self) -> bool:
        return self._store is not None and self._store.con is not None

    def get(self, key: str) -> dict[str, Any] | None:
        store = self._store
        if store is None:
            return None
        with store.lock:
            if store.con is None:
                return None
            try:
                row = store.con.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                store.disable("get", exc)
                return None
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except ValueError:
            # A damaged row is just a miss; the fresh response will overwrite it.
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, response: dict[str, Any]) -> None:
        store = self._store
        if store is None:
            return
        try:
            text = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            log.debug("Response not cached (not JSON-serialisable): %s", exc)
            return
        with store.lock:
            con = store.con
            if con is None:
                return
            try:
                if not con.in_transaction:
                    con.execute("BEGIN")
                con.execute(
                    "INSERT OR REPLACE INTO responses (key, response, created) VALUES (?, ?, ?)",
                    (key, text, time.time()),
                )
            except sqlite3.Error as exc:
                store.disable("put", exc)
                return
            store.note_put()

    def flush(self) -> None:
        """Commit pending puts now."""
        store = self._store
        if store is not None:
            with store.lock:
                store.commit()

    def stats(self) -> int:
        """Number of cached responses (0 when disabled)."""
        store = self._store
        if store is None:
            return 0
        with store.lock:
            if store.con is None:
                return 0
            try:
                row = store.con.execute("SELECT count(*) FROM responses").fetchone()
            except sqlite3.Error as exc:
                store.disable("stats", exc)
                return 0
        return int(row[0])

    def __len__(self) -> int:
        return self.stats()

    def clear(self) -> None:
        """Delete every cached response (committed at once)."""
        store = self._store
        if store is None:
            return
        with store.lock:
            con = store.con
            if con is None:
                return
            try:
                if not con.in_transaction:
                    con.execute("BEGIN")
                con.execute("DELETE FROM responses")
                store.pending += 1
            except sqlite3.Error as exc:
                store.disable("clear", exc)
                return
            store.commit()

    def close(self) -> None:
        """Commit and close; the cache is disabled afterwards. Safe to call twice."""
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return f"ResponseCache({str(self.path)!r}, {state})"
