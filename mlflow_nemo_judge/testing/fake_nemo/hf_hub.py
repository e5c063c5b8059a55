"""The Data Store slice of the FAKE NeMo service: its namespaces and, at ``{base}/v1/hf``, the subset
of the Hugging Face Hub HTTP API that ``HfApi.create_repo``/``upload_file``/``create_commit``
(regular, non-LFS files), ``list_repo_files``, ``repo_info`` and ``hf_hub_download`` use.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from mlflow_nemo_judge.testing.fake_nemo.wire import (
    Reply,
    Request,
    RouteSpec,
    ServiceError,
    blob_oid,
    json_reply,
    now,
    required,
)

__all__ = ["DataStore", "Repo"]


@dataclass
class Repo:
    """One repository: its files (path -> bytes) and head commit id."""

    kind: str
    repo_id: str
    files: dict[str, bytes] = field(default_factory=dict)
    head: str = "0" * 40


class DataStore:
    """Data Store namespaces and Hub repos, guarded by the service's lock; ``hf_url`` names the API root."""

    def __init__(self, lock: threading.RLock, hf_url: Callable[[], str]) -> None:
        self.lock = lock
        self._hf_url = hf_url  # a callable: the port is only known once the service has started
        self.ds_namespaces: dict[str, dict[str, Any]] = {}
        self.repos: dict[tuple[str, str], Repo] = {}

    @property
    def hf_url(self) -> str:
        return self._hf_url()

    def routes(self) -> list[RouteSpec]:
        hf = r"/v1/hf"
        repo = r"(?P<kind>datasets|models|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
        file = hf + r"/" + repo + r"/(?:resolve|blob)/(?P<rev>[^/]+)/(?P<path>.+)"
        return [
            ("POST", r"/v1/datastore/namespaces", self._ds_ns_create),
            ("GET", r"/v1/datastore/namespaces/(?P<ns>[^/]+)", self._ds_ns_get),
            ("POST", hf + r"/api/repos/create", self._hf_create),
            ("POST", hf + r"/api/" + repo + r"/preupload/(?P<rev>[^/]+)", self._hf_preupload),
            ("POST", hf + r"/api/" + repo + r"/commit/(?P<rev>[^/]+)", self._hf_commit),
            ("GET", hf + r"/api/" + repo + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self._hf_tree),
            ("GET", hf + r"/api/" + repo + r"(?:/revision/(?P<rev>[^/]+))?", self._hf_info),
            ("HEAD", file, self._hf_file),
            ("GET", file, self._hf_file),
        ]

    def _ds_ns_create(self, req: Request) -> Reply:
        form = dict(parse_qsl(req.body.decode("utf-8", "replace")))
        if "json" in req.headers.get("content-type", "") or "namespace" not in form:
            raise ServiceError(422, "expected a form-encoded body with 'namespace'")
        with self.lock:
            if form["namespace"] in self.ds_namespaces:
                raise ServiceError(409, f"namespace {form['namespace']} already exists")
            ts = now().split(".")[0] + "Z"
            self.ds_namespaces[form["namespace"]] = {
                "namespace": form["namespace"],
                "created_at": ts,
                "updated_at": ts,
            }
        return json_reply(201, self.ds_namespaces[form["namespace"]])

    def _ds_ns_get(self, req: Request, ns: str) -> Reply:
        with self.lock:
            if ns not in self.ds_namespaces:
                raise ServiceError(404, f"namespace {ns} not found")
            return json_reply(200, self.ds_namespaces[ns])

    def _repo(self, kind: str, ns: str, name: str, rev: str | None = None) -> Repo:
        repo = self.repos.get((kind, f"{ns}/{name}"))
        if repo is None:
            raise ServiceError(404, f"Repository {ns}/{name} not found", hub_code="RepoNotFound")
        if rev not in (None, "main", repo.head):
            raise ServiceError(404, f"Revision {rev} not found", hub_code="RevisionNotFound")
        return repo

    def _hf_create(self, req: Request) -> Reply:
        body = required(req.json(), "name")
        kind = {"dataset": "datasets", "space": "spaces"}.get(str(body.get("type") or "model"), "models")
        ns = body.get("organization")
        with self.lock:
            # Like NDS, repos live in namespaces: create the Data Store namespace first (reference §3).
            if ns not in self.ds_namespaces:
                raise ServiceError(
                    404, f"namespace {ns!r} does not exist in the Data Store", hub_code="RepoNotFound"
                )
            repo_id = f"{ns}/{body['name']}"
            url = f"{self.hf_url}/{kind}/{repo_id}" if kind != "models" else f"{self.hf_url}/{repo_id}"
            if (kind, repo_id) in self.repos:
                return json_reply(409, {"error": "You already created this repo", "url": url})
            self.repos[(kind, repo_id)] = Repo(kind, repo_id)
        return json_reply(200, {"url": url, "name": repo_id, "id": repo_id})

    def _hf_preupload(self, req: Request, kind: str, ns: str, name: str, rev: str) -> Reply:
        body = required(req.json(), "files")
        with self.lock:
            self._repo(kind, ns, name, rev)
        # Every file is "regular" (base64 inside the commit): the fake has no LFS/Xet storage.
        return json_reply(
            200,
            {
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                    for f in body["files"]
                ]
            },
        )

    def _hf_commit(self, req: Request, kind: str, ns: str, name: str, rev: str) -> Reply:
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
                    raise ServiceError(
                        422, f"commit operation {key!r} is not supported by the fake Data Store"
                    )
            digest = hashlib.sha1(repo.head.encode())  # noqa: S324 - a git-style commit id, not security
            for path in sorted(files):
                digest.update(path.encode() + b"\0" + blob_oid(files[path]).encode())
            repo.files, repo.head = files, digest.hexdigest()
        return json_reply(
            200,
            {
                "commitUrl": f"{self.hf_url}/{kind}/{repo.repo_id}/commit/{repo.head}",
                "commitOid": repo.head,
                "pullRequestUrl": None,
            },
        )

    def _hf_tree(self, req: Request, kind: str, ns: str, name: str, rev: str, path: str | None) -> Reply:
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
                        "oid": blob_oid(data),
                        "size": len(data),
                        "path": fpath,
                    }
        return json_reply(200, list(entries.values()))

    def _hf_info(self, req: Request, kind: str, ns: str, name: str, rev: str | None) -> Reply:
        with self.lock:
            repo = self._repo(kind, ns, name, rev)
            return json_reply(
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

    def _hf_file(self, req: Request, kind: str, ns: str, name: str, rev: str, path: str) -> Reply:
        with self.lock:
            repo = self._repo(kind, ns, name, rev)
            data = repo.files.get(path)
            if data is None:
                err = ServiceError(404, f"Entry {path} not found", hub_code="EntryNotFound")
                reply = err.reply()
                reply.headers["X-Repo-Commit"] = repo.head
                return reply
            headers = {"X-Repo-Commit": repo.head, "ETag": f'"{blob_oid(data)}"'}
        return Reply(200, data, "application/octet-stream", headers)
