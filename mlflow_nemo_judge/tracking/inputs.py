"""The evaluation data as MLflow dataset inputs of a run (source, digest and, when small, the rows)."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

from mlflow_nemo_judge.data.scan import DatasetInfo
from mlflow_nemo_judge.tracking.names import TAG_TARGET_SHA, quote
from mlflow_nemo_judge.tracking.params import ModelSpec

logger = logging.getLogger(__package__)  # "mlflow_nemo_judge.tracking", the records' name before the split

MAX_DATASET_NAME = 500
MAX_DATASET_DIGEST = 36

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
        return HTTPDatasetSource(url)  # type: ignore[no-untyped-call]  # untyped in MLflow
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
    # datasets.name is String(500) and datasets.digest String(36) in MLflow's SQL stores.
    name, digest = info.name[:MAX_DATASET_NAME], info.digest[:MAX_DATASET_DIGEST]
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
            with warnings.catch_warnings():
                # MLflow's schema inference warns that an integer column (a 1-5 label) cannot hold a
                # missing value at model-inference time: advice for model signatures, not for a dataset
                # an evaluation read; it would land in every run's stderr.
                warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
                ds = from_pandas(df, source=source, name=name, digest=digest)
                _ = ds.schema  # inferred lazily (a cached property): infer it here, under the filter
                return ds
        except Exception as exc:  # schema inference on odd columns must not fail the run
            logger.debug("from_pandas failed (%s); logging dataset metadata only", exc)
    return MetaDataset(source=source, name=name, digest=digest)  # type: ignore[abstract]


# ---------------------------------------------------------------------------------- run inputs


def logged_model(cl: Any, experiment_id: str, run_id: str, spec: ModelSpec) -> str:
    """One external LoggedModel per target per experiment, so repeated evaluations of the same model
    accumulate their scores on it (the UI's Models tab compares them)."""
    import mlflow

    found = cl.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{TAG_TARGET_SHA}` = {quote(spec.target_sha256)}",
        max_results=1,
    )
    if found:
        return str(found[0].model_id)
    m = mlflow.create_external_model(
        name=spec.name[:MAX_DATASET_NAME],  # logged_models.name is String(500) too
        source_run_id=run_id,
        tags={TAG_TARGET_SHA: spec.target_sha256},
        params=spec.params,
        model_type=spec.model_type,
        experiment_id=experiment_id,
    )
    return str(m.model_id)


def log_inputs(cl: Any, run_id: str, datasets: Sequence[DatasetInfo], model_id: str | None) -> None:
    """The run's dataset inputs (one per distinct dataset) and its LoggedModel input, in one call."""
    from mlflow.entities import DatasetInput, InputTag, LoggedModelInput

    inputs = []
    seen: set[tuple[str, str]] = set()
    for d in datasets:
        if (d.name, d.digest) in seen:
            continue
        seen.add((d.name, d.digest))
        tags = [InputTag("mlflow.data.context", "evaluation"), InputTag("task", d.task[:500])]
        if d.files_url and len(d.files_url) <= 500:
            tags.append(InputTag("files_url", d.files_url))
        inputs.append(DatasetInput(_mlflow_dataset(d)._to_mlflow_entity(), tags=tags))
    models = [LoggedModelInput(model_id)] if model_id else []
    if not (inputs or models):
        return
    from mlflow.exceptions import MlflowException

    for attempt in range(_INPUT_ATTEMPTS):
        try:
            cl.log_inputs(run_id, datasets=inputs, models=models)
            return
        except MlflowException as exc:
            # Two first runs logging one new dataset race on its unique row (sqlite "UNIQUE constraint
            # failed", PostgreSQL "duplicate key", MySQL "Duplicate entry"); once the other insert has
            # committed, the store finds the dataset and links it, so a retry succeeds.
            if attempt + 1 == _INPUT_ATTEMPTS or not _is_duplicate(exc):
                raise
            time.sleep(0.2 * (attempt + 1))


_INPUT_ATTEMPTS = 4


def _is_duplicate(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "unique constraint" in text or "duplicate" in text or "already exists" in text
