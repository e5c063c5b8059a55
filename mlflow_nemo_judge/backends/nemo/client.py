"""``NemoClient``: the one synchronous client for NeMo Evaluator, Entity Store and Data Store (v1 REST).

Its transport (base URLs, auth, errors, retries, paging) is ``transport.NemoTransport``, its Entity Store
and Data Store calls are ``stores.StoreCalls``; the Evaluator calls are here: jobs, their results and
logs, and the stored configs and targets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from mlflow_nemo_judge.backends.nemo.stores import StoreCalls

__all__ = ["NemoClient"]


class NemoClient(StoreCalls):
    """One client for the three services; see ``transport`` for URLs, auth, errors and retries."""

    # ------------------------------------------------------------------------------------- Evaluator

    def create_job(
        self, config: Mapping[str, Any] | str, target: Mapping[str, Any] | str, **fields: Any
    ) -> dict[str, Any]:
        """Create an evaluation job; ``config``/``target`` are inline dicts or ``"namespace/name"`` references.

        ``fields`` are the optional job fields (``namespace``, ``description``, ``project``,
        ``custom_fields``, ``output_files_url``, ``ownership``); None values are not sent.
        """
        body = {"config": config, "target": target, **{k: v for k, v in fields.items() if v is not None}}
        return dict(self._json("POST", self._ev("/jobs"), json_body=body))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", self._ev(f"/jobs/{job_id}")))

    def job_status(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", self._ev(f"/jobs/{job_id}/status")))

    def job_results(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", self._ev(f"/jobs/{job_id}/results")))

    def download_results(self, job_id: str) -> bytes:
        """The job's result directory as ZIP bytes (configs, logs, per-sample ``results.json``)."""
        return self.request(
            "GET", self._ev(f"/jobs/{job_id}/download-results"), accept="application/zip"
        ).content

    def job_logs(self, job_id: str) -> str:
        """The job's logs as text; versions differ (plain text or a ZIP of log files), both are handled."""
        response = self.request("GET", self._ev(f"/jobs/{job_id}/logs"), accept="*/*")
        content = response.content
        if content[:4] == b"PK\x03\x04":
            import io
            import zipfile

            with zipfile.ZipFile(io.BytesIO(content)) as zf:
                return "\n".join(
                    f"==> {name} <==\n{zf.read(name).decode('utf-8', 'replace')}"
                    for name in sorted(zf.namelist())
                    if not name.endswith("/")
                )
        ctype = response.headers.get("content-type", "")
        if "json" in ctype:
            try:
                body = response.json()
            except ValueError:
                return response.text
            return body if isinstance(body, str) else json.dumps(body, indent=2, default=str)
        return response.text

    def cancel_job(self, job_id: str, timeout: float | None = None) -> Any:
        return self._json("POST", self._ev(f"/jobs/{job_id}/cancel"), timeout=timeout)

    def delete_job(self, job_id: str) -> None:
        self.request("DELETE", self._ev(f"/jobs/{job_id}"), accept="*/*")

    def list_jobs(self, **kw: Any) -> Iterator[dict[str, Any]]:
        """All jobs matching ``filter``/``search`` (nested dicts), newest first unless ``sort`` says otherwise."""
        kw.setdefault("sort", "-created_at")
        return self._pages(self._ev("/jobs"), **kw)

    def get_result(self, result_id: str) -> dict[str, Any]:
        return dict(self._json("GET", self._ev(f"/results/{result_id}")))

    # Configs and targets share one CRUD shape keyed by "namespace/name".

    def _create(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", self._ev(f"/{kind}"), json_body=dict(body)))

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return dict(self._json("GET", self._ev(f"/{kind}/{namespace}/{name}")))

    def _update(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("PATCH", self._ev(f"/{kind}/{namespace}/{name}"), json_body=dict(body)))

    def _delete(self, kind: str, namespace: str, name: str) -> Any:
        return self._json("DELETE", self._ev(f"/{kind}/{namespace}/{name}"))

    def create_config(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._create("configs", body)

    def get_config(self, namespace: str, name: str) -> dict[str, Any]:
        return self._get("configs", namespace, name)

    def update_config(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._update("configs", namespace, name, body)

    def delete_config(self, namespace: str, name: str) -> Any:
        return self._delete("configs", namespace, name)

    def list_configs(self, **kw: Any) -> Iterator[dict[str, Any]]:
        return self._pages(self._ev("/configs"), **kw)

    def create_target(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._create("targets", body)

    def get_target(self, namespace: str, name: str) -> dict[str, Any]:
        return self._get("targets", namespace, name)

    def update_target(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._update("targets", namespace, name, body)

    def delete_target(self, namespace: str, name: str) -> Any:
        return self._delete("targets", namespace, name)

    def list_targets(self, **kw: Any) -> Iterator[dict[str, Any]]:
        return self._pages(self._ev("/targets"), **kw)
