"""A FAKE NeMo-compatible service on loopback: a test double, not NVIDIA NeMo.

It lets the test suite and the offline demo exercise the ``nemo`` backend end to end with no deployment
and no internet. One port serves what a real install spreads over three services (NeMo reference §1):

* Evaluator: ``/v1/evaluation/jobs`` (create, get, list, status, results, download-results ZIP, logs,
  cancel, delete), ``/v1/evaluation/configs`` and ``/v1/evaluation/targets`` CRUD, ``/v1/evaluation/results``;
* Entity Store: ``/v1/namespaces``, ``/v1/datasets``;
* Data Store: ``/v1/datastore/namespaces`` (form data) and, at ``{base}/v1/hf``, the subset of the Hugging
  Face Hub HTTP API that ``HfApi.create_repo``/``upload_file``/``create_commit`` (regular, non-LFS files),
  ``list_repo_files``, ``repo_info`` and ``hf_hub_download`` use.

Jobs are computed for real, by this package's local engine, against whatever endpoints the config names
(normally the loopback mock models): see ``fake_nemo_jobs``. Responses follow the documented shapes
(``eval-<base58>`` ids, ``"******"`` for keys in read-backs, the page envelope, ``{"detail": ...}``
errors). Every response carries ``Server: fake-nemo``; ``/`` and ``/health`` and the startup log line say
that this is a test double.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from mlflow_nemo_judge.config.secrets import redact
from mlflow_nemo_judge.testing.fake_nemo.jobs import (
    FakeJob,
    entity,
    expand_config,
    expand_target,
    new_id,
    now,
    request_cancel,
    start_job,
)

__all__ = ["FakeNemoService"]

log = logging.getLogger(__name__)

STARTUP_LINE = "FAKE NeMo service (mlflow-nemo-judge test double, not NVIDIA NeMo) listening on {url}"
_NOTICE = "mlflow-nemo-judge FAKE NeMo service: a loopback test double, not NVIDIA NeMo"


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), headers=headers or {})


class _Error(Exception):
    """An error answer: NeMo's ``{"detail": ...}``, or the Hub's ``{"error": ...}`` + ``X-Error-Code``."""

    def __init__(self, status: int, detail: Any, hub_code: str | None = None) -> None:
        super().__init__(str(detail))
        self.status, self.detail, self.hub_code = status, detail, hub_code

    def reply(self) -> _Reply:
        if self.hub_code is not None:
            return _json(
                self.status,
                {"error": self.detail},
                {"X-Error-Code": self.hub_code, "X-Error-Message": str(self.detail)},
            )
        return _json(self.status, {"detail": self.detail})


@dataclass
class _Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise _Error(
                422, [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
            ) from None

    def param(self, name: str, default: str | None = None) -> str | None:
        return next((v for k, v in self.query if k == name), default)


@dataclass
class _Repo:
    kind: str
    repo_id: str
    files: dict[str, bytes] = field(default_factory=dict)
    head: str = "0" * 40


def _blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's own object id


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
        req = _Request(
            self.command,
            parts.path,
            parse_qsl(parts.query, keep_blank_values=True),
            {k.lower(): v for k, v in self.headers.items()},
            self._body(),
        )
        try:
            reply = self.server.app.dispatch(req)
        except _Error as exc:
            reply = exc.reply()
        except Exception as exc:  # a bug in the fake must show up as a 500, not a hung connection
            log.exception("fake NeMo: unhandled error on %s %s", req.method, req.path)
            reply = _json(500, {"detail": f"internal error in the fake service: {exc}"})
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


Route = tuple[str, "re.Pattern[str]", Callable[..., _Reply]]


class FakeNemoService:
    """The fake service (see the module docstring). Use as a context manager or ``start()``/``stop()``.

    Options: ``fail_next_job`` (the next job fails with a clear message), ``queue_delay`` (seconds spent
    in created and in pending), ``sample_delay`` (seconds per finished sample, to watch progress),
    ``minimal_stats`` (results carry only count/sum/mean, like the 2025-05 server), ``include_samples``
    (put the per-sample ``results.json`` in the download ZIP). ``hold_jobs.set()`` freezes jobs in
    ``running`` until cleared or cancelled.
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
        self.lock = threading.RLock()
        self._own_work = work_dir is None
        self.work_dir = (
            Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="fake-nemo-"))
        )
        self.es_namespaces: dict[str, dict[str, Any]] = {}
        self.es_datasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.ds_namespaces: dict[str, dict[str, Any]] = {}
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.configs: dict[tuple[str, str], dict[str, Any]] = {}
        self.targets: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.results: dict[str, dict[str, Any]] = {}
        # Raw job-create bodies as received (with secrets): tests check what a client really sent.
        self.job_requests: list[Any] = []
        # (method, path) of every request, bounded so a long demo does not grow without limit.
        self.requests: deque[tuple[str, str]] = deque(maxlen=100_000)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[Route] = []
        self._add_routes()

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
        with self.lock:
            return self.es_datasets.get((namespace, name))

    def put_result(self, doc: dict[str, Any]) -> None:
        with self.lock:
            self.results[doc["id"]] = doc

    # -------------------------------------------------------------------------------------- routing

    def _add_routes(self) -> None:
        hf = r"/v1/hf"
        repo = r"(?P<kind>datasets|models|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
        table: list[tuple[str, str, Callable[..., _Reply]]] = [
            ("GET", r"/", self._health),
            ("GET", r"/health", self._health),
            ("GET", r"/v1/health", self._health),
            # Entity Store
            ("POST", r"/v1/namespaces", self._es_ns_create),
            ("GET", r"/v1/namespaces", self._es_ns_list),
            ("GET", r"/v1/namespaces/(?P<ns>[^/]+)", self._es_ns_get),
            ("DELETE", r"/v1/namespaces/(?P<ns>[^/]+)", self._es_ns_delete),
            ("POST", r"/v1/datasets", self._es_ds_create),
            ("GET", r"/v1/datasets", self._es_ds_list),
            ("GET", r"/v1/datasets/(?P<ns>[^/]+)/(?P<name>[^/]+)", self._es_ds_get),
            ("PATCH", r"/v1/datasets/(?P<ns>[^/]+)/(?P<name>[^/]+)", self._es_ds_patch),
            ("DELETE", r"/v1/datasets/(?P<ns>[^/]+)/(?P<name>[^/]+)", self._es_ds_delete),
            # Data Store
            ("POST", r"/v1/datastore/namespaces", self._ds_ns_create),
            ("GET", r"/v1/datastore/namespaces/(?P<ns>[^/]+)", self._ds_ns_get),
            ("POST", hf + r"/api/repos/create", self._hf_create),
            ("POST", hf + r"/api/" + repo + r"/preupload/(?P<rev>[^/]+)", self._hf_preupload),
            ("POST", hf + r"/api/" + repo + r"/commit/(?P<rev>[^/]+)", self._hf_commit),
            ("GET", hf + r"/api/" + repo + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self._hf_tree),
            ("GET", hf + r"/api/" + repo + r"(?:/revision/(?P<rev>[^/]+))?", self._hf_info),
            ("HEAD", hf + r"/" + repo + r"/(?:resolve|blob)/(?P<rev>[^/]+)/(?P<path>.+)", self._hf_file),
            ("GET", hf + r"/" + repo + r"/(?:resolve|blob)/(?P<rev>[^/]+)/(?P<path>.+)", self._hf_file),
            # Evaluator
            ("POST", r"/v1/evaluation/jobs", self._job_create),
            ("GET", r"/v1/evaluation/jobs", self._job_list),
            ("GET", r"/v1/evaluation/jobs/(?P<id>[^/]+)", self._job_get),
            ("DELETE", r"/v1/evaluation/jobs/(?P<id>[^/]+)", self._job_delete),
            ("GET", r"/v1/evaluation/jobs/(?P<id>[^/]+)/status", self._job_status),
            ("GET", r"/v1/evaluation/jobs/(?P<id>[^/]+)/results", self._job_results),
            ("GET", r"/v1/evaluation/jobs/(?P<id>[^/]+)/download-results", self._job_download),
            ("GET", r"/v1/evaluation/jobs/(?P<id>[^/]+)/logs", self._job_logs),
            ("POST", r"/v1/evaluation/jobs/(?P<id>[^/]+)/cancel", self._job_cancel),
            ("GET", r"/v1/evaluation/results", self._result_list),
            ("GET", r"/v1/evaluation/results/(?P<id>[^/]+)", self._result_get),
        ]
        for kind in ("configs", "targets"):
            table += [
                ("POST", rf"/v1/evaluation/{kind}", self._crud(kind, "create")),
                ("GET", rf"/v1/evaluation/{kind}", self._crud(kind, "list")),
                ("GET", rf"/v1/evaluation/{kind}/(?P<ns>[^/]+)/(?P<name>[^/]+)", self._crud(kind, "get")),
                ("PATCH", rf"/v1/evaluation/{kind}/(?P<ns>[^/]+)/(?P<name>[^/]+)", self._crud(kind, "patch")),
                (
                    "DELETE",
                    rf"/v1/evaluation/{kind}/(?P<ns>[^/]+)/(?P<name>[^/]+)",
                    self._crud(kind, "delete"),
                ),
            ]
        self._routes = [(m, re.compile(p.rstrip("/") + "/?$" if p != "/" else "/$"), h) for m, p, h in table]

    def dispatch(self, req: _Request) -> _Reply:
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
            raise _Error(405, "Method Not Allowed")
        raise _Error(404, "Not Found")

    # ---------------------------------------------------------------------------------- helpers

    def _health(self, req: _Request) -> _Reply:
        return _json(200, {"status": "healthy", "fake": True, "service": _NOTICE})

    @staticmethod
    def _page(req: _Request, items: list[dict[str, Any]]) -> _Reply:
        filters = {
            k[len("filter[") : -1]: v for k, v in req.query if k.startswith("filter[") and k.count("[") == 1
        }
        items = [i for i in items if all(str(i.get(k)) == v for k, v in filters.items())]
        sort = req.param("sort") or "created_at"
        items.sort(key=lambda i: str(i.get(sort.lstrip("-")) or ""), reverse=sort.startswith("-"))
        try:
            page, size = max(1, int(req.param("page") or 1)), max(1, int(req.param("page_size") or 10))
        except ValueError:
            raise _Error(
                422,
                [{"loc": ["query", "page"], "msg": "Input should be a valid integer", "type": "int_parsing"}],
            ) from None
        chunk = items[(page - 1) * size : page * size]
        return _json(
            200,
            {
                "object": "list",
                "data": chunk,
                "pagination": {
                    "page": page,
                    "page_size": size,
                    "current_page_size": len(chunk),
                    "total_pages": max(1, -(-len(items) // size)),
                    "total_results": len(items),
                },
                "sort": sort,
                "filter": filters,
                "search": {},
            },
        )

    @staticmethod
    def _required(body: Any, *names: str, where: tuple[str, ...] = ("body",)) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _Error(
                422, [{"loc": list(where), "msg": "Input should be a valid dictionary", "type": "dict_type"}]
            )
        missing = [
            {"loc": [*where, n], "msg": "Field required", "type": "missing"} for n in names if n not in body
        ]
        if missing:
            raise _Error(422, missing)
        return body

    @staticmethod
    def _deleted(eid: str) -> _Reply:
        return _json(200, {"id": eid, "deleted_at": now(), "message": "Resource deleted successfully."})

    # -------------------------------------------------------------------------------- Entity Store

    def _es_ns_create(self, req: _Request) -> _Reply:
        body = self._required(req.json(), "id")
        with self.lock:
            if body["id"] in self.es_namespaces:
                raise _Error(409, f"Namespace '{body['id']}' already exists.")
            ts = now()
            ns = {
                "id": body["id"],
                "created_at": ts,
                "updated_at": ts,
                "description": body.get("description"),
                "project": body.get("project"),
                "custom_fields": body.get("custom_fields") or {},
                "ownership": body.get("ownership"),
            }
            self.es_namespaces[body["id"]] = ns
        return _json(200, ns)

    def _es_ns_get(self, req: _Request, ns: str) -> _Reply:
        with self.lock:
            if ns not in self.es_namespaces:
                raise _Error(404, f"Namespace '{ns}' not found.")
            return _json(200, self.es_namespaces[ns])

    def _es_ns_list(self, req: _Request) -> _Reply:
        with self.lock:
            return self._page(req, list(self.es_namespaces.values()))

    def _es_ns_delete(self, req: _Request, ns: str) -> _Reply:
        with self.lock:
            if self.es_namespaces.pop(ns, None) is None:
                raise _Error(404, f"Namespace '{ns}' not found.")
        return self._deleted(ns)

    def _es_ds_create(self, req: _Request) -> _Reply:
        body = self._required(req.json(), "files_url")
        with self.lock:
            ns = body.get("namespace") or "default"
            if ns not in self.es_namespaces and ns != "default":
                raise _Error(422, f"Namespace '{ns}' does not exist.")
            rec = entity(None, body, ns)
            rec.update({"id": new_id("dataset"), "name": body.get("name") or rec["name"]})
            for k in ("schema_version", "type_prefix", "ownership"):
                rec.pop(k, None)
            if (ns, rec["name"]) in self.es_datasets:
                raise _Error(409, f"Dataset '{ns}/{rec['name']}' already exists.")
            for k in ("format", "files_url", "hf_endpoint", "split", "limit"):
                rec[k] = body.get(k)
            self.es_datasets[(ns, rec["name"])] = rec
        return _json(200, rec)

    def _es_ds(self, ns: str, name: str) -> dict[str, Any]:
        if (ns, name) not in self.es_datasets:
            raise _Error(404, f"Dataset '{ns}/{name}' not found.")
        return self.es_datasets[(ns, name)]

    def _es_ds_get(self, req: _Request, ns: str, name: str) -> _Reply:
        with self.lock:
            return _json(200, self._es_ds(ns, name))

    def _es_ds_patch(self, req: _Request, ns: str, name: str) -> _Reply:
        body = self._required(req.json())
        with self.lock:
            rec = self._es_ds(ns, name)
            rec.update({k: v for k, v in body.items() if k not in ("id", "name", "namespace", "created_at")})
            rec["updated_at"] = now()
            return _json(200, rec)

    def _es_ds_list(self, req: _Request) -> _Reply:
        with self.lock:
            return self._page(req, list(self.es_datasets.values()))

    def _es_ds_delete(self, req: _Request, ns: str, name: str) -> _Reply:
        with self.lock:
            rec = self._es_ds(ns, name)
            del self.es_datasets[(ns, name)]
        return self._deleted(rec["id"])

    # ---------------------------------------------------------------------------------- Data Store

    def _ds_ns_create(self, req: _Request) -> _Reply:
        form = dict(parse_qsl(req.body.decode("utf-8", "replace")))
        if "json" in req.headers.get("content-type", "") or "namespace" not in form:
            raise _Error(422, "expected a form-encoded body with 'namespace'")
        with self.lock:
            if form["namespace"] in self.ds_namespaces:
                raise _Error(409, f"namespace {form['namespace']} already exists")
            ts = now().split(".")[0] + "Z"
            self.ds_namespaces[form["namespace"]] = {
                "namespace": form["namespace"],
                "created_at": ts,
                "updated_at": ts,
            }
        return _json(201, self.ds_namespaces[form["namespace"]])

    def _ds_ns_get(self, req: _Request, ns: str) -> _Reply:
        with self.lock:
            if ns not in self.ds_namespaces:
                raise _Error(404, f"namespace {ns} not found")
            return _json(200, self.ds_namespaces[ns])

    def _repo(self, kind: str, ns: str, name: str, rev: str | None = None) -> _Repo:
        repo = self.repos.get((kind, f"{ns}/{name}"))
        if repo is None:
            raise _Error(404, f"Repository {ns}/{name} not found", hub_code="RepoNotFound")
        if rev not in (None, "main", repo.head):
            raise _Error(404, f"Revision {rev} not found", hub_code="RevisionNotFound")
        return repo

    def _hf_create(self, req: _Request) -> _Reply:
        body = self._required(req.json(), "name")
        kind = {"dataset": "datasets", "space": "spaces"}.get(str(body.get("type") or "model"), "models")
        ns = body.get("organization")
        with self.lock:
            # Like NDS, repos live in namespaces: create the Data Store namespace first (reference §3).
            if ns not in self.ds_namespaces:
                raise _Error(
                    404, f"namespace {ns!r} does not exist in the Data Store", hub_code="RepoNotFound"
                )
            repo_id = f"{ns}/{body['name']}"
            url = f"{self.hf_url}/{kind}/{repo_id}" if kind != "models" else f"{self.hf_url}/{repo_id}"
            if (kind, repo_id) in self.repos:
                return _json(409, {"error": "You already created this repo", "url": url})
            self.repos[(kind, repo_id)] = _Repo(kind, repo_id)
        return _json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _hf_preupload(self, req: _Request, kind: str, ns: str, name: str, rev: str) -> _Reply:
        body = self._required(req.json(), "files")
        with self.lock:
            self._repo(kind, ns, name, rev)
        # Every file is "regular" (base64 inside the commit): the fake has no LFS/Xet storage.
        return _json(
            200,
            {
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                    for f in body["files"]
                ]
            },
        )

    def _hf_commit(self, req: _Request, kind: str, ns: str, name: str, rev: str) -> _Reply:
        ops = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        with self.lock:
            repo = self._repo(kind, ns, name, rev)
            files = dict(repo.files)
            for op in ops:
                key, value = op.get("key"), op.get("value") or {}
                if key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key != "header":
                    raise _Error(422, f"commit operation {key!r} is not supported by the fake Data Store")
            digest = hashlib.sha1(repo.head.encode())  # noqa: S324 - a git-style commit id, not security
            for path in sorted(files):
                digest.update(path.encode() + b"\0" + _blob_oid(files[path]).encode())
            repo.files, repo.head = files, digest.hexdigest()
        return _json(
            200,
            {
                "commitUrl": f"{self.hf_url}/{kind}/{repo.repo_id}/commit/{repo.head}",
                "commitOid": repo.head,
                "pullRequestUrl": None,
            },
        )

    def _hf_tree(self, req: _Request, kind: str, ns: str, name: str, rev: str, path: str | None) -> _Reply:
        recursive = (req.param("recursive") or "").lower() in ("1", "true")
        prefix = (path or "").strip("/")
        with self.lock:
            repo = self._repo(kind, ns, name, rev)
            entries: dict[str, dict[str, Any]] = {}
            for fpath, data in sorted(repo.files.items()):
                if prefix and not fpath.startswith(prefix + "/"):
                    continue
                rel = fpath[len(prefix) + 1 :] if prefix else fpath
                parts = rel.split("/")
                for depth in range(1, len(parts)):
                    folder = "/".join(([prefix] if prefix else []) + parts[:depth])
                    if recursive or depth == 1:
                        entries.setdefault(
                            folder,
                            {
                                "type": "directory",
                                "oid": hashlib.sha1(folder.encode()).hexdigest(),  # noqa: S324
                                "size": 0,
                                "path": folder,
                            },
                        )
                if recursive or len(parts) == 1:
                    entries[fpath] = {
                        "type": "file",
                        "oid": _blob_oid(data),
                        "size": len(data),
                        "path": fpath,
                    }
        return _json(200, list(entries.values()))

    def _hf_info(self, req: _Request, kind: str, ns: str, name: str, rev: str | None) -> _Reply:
        with self.lock:
            repo = self._repo(kind, ns, name, rev)
            return _json(
                200,
                {
                    "id": repo.repo_id,
                    "author": ns,
                    "sha": repo.head,
                    "private": False,
                    "disabled": False,
                    "gated": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "lastModified": now() + "Z",
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                },
            )

    def _hf_file(self, req: _Request, kind: str, ns: str, name: str, rev: str, path: str) -> _Reply:
        with self.lock:
            repo = self._repo(kind, ns, name, rev)
            data = repo.files.get(path)
            if data is None:
                err = _Error(404, f"Entry {path} not found", hub_code="EntryNotFound")
                reply = err.reply()
                reply.headers["X-Repo-Commit"] = repo.head
                return reply
            headers = {"X-Repo-Commit": repo.head, "ETag": f'"{_blob_oid(data)}"'}
        return _Reply(200, data, "application/octet-stream", headers)

    # ----------------------------------------------------------------------------------- Evaluator

    def _resolve_ref(
        self, store: dict[tuple[str, str], dict[str, Any]], ref: str, what: str
    ) -> dict[str, Any]:
        ns, _, name = ref.partition("/")
        if (ns, name) not in store:
            raise _Error(404, f"Evaluation {what} '{ref}' not found.")
        return json.loads(json.dumps(store[(ns, name)]))

    def _job_create(self, req: _Request) -> _Reply:
        raw = req.json()
        with self.lock:
            self.job_requests.append(raw)
        body = self._required(raw, "config", "target")
        ns = body.get("namespace") or "default"
        with self.lock:
            cfg, tgt = body["config"], body["target"]
            if isinstance(cfg, str):
                cfg_rec = self._resolve_ref(self.configs, cfg, "config")
            else:
                cfg_rec = expand_config(self._required(cfg, "type", where=("body", "config")), ns)
            if isinstance(tgt, str):
                tgt_rec = self._resolve_ref(self.targets, tgt, "target")
            else:
                tgt_rec = expand_target(self._required(tgt, "type", where=("body", "target")), ns)
            ts = now()
            record: dict[str, Any] = {
                "created_at": ts,
                "updated_at": ts,
                "id": new_id("eval"),
                "namespace": ns,
                "description": body.get("description"),
                "target": tgt_rec,
                "config": cfg_rec,
                "result": None,
                "output_files_url": body.get("output_files_url"),
                "status_details": {
                    "message": None,
                    "task_status": {},
                    "progress": None,
                    "samples_processed": None,
                },
                "status": "created",
                "project": body.get("project"),
                "custom_fields": body.get("custom_fields") or {},
                "ownership": body.get("ownership"),
            }
            job = FakeJob(record)
            job.log("INFO", f"Job {job.id} created (FAKE NeMo service, a test double)")
            self.jobs[job.id] = job
            reply = _json(200, redact(record))
        start_job(self, job)
        return reply

    def _job(self, job_id: str) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise _Error(404, f"Evaluation job '{job_id}' not found.")
        return job

    def _job_get(self, req: _Request, id: str) -> _Reply:
        with self.lock:
            return _json(200, redact(self._job(id).record))

    def _job_list(self, req: _Request) -> _Reply:
        with self.lock:
            return self._page(req, [redact(j.record) for j in self.jobs.values()])

    def _job_status(self, req: _Request, id: str) -> _Reply:
        with self.lock:
            return _json(200, dict(self._job(id).record["status_details"]))

    def _job_results(self, req: _Request, id: str) -> _Reply:
        with self.lock:
            job = self._job(id)
            result = self.results.get(job.record.get("result") or "")
            if result is None:
                raise _Error(
                    404, f"Results for job '{id}' are not available (status {job.record['status']})."
                )
            return _json(200, result)

    def _job_download(self, req: _Request, id: str) -> _Reply:
        with self.lock:
            job = self._job(id)
            if job.result_zip is None:
                raise _Error(
                    404, f"Results for job '{id}' are not available (status {job.record['status']})."
                )
            return _Reply(
                200,
                job.result_zip,
                "application/zip",
                {"Content-Disposition": f'attachment; filename="{id}.zip"'},
            )

    def _job_logs(self, req: _Request, id: str) -> _Reply:
        with self.lock:
            text = "\n".join(self._job(id).logs) + "\n"
        # Versions disagree (the SDK types logs as a JSON object, other clients read plain text): answer
        # JSON (the text as a JSON string) to JSON-only clients, plain text to everyone else.
        if req.headers.get("accept", "").strip().lower() == "application/json":
            return _json(200, text)
        return _Reply(200, text.encode(), "text/plain; charset=utf-8")

    def _job_cancel(self, req: _Request, id: str) -> _Reply:
        with self.lock:
            job = self._job(id)
        request_cancel(self, job)
        with self.lock:
            return _json(
                200, {"id": id, "status": job.record["status"], "message": "Job cancellation requested."}
            )

    def _job_delete(self, req: _Request, id: str) -> _Reply:
        with self.lock:
            job = self._job(id)
        request_cancel(self, job)
        with self.lock:
            self.jobs.pop(id, None)
        return _Reply(204, b"", "text/plain")

    def _result_get(self, req: _Request, id: str) -> _Reply:
        with self.lock:
            if id not in self.results:
                raise _Error(404, f"Evaluation result '{id}' not found.")
            return _json(200, self.results[id])

    def _result_list(self, req: _Request) -> _Reply:
        with self.lock:
            return self._page(req, list(self.results.values()))

    def _crud(self, kind: str, action: str) -> Callable[..., _Reply]:
        store = self.configs if kind == "configs" else self.targets
        expand = expand_config if kind == "configs" else expand_target
        what = kind[:-1]

        def handler(req: _Request, ns: str | None = None, name: str | None = None) -> _Reply:
            with self.lock:
                if action == "list":
                    return self._page(req, [redact(v) for v in store.values()])
                if action == "create":
                    body = self._required(req.json(), "type")
                    rec = expand(body, body.get("namespace") or "default")
                    key = (rec["namespace"], rec["name"])
                    if key in store:
                        raise _Error(409, f"Evaluation {what} '{key[0]}/{key[1]}' already exists.")
                    store[key] = rec
                    return _json(200, redact(rec))
                assert ns is not None and name is not None
                if (ns, name) not in store:
                    raise _Error(404, f"Evaluation {what} '{ns}/{name}' not found.")
                if action == "get":
                    return _json(200, redact(store[(ns, name)]))
                if action == "patch":
                    body = self._required(req.json())
                    rec = store[(ns, name)]
                    rec.update({k: v for k, v in body.items() if k not in ("id", "name", "created_at")})
                    rec["updated_at"] = now()
                    return _json(200, redact(rec))
                rec = store.pop((ns, name))
                return self._deleted(rec["id"])

        return handler
