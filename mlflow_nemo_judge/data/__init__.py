"""Find and stream the rows of a task dataset (NeMo Evaluator ``dataset.files_url``).

Accepted locations (NeMo reference §5.4 plus plain local paths): local files and directories,
``file://`` URLs (``locations``) and ``hf://datasets/...`` repos, files and folders read with
``huggingface_hub``, which also serves a NeMo Data Store (``hub``). Rows stream one at a time
(``readers``). The names below are the package's API; the submodules are implementation.

Modules: ``source`` (``DatasetSource``, the data-file name rules), ``locations``, ``hub``, ``readers``.
"""

from __future__ import annotations

from mlflow_nemo_judge.data.hub import hf_endpoint
from mlflow_nemo_judge.data.locations import describe, resolve_files
from mlflow_nemo_judge.data.readers import file_digest, first_row, iter_located_rows, iter_rows
from mlflow_nemo_judge.data.source import FORMATS, DatasetSource

__all__ = [
    "FORMATS",
    "DatasetSource",
    "describe",
    "file_digest",
    "first_row",
    "hf_endpoint",
    "iter_located_rows",
    "iter_rows",
    "resolve_files",
]
