"""Process plumbing shared by the team stack's pieces: free ports, bounded waits, group stops, log tails."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

__all__ = ["START_TIMEOUT", "TeamStackError", "free_port", "log_tail", "stop_group", "wait_until"]

START_TIMEOUT = 60.0  # seconds each piece may take to answer; PostgreSQL-backed MLflow migrates in ~10-20 s
_LOG_TAIL = 3000


class TeamStackError(RuntimeError):
    """A piece of the team stack failed to start; the message names it and quotes its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, *secrets_: str) -> str:
    """The end of a log, with every secret (and its URL-quoted form) masked: errors quote logs."""
    try:
        text = path.read_text(errors="replace")[-_LOG_TAIL:]
    except OSError as exc:
        return f"(no log: {exc.strerror})"
    for secret in secrets_:
        for form in {secret, urllib.parse.quote(secret, safe="")}:
            text = text.replace(form, "***")
    return text.strip() or "(empty log)"


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes] | None, timeout: float) -> str | None:
    """Poll ``ready`` until true; the reason it never became true, else None."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if ready():
                return None
        if proc is not None and proc.poll() is not None:
            return f"exited with code {proc.returncode}"
        if time.monotonic() > deadline:
            return f"not ready within {timeout:.0f} s"
        time.sleep(0.2)


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Signal the process group (started with its own session), then kill it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
