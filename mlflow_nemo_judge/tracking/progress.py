"""The ``progress`` metric of a running evaluation, written off the engine's event loop."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from mlflow_nemo_judge.tracking.names import PROGRESS_INTERVAL

logger = logging.getLogger(__package__)  # "mlflow_nemo_judge.tracking", the records' name before the split


class _ProgressLogger:
    """Logs ``progress`` (0-100) from a background thread at most once per ``interval``.

    The engine calls back from its event loop for every finished sample; a synchronous MLflow call there
    (5-50 ms) would stall every in-flight request, so the callback only records numbers and this thread
    does the I/O. A failed progress write is logged and ignored: progress must never fail a run.
    """

    def __init__(
        self, cl: Any, run_id: str, n_tasks: int, step0: int, interval: float = PROGRESS_INTERVAL
    ) -> None:
        self.cl, self.run_id, self.n_tasks = cl, run_id, max(1, n_tasks)
        self.step = step0
        self.interval = interval
        self._state: dict[str, tuple[int, int | None]] = {}
        self._lock = threading.Lock()
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, task: str, done: int, total: int | None) -> None:
        with self._lock:
            self._state[task] = (done, total)
            self._dirty = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="nemo-judge-progress", daemon=True)
            self._thread.start()

    def percent(self) -> float:
        with self._lock:
            fractions = [min(1.0, d / t) if t else 0.0 for d, t in self._state.values()]
        return 100.0 * sum(fractions) / max(self.n_tasks, len(fractions))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
        from mlflow.entities import Metric

        try:
            self.cl.log_batch(self.run_id, metrics=[Metric("progress", self.percent(), _now_ms(), self.step)])
            self.step += 1
        except Exception as exc:
            from mlflow_nemo_judge.tracking.health import tracking_error

            # MLflow's message quotes the request URL, userinfo included: say it the redacted way.
            why = tracking_error(exc, str(getattr(self.cl, "tracking_uri", "") or ""))
            logger.warning("could not log progress to MLflow run %s: %s", self.run_id, why)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def _now_ms() -> int:
    return int(time.time() * 1000)
