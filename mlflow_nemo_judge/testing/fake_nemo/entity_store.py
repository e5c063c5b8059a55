"""The Entity Store slice of the FAKE NeMo service: ``/v1/namespaces``, ``/v1/datasets``, ``/v1/models``.

Datasets here are references (``files_url`` into the Data Store); the job runner resolves a job's
``namespace/name`` dataset through ``get_dataset``. Models are stored with their ``api_endpoint``, so a
client can resolve a ``model: "ns/name"`` reference (``get_model``); their keys are masked on read, as
NeMo masks stored secrets.
"""

from __future__ import annotations

import threading
from typing import Any

from mlflow_nemo_judge.config.secrets import redact
from mlflow_nemo_judge.testing.fake_nemo.entities import entity, expand_model
from mlflow_nemo_judge.testing.fake_nemo.wire import (
    Reply,
    Request,
    RouteSpec,
    ServiceError,
    deleted,
    json_reply,
    new_id,
    now,
    page,
    required,
)

__all__ = ["EntityStore"]

_NS = r"(?P<ns>[^/]+)"


class EntityStore:
    """Namespaces and dataset entities, guarded by the service's lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self.es_namespaces: dict[str, dict[str, Any]] = {}
        self.es_datasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.es_models: dict[tuple[str, str], dict[str, Any]] = {}

    def routes(self) -> list[RouteSpec]:
        ds = rf"/v1/datasets/{_NS}/(?P<name>[^/]+)"
        return [
            ("POST", r"/v1/namespaces", self._es_ns_create),
            ("GET", r"/v1/namespaces", self._es_ns_list),
            ("GET", rf"/v1/namespaces/{_NS}", self._es_ns_get),
            ("DELETE", rf"/v1/namespaces/{_NS}", self._es_ns_delete),
            ("POST", r"/v1/datasets", self._es_ds_create),
            ("GET", r"/v1/datasets", self._es_ds_list),
            ("GET", ds, self._es_ds_get),
            ("PATCH", ds, self._es_ds_patch),
            ("DELETE", ds, self._es_ds_delete),
            ("POST", r"/v1/models", self._es_model_create),
            ("GET", r"/v1/models", self._es_model_list),
            ("GET", rf"/v1/models/{_NS}/(?P<name>[^/]+)", self._es_model_get),
            ("DELETE", rf"/v1/models/{_NS}/(?P<name>[^/]+)", self._es_model_delete),
        ]

    def get_dataset(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self.es_datasets.get((namespace, name))

    def get_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored model with its key (the job runner calls the endpoint, as NeMo would)."""
        with self.lock:
            return self.es_models.get((namespace, name))

    def _es_ns_create(self, req: Request) -> Reply:
        body = required(req.json(), "id")
        with self.lock:
            if body["id"] in self.es_namespaces:
                raise ServiceError(409, f"Namespace '{body['id']}' already exists.")
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
        return json_reply(200, ns)

    def _es_ns_get(self, req: Request, ns: str) -> Reply:
        with self.lock:
            if ns not in self.es_namespaces:
                raise ServiceError(404, f"Namespace '{ns}' not found.")
            return json_reply(200, self.es_namespaces[ns])

    def _es_ns_list(self, req: Request) -> Reply:
        with self.lock:
            return page(req, list(self.es_namespaces.values()))

    def _es_ns_delete(self, req: Request, ns: str) -> Reply:
        with self.lock:
            if self.es_namespaces.pop(ns, None) is None:
                raise ServiceError(404, f"Namespace '{ns}' not found.")
        return deleted(ns)

    def _es_ds_create(self, req: Request) -> Reply:
        body = required(req.json(), "files_url")
        with self.lock:
            ns = body.get("namespace") or "default"
            if ns not in self.es_namespaces and ns != "default":
                raise ServiceError(422, f"Namespace '{ns}' does not exist.")
            rec = entity(None, body, ns)
            rec.update({"id": new_id("dataset"), "name": body.get("name") or rec["name"]})
            for k in ("schema_version", "type_prefix", "ownership"):
                rec.pop(k, None)
            if (ns, rec["name"]) in self.es_datasets:
                raise ServiceError(409, f"Dataset '{ns}/{rec['name']}' already exists.")
            for k in ("format", "files_url", "hf_endpoint", "split", "limit"):
                rec[k] = body.get(k)
            self.es_datasets[(ns, rec["name"])] = rec
        return json_reply(200, rec)

    def _es_ds(self, ns: str, name: str) -> dict[str, Any]:
        if (ns, name) not in self.es_datasets:
            raise ServiceError(404, f"Dataset '{ns}/{name}' not found.")
        return self.es_datasets[(ns, name)]

    def _es_ds_get(self, req: Request, ns: str, name: str) -> Reply:
        with self.lock:
            return json_reply(200, self._es_ds(ns, name))

    def _es_ds_patch(self, req: Request, ns: str, name: str) -> Reply:
        body = required(req.json())
        with self.lock:
            rec = self._es_ds(ns, name)
            rec.update({k: v for k, v in body.items() if k not in ("id", "name", "namespace", "created_at")})
            rec["updated_at"] = now()
            return json_reply(200, rec)

    def _es_ds_list(self, req: Request) -> Reply:
        with self.lock:
            return page(req, list(self.es_datasets.values()))

    def _es_ds_delete(self, req: Request, ns: str, name: str) -> Reply:
        with self.lock:
            rec = self._es_ds(ns, name)
            del self.es_datasets[(ns, name)]
        return deleted(rec["id"])

    # ------------------------------------------------------------------------------------- models

    def _es_model_create(self, req: Request) -> Reply:
        body = required(req.json(), "name")
        with self.lock:
            ns = body.get("namespace") or "default"
            if ns not in self.es_namespaces and ns != "default":
                raise ServiceError(422, f"Namespace '{ns}' does not exist.")
            if (ns, body["name"]) in self.es_models:
                raise ServiceError(409, f"Model '{ns}/{body['name']}' already exists.")
            rec = expand_model(body, ns)
            self.es_models[(ns, body["name"])] = rec
            return json_reply(200, redact(rec))

    def _es_model(self, ns: str, name: str) -> dict[str, Any]:
        if (ns, name) not in self.es_models:
            raise ServiceError(404, f"Model '{ns}/{name}' not found.")
        return self.es_models[(ns, name)]

    def _es_model_get(self, req: Request, ns: str, name: str) -> Reply:
        with self.lock:
            return json_reply(200, redact(self._es_model(ns, name)))

    def _es_model_list(self, req: Request) -> Reply:
        with self.lock:
            return page(req, [redact(m) for m in self.es_models.values()])

    def _es_model_delete(self, req: Request, ns: str, name: str) -> Reply:
        with self.lock:
            rec = self._es_model(ns, name)
            del self.es_models[(ns, name)]
        return deleted(rec["id"])
