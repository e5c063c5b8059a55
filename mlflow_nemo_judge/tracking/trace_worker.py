"""Traces written by a helper process with MLflow imported, on the other core (issue 15).

A trace costs ~25 ms of CPU inside MLflow's store on sqlite (SQLAlchemy's unit of work) and ~45 ms
through a server's client, all of it under the GIL of the process that calls MLflow. At 50 samples that
is ~1.25 s taken from the engine, the run's setup and its finish, and the traces of the last wave of
samples are what a short tracked run still waits for after its last model call. A second process
writes them on the otherwise idle core.

- **Who.** One worker per process (``shared``), started where a run will write at least
  ``NEMO_JUDGE_TRACE_WORKER`` traces (default 20; 0 = never): by an early start, beside the first model
  calls (``tracking/early.py``), or by the first such trace stream. It imports MLflow (and, for a
  database store, MLflow's SQL store) and says ``ready``; later runs of the process reuse it.
- **When.** ``write`` uses it only when it is ready and idle. Until then, and whenever it cannot be used
  (it did not start, it exited, MLflow's internals it needs moved), batches are written in this process
  as before, so traces never wait for the optimisation.
- **How.** A batch travels as JSON with this process's working folder and MLflow/cloud/TLS/proxy
  environment (so a relative sqlite path, a token set after the worker started, a CA bundle mean what
  they mean here); the tracking URI, which can hold credentials, travels on the pipe too, never in
  ``argv``. The worker opens a store only at its first batch, when the run exists (so creating a new
  store's schema stays this process's), writes with the same ``_BatchTraceWriter``, and answers the
  count or the one-line error (``health.tracking_error``: secrets masked).
- **Failures.** A store error is the batch's failure, as in this process. A worker that exits after a
  batch was sent fails that batch: it may have been written, and writing it again here could
  duplicate traces (``resume`` writes what is missing).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from mlflow_nemo_judge import settings
from mlflow_nemo_judge.data.scan import DatasetInfo
from mlflow_nemo_judge.helper_process import Helper
from mlflow_nemo_judge.tracking.trace_samples import (
    _TraceExpectation,
    _TraceFeedback,
    _TraceSample,
    _TraceSpan,
)

logger = logging.getLogger(__name__)

MODULE = "mlflow_nemo_judge.tracking.trace_worker"
READY = "ready"
ENV_PREFIXES = ("MLFLOW_", "AWS_", "AZURE_", "GOOGLE_", "REQUESTS_", "SSL_", "CURL_")
ENV_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def planned(datasets: Sequence[DatasetInfo], trace_samples: int) -> int | None:
    """How many traces a run over ``datasets`` writes at most (None: a dataset's size is not known)."""
    rows = 0
    for d in datasets:
        n = d.num_rows if d.limit is None else d.limit if d.num_rows is None else min(d.num_rows, d.limit)
        if n is None:
            return None
        rows += n
    return min(rows, trace_samples)


def wanted(planned: int | None) -> bool:
    """Whether a run that will write ``planned`` traces (None: not known, so possibly many) should have
    them written by the worker."""
    least = settings.get_int("NEMO_JUDGE_TRACE_WORKER")
    return least > 0 and (planned is None or planned >= least)


def store_kind(uri: str | None) -> str:
    """``sql`` for a database store (the worker then imports MLflow's SQL store before it is ready),
    else ``other``: the only fact about the store the worker's command line shows."""
    scheme = (uri or "").split(":", 1)[0].split("+", 1)[0].lower()
    return "sql" if scheme in ("sqlite", "postgresql", "mysql", "mssql") else "other"


class TraceWorker:
    """This process's side of the worker: one batch at a time, from any trace stream's thread."""

    def __init__(self, kind: str) -> None:
        self._lock = threading.Lock()
        self._helper: Helper | None = Helper(MODULE, kind)
        self._ready = False

    @property
    def running(self) -> bool:
        return self._helper is not None and self._helper.alive

    def write(
        self, uri: str, experiment_id: str, run_id: str, model_id: str | None, samples: Sequence[_TraceSample]
    ) -> bool:
        """Write ``samples`` in the worker: True when it did; False when it could not be asked (not
        ready, busy with another run's batch, gone, or unable to write traces at all): then the caller
        writes them. A store error, or the worker exiting with the batch, raises ``TrackingError``."""
        from mlflow_nemo_judge.errors import TrackingError, TrackingUnavailable

        if not self._lock.acquire(blocking=False):
            return False  # another run's batch: this one is written in its own thread meanwhile
        try:
            helper = self._helper
            if helper is None or not self._is_ready(helper):
                return False
            job = {
                "uri": uri,
                "experiment": experiment_id,
                "run_id": run_id,
                "model_id": model_id,
                "cwd": os.getcwd(),
                "env": {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES},
                "samples": [asdict(s) for s in samples],
            }
            try:
                helper.send(json.dumps(job, default=str))
            except OSError:
                self._stop()
                return False  # not sent: written here
            try:
                answer = json.loads(helper.readline(None))
            except (RuntimeError, ValueError):
                self._stop()
                raise TrackingError(
                    f"the trace writer process exited while writing {len(samples)} trace(s)"
                ) from None
            if "written" in answer:
                return True
            if answer.get("unsupported"):
                logger.debug("trace worker cannot write traces (%s); writing them here", answer["error"])
                self._stop()
                return False
            raise (TrackingUnavailable if answer.get("unavailable") else TrackingError)(str(answer["error"]))
        finally:
            self._lock.release()

    def _is_ready(self, helper: Helper) -> bool:
        if self._ready:
            return helper.alive
        try:
            line = helper.readline(0)
        except TimeoutError:
            return False  # still importing MLflow
        except RuntimeError:
            self._stop()
            return False
        self._ready = line == READY
        if not self._ready:
            self._stop()
        return self._ready

    def _stop(self, wait: bool = True) -> None:
        helper, self._helper = self._helper, None
        if helper is not None:
            helper.stop(wait)

    def close(self, wait: bool = True) -> None:
        with self._lock:
            self._stop(wait)


_SHARED: TraceWorker | None = None
_SHARED_LOCK = threading.Lock()


def start(uri: str | None) -> None:
    """Start this process's worker unless one is running (an optimisation: never a failure)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is not None and _SHARED.running:
            return
        try:
            _SHARED = TraceWorker(store_kind(uri))
        except Exception as exc:
            logger.debug("trace worker not started: %s", exc)
            _SHARED = None
            return
        atexit.register(_SHARED.close, False)


def current() -> TraceWorker | None:
    """The worker, when one was started and is still running."""
    worker = _SHARED
    return worker if worker is not None and worker.running else None


# ------------------------------------------------------------------------------- the worker's side


def _sample(d: dict[str, Any]) -> _TraceSample:
    return _TraceSample(
        **{
            **d,
            "spans": [_TraceSpan(**s) for s in d["spans"]],
            "feedbacks": [_TraceFeedback(**f) for f in d["feedbacks"]],
            "expectations": [_TraceExpectation(**e) for e in d["expectations"]],
        }
    )


def _use_env(env: dict[str, str]) -> None:
    """This process's environment as the caller's for every variable the batch carries the kind of."""
    for k in [k for k in os.environ if (k.startswith(ENV_PREFIXES) or k in ENV_NAMES) and k not in env]:
        del os.environ[k]
    os.environ.update(env)


def main() -> None:
    """Import MLflow, say ready, then write one batch per stdin line and answer it on stdout."""
    import signal
    import sys

    # Ctrl-C reaches the whole process group: the caller decides what an interrupt does to its run,
    # and this process ends when the caller closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import mlflow.tracing.client  # noqa: F401 - imported before saying ready: the cost this process takes

    if sys.argv[1:2] == ["sql"]:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    from mlflow_nemo_judge.tracking.health import _is_connectivity, tracking_error
    from mlflow_nemo_judge.tracking.traces import _BatchTraceWriter

    print(READY, flush=True)
    writers: dict[tuple[str, str, str], _BatchTraceWriter] = {}
    for line in sys.stdin:
        job = json.loads(line)
        uri = job["uri"]
        _use_env(job["env"])
        os.chdir(job["cwd"])
        key = (job["cwd"], uri, job["experiment"])
        try:
            if key not in writers:
                writers[key] = _BatchTraceWriter(uri, job["experiment"])
        except Exception as exc:
            answer: dict[str, Any] = {"unsupported": True, "error": str(tracking_error(exc, uri))}
        else:
            try:
                samples = [_sample(s) for s in job["samples"]]
                answer = {"written": writers[key].write(samples, job["run_id"], job["model_id"])}
            except Exception as exc:
                answer = {"error": str(tracking_error(exc, uri)), "unavailable": _is_connectivity(exc)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
