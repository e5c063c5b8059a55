"""``DatasetSource`` and the file-name rules that local directories and ``hf://`` repos share.

Kept apart from ``locations`` and ``hub`` so both can use one definition of "a data file" without
importing each other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mlflow_nemo_judge.errors import DatasetError

__all__ = [
    "ACCEPTED",
    "EXTENSION_FORMATS",
    "FORMATS",
    "SCHEME",
    "DataFile",
    "DatasetSource",
    "format_from_name",
    "is_data_name",
]

#: The data formats NeMo custom evaluations accept.
FORMATS: tuple[str, ...] = ("jsonl", "json", "csv")
EXTENSION_FORMATS: dict[str, str] = {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}

ACCEPTED = (
    "accepted dataset locations: a local file or directory path, file:///abs/path, file://relative/path, "
    "hf://datasets/{namespace}/{repo} (whole repo) or hf://datasets/{namespace}/{repo}/{path/in/repo}"
)
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


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


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset; ``fetch`` yields its local path (downloading an hf:// file on demand)."""

    name: str
    format: str
    fetch: Callable[[], Path]


def is_data_name(rel_path: str, fmt: str | None) -> bool:
    """Whether a file (path relative to the dataset root, '/'-separated) is one of the dataset's files."""
    parts = rel_path.split("/")
    # Hidden entries are VCS/cache metadata (.gitattributes, .cache/huggingface/...), never rows.
    if any(part.startswith(".") for part in parts):
        return False
    name = PurePosixPath(parts[-1])
    if name.stem.lower() == "readme":
        return False
    found = EXTENSION_FORMATS.get(name.suffix.lower())
    return found is not None and (fmt is None or found == fmt)


def format_from_name(filename: str, shown: str) -> str:
    """The format a file's extension names; ``shown`` is the name error messages use."""
    fmt = EXTENSION_FORMATS.get(PurePosixPath(filename).suffix.lower())
    if fmt is None:
        raise DatasetError(
            f"{shown}: cannot tell the dataset format from the file name; "
            f"use a .jsonl, .json or .csv file or set the dataset format"
        )
    return fmt
