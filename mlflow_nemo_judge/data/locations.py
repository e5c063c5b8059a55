"""Where a dataset's files are: local paths, ``file://`` URLs, directories, and the dispatch to ``hf://``.

* a local file or directory path, absolute or relative (relative paths resolve against
  ``DatasetSource.base_dir`` — the config file's directory — else the current directory);
* ``file:///abs/path`` and ``file://relative/path`` (NeMo writes bundled data as ``file://fiqa/``, which
  is a relative path, so the part after ``file://`` is taken as a path, never as a host name);
* ``hf://datasets/...``: see ``hub``.

A directory contributes every ``*.jsonl``, ``*.json`` and ``*.csv`` file in it (recursively, sorted by
relative path; hidden files/folders and README files skipped), which is how NeMo treats a whole Data
Store repo. A bare ``namespace/name`` that is not a local path is explained as an Entity Store reference.
"""

from __future__ import annotations

import os
import re
from contextlib import suppress
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from mlflow_nemo_judge.data.hub import hf_endpoint, plan_hf, shown_endpoint
from mlflow_nemo_judge.data.source import (
    ACCEPTED,
    EXTENSION_FORMATS,
    SCHEME,
    DataFile,
    DatasetSource,
    format_from_name,
    is_data_name,
)
from mlflow_nemo_judge.errors import DatasetError

__all__ = ["describe", "plan_files", "resolve_files"]

# A NeMo Entity Store dataset reference is "namespace/name": two plain name segments.
_ENTITY_REF = re.compile(r"[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*")


def resolve_files(source: DatasetSource) -> list[tuple[str, Path]]:
    """The concrete files behind ``source`` as ``(display_name, local_path)``, downloading hf:// files.

    ``display_name`` is what error messages use: the local path, or the file's own ``hf://`` URL.
    """
    return [(data_file.name, data_file.fetch()) for data_file in plan_files(source)]


def describe(source: DatasetSource) -> str:
    """A short, token-free description for logs; never touches the network or raises."""
    url = source.url.strip()
    suffix = f" (format {source.format})" if source.format else ""
    match = SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme == "hf":
        return f"{url} via {shown_endpoint(hf_endpoint(source))}{suffix}"
    if scheme not in ("", "file"):
        return f"unsupported dataset location {url!r}"
    raw = _file_url_path(url[match.end() :]) if match else url
    if not raw:
        return f"unsupported dataset location {url!r}"
    path = _local_path(source, raw)
    kind = "local directory" if path.is_dir() else "local file" if path.exists() else "missing local path"
    return f"{kind} {path}{suffix}"


def plan_files(source: DatasetSource) -> list[DataFile]:
    """Check the location and list its files (an hf:// repo is listed now, its files fetched later)."""
    url = source.url.strip()
    if not url:
        raise DatasetError(f"dataset location is empty; {ACCEPTED}")
    match = SCHEME.match(url)
    if match is None:
        return _plan_local(source, url, plain=True)
    scheme = match.group(1).lower()
    rest = url[match.end() :]
    if scheme == "file":
        raw = _file_url_path(rest)
        if not raw:
            raise DatasetError(f"{url}: file:// URL has no path; {ACCEPTED}")
        return _plan_local(source, raw, plain=False)
    if scheme == "hf":
        return plan_hf(source, url, rest)
    hint = " (download the file first, or upload it to a Data Store/HF dataset repo)"
    raise DatasetError(f"unsupported dataset location {url!r}{hint}; {ACCEPTED}")


def _file_url_path(rest: str) -> str:
    # file:///abs -> "/abs"; file://rel/path -> "rel/path" (NeMo's own "file://fiqa/" is relative).
    return unquote(rest.split("?", 1)[0].split("#", 1)[0])


def _local_path(source: DatasetSource, raw: str) -> Path:
    path = Path(raw)
    # "~user" with no such user (or no home) raises: keep the literal path, which is then reported missing.
    with suppress(RuntimeError):
        path = path.expanduser()
    if not path.is_absolute():
        path = (source.base_dir or Path.cwd()) / path
    # abspath normalises "..", but unlike resolve() keeps symlinks, so messages show what the user wrote.
    return Path(os.path.abspath(path))


def _plan_local(source: DatasetSource, raw: str, *, plain: bool) -> list[DataFile]:
    path = _local_path(source, raw)
    if path.is_dir():
        files = _scan_directory(path, source.format)
        if not files:
            wanted = f"*.{source.format}" if source.format else "*.jsonl, *.json or *.csv"
            raise DatasetError(f"dataset is empty: no {wanted} files in directory {path}")
        return [_local_file(p, EXTENSION_FORMATS[p.suffix.lower()]) for p in files]
    if path.exists():
        return [_local_file(path, source.format or format_from_name(path.name, str(path)))]
    stripped = raw.strip("/")
    if (
        plain
        and not raw.startswith(("/", ".", "~"))
        and _ENTITY_REF.fullmatch(stripped)
        and PurePosixPath(stripped).suffix.lower() not in EXTENSION_FORMATS
    ):
        raise DatasetError(
            f"dataset not found: {path}; {raw!r} looks like a NeMo Entity Store dataset reference "
            f"(namespace/name): give it as the task's dataset: {stripped} (the nemo backend passes it "
            f"to NeMo; the local backend reads it through the Entity Store when --nemo-url or "
            f"NEMO_EVALUATOR_URL is set), or use a path, a file:// URL or hf://datasets/{stripped}"
        )
    raise DatasetError(f"dataset not found: {path}")


def _local_file(path: Path, fmt: str) -> DataFile:
    return DataFile(name=str(path), format=fmt, fetch=lambda: path)


def _scan_directory(root: Path, fmt: str | None) -> list[Path]:
    # Recursive, like a whole hf:// repo, so a local snapshot of a repo reads exactly like the repo.
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            full = Path(dirpath) / filename
            rel = full.relative_to(root).as_posix()
            if is_data_name(rel, fmt):
                found.append((rel, full))
    found.sort(key=lambda item: item[0])
    return [full for _, full in found]
