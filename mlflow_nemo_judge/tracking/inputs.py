"""The evaluation data as MLflow dataset inputs of a run (source, digest and, when small, the rows)."""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any

from mlflow_nemo_judge.tracking.params import DatasetInfo

logger = logging.getLogger(__package__)  # "mlflow_nemo_judge.tracking", the records' name before the split

# -------------------------------------------------------------------------------------- datasets


def _dataset_source(info: DatasetInfo) -> Any:
    """A DatasetSource MLflow can store: the resolved local path or URL; ``hf://datasets/ns/name`` (a
    NeMo Data Store or the Hub) as a Hugging Face source; anything else as a code source naming it."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

    url = info.source or info.files_url
    if not url:
        return CodeDatasetSource(tags={"mlflow.source.name": info.name})
    if url.startswith(("http://", "https://")):
        return HTTPDatasetSource(url)
    if url.startswith("hf://"):
        parts = url[len("hf://") :].split("/")
        if parts and parts[0] == "datasets":
            parts = parts[1:]
        repo = "/".join(parts[:2])
        rest = "/".join(p for p in parts[2:] if p)
        return HuggingFaceDatasetSource(path=repo or url, data_files=rest or None)
    try:
        with warnings.catch_warnings():
            # A local path matches both the "" and "file" scheme sources MLflow registers; same class.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            return resolve_dataset_source(url)
    except Exception:
        return CodeDatasetSource(tags={"mlflow.source.name": url})


def _mlflow_dataset(info: DatasetInfo) -> Any:
    from mlflow.data.meta_dataset import MetaDataset

    source = _dataset_source(info)
    if info.rows:
        import pandas as pd
        from mlflow.data.pandas_dataset import from_pandas

        df = pd.DataFrame(
            [
                {
                    k: v
                    if v is None or isinstance(v, (str, int, float, bool))
                    else json.dumps(v, ensure_ascii=False, default=str)
                    for k, v in r.items()
                }
                for r in info.rows
            ]
        )
        try:
            return from_pandas(df, source=source, name=info.name, digest=info.digest)
        except Exception as exc:  # schema inference on odd columns must not fail the run
            logger.debug("from_pandas failed (%s); logging dataset metadata only", exc)
    return MetaDataset(source=source, name=info.name, digest=info.digest)  # type: ignore[abstract]
