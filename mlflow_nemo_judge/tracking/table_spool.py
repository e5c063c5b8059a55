"""The per-sample UI table, streamed: rows spooled to a temp file as samples finish, written at the end
as the JSON file MLflow's table viewer reads — never held in memory.

MLflow's ``log_table`` takes a pandas DataFrame: at 10k rows building it peaked at ~507 MB (issue 15),
and it costs four round trips to a server (list, upload, read the run, tag). Here each row is one JSON
line in a temp file while the run goes (the columns are their first-seen order, since tasks differ in
fields), and ``write`` streams them into the ``{"columns": [...], "data": [[...], ...]}`` layout that
``DataFrame.to_json(orient="split")`` writes and ``mlflow.load_table`` reads, so memory stays flat. The
caller uploads the file with the run's other artifacts and names it in the ``mlflow.loggedArtifacts``
tag itself (what ``log_table`` would add). Past ``max_rows`` the spool is dropped: a table that big is
unusable in the UI, and ``samples.jsonl`` is the per-sample record.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any

# MLflow's tag listing a run's tables (``mlflow.utils.mlflow_tags.MLFLOW_LOGGED_ARTIFACTS``; the UI's
# table views read it). Spelled out so this module imports no mlflow.
MLFLOW_LOGGED_ARTIFACTS = "mlflow.loggedArtifacts"


def with_table(tag_value: str | None, path: str) -> str:
    """The ``mlflow.loggedArtifacts`` value naming ``path`` as a table, added to what the tag held (as
    ``log_table`` does); a value that is not a JSON list is replaced."""
    try:
        entries = json.loads(tag_value) if tag_value else []
    except ValueError:
        entries = []
    if not isinstance(entries, list):
        entries = []
    entry = {"path": path, "type": "table"}
    if entry not in entries:
        entries.append(entry)
    return json.dumps(entries)


def _cell(v: Any) -> Any:
    """JSON has no NaN or infinity; pandas writes them as null, and so does this."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class TableSpool:
    """Rows of one run's table in a temp file (see the module docstring); ``close`` removes it."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.count = 0
        self.columns: dict[str, None] = {}  # first-seen order (a dict is an ordered set)
        self._fh: IO[str] | None = None
        self._path: Path | None = None
        self.overflowed = max_rows <= 0

    @property
    def rows(self) -> int:
        """Rows the table will have (0 once it overflowed)."""
        return 0 if self.overflowed else self.count

    def add(self, row: dict[str, Any]) -> None:
        if self.overflowed:
            return
        if self.count >= self.max_rows:
            self.overflowed = True  # too big for a UI table: the JSONL file is the per-sample record
            self.close()
            return
        if self._fh is None:
            fd, name = tempfile.mkstemp(prefix="nemo-judge-table-", suffix=".jsonl")
            self._path, self._fh = Path(name), os.fdopen(fd, "w", encoding="utf-8")
        for k in row:
            if k not in self.columns:
                self.columns[k] = None
        self._fh.write(json.dumps({k: _cell(v) for k, v in row.items()}, ensure_ascii=False) + "\n")
        self.count += 1

    def write(self, dst: Path) -> bool:
        """The table at ``dst`` in MLflow's layout; False (nothing written) when there is no table."""
        if self.overflowed or self._fh is None or self._path is None:
            return False
        self._fh.flush()
        cols = list(self.columns)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(self._path, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as out:
            out.write('{"columns":' + json.dumps(cols, ensure_ascii=False) + ',"data":[')
            for i, line in enumerate(fin):
                row = json.loads(line)
                out.write(("," if i else "") + json.dumps([row.get(c) for c in cols], ensure_ascii=False))
            out.write("]}")
        return True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def __del__(self) -> None:  # a run that never finished must not leave its rows in /tmp
        with contextlib.suppress(Exception):
            self.close()
