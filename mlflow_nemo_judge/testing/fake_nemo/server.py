"""The FAKE NeMo service's HTTP server and lifecycle, composing its route groups on one port.

``entity_store`` (Entity Store), ``hf_hub`` (Data Store and its Hub API) and ``evaluator`` (jobs,
configs, targets, results) each own their state; this module frames HTTP/1.1, dispatches on
(method, path regex) and exposes their state as attributes tests read (``fake.jobs``, ``fake.repos``...).
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from mlflow_nemo_judge.testing.fake_nemo.entity_store import EntityStore
from mlflow_nemo_judge.testing.fake_nemo.evaluator import Evaluator
from mlflow_nemo_judge.testing.fake_nemo.hf_hub import DataStore
from mlflow_nemo_judge.testing.fake_nemo.jobs import request_cancel
from mlflow_nemo_judge.testing.fake_nemo.live import LiveEvaluator
from mlflow_nemo_judge.testing.fake_nemo.v2 import V2Jobs
from mlflow_nemo_judge.testing.fake_nemo.wire import Reply, Request, RouteSpec, ServiceError, json_reply

__all__ = ["STARTUP_LINE", "TERMINAL_STATUSES", "FakeNemoService"]

# The package's logger name from before the split, so existing log configuration (and tests) still apply.
log = logging.getLogger("mlflow_nemo_judge.testing.fake_nemo")

STARTUP_LINE = "FAKE NeMo service (mlflow-nemo-judge test double, not NVIDIA NeMo) listening on {url}"
TERMINAL_STATUSES: tuple[str, ...] = ("completed", "failed", "cancelled")
_NOTICE = "mlflow-nemo-judge FAKE NeMo service: a loopback test double, not NVIDIA NeMo"

Route = tuple[str, "re.Pattern[str]", Callable[..., Reply]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one buffered write with Nagle off: written separately, delayed ACKs
    # would add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    wbufsize = 1 << 16
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        req = Request(
            self.command,
            parts.path,
            parse_qsl(parts.query, keep_blank_values=True),
            {k.lower(): v for k, v in self.headers.items()},
            self._body(),
        )
        try:
            reply = self.server.app.dispatch(req)
        except ServiceError as exc:
            reply = exc.reply()
        except Exception as exc:  # a bug in the fake must show up as a 500, not a hung connection
            log.exception("fake NeMo: unhandled error on %s %s", req.method, req.path)
            reply = json_reply(500, {"detail": f"internal error in the fake service: {exc}"})
        self.send_response(reply.status)
        self.send_header("Server", "fake-nemo (mlflow-nemo-judge test double)")
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: FakeNemoService


class FakeNemoService:
    """The fake service (see the package docstring). Use as a context manager or ``start()``/``stop()``.

    Options: ``fail_next_job`` (the next job fails with a clear message), ``queue_delay`` (seconds spent
    in created and in pending), ``sample_delay`` (seconds per finished sample, to watch progress),
    ``minimal_stats`` (results carry only count/sum/mean, like the 2025-05 server), ``include_samples``
    (put the per-sample ``results.json`` in the download ZIP). ``hold_jobs.set()`` freezes jobs in
    ``running`` until cleared or cancelled. ``wait_for_job`` blocks until a job reaches a status.
    ``result_hook`` (tests) may change a job's result document in place before it is stored and served
    by ``GET …/results``, e.g. to report a value its per-sample ZIP does not average to.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fail_next_job: bool = False,
        queue_delay: float = 0.02,
        sample_delay: float = 0.0,
        minimal_stats: bool = False,
        include_samples: bool = True,
        work_dir: str | Path | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.fail_next_job = fail_next_job
        self.queue_delay, self.sample_delay = queue_delay, sample_delay
        self.minimal_stats, self.include_samples = minimal_stats, include_samples
        self.hold_jobs = threading.Event()
        self.result_hook: Callable[[dict[str, Any]], None] | None = None
        self.lock = threading.RLock()
        # Notified (under ``lock``) whenever a job's status changes; see wait_for_job.
        self.changed = threading.Condition(self.lock)
        self._own_work = work_dir is None
        self.work_dir = (
            Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="fake-nemo-"))
        )
        self.entity_store = EntityStore(self.lock)
        self.data_store = DataStore(self.lock, lambda: self.hf_url)
        self.evaluator = Evaluator(self)
        self.v2 = V2Jobs(self)  # /v2/evaluation/jobs, run by the same worker as v1 jobs
        self.live = LiveEvaluator(self)  # POST /v1/evaluation/live, synchronous
        # Each group owns its state; these aliases (same objects) are what tests and callers read.
        self.es_namespaces = self.entity_store.es_namespaces
        self.es_datasets = self.entity_store.es_datasets
        self.ds_namespaces = self.data_store.ds_namespaces
        self.repos = self.data_store.repos
        self.configs = self.evaluator.configs
        self.targets = self.evaluator.targets
        self.jobs = self.evaluator.jobs
        self.results = self.evaluator.results
        self.job_requests = self.evaluator.job_requests
        # (method, path) of every request, bounded so a long demo does not grow without limit.
        self.requests: deque[tuple[str, str]] = deque(maxlen=100_000)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[Route] = self._compile_routes()

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def hf_url(self) -> str:
        return f"{self.base_url}/v1/hf"

    def start(self) -> FakeNemoService:
        if self._server is not None:
            raise RuntimeError("FakeNemoService is already started")
        self._server = _Server((self.host, self.port), _Handler)
        self._server.app = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-nemo", daemon=True
        )
        self._thread.start()
        log.info(STARTUP_LINE.format(url=self.base_url))
        return self

    def stop(self) -> None:
        for job in list(self.jobs.values()):
            request_cancel(self, job)
        self.hold_jobs.clear()
        for job in list(self.jobs.values()):
            if job.thread is not None:
                job.thread.join(timeout=10)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
        if self._own_work:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> FakeNemoService:
        return self if self._server is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------------- used by the job runner

    def take_failure(self) -> bool:
        with self.lock:
            fail, self.fail_next_job = self.fail_next_job, False
            return fail

    def get_es_dataset(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.entity_store.get_dataset(namespace, name)

    def put_result(self, doc: dict[str, Any]) -> None:
        if self.result_hook is not None:
            self.result_hook(doc)
        self.evaluator.put_result(doc)

    # ------------------------------------------------------------------------------- used by tests

    def wait_for_job(self, job_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        """Block until job ``job_id`` has one of ``statuses`` (default: a terminal one); a copy of its record.

        Woken by every status change, so it returns as soon as the state is reached; ``timeout`` is
        only a safety net that turns a job stuck elsewhere into a ``TimeoutError`` instead of a hang.
        """
        wanted = statuses or TERMINAL_STATUSES

        def status() -> str | None:
            job = self.jobs.get(job_id)
            return None if job is None else str(job.record["status"])

        with self.changed:
            if not self.changed.wait_for(lambda: status() in wanted, timeout):
                raise TimeoutError(f"job {job_id} is {status()!r}, not one of {wanted}, after {timeout:g}s")
            record: dict[str, Any] = copy.deepcopy(self.jobs[job_id].record)
            return record

    # -------------------------------------------------------------------------------------- routing

    def _compile_routes(self) -> list[Route]:
        table: list[RouteSpec] = [
            ("GET", r"/", self._health),
            ("GET", r"/health", self._health),
            ("GET", r"/v1/health", self._health),
            *self.entity_store.routes(),
            *self.data_store.routes(),
            *self.evaluator.routes(),
            *self.v2.routes(),
            *self.live.routes(),
        ]
        return [(m, re.compile(p.rstrip("/") + "/?$" if p != "/" else "/$"), h) for m, p, h in table]

    def dispatch(self, req: Request) -> Reply:
        with self.lock:
            self.requests.append((req.method, req.path))
        allowed = False
        for method, pattern, handler in self._routes:
            m = pattern.match(req.path)
            if m is None:
                continue
            allowed = True
            if method == req.method:
                groups = {k: unquote(v) if v is not None else None for k, v in m.groupdict().items()}
                return handler(req, **groups)
        if allowed:
            raise ServiceError(405, "Method Not Allowed")
        raise ServiceError(404, "Not Found")

    def _health(self, req: Request) -> Reply:
        return json_reply(200, {"status": "healthy", "fake": True, "service": _NOTICE})
