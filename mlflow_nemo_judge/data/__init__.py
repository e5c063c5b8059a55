"""Find and stream the rows of a task dataset (NeMo Evaluator ``dataset.files_url``).

Accepted locations (NeMo reference §5.4 plus plain local paths):

* a local file or directory path, absolute or relative (relative paths resolve against
  ``DatasetSource.base_dir`` — the config file's directory — else the current directory);
* ``file:///abs/path`` and ``file://relative/path`` (NeMo writes bundled data as ``file://fiqa/``, which
  is a relative path, so the part after ``file://`` is taken as a path, never as a host name);
* ``hf://datasets/{namespace}/{repo}`` (trailing slash optional: every data file of the repo),
  ``hf://datasets/{namespace}/{repo}/{path/in/repo.jsonl}`` (one file) or ``.../{folder}/`` (the data
  files under that folder); ``{repo}@{revision}`` pins a branch, tag or commit. These are read with
  ``huggingface_hub`` into its usual cache, so a NeMo Data Store (``{NDS}/v1/hf``) works like the Hub.

A directory or repo contributes every ``*.jsonl``, ``*.json`` and ``*.csv`` file in it (recursively,
sorted by relative path; hidden files/folders and README files skipped), which is how NeMo treats a whole
Data Store repo. Rows are dicts with the file's original keys; CSV values stay strings.

Everything streams: JSONL and CSV line by line, JSON arrays through an incremental parser that holds
one buffer chunk plus the current row, so a 100k-row file is never materialised.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote

from mlflow_nemo_judge.errors import DatasetError, MissingDependencyError

__all__ = [
    "FORMATS",
    "DatasetSource",
    "describe",
    "file_digest",
    "first_row",
    "hf_endpoint",
    "iter_rows",
    "resolve_files",
]

logger = logging.getLogger(__name__)

#: The data formats NeMo custom evaluations accept.
FORMATS: tuple[str, ...] = ("jsonl", "json", "csv")
_EXTENSION_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}

_HUB_ENDPOINT = "https://huggingface.co"
_ACCEPTED = (
    "accepted dataset locations: a local file or directory path, file:///abs/path, file://relative/path, "
    "hf://datasets/{namespace}/{repo} (whole repo) or hf://datasets/{namespace}/{repo}/{path/in/repo}"
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# A NeMo Entity Store dataset reference is "namespace/name": two plain name segments.
_ENTITY_REF = re.compile(r"[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*")
_CHUNK = 1 << 16


@dataclass(frozen=True)
class DatasetSource:
    """Where a task's rows come from, plus what is needed to read them.

    ``hf_endpoint`` (for ``hf://`` URLs) defaults, in this order, to env ``HF_ENDPOINT``, then env
    ``NEMO_DATASTORE_URL`` + ``/v1/hf``, then huggingface_hub's own default (the public Hub); see
    :func:`hf_endpoint`. ``token`` defaults to env ``HF_TOKEN``; it is kept out of ``repr`` and logs.
    ``format`` (``jsonl``/``json``/``csv``) defaults to each file's extension; when set on a directory or
    repo, only files with that extension are read.
    """

    url: str
    hf_endpoint: str | None = None
    token: str | None = field(default=None, repr=False)
    format: str | None = None
    base_dir: Path | None = None

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise through object.__setattr__ so every later reader can trust the fields.
        if self.format is not None:
            fmt = self.format.strip().lower().lstrip(".")
            if fmt not in FORMATS:
                raise DatasetError(
                    f"{self.url}: unknown dataset format {self.format!r}; expected one of {', '.join(FORMATS)}"
                )
            object.__setattr__(self, "format", fmt)
        if self.base_dir is not None and not isinstance(self.base_dir, Path):
            object.__setattr__(self, "base_dir", Path(self.base_dir))


# ----------------------------------------------------------------------------------------------- public API


def iter_rows(source: DatasetSource, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Stream the dataset's rows one at a time, stopping after ``limit`` rows.

    The location is checked (and an ``hf://`` repo listed) immediately, so a bad URL fails at the call;
    files are opened — and ``hf://`` files downloaded — only as iteration reaches them. Raises
    ``DatasetError`` at the end of iteration if the dataset held no rows at all.
    """
    _check_limit(limit)
    return _stream(source, _plan(source), limit)


def first_row(source: DatasetSource) -> dict[str, Any]:
    """The first row, for validating templates against the data; ``DatasetError`` if there are no rows."""
    # closing(): stop reading (and release the file handle) right after the first row.
    with closing(_stream(source, _plan(source), 1)) as rows:
        return next(rows)  # an empty dataset raises DatasetError here, never StopIteration


def resolve_files(source: DatasetSource) -> list[tuple[str, Path]]:
    """The concrete files behind ``source`` as ``(display_name, local_path)``, downloading hf:// files.

    ``display_name`` is what error messages use: the local path, or the file's own ``hf://`` URL.
    """
    return [(data_file.name, data_file.fetch()) for data_file in _plan(source)]


def describe(source: DatasetSource) -> str:
    """A short, token-free description for logs; never touches the network or raises."""
    url = source.url.strip()
    suffix = f" (format {source.format})" if source.format else ""
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme == "hf":
        where = hf_endpoint(source) or f"{_HUB_ENDPOINT} (huggingface_hub default)"
        return f"{url} via {where}{suffix}"
    if scheme not in ("", "file"):
        return f"unsupported dataset location {url!r}"
    raw = _file_url_path(url[match.end() :]) if match else url
    if not raw:
        return f"unsupported dataset location {url!r}"
    path = _local_path(source, raw)
    kind = "local directory" if path.is_dir() else "local file" if path.exists() else "missing local path"
    return f"{kind} {path}{suffix}"


def file_digest(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large datasets are hashed without loading them."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise DatasetError(f"dataset not found: {path}") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return digest.hexdigest()


def hf_endpoint(source: DatasetSource) -> str | None:
    """The HF-compatible endpoint for ``hf://`` URLs, or None for huggingface_hub's default.

    Order: ``source.hf_endpoint``; env ``HF_ENDPOINT`` (it names the HF API root exactly, and is what
    huggingface_hub itself honours); env ``NEMO_DATASTORE_URL`` + ``/v1/hf`` (NeMo's Data Store serves the
    HF API there; a URL already ending in ``/v1/hf`` is used as is).
    """
    for value in (source.hf_endpoint, os.environ.get("HF_ENDPOINT")):
        if value and value.strip():
            return value.strip().rstrip("/")
    datastore = (os.environ.get("NEMO_DATASTORE_URL") or "").strip().rstrip("/")
    if datastore:
        return datastore if datastore.endswith("/v1/hf") else f"{datastore}/v1/hf"
    return None


# ------------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _DataFile:
    """One file of a dataset; ``fetch`` yields its local path (downloading an hf:// file on demand)."""

    name: str
    format: str
    fetch: Callable[[], Path]


def _check_limit(limit: int | None) -> None:
    # bool is an int subclass; `limit=True` is a caller bug, not "one row".
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def _plan(source: DatasetSource) -> list[_DataFile]:
    url = source.url.strip()
    if not url:
        raise DatasetError(f"dataset location is empty; {_ACCEPTED}")
    match = _SCHEME.match(url)
    if match is None:
        return _plan_local(source, url, plain=True)
    scheme = match.group(1).lower()
    rest = url[match.end() :]
    if scheme == "file":
        raw = _file_url_path(rest)
        if not raw:
            raise DatasetError(f"{url}: file:// URL has no path; {_ACCEPTED}")
        return _plan_local(source, raw, plain=False)
    if scheme == "hf":
        return _plan_hf(source, url, rest)
    hint = " (download the file first, or upload it to a Data Store/HF dataset repo)"
    raise DatasetError(f"unsupported dataset location {url!r}{hint}; {_ACCEPTED}")


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


def _plan_local(source: DatasetSource, raw: str, *, plain: bool) -> list[_DataFile]:
    path = _local_path(source, raw)
    if path.is_dir():
        files = _scan_directory(path, source.format)
        if not files:
            wanted = f"*.{source.format}" if source.format else "*.jsonl, *.json or *.csv"
            raise DatasetError(f"dataset is empty: no {wanted} files in directory {path}")
        return [_local_file(p, _EXTENSION_FORMATS[p.suffix.lower()]) for p in files]
    if path.exists():
        return [_local_file(path, source.format or _format_from_name(path.name, str(path)))]
    stripped = raw.strip("/")
    if (
        plain
        and not raw.startswith(("/", ".", "~"))
        and _ENTITY_REF.fullmatch(stripped)
        and PurePosixPath(stripped).suffix.lower() not in _EXTENSION_FORMATS
    ):
        raise DatasetError(
            f"dataset not found: {path}; {raw!r} looks like a NeMo Entity Store dataset reference "
            f"(namespace/name), which is only supported with the nemo backend; locally use a path, "
            f"a file:// URL or hf://datasets/{stripped}"
        )
    raise DatasetError(f"dataset not found: {path}")


def _local_file(path: Path, fmt: str) -> _DataFile:
    return _DataFile(name=str(path), format=fmt, fetch=lambda: path)


def _is_data_name(rel_path: str, fmt: str | None) -> bool:
    """Whether a file (path relative to the dataset root, '/'-separated) is one of the dataset's files."""
    parts = rel_path.split("/")
    # Hidden entries are VCS/cache metadata (.gitattributes, .cache/huggingface/...), never rows.
    if any(part.startswith(".") for part in parts):
        return False
    name = PurePosixPath(parts[-1])
    if name.stem.lower() == "readme":
        return False
    found = _EXTENSION_FORMATS.get(name.suffix.lower())
    return found is not None and (fmt is None or found == fmt)


def _scan_directory(root: Path, fmt: str | None) -> list[Path]:
    # Recursive, like a whole hf:// repo, so a local snapshot of a repo reads exactly like the repo.
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            full = Path(dirpath) / filename
            rel = full.relative_to(root).as_posix()
            if _is_data_name(rel, fmt):
                found.append((rel, full))
    found.sort(key=lambda item: item[0])
    return [full for _, full in found]


def _format_from_name(filename: str, shown: str) -> str:
    fmt = _EXTENSION_FORMATS.get(PurePosixPath(filename).suffix.lower())
    if fmt is None:
        raise DatasetError(
            f"{shown}: cannot tell the dataset format from the file name; "
            f"use a .jsonl, .json or .csv file or set the dataset format"
        )
    return fmt


# ---------------------------------------------------------------------------------------------------- hf://


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
        raise DatasetError(f"{url}: only hf://datasets/... URLs hold datasets; {_ACCEPTED}")
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


def _plan_hf(source: DatasetSource, url: str, rest: str) -> list[_DataFile]:
    loc = _parse_hf(url, rest)
    endpoint = hf_endpoint(source)
    token = _hf_token(source, endpoint)
    prefix = f"hf://datasets/{loc.repo_id}" + (f"@{loc.revision}" if loc.revision else "")

    def remote(path_in_repo: str, fmt: str) -> _DataFile:
        name = f"{prefix}/{path_in_repo}"
        return _DataFile(
            name=name, format=fmt, fetch=lambda: _hf_download(loc, path_in_repo, name, endpoint, token)
        )

    suffix = PurePosixPath(loc.path).suffix.lower()
    if not loc.folder and suffix in _EXTENSION_FORMATS:
        # A named data file: download it directly (one request fewer than listing the repo first).
        return [remote(loc.path, source.format or _EXTENSION_FORMATS[suffix])]

    all_files = _hf_list(loc, endpoint, token)
    if not loc.folder and loc.path in all_files:
        return [remote(loc.path, source.format or _format_from_name(loc.path, url))]
    under = f"{loc.path}/" if loc.path else ""
    selected = sorted(
        f for f in all_files if f.startswith(under) and _is_data_name(f[len(under) :], source.format)
    )
    if not selected:
        if under and not any(f.startswith(under) for f in all_files):
            raise DatasetError(
                f"dataset not found: {url} (no such file or folder in {loc.repo_id} "
                f"at {_shown_endpoint(endpoint)})"
            )
        wanted = f"*.{source.format}" if source.format else "*.jsonl, *.json or *.csv"
        raise DatasetError(f"dataset is empty: no {wanted} files in {url} at {_shown_endpoint(endpoint)}")
    return [remote(f, _EXTENSION_FORMATS[PurePosixPath(f).suffix.lower()]) for f in selected]


def _hf_token(source: DatasetSource, endpoint: str | None) -> str | bool | None:
    token = source.token or os.environ.get("HF_TOKEN") or None
    if token:
        return token
    # No token given: on the public Hub let huggingface_hub fall back to the saved `hf auth login` token
    # (private datasets), but never send that huggingface.co credential to a Data Store or mirror.
    return None if endpoint is None or endpoint == _HUB_ENDPOINT else False


def _shown_endpoint(endpoint: str | None) -> str:
    return endpoint or f"{_HUB_ENDPOINT} (huggingface_hub default)"


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
    logger.debug("listing dataset repo %s at %s", loc.repo_id, _shown_endpoint(endpoint))
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
    logger.debug("fetching %s from %s", name, _shown_endpoint(endpoint))
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
    where = _shown_endpoint(endpoint)
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


# -------------------------------------------------------------------------------------------------- reading


def _stream(
    source: DatasetSource, files: list[_DataFile], limit: int | None
) -> Generator[dict[str, Any], None, None]:
    count = 0
    for data_file in files:
        # closing(): an early stop (limit reached) closes the file now rather than at garbage collection.
        with closing(_read_file(data_file.fetch(), data_file.name, data_file.format)) as rows:
            for row in rows:
                yield row
                count += 1
                if limit is not None and count >= limit:
                    return
    if count == 0:
        where = files[0].name if len(files) == 1 else f"{source.url.strip()} ({len(files)} files)"
        raise DatasetError(f"dataset is empty (no rows): {where}")


def _read_file(path: Path, name: str, fmt: str) -> Generator[dict[str, Any], None, None]:
    readers = {"jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows}
    try:
        with open(path, "rb") as fh:
            yield from readers[fmt](fh, name)
    except FileNotFoundError:
        raise DatasetError(f"dataset not found: {name}") from None
    except OSError as exc:  # permissions, a directory where a file was expected, I/O errors mid-read
        raise DatasetError(f"{name}: cannot read: {exc.strerror or exc}") from None


def _decoded_lines(fh: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) per physical line; decoding per line makes UTF-8 errors name the exact line."""
    for lineno, raw in enumerate(fh, start=1):
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{name}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start + 1} of the line)"
            ) from None


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _jsonl_rows(fh: IO[bytes], name: str) -> Iterator[dict[str, Any]]:
    for lineno, text in _decoded_lines(fh, name):
        if not text.strip():
            continue  # blank lines (often a trailing one) carry no row
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(value, dict):
            raise DatasetError(f"{name}:{lineno}: expected a JSON object per line, got {_kind(value)}")
        yield value


def _csv_records(fh: IO[bytes], name: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) per non-blank CSV record; a quoted field may span several lines."""
    # csv.reader over our own decoded lines (instead of DictReader over a text file) gives exact line
    # numbers for UTF-8 errors and lets short/long rows be errors rather than None keys or missing values.
    # strict: a broken quoted field (e.g. an unclosed quote swallowing the rest of the file) is an error.
    reader = csv.reader((text for _, text in _decoded_lines(fh, name)), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetError(f"{name}:{start}: invalid CSV: {exc}") from None
        if record:  # csv yields [] for a blank line
            yield start, record


def _csv_rows(fh: IO[bytes], name: str) -> Iterator[dict[str, Any]]:
    records = _csv_records(fh, name)
    line, header = next(records, (1, []))
    if not any(column.strip() for column in header):
        raise DatasetError(f"{name}:{line}: CSV file has no header row naming the columns")
    if len(set(header)) != len(header):
        repeated = next(column for i, column in enumerate(header) if column in header[:i])
        raise DatasetError(f"{name}:{line}: CSV header repeats the column {repeated!r}")
    for line, record in records:
        if len(record) != len(header):
            raise DatasetError(
                f"{name}:{line}: CSV row has {len(record)} fields but the header has {len(header)}"
            )
        yield dict(zip(header, record, strict=True))


class _JsonScanner:
    """Pull parser over a JSON text read in chunks: holds one chunk plus the value being decoded.

    ``json.JSONDecoder.raw_decode`` decodes one value at an offset; the scanner walks the top-level
    punctuation itself and asks the decoder only for array elements (or object members), refilling the
    buffer when a value runs past its end.
    """

    _WS = re.compile(r"[ \t\n\r]*")

    def __init__(self, fh: IO[bytes], name: str) -> None:
        self._fh = fh
        self._name = name
        # utf-8-sig drops a leading BOM; incremental so multi-byte characters may straddle chunks.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._json = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._lines_before = 0  # newlines in text already dropped from the buffer, for line numbers
        # Newlines in buf[:_counted_to]: line() is asked once per row, so it counts on from the last
        # position instead of rescanning the buffer from its start (which made parsing quadratic per chunk).
        self._counted_to = 0
        self._counted_lines = 0
        self._eof = False

    def line(self, pos: int | None = None) -> int:
        at = self._pos if pos is None else pos
        if at < self._counted_to:
            self._counted_to = self._counted_lines = 0
        self._counted_lines += self._buf.count("\n", self._counted_to, at)
        self._counted_to = at
        return self._lines_before + self._counted_lines + 1

    def _fill(self) -> bool:
        """Drop consumed text and append more; False once the file is exhausted."""
        if self._eof:
            return False
        if self._pos:
            self._lines_before = self.line(self._pos) - 1
            self._buf = self._buf[self._pos :]
            self._pos = 0
            self._counted_to = self._counted_lines = 0
        # Read at least as much as is buffered: a huge single row then costs O(log n) re-parses, not O(n).
        data = self._fh.read(max(_CHUNK, len(self._buf)))
        try:
            text = self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            line = self.line(len(self._buf)) + data[: max(exc.start, 0)].count(b"\n")
            raise DatasetError(f"{self._name}:{line}: not valid UTF-8 ({exc.reason})") from None
        if not data:
            self._eof = True
        self._buf += text
        return bool(data)

    def peek(self) -> str:
        """Skip whitespace; the next character, or '' at end of file."""
        while True:
            match = self._WS.match(self._buf, self._pos)
            self._pos = match.end() if match else self._pos
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def advance(self) -> None:
        self._pos += 1

    def value(self) -> tuple[Any, int]:
        """Decode the JSON value at the cursor; returns it with the line it starts on."""
        self.peek()
        while True:
            start = self._pos
            try:
                value, end = self._json.raw_decode(self._buf, start)
            except json.JSONDecodeError as exc:
                # An error near the buffer end (or an open string) may only mean the value continues in the
                # next chunk; anything else is a real syntax error and is reported without reading further.
                truncated = exc.pos >= len(self._buf) - 16 or exc.msg.startswith("Unterminated string")
                offset = exc.pos - start  # _fill() shifts the buffer, so keep the position value-relative
                if truncated and self._fill():
                    continue
                line = self.line(self._pos + offset)
                raise DatasetError(f"{self._name}:{line}: invalid JSON: {exc.msg}") from None
            if end >= len(self._buf) and self._fill():
                continue  # a number or literal ending exactly at the buffer end may continue
            self._pos = end
            return value, self.line(start)

    def fail(self, expected: str) -> DatasetError:
        found = self.peek()
        got = "end of file" if found == "" else repr(found)
        return DatasetError(f"{self._name}:{self.line()}: invalid JSON: expected {expected}, found {got}")


def _json_rows(fh: IO[bytes], name: str) -> Iterator[dict[str, Any]]:
    scanner = _JsonScanner(fh, name)
    first = scanner.peek()
    if first == "":
        return  # an empty file has no rows; the caller reports an empty dataset
    if first == "[":
        yield from _json_array(scanner, name, "")
    elif first == "{":
        yield from _json_wrapped_array(scanner, name)
    else:
        value, line = scanner.value()
        raise DatasetError(f"{name}:{line}: expected a JSON array of objects, got {_kind(value)}")
    if scanner.peek() != "":
        raise DatasetError(
            f"{name}:{scanner.line()}: invalid JSON: extra data after the top-level value "
            f"(JSON Lines? name the file .jsonl or set the dataset format to jsonl)"
        )


def _json_array(scanner: _JsonScanner, name: str, where: str) -> Iterator[dict[str, Any]]:
    scanner.advance()  # "["
    if scanner.peek() == "]":
        scanner.advance()
        return
    index = 0
    while True:
        if scanner.peek() == "":
            raise scanner.fail("an array element")
        value, line = scanner.value()
        if not isinstance(value, dict):
            raise DatasetError(
                f"{name}:{line}: element {index}{where} is {_kind(value)}, expected a JSON object"
            )
        yield value
        index += 1
        following = scanner.peek()
        if following == ",":
            scanner.advance()
        elif following == "]":
            scanner.advance()
            return
        else:
            raise scanner.fail("',' or ']' after an array element")


def _json_wrapped_array(scanner: _JsonScanner, name: str) -> Iterator[dict[str, Any]]:
    """Rows of an object wrapping them in its single list member, e.g. ``{"data": [...]}``.

    Other (non-list) members such as ``"version"`` are skipped; the list is streamed like a top-level array.
    """
    start_line = scanner.line()
    scanner.advance()  # "{"
    list_key: str | None = None
    if scanner.peek() == "}":
        scanner.advance()
    else:
        while True:
            if scanner.peek() != '"':
                raise scanner.fail("a member name")
            key, key_line = scanner.value()
            if scanner.peek() != ":":
                raise scanner.fail("':' after a member name")
            scanner.advance()
            if scanner.peek() == "[":
                if list_key is not None:
                    raise DatasetError(
                        f"{name}:{key_line}: the top-level object holds several lists ({list_key!r}, {key!r}); "
                        f"expected an array of objects or an object with exactly one list of objects"
                    )
                list_key = key
                yield from _json_array(scanner, name, f" of {key!r}")
            else:
                scanner.value()
            following = scanner.peek()
            if following == ",":
                scanner.advance()
            elif following == "}":
                scanner.advance()
                break
            else:
                raise scanner.fail("',' or '}' after an object member")
    if list_key is None:
        # A second value after the object means JSON Lines content in a .json file: say so.
        hint = (
            " (JSON Lines? name the file .jsonl or set the dataset format to jsonl)"
            if scanner.peek() != ""
            else ""
        )
        raise DatasetError(
            f"{name}:{start_line}: expected a JSON array of objects (or an object with one list of objects), "
            f"got an object without a list{hint}"
        )
