"""The Evaluator slice of the FAKE NeMo service: jobs, stored configs and targets, and results.

A created job runs in its own worker thread (``jobs``); these handlers only store, read back (with
secrets masked, as NeMo does) and cancel.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.config.secrets import redact
from mlflow_nemo_judge.testing.fake_nemo.entities import expand_config, expand_target
from mlflow_nemo_judge.testing.fake_nemo.jobs import FakeJob, job_record, logs_zip, request_cancel, start_job
from mlflow_nemo_judge.testing.fake_nemo.wire import (
    Reply,
    Request,
    RouteSpec,
    ServiceError,
    deleted,
    json_reply,
    now,
    page,
    required,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.testing.fake_nemo.server import FakeNemoService

__all__ = ["Evaluator"]


class Evaluator:
    """Jobs, configs, targets and results of one service; ``service`` gives the runner its options."""

    def __init__(self, service: FakeNemoService) -> None:
        self.service = service
        self.lock = service.lock
        self.configs: dict[tuple[str, str], dict[str, Any]] = {}
        self.targets: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.results: dict[str, dict[str, Any]] = {}
        # Raw job-create bodies as received (with secrets): tests check what a client really sent.
        self.job_requests: list[Any] = []

    def routes(self) -> list[RouteSpec]:
        job = r"/v1/evaluation/jobs/(?P<id>[^/]+)"
        table: list[RouteSpec] = [
            ("POST", r"/v1/evaluation/jobs", self._job_create),
            ("GET", r"/v1/evaluation/jobs", self._job_list),
            ("GET", job, self._job_get),
            ("DELETE", job, self._job_delete),
            ("GET", job + r"/status", self._job_status),
            ("GET", job + r"/results", self._job_results),
            ("GET", job + r"/download-results", self._job_download),
            ("GET", job + r"/logs", self._job_logs),
            ("POST", job + r"/cancel", self._job_cancel),
            ("GET", r"/v1/evaluation/results", self._result_list),
            ("GET", r"/v1/evaluation/results/(?P<id>[^/]+)", self._result_get),
        ]
        for kind in ("configs", "targets"):
            one = rf"/v1/evaluation/{kind}/(?P<ns>[^/]+)/(?P<name>[^/]+)"
            table += [
                ("POST", rf"/v1/evaluation/{kind}", self._crud(kind, "create")),
                ("GET", rf"/v1/evaluation/{kind}", self._crud(kind, "list")),
                ("GET", one, self._crud(kind, "get")),
                ("PATCH", one, self._crud(kind, "patch")),
                ("DELETE", one, self._crud(kind, "delete")),
            ]
        return table

    def put_result(self, doc: dict[str, Any]) -> None:
        with self.lock:
            self.results[doc["id"]] = doc

    def _resolve_ref(
        self, store: dict[tuple[str, str], dict[str, Any]], ref: str, what: str
    ) -> dict[str, Any]:
        ns, _, name = ref.partition("/")
        if (ns, name) not in store:
            raise ServiceError(404, f"Evaluation {what} '{ref}' not found.")
        copy: dict[str, Any] = json.loads(
            json.dumps(store[(ns, name)])
        )  # a deep copy, detached from the store
        return copy

    def _job_create(self, req: Request) -> Reply:
        raw = req.json()
        with self.lock:
            self.job_requests.append(raw)
        body = required(raw, "config", "target")
        ns = body.get("namespace") or "default"
        with self.lock:
            cfg, tgt = body["config"], body["target"]
            if isinstance(cfg, str):
                cfg_rec = self._resolve_ref(self.configs, cfg, "config")
            else:
                cfg_rec = expand_config(required(cfg, "type", where=("body", "config")), ns)
            if isinstance(tgt, str):
                tgt_rec = self._resolve_ref(self.targets, tgt, "target")
            else:
                tgt_rec = expand_target(required(tgt, "type", where=("body", "target")), ns)
            record = job_record(body, ns, tgt_rec, cfg_rec, output_files_url=body.get("output_files_url"))
            job = FakeJob(record)
            job.log("INFO", f"Job {job.id} created (FAKE NeMo service, a test double)")
            self.jobs[job.id] = job
            job.snapshot()
            self.service.changed.notify_all()
            reply = json_reply(200, redact(record))
        start_job(self.service, job)
        return reply

    def _job(self, job_id: str) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise ServiceError(404, f"Evaluation job '{job_id}' not found.")
        return job

    def _job_get(self, req: Request, id: str) -> Reply:
        with self.lock:
            return json_reply(200, redact(self._job(id).record))

    def _job_list(self, req: Request) -> Reply:
        with self.lock:
            return page(req, [redact(j.record) for j in self.jobs.values()])

    def _job_status(self, req: Request, id: str) -> Reply:
        with self.lock:
            return json_reply(200, dict(self._job(id).record["status_details"]))

    def _job_results(self, req: Request, id: str) -> Reply:
        with self.lock:
            job = self._job(id)
            result = self.results.get(job.record.get("result") or "")
            if result is None:
                raise ServiceError(
                    404, f"Results for job '{id}' are not available (status {job.record['status']})."
                )
            return json_reply(200, result)

    def _job_download(self, req: Request, id: str) -> Reply:
        with self.lock:
            job = self._job(id)
            if job.result_zip is None:
                raise ServiceError(
                    404, f"Results for job '{id}' are not available (status {job.record['status']})."
                )
            return Reply(
                200,
                job.result_zip,
                "application/zip",
                {"Content-Disposition": f'attachment; filename="{id}.zip"'},
            )

    def _job_logs(self, req: Request, id: str) -> Reply:
        with self.lock:
            job = self._job(id)
            text = "\n".join(job.logs) + "\n"
            archive = logs_zip(job)
        # v1 serves logs as a ZIP (the SDK's docstring, reference §7.4). A client that accepts only JSON
        # (the SDK's default Accept; QF reads ``.text`` with it) gets the log text as a JSON string,
        # since a ZIP would fail its JSON parse.
        if req.headers.get("accept", "").strip().lower() == "application/json":
            return json_reply(200, text)
        return Reply(
            200, archive, "application/zip", {"Content-Disposition": f'attachment; filename="{id}-logs.zip"'}
        )

    def _job_cancel(self, req: Request, id: str) -> Reply:
        with self.lock:
            job = self._job(id)
        request_cancel(self.service, job)
        with self.lock:
            return json_reply(
                200, {"id": id, "status": job.record["status"], "message": "Job cancellation requested."}
            )

    def _job_delete(self, req: Request, id: str) -> Reply:
        with self.lock:
            job = self._job(id)
        request_cancel(self.service, job)
        with self.lock:
            self.jobs.pop(id, None)
        return Reply(204, b"", "text/plain")

    def _result_get(self, req: Request, id: str) -> Reply:
        with self.lock:
            if id not in self.results:
                raise ServiceError(404, f"Evaluation result '{id}' not found.")
            return json_reply(200, self.results[id])

    def _result_list(self, req: Request) -> Reply:
        with self.lock:
            return page(req, list(self.results.values()))

    def _crud(self, kind: str, action: str) -> Callable[..., Reply]:
        store = self.configs if kind == "configs" else self.targets
        expand = expand_config if kind == "configs" else expand_target
        what = kind[:-1]

        def handler(req: Request, ns: str | None = None, name: str | None = None) -> Reply:
            with self.lock:
                if action == "list":
                    return page(req, [redact(v) for v in store.values()])
                if action == "create":
                    body = required(req.json(), "type")
                    rec = expand(body, body.get("namespace") or "default")
                    key = (rec["namespace"], rec["name"])
                    if key in store:
                        raise ServiceError(409, f"Evaluation {what} '{key[0]}/{key[1]}' already exists.")
                    store[key] = rec
                    return json_reply(200, redact(rec))
                assert ns is not None and name is not None
                if (ns, name) not in store:
                    raise ServiceError(404, f"Evaluation {what} '{ns}/{name}' not found.")
                if action == "get":
                    return json_reply(200, redact(store[(ns, name)]))
                if action == "patch":
                    body = required(req.json())
                    rec = store[(ns, name)]
                    rec.update({k: v for k, v in body.items() if k not in ("id", "name", "created_at")})
                    rec["updated_at"] = now()
                    return json_reply(200, redact(rec))
                rec = store.pop((ns, name))
                return deleted(rec["id"])

        return handler
