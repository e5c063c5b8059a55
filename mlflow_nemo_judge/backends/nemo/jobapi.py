"""The job lifecycle calls the nemo backend makes, behind one small interface for both Evaluator APIs.

NeMo Evaluator has two job APIs for the same config and target: v1 (``/v1/evaluation/jobs``, the one
every NVIDIA notebook so far uses) and v2 (``/v2/evaluation/jobs`` with a ``spec`` envelope, platform
job statuses, paged JSON logs and separate result downloads; reference §4.9). The backend's poll loop,
failure handling and result mapping are the same for both, so each API is wrapped here into *normalised*
job dicts: ``id``, ``status`` in the v1 vocabulary this package reasons about (``created``, ``pending``,
``running``, ``cancelling``, ``cancelled``, ``failed``, ``completed``; anything else is passed through
unchanged and treated as unknown by the poll loop), ``status_details``, ``config``, ``target``,
``created_at``/``updated_at``, plus ``api`` and, for v2, the service's own ``api_status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from mlflow_nemo_judge.backends.nemo.client import NemoClient
from mlflow_nemo_judge.errors import ConfigError

__all__ = ["API_VERSIONS", "JobApi", "V1Jobs", "job_api"]

API_VERSIONS = ("v1", "v2")


class JobApi(Protocol):
    """One Evaluator job API; every method returns or takes the normalised shapes of the module doc."""

    name: str

    def create(
        self, config: Mapping[str, Any] | str, target: Mapping[str, Any] | str, namespace: str | None
    ) -> dict[str, Any]: ...

    def get(self, job_id: str) -> dict[str, Any]: ...

    def results(self, job_id: str) -> dict[str, Any]:
        """The aggregate ``{tasks, groups}`` document of a completed job."""
        ...

    def samples_zip(self, job_id: str) -> bytes:
        """The job's output files as ZIP bytes (the per-sample ``results.json`` is inside)."""
        ...

    def logs(self, job_id: str) -> str: ...

    def cancel(self, job_id: str, timeout: float | None = None) -> Any: ...

    def failure(self, job: Mapping[str, Any]) -> str | None:
        """The service's explanation of a failed or cancelled job, if it gave one."""
        ...


class V1Jobs:
    """The v1 API: the job record already has the shape the backend reads."""

    name = "v1"

    def __init__(self, client: NemoClient) -> None:
        self.client = client

    def create(
        self, config: Mapping[str, Any] | str, target: Mapping[str, Any] | str, namespace: str | None
    ) -> dict[str, Any]:
        return {**self.client.create_job(config, target, namespace=namespace), "api": "v1"}

    def get(self, job_id: str) -> dict[str, Any]:
        return {**self.client.get_job(job_id), "api": "v1"}

    def results(self, job_id: str) -> dict[str, Any]:
        return self.client.job_results(job_id)

    def samples_zip(self, job_id: str) -> bytes:
        return self.client.download_results(job_id)

    def logs(self, job_id: str) -> str:
        return self.client.job_logs(job_id)

    def cancel(self, job_id: str, timeout: float | None = None) -> Any:
        return self.client.cancel_job(job_id, timeout=timeout)

    def failure(self, job: Mapping[str, Any]) -> str | None:
        message = (job.get("status_details") or {}).get("message")
        return str(message) if message else None


def job_api(client: NemoClient, api: str) -> JobApi:
    """The wrapper for ``api`` (``"v1"`` or ``"v2"``, as given to ``--nemo-api``)."""
    if api == "v1":
        return V1Jobs(client)
    if api == "v2":
        from mlflow_nemo_judge.backends.nemo.v2 import V2Jobs

        return V2Jobs(client)
    raise ConfigError("nemo.api", f"unknown NeMo job API {api!r} (choose from: {', '.join(API_VERSIONS)})")
