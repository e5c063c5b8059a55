"""One MLflow run's lifecycle (``RunTracker``): created RUNNING (before the first model call, or with an
early start while the first calls go on: ``early.py``), set up with config, prompts, params, inputs and
the LoggedModel (on the sink's setup thread, beside the calls), finished with metrics, artifacts, the per-sample
table and traces, or ended FAILED / KILLED.

Everything goes through ``MlflowClient`` with batched calls (see the package docstring); mlflow is
imported only inside the methods. How files, tables and a finished run's metrics and result files are
uploaded is ``run_outputs.py``; this module decides when, and what the run's tags and state say.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.config import EvalConfig, Target
from mlflow_nemo_judge.config.secrets import redact, redact_text
from mlflow_nemo_judge.data.scan import DatasetInfo
from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.tracking.background import in_thread
from mlflow_nemo_judge.tracking.documents import prompt_documents
from mlflow_nemo_judge.tracking.inputs import log_inputs, logged_model
from mlflow_nemo_judge.tracking.names import (
    ART_COMPARISON,
    ART_TABLE,
    ART_TRACEBACK,
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    TAG_ERROR,
    TAG_JOB_ID,
    TAG_MODEL_ID,
    TAG_RESUMES,
    TAG_SAMPLES,
    TAG_SETUP,
    TAG_SKIPPED_PARAMS,
    TAG_STATE,
)
from mlflow_nemo_judge.tracking.params import ModelSpec, split_long_params
from mlflow_nemo_judge.tracking.progress import _ProgressLogger
from mlflow_nemo_judge.tracking.run_outputs import (
    final_metrics,
    log_files,
    log_result_files,
    log_table,
    samples_kind,
)
from mlflow_nemo_judge.tracking.table_spool import MLFLOW_LOGGED_ARTIFACTS, with_table
from mlflow_nemo_judge.tracking.trace_outcome import (
    add_description_line,
    describe_missing,
    failure,
    trace_tags,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlflow_nemo_judge.reliability.report import ReliabilityReport
    from mlflow_nemo_judge.tracking.mlflow_sink import Collected
    from mlflow_nemo_judge.tracking.trace_stream import TraceReport

logger = logging.getLogger(__package__)  # "mlflow_nemo_judge.tracking", the records' name before the split

# --------------------------------------------------------------------------------------- the run


@dataclass
class RunTracker:
    """One MLflow run's lifecycle: created RUNNING, ended FINISHED, FAILED
    (with a redacted traceback artifact) or KILLED."""

    cl: Any
    run_id: str
    experiment_id: str
    secrets: list[str] = field(default_factory=list)
    n_tasks: int = 1
    model_id: str | None = None
    _progress: _ProgressLogger | None = None
    # What a new run has without asking the store: no progress steps yet, no logged tables. A
    # reopened run reads them (None).
    progress_steps: int | None = 0
    logged_artifacts: str | None = None  # the run's ``mlflow.loggedArtifacts`` tag (a JSON list)

    # -- creation ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        cl: Any,
        experiment_id: str,
        *,
        run_name: str,
        description: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        secrets: Sequence[str] = (),
        n_tasks: int = 1,
    ) -> RunTracker:
        all_tags = {**_context_tags(), **tags, TAG_STATE: "running", "mlflow.note.content": description}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        all_tags = {k: redact_text(v, secrets) for k, v in all_tags.items()}
        run = cl.create_run(experiment_id, run_name=run_name, tags=all_tags)
        return cls(cl, run.info.run_id, experiment_id, list(secrets), n_tasks)

    @classmethod
    def reopen(cls, cl: Any, run: Any, *, secrets: Sequence[str] = (), n_tasks: int = 1) -> RunTracker:
        """Continue an interrupted run in place (MLflow allows RUNNING again on any run)."""
        tags = run.data.tags
        tr = cls(cl, run.info.run_id, run.info.experiment_id, list(secrets), n_tasks, tags.get(TAG_MODEL_ID))
        tr.progress_steps, tr.logged_artifacts = None, tags.get(MLFLOW_LOGGED_ARTIFACTS)
        cl.update_run(tr.run_id, status="RUNNING")
        tr.set_tags({TAG_STATE: "running", TAG_RESUMES: str(int(tags.get(TAG_RESUMES, "0")) + 1)})
        tr.set_tags({TAG_ERROR: ""} if tags.get(TAG_ERROR) else {})
        return tr

    # -- small writes ----------------------------------------------------------------------------

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if not tags:
            return
        from mlflow.entities import RunTag

        self.cl.log_batch(
            self.run_id,
            tags=[RunTag(k, redact_text(str(v), self.secrets)[:MAX_TAG_VALUE]) for k, v in tags.items()],
        )

    def log_files(self, files: Mapping[str, str | bytes | Path]) -> None:
        """Stage ``{relative path: content}`` in a temp dir and upload it under ``nemo_judge/`` in one go."""
        log_files(self.cl, self.run_id, files, self.secrets)

    def log_params(self, params: Mapping[str, str], existing: Mapping[str, str] | None = None) -> list[str]:
        """Log ``params``; with ``existing`` (a resumed run) only the missing ones, since MLflow refuses to
        change a param. Returns the keys skipped because their recorded value differs."""
        from mlflow.entities import Param

        existing = existing or {}
        todo = {k: v for k, v in params.items() if k not in existing}
        differing = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
        if todo:
            self.cl.log_batch(
                self.run_id, params=[Param(k, redact_text(v, self.secrets)) for k, v in todo.items()]
            )
        return differing

    # -- setup (on the sink's setup thread, beside the first model calls) ---------------------------

    def log_setup_files(self, *, config: EvalConfig, target: Target, params: Mapping[str, str]) -> None:
        """The setup's files (config, target, prompt documents, long params): written first, so a run
        killed in its first second still holds the ``config.json`` that ``resume`` rebuilds it from."""
        _, long_files = split_long_params(params)
        files: dict[str, str | bytes | Path] = {
            "config.json": json.dumps(config.redacted(), indent=2, ensure_ascii=False),
            "target.json": json.dumps(target.redacted(), indent=2, ensure_ascii=False),
            **prompt_documents(config),
            **long_files,
        }
        self.log_files(files)

    def log_setup(
        self,
        *,
        config: EvalConfig,
        target: Target,
        params: Mapping[str, str],
        datasets: Sequence[DatasetInfo],
        model: ModelSpec | None,
        existing_params: Mapping[str, str] | None = None,
        setup_done: bool = False,
        files_done: bool = False,
    ) -> None:
        """Config, target, prompts, params, dataset inputs and the LoggedModel (the sink's setup thread;
        ``files_done``: ``log_setup_files`` already ran).

        On a resumed run whose setup completed, only params missing from ``existing_params`` are logged:
        the artifacts are already there and inputs logged twice would show twice in the UI.
        """
        short, _ = split_long_params(params)
        if not setup_done and not files_done:
            self.log_setup_files(config=config, target=target, params=params)
        skipped = self.log_params(short, existing_params)
        if skipped:
            logger.warning(
                "MLflow run %s: %d param(s) differ from the recorded values and were kept as recorded: %s",
                self.run_id,
                len(skipped),
                ", ".join(skipped[:10]),
            )
            self.set_tags({TAG_SKIPPED_PARAMS: ",".join(skipped)[:MAX_TAG_VALUE]})
        if setup_done:
            return
        if model is not None and self.model_id is None:
            self.model_id = logged_model(self.cl, self.experiment_id, self.run_id, model)
        log_inputs(self.cl, self.run_id, datasets, self.model_id)
        tags = {TAG_SETUP: "true"}
        if self.model_id:
            tags[TAG_MODEL_ID] = self.model_id
        self.set_tags(tags)

    # -- while running ----------------------------------------------------------------------------

    def _progress_step0(self) -> int:
        if self.progress_steps is None:
            self.progress_steps = len(self.cl.get_metric_history(self.run_id, "progress"))
        return self.progress_steps

    def progress_callback(self) -> _ProgressLogger:
        if self._progress is None:
            self._progress = _ProgressLogger(self.cl, self.run_id, self.n_tasks, self._progress_step0())
        return self._progress

    def on_job(self, job: Mapping[str, Any]) -> None:
        """Called by the nemo backend once its remote job exists, so the id is on the run before waiting."""
        jid = job.get("id") if isinstance(job, Mapping) else None
        if jid:
            self.set_tags({TAG_JOB_ID: str(jid)})
        self.log_files({"job.json": json.dumps(redact(job), indent=2, default=str)})

    def _stop_progress(self) -> int:
        if self._progress is None:
            return self._progress_step0()
        self._progress.close()
        return self._progress.step

    # -- endings ------------------------------------------------------------------------------------

    def finish(
        self,
        result: EvalResult,
        collected: Collected,
        *,
        datasets: Sequence[DatasetInfo],
        plots: bool = True,
        model: str | None = None,
        traces: Callable[[], TraceReport | None] | None = None,
        allow_partial_tracking: bool = False,
        reliability: ReliabilityReport | None = None,
    ) -> None:
        """Results, the samples file, plots and the UI table in one upload; metrics and their tags in one
        batch; then FINISHED. ``traces`` waits for the trace writer (told to flush before this is
        called, so its last writes overlap the uploads) and its report decides the end too: missing
        traces raise ``TrackingError`` (the caller ends the run FAILED) unless ``allow_partial_tracking``;
        see ``trace_outcome.py``. ``reliability``: its figures go in the scores' batch, its files under
        ``nemo_judge/reliability/`` (``tracking.reports``)."""
        from mlflow.entities import RunTag

        from mlflow_nemo_judge.tracking import recomputed as rcp

        step = self._stop_progress()
        kind = samples_kind(collected)
        tags = {TAG_SAMPLES: kind, **rcp.recomputed_tags(result)}
        if kind == "table":
            tags[MLFLOW_LOGGED_ARTIFACTS] = with_table(self.logged_artifacts, ART_TABLE)
        metrics = final_metrics(
            result, datasets=datasets, model_id=self.model_id, reliability=reliability, step=step
        )
        run_tags = [RunTag(k, redact_text(str(v), self.secrets)[:MAX_TAG_VALUE]) for k, v in tags.items()]
        # The metric batch goes while the files are staged and uploaded (a round trip each to a server).
        batch = in_thread(
            lambda: self.cl.log_batch(self.run_id, metrics=metrics, tags=run_tags), "nemo-judge-metrics"
        )
        try:
            log_result_files(
                self.cl,
                self.run_id,
                result,
                collected,
                secrets=self.secrets,
                plots=plots,
                model=model,
                reliability=reliability,
            )
        finally:
            batch.result()
        report = traces() if traces is not None else None
        tags = {}
        if report is not None and report.wanted:
            tags |= trace_tags(report, allow_partial=allow_partial_tracking)
            if not report.complete:
                # Said where people look (the description) and on the run; then FAILED by our caller,
                # or FINISHED when partial tracking was asked for.
                self.set_tags(tags)
                add_description_line(self.cl, self.run_id, describe_missing(report), self.secrets)
                if not allow_partial_tracking:
                    raise failure(self.run_id, report)
        tags[TAG_STATE] = "finished"
        self.set_tags(tags)
        self._terminate("FINISHED")

    def _terminate(self, status: str) -> None:
        """End the run. Against a server, MLflow prints "View run … at …" to stdout here, which would
        corrupt the CLI's ``--output json``; the run id is reported by our callers instead."""
        var = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
        if var in os.environ:
            self.cl.set_terminated(self.run_id, status)
            return
        os.environ[var] = "true"
        try:
            self.cl.set_terminated(self.run_id, status)
        finally:
            os.environ.pop(var, None)

    def _log_table(self, df: pd.DataFrame, path: str) -> None:
        """Replace the table at ``path`` (``run_outputs.log_table``: never appended to on a resume)."""
        log_table(self.cl, self.run_id, df, path)

    def log_parent_setup(
        self, config: EvalConfig, targets: Sequence[Target], params: Mapping[str, str]
    ) -> None:
        """A parent run records the shared config (params without the per-target ones) and the list of
        targets, which is what resuming the parent needs to find or re-create its children."""
        short, long_files = split_long_params(
            {k: v for k, v in params.items() if not k.startswith(("target/", "target_sha256"))}
        )
        short["targets"] = ", ".join(t.display_name for t in targets)[:MAX_PARAM_VALUE]
        self.log_files(
            {
                "config.json": json.dumps(config.redacted(), indent=2, ensure_ascii=False),
                "targets.json": json.dumps([t.redacted() for t in targets], indent=2, ensure_ascii=False),
                "targets_sha256.json": json.dumps([t.sha256() for t in targets]),
                **prompt_documents(config),
                **long_files,
            }
        )
        self.log_params(short)

    def mark_finished(self) -> None:
        self._stop_progress()
        self.set_tags({TAG_STATE: "finished"})
        self._terminate("FINISHED")

    def log_comparison(self, df: pd.DataFrame, chart: Path | None) -> None:
        """On a parent run: the cross-target leaderboard as a table and its chart."""
        self._log_table(df, ART_COMPARISON)
        if chart is not None:
            self.log_files({"plots/comparison.png": chart})

    def fail(self, exc: BaseException) -> None:
        """FAILED, with the redacted traceback as an artifact and the message as a tag. Never raises:
        the original error is what the caller must see. When the server is unreachable nothing is
        tried (each try would cost the bounded retries again): the run stays RUNNING for ``resume``."""
        from mlflow_nemo_judge.tracking.health import _is_connectivity

        if _is_connectivity(exc):
            logger.debug("MLflow run %s left RUNNING: the tracking server is unreachable", self.run_id)
            return
        try:
            self._stop_progress()
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.cl.log_text(self.run_id, redact_text(text, self.secrets), ART_TRACEBACK)
            msg = redact_text(f"{type(exc).__name__}: {exc}", self.secrets)
            if len(msg) > MAX_TAG_VALUE - 200:
                msg = msg[: MAX_TAG_VALUE - 200] + f" … (truncated; full text in {ART_TRACEBACK})"
            self.set_tags({TAG_STATE: "failed", TAG_ERROR: msg})
            self._terminate("FAILED")
        except Exception as log_exc:
            logger.warning("could not record the failure on MLflow run %s: %s", self.run_id, log_exc)

    def kill(self) -> None:
        """KILLED on Ctrl-C (MLflow itself would record FAILED)."""
        try:
            self._stop_progress()
            self.set_tags({TAG_STATE: "killed"})
            self._terminate("KILLED")
        except Exception as log_exc:
            logger.warning("could not mark MLflow run %s as KILLED: %s", self.run_id, log_exc)


def _context_tags() -> dict[str, str]:
    """The user/source/git tags ``mlflow.start_run`` would add (``create_run`` adds none)."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        return {k: str(v) for k, v in resolve_tags().items()}
    except Exception:  # a broken third-party context provider must not stop the evaluation
        return {}
