"""Rows for the FAKE NeMo service's scorer: dataset files and NeMo's item-key normalisation (reference §9).

Own code (see ``scorer``): JSON Lines, a JSON array or CSV, from one file or every such file of a folder
in path order; ``item`` keys normalised as NeMo documents them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["normalize_keys", "read_rows"]


def normalize_keys(row: Mapping[str, Any]) -> dict[str, Any]:
    """NeMo's item keys: non-alphanumerics become ``_``, lower case, collisions get ``_1``, ``_2``."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        base = "".join(c if c.isascii() and c.isalnum() else "_" for c in str(key)).lower()
        name, n = base, 0
        while name in out:
            n += 1
            name = f"{base}_{n}"
        out[name] = value
    return out


def _read_file(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return [dict(r) for r in csv.DictReader(text.splitlines())]
    if path.suffix == ".json":
        doc = json.loads(text)
        return list(doc) if isinstance(doc, list) else [doc]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_rows(source: Any) -> list[dict[str, Any]]:
    """Rows of a local file or folder (``files_url`` after the runner fetched it), or inline rows."""
    if isinstance(source, list):
        return [dict(r) for r in source]
    url = str(source.get("files_url") if isinstance(source, Mapping) else source)
    path = Path(url[len("file://") :] if url.startswith("file://") else url)
    if not path.exists():
        raise RuntimeError(f"dataset {url!r} not found")
    if path.is_file():
        return _read_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json", ".csv"))
    if not files:
        raise RuntimeError(f"dataset {url!r} holds no .jsonl, .json or .csv file")
    return [r for f in files for r in _read_file(f)]
