"""Resuming tracked evaluations in place: an interrupted single-target run (or, with ``retry_errors``,
a FINISHED one's errored samples), and a parent run (each unfinished child resumed, a missing one
created, then the comparison and the pairwise stage again).

What a resume reads back from MLflow (the config, target and options a run started with) is
``resume.py``'s; the runs of a new evaluation, and the parent's comparison, are ``runner.py``'s.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from mlflow_nemo_judge import tracking as trk
from mlflow_nemo_judge.config import load_target
from mlflow_nemo_judge.config.secrets import collect, masked_paths
from mlflow_nemo_judge.data.scan import combined_digest
from mlflow_nemo_judge.engine import RunOptions
from mlflow_nemo_judge.errors import TrackingError
from mlflow_nemo_judge.pipeline import Evaluation, _ending, _targets, execute, make_backend
from mlflow_nemo_judge.pipeline_reliability import run_pairwise
from mlflow_nemo_judge.settings import trace_samples_default
from mlflow_nemo_judge.tracking import identity as ident
from mlflow_nemo_judge.tracking import resume as rs
from mlflow_nemo_judge.tracking.identity import Outcome
from mlflow_nemo_judge.tracking.names import DEFAULT_TABLE_MAX_ROWS
from mlflow_nemo_judge.tracking.reports import Tracked, report_of, reused_with_report, sink_report
from mlflow_nemo_judge.tracking.runner import Settings, backfill, finish_parent, sink_for, track_one
from mlflow_nemo_judge.tracking.runs import RunTracker

logger = logging.getLogger(__package__)


def settings_for(
    backend_name: str,
    opts: RunOptions,
    backend_options: dict[str, Any] | None,
    trace_samples: int | None,
    allow_partial_tracking: bool = False,
) -> Settings:
    """The shared settings of a resumed evaluation (a new one builds them in ``pipeline``)."""
    ts = trace_samples_default() if trace_samples is None else max(0, int(trace_samples))
    return Settings(
        backend_name,
        make_backend(backend_name, opts, backend_options),
        opts,
        ts,
        DEFAULT_TABLE_MAX_ROWS,
        allow_partial_tracking,
    )


async def resume_run(
    cl: Any,
    run: Any,
    config: Any,
    target: Any,
    options: RunOptions | None,
    trace_samples: int | None,
    backend_options: dict[str, Any] | None = None,
    retry_errors: bool = False,
    allow_partial_tracking: bool = False,
) -> Outcome:
    """Continue one interrupted run in place (or, with ``retry_errors``, re-run its errored samples)."""
    tags = run.data.tags
    backend_name = tags.get(trk.TAG_BACKEND, "local")
    prior = _prior(cl, run, backend_name) if retry_errors else None
    if run.info.status == "FINISHED" and (prior is None or prior[2] == 0):
        found = ident.reuse(cl, run)  # finished, and (with --retry-errors) nothing errored: nothing to do
        if found is None:
            raise TrackingError(f"MLflow run {run.info.run_id} is FINISHED but has no {trk.ART_RESULTS}")
        ts = trace_samples_default() if trace_samples is None else max(0, int(trace_samples))
        # No secrets to pass: the stored samples and config it reads are redacted already.
        backfill(cl, run, ts, (), allow_partial_tracking)
        return reused_with_report(cl, found)
    if prior is not None:
        # The kept records replace their samples' model calls; the run's traces are not logged again
        # (the earlier ones stay, and a second set would duplicate them).
        options = dataclasses.replace(options or RunOptions(), prior_records=prior[0])
        trace_samples = 0
    # A nemo run that got as far as submitting its job is re-attached to that job; the job already
    # holds the keys, so redacted ones in the stored config/target do not matter.
    job_id = tags.get(trk.TAG_JOB_ID) if backend_name == "nemo" else None
    cfg = rs.reload(cl, run, "config", config, allow_masked=bool(job_id))
    tgt = rs.reload(cl, run, "target", target, allow_masked=bool(job_id))
    s = settings_for(
        backend_name,
        rs.recorded_options(cl, run, options),
        backend_options,
        trace_samples,
        allow_partial_tracking,
    )
    prepared = s.backend.prepare(cfg, tgt)  # e.g. an api_key_env variable not set in this shell fails here
    digest = combined_digest(prepared.datasets)
    if digest != tags.get(trk.TAG_DATASET_DIGEST):
        raise TrackingError(
            f"the dataset of MLflow run {run.info.run_id} changed since the run started (digest {digest} vs "
            f"{tags.get(trk.TAG_DATASET_DIGEST)}); start a new evaluation instead of resuming"
        )
    tracker = RunTracker.reopen(cl, run, secrets=collect(cfg, tgt), n_tasks=len(cfg.tasks or {}))
    sink = sink_for(
        tracker, s, cfg, existing_params=run.data.params, setup_done=tags.get(trk.TAG_SETUP) == "true"
    )
    # The report is recomputed from the whole result (kept and re-run samples alike), as for a new run.
    result = await execute(s.backend, prepared, sink, attach_job_id=job_id)
    return Tracked(result, tracker.run_id, False, tracker.model_id, sink_report(sink))


def _prior(cl: Any, run: Any, backend_name: str) -> tuple[rs.PriorRecords, int, int] | None:
    if backend_name != "local":
        raise TrackingError(
            f"MLflow run {run.info.run_id} ran on the {backend_name} backend; --retry-errors re-runs samples "
            "with the local engine only (start a new evaluation instead)"
        )
    kept = rs.kept_records(cl, run)
    if kept is None and run.info.status == "FINISHED":
        raise TrackingError(
            f"MLflow run {run.info.run_id} has no {trk.ART_SAMPLES}; cannot tell what errored"
        )
    if kept is not None:
        logger.warning(
            "MLflow run %s: re-running %d errored sample(s), keeping %d", run.info.run_id, kept[2], kept[1]
        )
    return kept


async def resume_parent(
    cl: Any,
    prun: Any,
    config: Any,
    targets: Any,
    options: RunOptions | None,
    trace_samples: int | None,
    allow_partial_tracking: bool = False,
) -> Evaluation:
    """Resume each unfinished child of a parent run (creating missing ones), then its comparison."""
    from mlflow_nemo_judge.tracking.comparison import labels

    pid, exp_id = prun.info.run_id, prun.info.experiment_id
    docs = rs.target_documents(cl, prun)
    shas = rs.target_shas(cl, prun, docs)
    if prun.info.status == "FINISHED":
        finished = ident.children(cl, exp_id, pid)
        found = [ident.reuse(cl, finished[sha]) if sha in finished else None for sha in shas]
        outs = [f for f in found if f is not None]  # in the order the targets were given
        ts = trace_samples_default() if trace_samples is None else max(0, int(trace_samples))
        for o in outs:
            backfill(cl, o.run_id, ts, (), allow_partial_tracking)
        from mlflow_nemo_judge.tracking.reports import read_pairwise

        tracked = [reused_with_report(cl, o) for o in outs]
        return Evaluation(
            [o.result for o in tracked],
            [o.run_id for o in tracked],
            pid,
            exp_id,
            [True] * len(tracked),
            [o.reliability for o in tracked],
            read_pairwise(cl, pid),
        )
    cfg = rs.reload(cl, prun, "config", config)
    given = {t.sha256(): t for t in (_targets(targets) if targets is not None else [])}
    kids = ident.children(cl, exp_id, pid, status=None)
    opts = dataclasses.replace(options or RunOptions(), limit=rs.recorded_limit(prun.data.tags))
    backend_name = prun.data.tags.get(trk.TAG_BACKEND, "local")
    parent = RunTracker.reopen(cl, prun, secrets=collect(cfg, *given.values()))
    names: list[str] = []
    outcomes: list[Outcome] = []
    with _ending(parent):
        for doc, sha in zip(docs, shas, strict=True):
            tgt_given = given.get(sha)
            if sha in kids:
                o = await resume_run(
                    cl,
                    kids[sha],
                    cfg,
                    tgt_given,
                    opts,
                    trace_samples,
                    allow_partial_tracking=allow_partial_tracking,
                )
                names.append(kids[sha].data.tags.get(trk.TAG_TARGET, sha[:12]))
            else:
                if tgt_given is None and masked_paths(doc):
                    raise TrackingError(
                        f"target {doc.get('name') or sha[:12]} of MLflow run {pid} held literal secrets; "
                        "pass the original targets (target=[...]) to resume"
                    )
                tgt = tgt_given or load_target(doc)
                s = settings_for(backend_name, opts, None, trace_samples, allow_partial_tracking)
                o = await track_one(
                    cl,
                    exp_id,
                    s,
                    s.backend.prepare(cfg, tgt),
                    role="child",
                    run_name=None,
                    force=True,
                    parent_run_id=pid,
                )
                names.append(tgt.display_name)
            outcomes.append(o)
        # The pairwise stage runs again over every child's full result (its calls come from the cache).
        pw = await run_pairwise(cfg, [o.result for o in outcomes], labels(names), opts, None)
        finish_parent(parent, outcomes, names, cfg.display_name, pairwise=pw)
    return Evaluation(
        [o.result for o in outcomes],
        [o.run_id for o in outcomes],
        pid,
        exp_id,
        [o.reused for o in outcomes],
        [report_of(o) for o in outcomes],
        pw,
    )
