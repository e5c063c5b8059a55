"""Everything MLflow: run lifecycle, params, tags, artifacts, metrics, tables, inputs, LoggedModels.

This package is the only part of mlflow-nemo-judge that imports mlflow, and only inside functions: the
import costs ~1.5 s, which ``mlflow-nemo-judge --help`` and ``--no-tracking`` runs should not pay.
Everything here goes through ``MlflowClient`` with batched calls (``log_batch`` auto-chunks to MLflow's
100 params/tags and 1000 metrics per request), because one call per value costs ~55 ms over HTTP
(reference §10).

Conventions (DESIGN.md): metric keys ``<task>/<metric>/<score>`` (the mean) and
``<task>/<metric>/<score>/<stat>``; run-level figures under ``usage/…`` and ``progress``; artifacts under
``nemo_judge/``; identity tags ``nemo_judge.*``; never a secret in a param, tag, metric or artifact.

One module per concern; callers import from the package (``from mlflow_nemo_judge import tracking``),
which re-exports the names below:

- ``names``: identity tags, artifact paths, MLflow's limits, key sanitising (no mlflow)
- ``params``: pure builders of params, score metrics, table rows and the model spec (no mlflow)
- ``documents``: the prompt documents and run descriptions in markdown (no mlflow)
- ``store``: tracking URI and client, experiments, run search and read-back, the model registry
- ``runs``: ``RunTracker``, one run's lifecycle from RUNNING to FINISHED / FAILED / KILLED
- ``run_outputs``: how a run uploads files and tables, and a finished run's metrics and result files
- ``progress``, ``inputs``, ``traces``: the ``progress`` metric writer, dataset inputs, per-sample traces
- ``reports``: the reliability and pairwise reports on runs, and read back (``load_reliability``,
  ``load_pairwise``)
- ``recomputed``: a nemo run's recomputation from its per-sample data, beside NeMo's numbers
  (``recomputed/…`` metrics, ``recomputed.json``, the ``nemo_judge.recomputed_differs`` tag; no mlflow)

Names with a leading underscore are private to this package (shared between its modules only).
"""

from __future__ import annotations

from mlflow_nemo_judge.config.secrets import collect as collect_secrets
from mlflow_nemo_judge.config.secrets import redact_text
from mlflow_nemo_judge.data.scan import DatasetInfo
from mlflow_nemo_judge.errors import TrackingError
from mlflow_nemo_judge.tracking.documents import describe_parent, describe_run, prompt_documents
from mlflow_nemo_judge.tracking.names import (
    ART_COMPARISON,
    ART_CONFIG,
    ART_DIR,
    ART_RESULTS,
    ART_SAMPLES,
    ART_TABLE,
    ART_TARGET,
    ART_TARGETS,
    ART_TRACEBACK,
    DEFAULT_TABLE_MAX_ROWS,
    DEFAULT_TRACE_SAMPLES,
    MAX_KEY,
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    PROGRESS_INTERVAL,
    STATS,
    TAG_BACKEND,
    TAG_CACHE_DIR,
    TAG_CONFIG_NAME,
    TAG_CONFIG_PATH,
    TAG_CONFIG_SHA,
    TAG_DATASET_DIGEST,
    TAG_ERROR,
    TAG_JOB_ID,
    TAG_LIMIT,
    TAG_MODEL_ID,
    TAG_PARALLELISM,
    TAG_REGISTERED,
    TAG_RESUMES,
    TAG_ROLE,
    TAG_SAMPLES,
    TAG_SETUP,
    TAG_SKIPPED_PARAMS,
    TAG_STATE,
    TAG_TARGET,
    TAG_TARGET_PATH,
    TAG_TARGET_SHA,
    TAG_TARGETS_SHA,
    TAG_TRACES,
    logged_model_name,
    quote,
    sanitize_key,
)
from mlflow_nemo_judge.tracking.params import (
    ModelSpec,
    ScoreMetric,
    build_params,
    model_spec,
    score_metrics,
    split_long_params,
    table_row,
    template_fields,
    usage_metrics,
)
from mlflow_nemo_judge.tracking.progress import _ProgressLogger
from mlflow_nemo_judge.tracking.reports import load_pairwise, load_reliability
from mlflow_nemo_judge.tracking.runs import RunTracker
from mlflow_nemo_judge.tracking.store import (
    RunSummary,
    client,
    current_tracking_uri,
    download_json,
    fetch_runs,
    find_runs,
    get_run,
    load_result,
    load_results_tree,
    load_samples_frame,
    register,
    registered_version,
    resolve_experiment,
    set_alias,
    set_run_tag,
    tracking_scope,
)
from mlflow_nemo_judge.tracking.traces import _BatchTraceWriter

__all__ = [
    "ART_COMPARISON",
    "ART_CONFIG",
    "ART_DIR",
    "ART_RESULTS",
    "ART_SAMPLES",
    "ART_TABLE",
    "ART_TARGET",
    "ART_TARGETS",
    "ART_TRACEBACK",
    "DEFAULT_TABLE_MAX_ROWS",
    "DEFAULT_TRACE_SAMPLES",
    "MAX_KEY",
    "MAX_PARAM_VALUE",
    "MAX_TAG_VALUE",
    "PROGRESS_INTERVAL",
    "STATS",
    "TAG_BACKEND",
    "TAG_CACHE_DIR",
    "TAG_CONFIG_NAME",
    "TAG_CONFIG_PATH",
    "TAG_CONFIG_SHA",
    "TAG_DATASET_DIGEST",
    "TAG_ERROR",
    "TAG_JOB_ID",
    "TAG_LIMIT",
    "TAG_MODEL_ID",
    "TAG_PARALLELISM",
    "TAG_REGISTERED",
    "TAG_RESUMES",
    "TAG_ROLE",
    "TAG_SAMPLES",
    "TAG_SETUP",
    "TAG_SKIPPED_PARAMS",
    "TAG_STATE",
    "TAG_TARGET",
    "TAG_TARGETS_SHA",
    "TAG_TARGET_PATH",
    "TAG_TARGET_SHA",
    "TAG_TRACES",
    "DatasetInfo",
    "ModelSpec",
    "RunSummary",
    "RunTracker",
    "ScoreMetric",
    "TrackingError",
    "_BatchTraceWriter",
    "_ProgressLogger",
    "build_params",
    "client",
    "collect_secrets",
    "current_tracking_uri",
    "describe_parent",
    "describe_run",
    "download_json",
    "fetch_runs",
    "find_runs",
    "get_run",
    "load_pairwise",
    "load_reliability",
    "load_result",
    "load_results_tree",
    "load_samples_frame",
    "logged_model_name",
    "model_spec",
    "prompt_documents",
    "quote",
    "redact_text",
    "register",
    "registered_version",
    "resolve_experiment",
    "sanitize_key",
    "score_metrics",
    "set_alias",
    "set_run_tag",
    "split_long_params",
    "table_row",
    "template_fields",
    "tracking_scope",
    "usage_metrics",
]
