"""Where runs live and how they are read back: the tracking URI and client, experiments, run search,
artifact downloads, rebuilding an ``EvalResult`` from a finished run, and the model registry.

mlflow is imported only inside the functions (see the package docstring).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.errors import TrackingError
from mlflow_nemo_judge.results import EvalResult, SampleRecord, Usage
from mlflow_nemo_judge.tracking.names import (
    ART_RESULTS,
    ART_SAMPLES,
    ART_TABLE,
    TAG_BACKEND,
    TAG_CONFIG_SHA,
    quote,
)
from mlflow_nemo_judge.tracking.params import table_row

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger(__package__)  # "mlflow_nemo_judge.tracking", the records' name before the split

# ---------------------------------------------------------------------------------------- sessions


@contextlib.contextmanager
def tracking_scope(uri: str | None) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the duration and restore what was there before.

    The run itself goes through ``MlflowClient(uri)``, but LoggedModel creation and model registration
    only exist as fluent functions, which read the process-wide URI. Without ``uri``, MLflow's own
    resolution applies (``MLFLOW_TRACKING_URI``, else its default local store).
    """
    if uri is None:
        yield
        return
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # Restore exactly: the process-wide value (None when never set) and the env var, which
    # set_tracking_uri also writes. Restoring "whatever get_tracking_uri() said" would pin the env's
    # value process-wide and shadow later changes of MLFLOW_TRACKING_URI.
    previous = getattr(tracking_utils, "_tracking_uri", None)
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it (see its source)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def current_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI runs go to: ``uri`` if given, else MLflow's own resolution (for messages)."""
    if uri:
        return uri
    import mlflow

    return str(mlflow.get_tracking_uri())


def client(uri: str | None = None) -> Any:
    """An ``MlflowClient`` for ``uri`` (else MLflow's resolution), the URI checked first and a new sqlite
    store initialised under a cross-process lock (see ``health``)."""
    from mlflow_nemo_judge.tracking.health import open_client

    return open_client(current_tracking_uri(uri))


def resolve_experiment(cl: Any, experiment: str | None) -> str:
    """The experiment id for ``experiment`` (created if missing); without a name, MLflow's own choice:
    ``MLFLOW_EXPERIMENT_ID`` / ``MLFLOW_EXPERIMENT_NAME``, else the Default experiment ("0")."""
    from mlflow.exceptions import MlflowException

    if experiment is None:
        env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if env_id:
            return env_id
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if not experiment:
            return "0"
    from mlflow_nemo_judge.tracking.health import check_names

    check_names(experiment, None)
    exp = cl.get_experiment_by_name(experiment)
    if exp is None:
        try:
            return str(cl.create_experiment(experiment))
        except MlflowException:
            exp = cl.get_experiment_by_name(experiment)  # created concurrently by another process
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {experiment!r} is deleted; restore it (mlflow experiments restore) "
            "or choose another --experiment"
        )
    return str(exp.experiment_id)


# --------------------------------------------------------------------------------------- read back


def find_runs(
    cl: Any,
    experiment_id: str,
    tags: Mapping[str, str],
    *,
    status: str | None = "FINISHED",
    max_results: int = 50,
) -> list[Any]:
    """Runs of the experiment carrying all ``tags`` (newest first), e.g. an earlier identical evaluation."""
    clauses = [f"tags.`{k}` = {quote(v)}" for k, v in tags.items()]
    if status:
        clauses.append(f"attributes.status = '{status}'")
    return list(
        cl.search_runs(
            [experiment_id],
            " AND ".join(clauses),
            max_results=max_results,
            order_by=["attributes.start_time DESC"],
        )
    )


def get_run(cl: Any, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return cl.get_run(run_id)
    except MlflowException as exc:
        raise TrackingError(f"MLflow run {run_id} not found at {cl.tracking_uri}: {exc.message}") from None


def download_json(cl: Any, run_id: str, path: str) -> Any:
    """An artifact parsed as JSON, or None if the run does not have it."""
    with tempfile.TemporaryDirectory() as tmp:
        local = _download(cl, run_id, path, tmp)
        if local is None:
            return None
        return json.loads(Path(local).read_text(encoding="utf-8"))


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a tqdm bar per download; for our small, frequent reads it is noise on the CLI's stderr.
    A value the user set explicitly is respected."""
    var = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if var in os.environ:
        yield
        return
    os.environ[var] = "false"
    try:
        yield
    finally:
        os.environ.pop(var, None)


def _download(cl: Any, run_id: str, path: str, dst: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        with _no_progress_bars():
            return str(cl.download_artifacts(run_id, path, dst))
    except (MlflowException, OSError):
        return None


def load_result(cl: Any, run: Any) -> EvalResult:
    """Rebuild the ``EvalResult`` of a finished run: the aggregate tree from ``results.json``, usage from
    the ``usage/…`` metrics, and the per-sample records from ``samples.jsonl`` (downloaded once)."""
    run_id = run.info.run_id
    doc = download_json(cl, run_id, ART_RESULTS)
    if doc is None:
        raise TrackingError(
            f"MLflow run {run_id} has no {ART_RESULTS}; it was not finished by mlflow-nemo-judge"
        )
    m = run.data.metrics
    usage = Usage()
    for name in vars(usage):
        key = f"usage/{name}"
        if key in m:
            cur = getattr(usage, name)
            setattr(usage, name, type(cur)(m[key]))
    samples_dir = Path(tempfile.mkdtemp(prefix="nemo-judge-run-"))
    local = _download(cl, run_id, ART_SAMPLES, str(samples_dir))
    res = EvalResult.from_nemo_dict(
        doc,
        usage=usage,
        samples_path=Path(local) if local else None,
        backend=run.data.tags.get(TAG_BACKEND, "local"),
    )
    res.own(samples_dir)  # the downloaded copy goes with the result
    return res


def load_samples_frame(run_id: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The per-sample rows of a run: the logged table, or the JSONL file for runs too big for a table."""
    import pandas as pd

    cl = client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = _download(cl, run_id, ART_TABLE, tmp)
        if local is not None:
            return pd.read_json(local, orient="split", dtype=False)
        local = _download(cl, run_id, ART_SAMPLES, tmp)
        if local is None:
            raise TrackingError(f"MLflow run {run_id} has no per-sample table ({ART_TABLE} or {ART_SAMPLES})")
        rows = []
        with open(local, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rows.append(table_row(SampleRecord.from_dict(json.loads(line)), set()))
        return pd.DataFrame(rows)


def load_results_tree(run_id: str, tracking_uri: str | None = None) -> EvalResult:
    doc = download_json(client(tracking_uri), run_id, ART_RESULTS)
    if doc is None:
        raise TrackingError(f"MLflow run {run_id} has no {ART_RESULTS}")
    return EvalResult.from_nemo_dict(doc)


@dataclass
class RunSummary:
    """A run as compare needs it: identity, status, tags and latest metric values."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int
    tags: dict[str, str]
    metrics: dict[str, float]


def fetch_runs(
    experiment: str | None = None, run_ids: Sequence[str] | None = None, tracking_uri: str | None = None
) -> list[RunSummary]:
    """The mlflow-nemo-judge runs of an experiment (or the given runs), newest first."""
    cl = client(tracking_uri)
    runs: list[Any] = []
    if run_ids:
        runs = [get_run(cl, r) for r in run_ids]
    else:
        exp = cl.get_experiment_by_name(experiment) if experiment else None
        if experiment and exp is None:
            raise TrackingError(f"MLflow experiment {experiment!r} not found at {cl.tracking_uri}")
        exp_id = exp.experiment_id if exp is not None else resolve_experiment(cl, None)
        token = None
        while True:
            page = cl.search_runs(
                [exp_id],
                f"tags.`{TAG_CONFIG_SHA}` != ''",
                max_results=1000,
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
    return [
        RunSummary(
            run_id=r.info.run_id,
            run_name=r.info.run_name or "",
            experiment_id=r.info.experiment_id,
            status=r.info.status,
            start_time=int(r.info.start_time or 0),
            tags=dict(r.data.tags),
            metrics=dict(r.data.metrics),
        )
        for r in runs
    ]


# ---------------------------------------------------------------------------------------- registry


def register(model_id: str, name: str, *, tags: Mapping[str, str]) -> str:
    """Register the LoggedModel as a new version of ``name`` with the headline scores as version tags."""
    import mlflow

    mv = mlflow.register_model(f"models:/{model_id}", name, tags={k: str(v) for k, v in tags.items()})
    return str(mv.version)


def registered_version(model_id: str, name: str) -> str | None:
    """The version of ``name`` this LoggedModel is already registered as (MLflow records it on the
    model's ``mlflow.modelVersions`` tag), so a rerun does not add a duplicate version."""
    import mlflow

    try:
        tag = mlflow.get_logged_model(model_id).tags.get("mlflow.modelVersions")
        for entry in json.loads(tag) if tag else []:
            if entry.get("name") == name:
                return str(entry.get("version"))
    except Exception as exc:
        logger.debug("could not read registrations of %s: %s", model_id, exc)
    return None


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, version)


def set_run_tag(cl: Any, run_id: str, key: str, value: str) -> None:
    cl.set_tag(run_id, key, value)
