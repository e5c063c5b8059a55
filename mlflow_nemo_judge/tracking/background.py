"""Run one function on its own daemon thread and get a ``Future`` for it.

The MLflow sink writes a run's setup (sources, prompts, params, inputs, the LoggedModel: 0.2-0.45 s of
store round trips) beside the first model calls instead of before them (issue 15). A daemon thread,
not a ``ThreadPoolExecutor``: the executor's workers are joined at interpreter exit, so a store that
hangs would hold up the exit of a process that has already failed or been interrupted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def in_thread(fn: Callable[[], T], name: str) -> Future[T]:
    """Start ``fn`` now on a daemon thread called ``name``; its result or exception lands in the future."""
    fut: Future[T] = Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn())
        except BaseException as exc:  # handed to whoever waits; nothing escapes the thread
            fut.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut
