"""``hf://datasets/...`` locations, read with ``huggingface_hub`` into its usual cache.

``hf://datasets/{namespace}/{repo}`` (trailing slash optional: every data file of the repo),
``hf://datasets/{namespace}/{repo}/{path/in/repo.jsonl}`` (one file) or ``.../{folder}/`` (the data
files under that folder); ``{repo}@{revision}`` pins a branch, tag or commit. A NeMo Data Store
(``{NDS}/v1/hf``) serves the same HTTP API, so it is read exactly like the Hub.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from mlflow_nemo_judge import settings
from mlflow_nemo_judge.data.source import (
    ACCEPTED,
    EXTENSION_FORMATS,
    DataFile,
    DatasetSource,
    format_from_name,
    is_data_name,
)
from mlflow_nemo_judge.errors import DatasetError, MissingDependencyError

__all__ = ["HUB_ENDPOINT", "hf_endpoint", "plan_hf", "shown_endpoint"]

# One logger for the whole data package (the name it had before the split), so log config keeps working.
logger = logging.getLogger("mlflow_nemo_judge.data")

HUB_ENDPOINT = "https://huggingface.co"


def hf_endpoint(source: DatasetSource) -> str | None:
    """The HF-compatible endpoint for ``hf://`` URLs, or None for huggingface_hub's default.

    Order: ``source.hf_endpoint``; env ``HF_ENDPOINT`` (it names the HF API root exactly, and is what
    huggingface_hub itself honours); the configured NeMo Data Store + ``/v1/hf`` (NeMo's Data Store serves
    the HF API there): ``NEMO_DATASTORE_URL``, else ``NEMO_EVALUATOR_URL``, which is the Data Store's
    default for the nemo backend too. NeMo resolves ``hf://`` against its Data Store by default, so with
    NeMo URLs set both backends read the same data; with none set, huggingface_hub's default (the
    public Hub) is the only place left to look.
    """
    for value in (source.hf_endpoint, os.environ.get("HF_ENDPOINT")):
        if value and value.strip():
            return value.strip().rstrip("/")
    for name in ("NEMO_DATASTORE_URL", "NEMO_EVALUATOR_URL"):
        base = (settings.get(name) or "").strip().rstrip("/")
        if base:
            # ".../v1/hf" is used as is; a base given with its "/v1" (as the nemo client accepts) is not
            # doubled into ".../v1/v1/hf".
            base = base.removesuffix("/v1/hf").removesuffix("/v1")
            return f"{base}/v1/hf"
    return None


def shown_endpoint(endpoint: str | None) -> str:
    """The endpoint as messages name it (None means huggingface_hub's default, the public Hub)."""
    return endpoint or f"{HUB_ENDPOINT} (huggingface_hub default)"


@dataclass(frozen=True)
class _HfLocation:
    url: str
    repo_id: str
    revision: str | None
    path: str  # inside the repo, no leading/trailing "/"; "" for the whole repo
    folder: bool  # the URL ended with "/" (or named the repo root)


def _parse_hf(url: str, rest: str) -> _HfLocation:
    kind, _, tail = rest.partition("/")
    if kind != "datasets":
        raise DatasetError(f"{url}: only hf://datasets/... URLs hold datasets; {ACCEPTED}")
    pieces = tail.split("/", 2)
    if len(pieces) < 2 or not pieces[0] or not pieces[1]:
        raise DatasetError(f"{url}: expected hf://datasets/{{namespace}}/{{repo}}[/path/in/repo]")
    namespace, repo = pieces[0], pieces[1]
    repo, _, revision = repo.partition("@")
    if not repo:
        raise DatasetError(f"{url}: expected hf://datasets/{{namespace}}/{{repo}}[/path/in/repo]")
    in_repo = pieces[2] if len(pieces) == 3 else ""
    path = in_repo.strip("/")
    return _HfLocation(
        url=url,
        repo_id=f"{namespace}/{repo}",
        # HfFileSystem percent-encodes "/" in revisions (refs%2Fpr%2F1); accept the same spelling.
        revision=unquote(revision) if revision else None,
        path=path,
        folder=not path or in_repo.endswith("/"),
    )


def plan_hf(source: DatasetSource, url: str, rest: str) -> list[DataFile]:
    """The files behind an ``hf://`` URL (``rest`` is the part after ``hf://``); downloads are deferred."""
    loc = _parse_hf(url, rest)
    endpoint = hf_endpoint(source)
    token = _hf_token(source, endpoint)
    prefix = f"hf://datasets/{loc.repo_id}" + (f"@{loc.revision}" if loc.revision else "")

    def remote(path_in_repo: str, fmt: str) -> DataFile:
        name = f"{prefix}/{path_in_repo}"
        return DataFile(
            name=name, format=fmt, fetch=lambda: _hf_download(loc, path_in_repo, name, endpoint, token)
        )

    suffix = PurePosixPath(loc.path).suffix.lower()
    if not loc.folder and suffix in EXTENSION_FORMATS:
        # A named data file: download it directly (one request fewer than listing the repo first).
        return [remote(loc.path, source.format or EXTENSION_FORMATS[suffix])]

    all_files = _hf_list(loc, endpoint, token)
    if not loc.folder and loc.path in all_files:
        return [remote(loc.path, source.format or format_from_name(loc.path, url))]
    under = f"{loc.path}/" if loc.path else ""
    selected = sorted(
        f for f in all_files if f.startswith(under) and is_data_name(f[len(under) :], source.format)
    )
    if not selected:
        if under and not any(f.startswith(under) for f in all_files):
            raise DatasetError(
                f"dataset not found: {url} (no such file or folder in {loc.repo_id} "
                f"at {shown_endpoint(endpoint)})"
            )
        wanted = f"*.{source.format}" if source.format else "*.jsonl, *.json or *.csv"
        raise DatasetError(f"dataset is empty: no {wanted} files in {url} at {shown_endpoint(endpoint)}")
    return [remote(f, EXTENSION_FORMATS[PurePosixPath(f).suffix.lower()]) for f in selected]


def _hf_token(source: DatasetSource, endpoint: str | None) -> str | bool | None:
    token = source.token or os.environ.get("HF_TOKEN") or None
    if token:
        return token
    # No token given: on the public Hub let huggingface_hub fall back to the saved `hf auth login` token
    # (private datasets), but never send that huggingface.co credential to a Data Store or mirror.
    return None if endpoint is None or endpoint == HUB_ENDPOINT else False


def _import_hf() -> Any:
    # Imported lazily: huggingface_hub (and its HTTP stack) is only needed for hf:// datasets.
    try:
        import huggingface_hub
    except ImportError as exc:  # pragma: no cover - a declared dependency; guards broken installs
        raise MissingDependencyError(
            f"reading hf:// datasets needs huggingface_hub (pip install huggingface_hub): {exc}"
        ) from exc
    return huggingface_hub


def _hf_list(loc: _HfLocation, endpoint: str | None, token: str | bool | None) -> list[str]:
    hf = _import_hf()
    logger.debug("listing dataset repo %s at %s", loc.repo_id, shown_endpoint(endpoint))
    try:
        api = hf.HfApi(endpoint=endpoint, token=token, library_name="mlflow-nemo-judge")
        files = api.list_repo_files(loc.repo_id, repo_type="dataset", revision=loc.revision)
    except Exception as exc:  # huggingface_hub raises many, version-dependent types (HTTP, httpx, OS, value)
        raise _hf_error(exc, loc.url, endpoint) from exc
    return [str(f) for f in files]


def _hf_download(
    loc: _HfLocation, path_in_repo: str, name: str, endpoint: str | None, token: str | bool | None
) -> Path:
    hf = _import_hf()
    logger.debug("fetching %s from %s", name, shown_endpoint(endpoint))
    try:
        local = hf.hf_hub_download(
            loc.repo_id,
            path_in_repo,
            repo_type="dataset",
            revision=loc.revision,
            endpoint=endpoint,
            token=token,
            library_name="mlflow-nemo-judge",
        )
    except Exception as exc:  # see _hf_list: wrap whatever the client raises, naming URL and endpoint
        raise _hf_error(exc, name, endpoint) from exc
    return Path(local)


def _hf_error(exc: Exception, url: str, endpoint: str | None) -> DatasetError:
    where = shown_endpoint(endpoint)
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    headers = getattr(response, "headers", None)
    code = headers.get("X-Error-Code") if headers is not None else None
    if status == 404 or code in ("RepoNotFound", "EntryNotFound", "RevisionNotFound"):
        what = {
            "RepoNotFound": "the dataset repository does not exist or is not accessible",
            "EntryNotFound": "no such file in the repository",
            "RevisionNotFound": "no such revision",
        }.get(code or "", "HTTP 404")
        return DatasetError(f"dataset not found: {url} at {where}: {what}")
    if status in (401, 403):
        return DatasetError(
            f"cannot read {url} at {where}: access denied (HTTP {status}); set HF_TOKEN or the dataset token"
        )
    return DatasetError(f"cannot read {url} at {where}: {_one_line(exc)}")


def _one_line(exc: BaseException, limit: int = 400) -> str:
    """Exception text (and its causes) squeezed onto one line: DatasetError messages are one line."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 3:
        seen.add(id(current))
        text = " ".join(str(current).split())
        parts.append(f"{type(current).__name__}: {text}" if text else type(current).__name__)
        current = current.__cause__ or current.__context__
    joined = " <- ".join(parts)
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."
