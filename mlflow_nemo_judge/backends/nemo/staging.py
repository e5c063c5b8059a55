"""Staging local datasets for a NeMo job: upload to the Data Store, register in the Entity Store, and
point the submitted config's ``files_url`` at ``hf://datasets/<ns>/<name>`` (in a copy; the user's
config is never changed). Repos are content-addressed, so a job can never read a stale copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mlflow_nemo_judge.backends.nemo.client import NemoClient
from mlflow_nemo_judge.config import EvalConfig, Target, source_path
from mlflow_nemo_judge.data import DatasetSource, file_digest, resolve_files
from mlflow_nemo_judge.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def _is_local(url: str) -> bool:
    m = _SCHEME.match(url.strip())
    return m is None or m.group(1).lower() == "file"


def _local_root(url: str, base_dir: Path | None) -> Path:
    raw = url.strip()
    if raw.lower().startswith("file://"):
        # Same reading as datasets.py: what follows file:// is a path (NeMo's own "file://fiqa/" is relative).
        raw = unquote(raw[len("file://") :].split("?", 1)[0].split("#", 1)[0])
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return Path(os.path.abspath(path))


def _repo_name(root: Path, files: list[tuple[Path, str]]) -> str:
    """A Data Store repo name derived from the content: same data → same repo (re-runs upload nothing
    new), changed data → a new repo (a job can never read a stale copy under the old name)."""
    digest = hashlib.sha256()
    for src, dest in files:
        digest.update(f"{dest}\0{file_digest(src)}\n".encode())
    stem = re.sub(r"[^a-z0-9]+", "-", (root.stem if root.is_file() else root.name).lower()).strip("-")[:48]
    return f"{stem or 'dataset'}-{digest.hexdigest()[:12]}"


def local_datasets(cfg: dict[str, Any], tgt: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(config path, dataset dict)`` of every dataset that lives on this machine."""
    found: list[tuple[str, dict[str, Any]]] = []
    for tname, task in (cfg.get("tasks") or {}).items():
        ds = (task or {}).get("dataset")
        if isinstance(ds, dict) and isinstance(ds.get("files_url"), str) and _is_local(ds["files_url"]):
            found.append((f"tasks.{tname}.dataset", ds))
    for key in ("dataset", "cached_outputs"):
        ds = tgt.get(key)
        if isinstance(ds, dict) and isinstance(ds.get("files_url"), str) and _is_local(ds["files_url"]):
            found.append((f"target.{key}", ds))
    return found


def dataset_files(path: str, ds: Mapping[str, Any], base: Path | None) -> tuple[Path, list[tuple[Path, str]]]:
    root = _local_root(ds["files_url"], base)
    try:
        found = resolve_files(DatasetSource(url=ds["files_url"], format=ds.get("format"), base_dir=base))
    except DatasetError as exc:
        raise ConfigError(f"{path}.files_url", str(exc)) from None
    files = [(p, p.relative_to(root).as_posix() if root.is_dir() else p.name) for _, p in found]
    return root, files


def stage(
    client: NemoClient,
    namespace: str,
    config: EvalConfig,
    target: Target,
    cfg: dict[str, Any],
    tgt: dict[str, Any],
) -> None:
    """Upload and register local datasets, rewriting their ``files_url`` in ``cfg``/``tgt`` (copies)."""
    local = local_datasets(cfg, tgt)
    if not local:
        return
    ns = namespace
    client.ensure_namespace(ns)
    cbase, tbase = source_path(config), source_path(target)
    staged: dict[Path, str] = {}
    for path, ds in local:
        src = tbase if path.startswith("target.") else cbase
        root, files = dataset_files(path, ds, src.parent if src else None)
        if root not in staged:
            name = _repo_name(root, files)
            files_url = client.upload_files(ns, name, files)
            client.create_dataset(
                name, ns, files_url, description=f"staged by mlflow-nemo-judge from {root.name}"
            )
            log.info("staged %s as %s (%d file(s))", root.name, files_url, len(files))
            staged[root] = files_url
        ds["files_url"] = staged[root]
        # The data now lives on the Data Store, which is the default endpoint for hf:// URLs.
        ds.pop("hf_endpoint", None)
