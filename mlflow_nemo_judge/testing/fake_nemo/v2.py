"""The v2 job API of the FAKE NeMo service (a test double): ``/v2/evaluation/jobs`` and its sub-resources.

Shapes follow the ``nemo-microservices`` SDK's ``EvaluatorV2Job``, ``PlatformJobStatusResponse``,
``PlatformJobLog`` pages, ``PlatformJobListResultResponse`` and ``EvaluationResultV2``. A v2 job is run by
the same worker as a v1 job (``jobs.start_job`` on a ``FakeJob`` holding the v1-shaped record the worker
reads), so both APIs compute identical results; this module only translates the record into v2 views.
v2 jobs live in the service's one job table, so ``wait_for_job`` and shutdown treat them like any other.

Test knob: ``force_status`` (a string) makes every v2 read report that status instead of the real one,
which is how tests exercise a status the client does not know.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.config.secrets import redact
from mlflow_nemo_judge.testing.fake_nemo.entities import expand_config, expand_target
from mlflow_nemo_judge.testing.fake_nemo.jobs import FakeJob, job_record, request_cancel, start_job
from mlflow_nemo_judge.testing.fake_nemo.wire import (
    Reply,
    Request,
    RouteSpec,
    ServiceError,
    deleted,
    json_reply,
    page,
    required,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.testing.fake_nemo.server import FakeNemoService

__all__ = ["V1_TO_V2", "V2Jobs"]

#: The worker's (v1) statuses as the v2 API names them (``PlatformJobStatus``).
V1_TO_V2 = {
    "created": "created",
    "pending": "pending",
    "running": "active",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
    "failed": "error",
    "completed": "completed",
}
_STEP = "evaluation"


def _zip_to_tgz(data: bytes) -> bytes:
    """The v1 result ZIP repacked as the ``artifacts.tar.gz`` the v2 download hands out."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zf, tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name in zf.namelist():
            if name.endswith("/"):
                continue
            blob = zf.read(name)
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out.getvalue()


class V2Jobs:
    """The v2 route group; ``service`` owns the job table, the lock and the worker options."""

    def __init__(self, service: FakeNemoService) -> None:
        self.service = service
        self.lock = service.lock
        self.names: dict[str, str] = {}  # v2 job id -> its ``name`` (required in v2, absent in v1)
        self.requests: list[Any] = []  # raw create bodies, as v1's ``job_requests``
        self.force_status: str | None = None

    def routes(self) -> list[RouteSpec]:
        job = r"/v2/evaluation/jobs/(?P<id>[^/]+)"
        return [
            ("POST", r"/v2/evaluation/jobs", self._create),
            ("GET", r"/v2/evaluation/jobs", self._list),
            ("GET", job, self._get),
            ("DELETE", job, self._delete),
            ("POST", job + r"/cancel", self._cancel),
            ("GET", job + r"/status", self._status),
            ("GET", job + r"/logs", self._logs),
            ("GET", job + r"/results", self._results),
            ("GET", job + r"/results/evaluation-results/download", self._eval_results),
            ("GET", job + r"/results/artifacts/download", self._artifacts),
        ]

    # ------------------------------------------------------------------------------------- views

    def _job(self, job_id: str) -> FakeJob:
        job = self.service.jobs.get(job_id)
        if job is None or job_id not in self.names:
            raise ServiceError(404, f"Job '{job_id}' not found.")
        return job

    def _status_of(self, job: FakeJob) -> str:
        return self.force_status or V1_TO_V2.get(str(job.record["status"]), "error")

    def _errors(self, job: FakeJob) -> dict[str, Any]:
        if job.record["status"] != "failed":
            return {}
        return {"message": job.record["status_details"].get("message") or "the job failed"}

    def _view(self, job: FakeJob) -> dict[str, Any]:
        rec = redact(job.record)
        return {
            "id": job.id,
            "name": self.names[job.id],
            "namespace": rec.get("namespace"),
            "description": rec.get("description"),
            "project": rec.get("project"),
            "custom_fields": rec.get("custom_fields") or {},
            "ownership": rec.get("ownership"),
            "created_at": rec["created_at"],
            "updated_at": rec["updated_at"],
            "spec": {"config": rec["config"], "target": rec["target"]},
            "status": self._status_of(job),
            "status_details": dict(rec["status_details"]),
            "error_details": self._errors(job),
        }

    # ---------------------------------------------------------------------------------- handlers

    def _create(self, req: Request) -> Reply:
        raw = req.json()
        with self.lock:
            self.requests.append(raw)
        body = required(raw, "spec")
        spec = required(body["spec"], "config", "target", where=("body", "spec"))
        ns = body.get("namespace") or "default"
        with self.lock:
            evaluator = self.service.evaluator
            cfg, tgt = spec["config"], spec["target"]
            # References resolve the way v1 does (same stored configs and targets).
            cfg_rec = (
                evaluator._resolve_ref(evaluator.configs, cfg, "config")
                if isinstance(cfg, str)
                else expand_config(required(cfg, "type", where=("body", "spec", "config")), ns)
            )
            tgt_rec = (
                evaluator._resolve_ref(evaluator.targets, tgt, "target")
                if isinstance(tgt, str)
                else expand_target(required(tgt, "type", where=("body", "spec", "target")), ns)
            )
            record = job_record(body, ns, tgt_rec, cfg_rec)
            job = FakeJob(record)
            job.log("INFO", f"Job {job.id} created through the v2 API (FAKE NeMo service, a test double)")
            self.names[job.id] = str(body.get("name") or f"eval-job-{job.id.split('-', 1)[1][:8].lower()}")
            self.service.jobs[job.id] = job
            job.snapshot()
            self.service.changed.notify_all()
            reply = json_reply(200, self._view(job))
        start_job(self.service, job)
        return reply

    def _list(self, req: Request) -> Reply:
        with self.lock:
            return page(req, [self._view(j) for i, j in self.service.jobs.items() if i in self.names])

    def _get(self, req: Request, id: str) -> Reply:
        with self.lock:
            return json_reply(200, self._view(self._job(id)))

    def _delete(self, req: Request, id: str) -> Reply:
        with self.lock:
            job = self._job(id)
        request_cancel(self.service, job)
        with self.lock:
            self.service.jobs.pop(id, None)
            self.names.pop(id, None)
        return deleted(id)

    def _cancel(self, req: Request, id: str) -> Reply:
        with self.lock:
            job = self._job(id)
        request_cancel(self.service, job)
        with self.lock:
            return json_reply(200, self._view(job))

    def _status(self, req: Request, id: str) -> Reply:
        with self.lock:
            job = self._job(id)
            status, details, errors = (
                self._status_of(job),
                dict(job.record["status_details"]),
                self._errors(job),
            )
            tasks = [
                {
                    "id": f"{id}-{name}",
                    "status": V1_TO_V2.get(str(s), "pending"),
                    "status_details": {"task": name},
                    "error_details": errors if s == "failed" else {},
                    "error_stack": "",
                }
                for name, s in (details.get("task_status") or {}).items()
            ]
            step = {
                "name": _STEP,
                "status": status,
                "status_details": details,
                "error_details": errors,
                "tasks": tasks,
            }
            return json_reply(
                200,
                {
                    "job_id": id,
                    "status": status,
                    "status_details": details,
                    "error_details": errors,
                    "steps": [step],
                },
            )

    def _logs(self, req: Request, id: str) -> Reply:
        try:
            limit = max(1, int(req.param("limit") or 100))
            start = int(req.param("page_cursor") or 0)
        except ValueError:
            raise ServiceError(
                422, [{"loc": ["query", "page_cursor"], "msg": "invalid cursor", "type": "value_error"}]
            ) from None
        with self.lock:
            lines = list(self._job(id).logs)
        entries = []
        for line in lines[start : start + limit]:
            ts, _, message = line.partition(" ")
            entries.append(
                {"job_id": id, "job_step": _STEP, "job_task": id, "message": message + "\n", "timestamp": ts}
            )
        nxt = str(start + limit) if start + limit < len(lines) else None
        return json_reply(200, {"object": "list", "data": entries, "next_page": nxt})

    def _results(self, req: Request, id: str) -> Reply:
        with self.lock:
            job = self._job(id)
            data = []
            if job.record.get("result"):
                base = job.record.get("output_files_url") or f"hf://datasets/evaluation-results/{id}"
                for name in ("evaluation-results", "artifacts"):
                    data.append(
                        {
                            "result_name": name,
                            "artifact_url": f"{base}/{name}",
                            "artifact_storage_type": "nds",
                            "job_id": id,
                            "namespace": job.record.get("namespace") or "default",
                            "created_at": job.record["updated_at"],
                        }
                    )
            return json_reply(200, {"object": "list", "data": data})

    def _eval_results(self, req: Request, id: str) -> Reply:
        with self.lock:
            job = self._job(id)
            doc = self.service.results.get(job.record.get("result") or "")
            if doc is None:
                raise ServiceError(404, f"Results for job '{id}' are not available ({self._status_of(job)}).")
            return json_reply(200, {"tasks": doc.get("tasks") or {}, "groups": doc.get("groups") or {}})

    def _artifacts(self, req: Request, id: str) -> Reply:
        with self.lock:
            job = self._job(id)
            if job.result_zip is None:
                raise ServiceError(
                    404, f"Artifacts for job '{id}' are not available ({self._status_of(job)})."
                )
            blob = _zip_to_tgz(job.result_zip)
        return Reply(
            200,
            blob,
            "application/octet-stream",
            {"Content-Disposition": f'attachment; filename="{id}.tar.gz"'},
        )
