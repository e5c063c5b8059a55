"""Live evaluation in the FAKE NeMo service (a test double): ``POST /v1/evaluation/live``.

Synchronous: the request is computed by the same worker as a job (``jobs.start_job``, joined before
answering) and nothing is kept afterwards, neither the job nor its result, as the real service says
("no evaluation job is persisted"). What the service accepts live is enforced as documented: ``custom``
configs given inline, data-source targets (``rows`` or ``dataset``) and at most ``LIVE_MAX_ROWS`` rows.
The answer is the SDK's ``LiveEvaluation``: ``{"status", "status_details", "result", "logs"}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.testing.fake_nemo.entities import expand_config, expand_target
from mlflow_nemo_judge.testing.fake_nemo.jobs import FakeJob, job_record, start_job
from mlflow_nemo_judge.testing.fake_nemo.wire import (
    Reply,
    Request,
    RouteSpec,
    ServiceError,
    json_reply,
    required,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.testing.fake_nemo.server import FakeNemoService

__all__ = ["LIVE_MAX_ROWS", "LiveEvaluator"]

LIVE_MAX_ROWS = 10


def _refuse(loc: list[str], msg: str) -> ServiceError:
    return ServiceError(422, [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


class LiveEvaluator:
    """The live route; ``requests`` keeps each raw body (with secrets) for tests, like ``job_requests``."""

    def __init__(self, service: FakeNemoService) -> None:
        self.service = service
        self.requests: list[Any] = []

    def routes(self) -> list[RouteSpec]:
        return [("POST", r"/v1/evaluation/live", self._live)]

    def _live(self, req: Request) -> Reply:
        raw = req.json()
        with self.service.lock:
            self.requests.append(raw)
        body = required(raw, "config", "target")
        cfg, tgt = body["config"], body["target"]
        if not isinstance(cfg, dict) or not isinstance(tgt, dict):
            raise _refuse(
                ["config" if not isinstance(cfg, dict) else "target"],
                "live evaluation takes the config and target inline",
            )
        if cfg.get("type") != "custom":
            raise _refuse(
                ["config", "type"], f"live evaluation supports only 'custom' configs, not {cfg.get('type')!r}"
            )
        if tgt.get("type") not in ("rows", "dataset"):
            raise _refuse(
                ["target", "type"],
                f"live evaluation supports only data-source targets (rows, dataset), not {tgt.get('type')!r}",
            )
        rows = tgt.get("rows")
        if tgt.get("type") == "rows" and (not isinstance(rows, list) or not rows):
            raise _refuse(["target", "rows"], "a rows target needs a non-empty list of rows")
        if isinstance(rows, list) and len(rows) > LIVE_MAX_ROWS:
            raise _refuse(
                ["target", "rows"], f"live evaluation takes at most {LIVE_MAX_ROWS} rows, got {len(rows)}"
            )
        ns = body.get("namespace") or "default"
        record = job_record(body, ns, expand_target(tgt, ns), expand_config(cfg, ns))
        job = FakeJob(record)
        start_job(self.service, job)
        assert job.thread is not None
        job.thread.join()
        with self.service.lock:
            result = self.service.results.pop(record.get("result") or "", None)
        status = str(record["status"])
        return json_reply(
            200,
            {
                "status": status,
                "status_details": dict(record["status_details"]),
                "result": result,
                "logs": {"messages": list(job.logs)},
            },
        )
