"""The NeMo Entity Store and Data Store calls: namespaces, dataset registrations, dataset uploads.

These are what staging a local dataset for a job needs (``staging``): namespaces in both stores, the
files in a Data Store repo (through its Hugging Face compatible API) and the dataset registered in the
Entity Store. Creates are idempotent: an existing namespace or dataset is fetched instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow_nemo_judge.backends.nemo.transport import (
    DETAIL_LIMIT,
    EXISTS_STATUSES,
    NemoTransport,
    error_detail,
)
from mlflow_nemo_judge.errors import NemoServiceError

__all__ = ["StoreCalls"]


class StoreCalls(NemoTransport):
    """The Entity Store and Data Store calls of ``NemoClient``."""

    # ---------------------------------------------------------------------------------- Entity Store

    def create_namespace(self, namespace: str, **fields: Any) -> dict[str, Any]:
        """Create an Entity Store namespace; an existing one is fetched and returned instead."""
        url = self._es("/namespaces")
        response = self.request("POST", url, json_body={"id": namespace, **fields}, allow=EXISTS_STATUSES)
        if response.status_code in EXISTS_STATUSES:
            return self.get_namespace(namespace)
        return dict(response.json())

    def get_namespace(self, namespace: str) -> dict[str, Any]:
        return dict(self._json("GET", self._es(f"/namespaces/{namespace}")))

    def list_namespaces(self, **kw: Any) -> Iterator[dict[str, Any]]:
        return self._pages(self._es("/namespaces"), **kw)

    def create_dataset(self, name: str, namespace: str, files_url: str, **fields: Any) -> dict[str, Any]:
        """Register a dataset in the Entity Store; an existing one (same namespace/name) is returned."""
        body = {"name": name, "namespace": namespace, "files_url": files_url, **fields}
        response = self.request("POST", self._es("/datasets"), json_body=body, allow=EXISTS_STATUSES)
        if response.status_code in EXISTS_STATUSES:
            try:
                return self.get_dataset(namespace, name)
            except NemoServiceError as exc:
                if exc.status != 404:
                    raise
                # 422 was a real validation error, not a duplicate: report the service's own words.
                raise NemoServiceError(
                    str(response.request.url), response.status_code, error_detail(response)
                ) from None
        return dict(response.json())

    def get_dataset(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self._json("GET", self._es(f"/datasets/{namespace}/{name}")))

    def list_datasets(self, **kw: Any) -> Iterator[dict[str, Any]]:
        return self._pages(self._es("/datasets"), **kw)

    def delete_dataset(self, namespace: str, name: str) -> None:
        self.request("DELETE", self._es(f"/datasets/{namespace}/{name}"))

    # ------------------------------------------------------------------------------------ Data Store

    def create_datastore_namespace(self, namespace: str) -> None:
        """Create a Data Store namespace (form-encoded, unlike every other call); existing is fine."""
        self.request(
            "POST",
            f"{self.datastore_url}/v1/datastore/namespaces",
            data={"namespace": namespace},
            allow=EXISTS_STATUSES,
        )

    def ensure_namespace(self, namespace: str) -> None:
        """Namespaces must exist in both stores before data can be uploaded and registered (quirk §10.1)."""
        self.create_namespace(namespace)
        self.create_datastore_namespace(namespace)

    def upload_files(self, namespace: str, repo: str, files: list[tuple[Path, str]]) -> str:
        """Upload ``(local path, path in repo)`` pairs to Data Store repo ``namespace/repo``; returns its hf:// URL.

        Uses ``huggingface_hub`` against the Data Store's HF API, exactly as NVIDIA's examples do.
        """
        from huggingface_hub import CommitOperationAdd, HfApi

        extra = {
            k: v
            for k, v in self._headers.items()
            if k.lower() not in ("accept", "authorization", "user-agent")
        }
        # token=False, not None: None would make huggingface_hub send the user's saved Hub token to the
        # Data Store, a secret that belongs to huggingface.co only.
        api = HfApi(
            endpoint=self.hf_endpoint,
            token=self._token or False,
            library_name="mlflow-nemo-judge",
            headers=extra or None,
        )
        repo_id = f"{namespace}/{repo}"
        try:
            api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
            api.create_commit(
                repo_id,
                repo_type="dataset",
                operations=[
                    CommitOperationAdd(path_in_repo=dest, path_or_fileobj=str(src)) for src, dest in files
                ],
                commit_message=f"Upload {len(files)} file(s) with mlflow-nemo-judge",
            )
        except Exception as exc:  # huggingface_hub raises many version-dependent types; name URL and status
            status = getattr(getattr(exc, "response", None), "status_code", None)
            raise NemoServiceError(
                f"{self.hf_endpoint} ({repo_id})",
                status,
                f"dataset upload failed: {' '.join(str(exc).split())[:DETAIL_LIMIT]}",
            ) from exc
        return f"hf://datasets/{repo_id}"
