"""The v2 Evaluator job API (``/v2/evaluation/jobs``), normalised to what the nemo backend reads.

Shapes (``nemo-microservices`` SDK ``resources/v2/evaluation``, ``types/v2/evaluation``, ``types/jobs``):

* create: ``POST /v2/evaluation/jobs {"spec": {"config", "target"}, "namespace"?, ...}`` → an
  ``EvaluatorV2Job`` (``name``, ``spec``, ``id``, ``status``, ``status_details``, ``error_details``, ...);
  read back with ``GET /v2/evaluation/jobs/{id}``; ``POST .../cancel``.
* statuses are the platform's (``PlatformJobStatus``); ``V2_STATUS`` maps each to the v1 word the poll
  loop uses. ``paused`` waits for someone to resume it, so it counts as queued, not as an end.
* logs: ``GET .../logs?limit=&page_cursor=`` → ``{"data": [{job_id, job_step, job_task, message,
  timestamp}], "next_page": cursor-or-null}``, walked until the cursor runs out.
* results: ``GET .../results`` lists named results; ``.../results/evaluation-results/download`` is the
  aggregate ``{tasks, groups}``; ``.../results/artifacts/download`` the output files as a tarball (the
  docs save it as ``artifacts.tar.gz``), repacked here as the ZIP the v1 reader already understands.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Mapping
from typing import Any

from mlflow_nemo_judge.backends.nemo.client import NemoClient
from mlflow_nemo_judge.errors import NemoServiceError

__all__ = ["V2_STATUS", "V2Jobs", "artifacts_as_zip", "normalise_job"]

V2_STATUS: dict[str, str] = {
    "created": "created",
    "pending": "pending",
    "active": "running",
    "paused": "pending",
    "pausing": "running",
    "resuming": "pending",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
    "error": "failed",
    "completed": "completed",
}
# A cursor walk is bounded so a service that hands back the same cursor cannot loop us forever.
_MAX_LOG_PAGES = 1000
_LOG_PAGE = 1000


def normalise_job(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A v2 job record in the backend's shape (see ``jobapi``); the raw fields are kept beside."""
    spec_raw = raw.get("spec")
    spec: Mapping[str, Any] = spec_raw if isinstance(spec_raw, Mapping) else {}
    status = raw.get("status")
    out = dict(raw)
    out["api"] = "v2"
    out["api_status"] = status
    # An unmapped status stays as the service said it: the poll loop's unknown-status rule applies.
    out["status"] = V2_STATUS.get(str(status), str(status))
    out["status_details"] = dict(raw.get("status_details") or {})
    out.setdefault("config", spec.get("config"))
    out.setdefault("target", spec.get("target"))
    return out


def artifacts_as_zip(data: bytes) -> bytes:
    """The artifacts download as ZIP bytes: a ZIP is returned as is, a (gzipped) tarball repacked."""
    if data[:4] == b"PK\x03\x04":
        return data
    out = io.BytesIO()
    try:
        with (
            tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar,
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf,
        ):
            for member in tar.getmembers():
                if not member.isfile():
                    continue  # links and devices have no place in a results folder
                fh = tar.extractfile(member)
                if fh is not None:
                    zf.writestr(member.name.lstrip("./"), fh.read())
    except tarfile.TarError as exc:
        raise ValueError(f"the artifacts download is neither a ZIP nor a tarball: {exc}") from exc
    return out.getvalue()


class V2Jobs:
    """The v2 job API over a ``NemoClient`` (same URLs, auth, retries and error mapping as v1)."""

    name = "v2"

    def __init__(self, client: NemoClient) -> None:
        self.client = client

    def _url(self, path: str) -> str:
        return f"{self.client.evaluator_url}/v2/evaluation/jobs{path}"

    def _get_json(self, url: str, **kw: Any) -> Any:
        response = self.client.request("GET", url, **kw)
        try:
            return response.json()
        except ValueError as exc:
            raise NemoServiceError(url, response.status_code, "expected JSON from the v2 API") from exc

    def create(
        self, config: Mapping[str, Any] | str, target: Mapping[str, Any] | str, namespace: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"spec": {"config": config, "target": target}}
        if namespace:
            body["namespace"] = namespace
        response = self.client.request("POST", self._url(""), json_body=body)
        return normalise_job(response.json())

    def get(self, job_id: str) -> dict[str, Any]:
        return normalise_job(self._get_json(self._url(f"/{job_id}")))

    def status(self, job_id: str) -> dict[str, Any]:
        """``GET .../status``: ``{job_id, status, status_details, error_details, steps}`` (service words)."""
        return dict(self._get_json(self._url(f"/{job_id}/status")))

    def result_names(self, job_id: str) -> list[str]:
        body = self._get_json(self._url(f"/{job_id}/results")) or {}
        return [str(r.get("result_name")) for r in body.get("data") or [] if isinstance(r, Mapping)]

    def results(self, job_id: str) -> dict[str, Any]:
        body = self._get_json(self._url(f"/{job_id}/results/evaluation-results/download"))
        if not isinstance(body, Mapping):
            raise NemoServiceError(
                self._url(f"/{job_id}/results"), None, "evaluation results are not an object"
            )
        return {"tasks": body.get("tasks") or {}, "groups": body.get("groups") or {}}

    def samples_zip(self, job_id: str) -> bytes:
        response = self.client.request(
            "GET", self._url(f"/{job_id}/results/artifacts/download"), accept="application/octet-stream"
        )
        return artifacts_as_zip(response.content)

    def log_entries(self, job_id: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_LOG_PAGES):
            params = [("limit", str(_LOG_PAGE))] + ([("page_cursor", cursor)] if cursor else [])
            body = self._get_json(self._url(f"/{job_id}/logs"), params=params) or {}
            entries.extend(dict(e) for e in body.get("data") or [] if isinstance(e, Mapping))
            cursor = body.get("next_page") or None
            if cursor is None or cursor in seen:
                break
            seen.add(cursor)
        return entries

    def logs(self, job_id: str) -> str:
        lines = []
        for e in self.log_entries(job_id):
            where = "/".join(str(e[k]) for k in ("job_step", "job_task") if e.get(k))
            lines.append(f"{e.get('timestamp', '')} [{where}] {str(e.get('message', '')).rstrip()}")
        return "\n".join(lines) + ("\n" if lines else "")

    def cancel(self, job_id: str, timeout: float | None = None) -> Any:
        response = self.client.request("POST", self._url(f"/{job_id}/cancel"), timeout=timeout)
        return response.json() if response.content else None

    def failure(self, job: Mapping[str, Any]) -> str | None:
        details = job.get("error_details") or {}
        if isinstance(details, Mapping) and details:
            for key in ("message", "detail", "error"):
                if details.get(key):
                    return str(details[key])
            return json.dumps(details, default=str)[:1000]
        message = (job.get("status_details") or {}).get("message")
        return str(message) if message else None
