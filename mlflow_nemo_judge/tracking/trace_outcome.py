"""What a run says about its traces, the loud-failure rule, and backfilling a run's missing traces.

A run whose traces could not all be written ends FAILED with a ``TrackingError`` (exit 1): the Traces
and Evaluation views would otherwise be silently empty on exactly the store that rejected them. With
``allow_partial_tracking`` it ends FINISHED and says so. Either way the run carries:

- ``nemo_judge.traces``: the number written when complete; ``partial`` (allowed) or ``failed``;
- ``nemo_judge.traces_written``: ``<written>/<wanted>``; ``nemo_judge.traces_error``: the first error;
- a line in the run description (``mlflow.note.content``).

``backfill_traces`` completes a FINISHED run whose traces are partial (or, before this rule, silently
lost: ``nemo_judge.traces = 0``) from its stored ``samples.jsonl``, skipping traces already there.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from typing import Any

from mlflow_nemo_judge.errors import TrackingError
from mlflow_nemo_judge.results import SampleRecord
from mlflow_nemo_judge.tracking.names import ART_CONFIG, ART_SAMPLES, MAX_TAG_VALUE, TAG_MODEL_ID, TAG_TRACES
from mlflow_nemo_judge.tracking.trace_stream import TraceReport, TraceStream, reference_fields

logger = logging.getLogger(__package__)

TAG_TRACES_WRITTEN = "nemo_judge.traces_written"
TAG_TRACES_ERROR = "nemo_judge.traces_error"
TAG_DESCRIPTION = "mlflow.note.content"
# Values of nemo_judge.traces that mean "some traces are missing": "0" is what runs recorded before a
# trace-write failure became loud (the batch was rejected and the warning ignored).
INCOMPLETE = ("partial", "failed", "0")


def trace_tags(report: TraceReport, *, allow_partial: bool) -> dict[str, str]:
    state = str(report.written) if report.complete else ("partial" if allow_partial else "failed")
    tags = {TAG_TRACES: state, TAG_TRACES_WRITTEN: f"{report.written}/{report.wanted}"}
    if report.error:
        tags[TAG_TRACES_ERROR] = report.error[:MAX_TAG_VALUE]
    return tags


def describe_missing(report: TraceReport) -> str:
    """One line for the run description and the error: how many traces are missing and why."""
    missing = report.wanted - report.written
    why = f": {report.error}" if report.error else ""
    return f"Traces: {missing} of {report.wanted} could not be written to MLflow{why}"


def add_description_line(cl: Any, run_id: str, line: str, secrets: Sequence[str] = ()) -> None:
    from mlflow_nemo_judge.config.secrets import redact_text

    note = cl.get_run(run_id).data.tags.get(TAG_DESCRIPTION, "")
    text = redact_text(f"{note}\n\n{line}" if note else line, secrets)
    if len(text) > MAX_TAG_VALUE:  # keep the new line; the note's head gives way
        text = text[-MAX_TAG_VALUE:]
    cl.set_tag(run_id, TAG_DESCRIPTION, text)


def failure(run_id: str, report: TraceReport) -> TrackingError:
    return TrackingError(
        f"MLflow run {run_id}: {describe_missing(report)}; fix the store and run "
        f"`mlflow-nemo-judge resume {run_id}`, or pass --allow-partial-tracking to accept a run without them"
    )


def needs_backfill(run: Any) -> bool:
    return run.info.status == "FINISHED" and run.data.tags.get(TAG_TRACES) in INCOMPLETE


def backfill_traces(
    cl: Any,
    run: Any,
    *,
    trace_samples: int,
    secrets: Sequence[str] = (),
    allow_partial_tracking: bool = False,
) -> int:
    """Write the traces a FINISHED run is missing (its first ``trace_samples`` samples, from its stored
    ``samples.jsonl``); returns how many were written now. Runs whose traces are complete, or that
    asked for none, are left alone (0). Still incomplete afterwards: ``TrackingError``, unless
    ``allow_partial_tracking`` (then the run stays ``partial``)."""
    from mlflow_nemo_judge.tracking.store import _download, download_json

    if trace_samples <= 0 or not needs_backfill(run):
        return 0
    run_id, experiment_id = run.info.run_id, run.info.experiment_id
    judge_models: dict[tuple[str, str], str] = {}
    references: dict[str, list[str]] = {}
    doc = download_json(cl, run_id, ART_CONFIG)
    if isinstance(doc, dict):
        try:
            from mlflow_nemo_judge.config import load_config

            cfg = load_config(doc)
            judge_models, references = dict(cfg.judge_models()), reference_fields(cfg)
        except Exception as exc:  # an edited config: traces without judge models and Expectations
            logger.debug("MLflow run %s: config.json not usable for traces (%s)", run_id, exc)
    stream = TraceStream(
        cl,
        experiment_id,
        run_id,
        run.data.tags.get(TAG_MODEL_ID),
        judge_models=judge_models,
        secrets=secrets,
        references=references,
        skip_existing=True,
    )
    with tempfile.TemporaryDirectory(prefix="nemo-judge-backfill-") as tmp:
        local = _download(cl, run_id, ART_SAMPLES, tmp)
        if local is None:
            return 0
        with open(local, encoding="utf-8") as fh:
            for line in fh:
                if stream.report.wanted >= trace_samples:
                    break
                if line.strip():
                    stream.put(SampleRecord.from_dict(json.loads(line)))
    report = stream.close()
    cl.log_batch(run_id, tags=_run_tags(trace_tags(report, allow_partial=True)))
    written = report.written - report.existing
    if report.complete:
        add_description_line(cl, run_id, f"Traces: {written} backfilled ({report.written} in all).", secrets)
        return written
    add_description_line(cl, run_id, describe_missing(report), secrets)
    if not allow_partial_tracking:
        raise failure(run_id, report)
    return written


def _run_tags(tags: dict[str, str]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in tags.items()]
