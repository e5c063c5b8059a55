"""One MLflow run's lifecycle (``RunTracker``): created RUNNING before the first model call, set up with
config, prompts, params, inputs and the LoggedModel, finished with metrics, artifacts, the per-sample
table and traces, or ended FAILED / KILLED.

Everything goes through ``MlflowClient`` with batched calls (see the package docstring); mlflow is
imported only inside the methods.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.config import EvalConfig, Target
from mlflow_nemo_judge.config.secrets import redact, redact_text
from mlflow_nemo_judge.data.scan import DatasetInfo
from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.tracking.documents import prompt_documents
from mlflow_nemo_judge.tracking.inputs import (
    MAX_DATASET_DIGEST,
    MAX_DATASET_NAME,
    log_inputs,
    logged_model,
)
from mlflow_nemo_judge.tracking.names import (
    ART_COMPARISON,
    ART_DIR,
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
    _safe_name,
)
from mlflow_nemo_judge.tracking.params import (
    ModelSpec,
    score_metrics,
    split_long_params,
    usage_metrics,
)
from mlflow_nemo_judge.tracking.progress import _now_ms, _ProgressLogger
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
    """One MLflow run's lifecycle: created RUNNING before the first model call, ended FINISHED, FAILED
    (with a redacted traceback artifact) or KILLED."""

    cl: Any
    run_id: str
    experiment_id: str
    secrets: list[str] = field(default_factory=list)
    n_tasks: int = 1
    model_id: str | None = None
    _progress: _ProgressLogger | None = None

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
        if not files:
            return
        with tempfile.TemporaryDirectory(prefix="nemo-judge-art-") as tmp:
            for rel, content in files.items():
                dst = Path(tmp) / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, Path):
                    shutil.copyfile(content, dst)
                elif isinstance(content, bytes):
                    dst.write_bytes(content)
                else:
                    dst.write_text(redact_text(content, self.secrets), encoding="utf-8")
            self.cl.log_artifacts(self.run_id, tmp, ART_DIR)

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

    # -- setup (before the first model call) ------------------------------------------------------

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
    ) -> None:
        """Config, target, prompts, params, dataset inputs and the LoggedModel, before any model call.

        On a resumed run whose setup completed, only params missing from ``existing_params`` are logged:
        the artifacts are already there and inputs logged twice would show twice in the UI.
        """
        short, long_files = split_long_params(params)
        if not setup_done:
            files: dict[str, str | bytes | Path] = {
                "config.json": json.dumps(config.redacted(), indent=2, ensure_ascii=False),
                "target.json": json.dumps(target.redacted(), indent=2, ensure_ascii=False),
                **prompt_documents(config),
                **long_files,
            }
            self.log_files(files)
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

    def progress_callback(self) -> _ProgressLogger:
        if self._progress is None:
            step0 = len(self.cl.get_metric_history(self.run_id, "progress"))
            self._progress = _ProgressLogger(self.cl, self.run_id, self.n_tasks, step0)
        return self._progress

    def on_job(self, job: Mapping[str, Any]) -> None:
        """Called by the nemo backend once its remote job exists, so the id is on the run before waiting."""
        jid = job.get("id") if isinstance(job, Mapping) else None
        if jid:
            self.set_tags({TAG_JOB_ID: str(jid)})
        self.log_files({"job.json": json.dumps(redact(job), indent=2, default=str)})

    def _stop_progress(self) -> int:
        if self._progress is None:
            return len(self.cl.get_metric_history(self.run_id, "progress"))
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
        traces: TraceReport | None = None,
        allow_partial_tracking: bool = False,
        reliability: ReliabilityReport | None = None,
    ) -> None:
        """Metrics, results, the samples file, plots and the UI table; then FINISHED. ``traces`` (already
        written while the run went) decides the end too: missing traces raise ``TrackingError`` (the
        caller ends the run FAILED) unless ``allow_partial_tracking``; see ``trace_outcome.py``.
        ``reliability``: its figures go in the scores' batch, its files under ``nemo_judge/reliability/``
        (``tracking.reports``)."""
        from mlflow.entities import Metric

        from mlflow_nemo_judge.tracking.reports import RELIABILITY_DIR, report_files, report_metrics

        step = self._stop_progress()
        ts = _now_ms()
        by_task = {d.task: d for d in datasets}
        metrics = []
        for sm in score_metrics(result):
            d = by_task.get(sm.task) if sm.task else None
            link = sm.headline and self.model_id is not None
            metrics.append(
                Metric(
                    sm.key,
                    sm.value,
                    ts,
                    0,
                    model_id=self.model_id if link else None,
                    # cut as the dataset input is (inputs.py), so the two still match
                    dataset_name=d.name[:MAX_DATASET_NAME] if link and d else None,
                    dataset_digest=d.digest[:MAX_DATASET_DIGEST] if link and d else None,
                )
            )
        metrics += [Metric(k, v, ts, 0) for k, v in usage_metrics(result.usage).items()]
        metrics += [Metric(k, v, ts, 0) for k, v in report_metrics(reliability).items()]
        metrics.append(Metric("progress", 100.0, ts, step))
        self.cl.log_batch(self.run_id, metrics=metrics)

        files: dict[str, str | bytes | Path] = {
            "results.json": json.dumps(result.to_nemo_dict(), indent=2, ensure_ascii=False)
        }
        if result.job:
            files["job.json"] = json.dumps(redact(result.job), indent=2, default=str)
        rows, n = collected.rows, collected.count
        with tempfile.TemporaryDirectory(prefix="nemo-judge-plots-") as tmp:
            if result.samples_path is not None and Path(result.samples_path).exists():
                files["samples.jsonl"] = self._redacted_copy(
                    Path(result.samples_path), Path(tmp) / "samples.jsonl"
                )
            if reliability is not None:
                files.update(report_files(reliability, Path(tmp) / RELIABILITY_DIR, RELIABILITY_DIR))
            if plots and collected.values:
                from mlflow_nemo_judge.compare import plots as plt

                for (task, mname), per in collected.values.items():
                    rel = f"plots/{_safe_name(task)}/{_safe_name(mname)}.png"
                    files[rel] = plt.score_distribution(
                        f"{task} / {mname}", per, Path(tmp) / rel, model=model
                    )
            self.log_files(files)
        samples_kind = "none"
        if rows:
            import pandas as pd

            df = pd.DataFrame(rows)
            self._log_table(df, ART_TABLE)
            samples_kind = "table"
        elif n:
            samples_kind = "jsonl"
        tags = {TAG_SAMPLES: samples_kind}
        if traces is not None and traces.wanted:
            tags |= trace_tags(traces, allow_partial=allow_partial_tracking)
            if not traces.complete:
                # Said where people look (the description) and on the run; then FAILED by our caller,
                # or FINISHED when partial tracking was asked for.
                self.set_tags(tags)
                add_description_line(self.cl, self.run_id, describe_missing(traces), self.secrets)
                if not allow_partial_tracking:
                    raise failure(self.run_id, traces)
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

    def _redacted_copy(self, src: Path, dst: Path) -> Path:
        """The samples file as uploaded: a failed call's error text could quote a key back; mask it."""
        if not self.secrets:
            return src
        with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
            for line in fin:
                fout.write(redact_text(line, self.secrets))
        return dst

    def _log_table(self, df: pd.DataFrame, path: str) -> None:
        """``log_table`` appends when the file exists (a resume after a crash during finish); the table
        must be replaced instead, so then the file is overwritten in the same format."""
        existing = {f.path for f in self.cl.list_artifacts(self.run_id, ART_DIR)}
        if path not in existing:
            self.cl.log_table(self.run_id, df, path)
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            df.to_json(local, orient="split", index=False, date_format="iso")
            self.cl.log_artifact(self.run_id, str(local), str(Path(path).parent))

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
