"""Tracked evaluations: each prepared target as an MLflow run (single, or children of a parent run with
the comparison), reusing a FINISHED run of the same evaluation, and resuming interrupted runs in place.

The pipeline (``pipeline.py``) decides what to evaluate; this module decides which MLflow runs hold it.
Each outcome carries its target's reliability report (``Tracked``): computed by ``execute`` for a run
made or resumed here, read back from ``nemo_judge/reliability/report.json`` for a reused one. A parent
runs the pairwise stage after its children and logs it (and a table of the children's reliability).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge import tracking as trk
from mlflow_nemo_judge.backends.base import Backend, Prepared
from mlflow_nemo_judge.config import EvalConfig, load_target
from mlflow_nemo_judge.config.secrets import collect, masked_paths
from mlflow_nemo_judge.data.scan import combined_digest
from mlflow_nemo_judge.engine import RunOptions
from mlflow_nemo_judge.errors import TrackingError
from mlflow_nemo_judge.pipeline import Evaluation, _ending, _targets, execute, make_backend
from mlflow_nemo_judge.pipeline_reliability import run_pairwise
from mlflow_nemo_judge.settings import trace_samples_default
from mlflow_nemo_judge.tracking import health, prompts, run_names
from mlflow_nemo_judge.tracking import identity as ident
from mlflow_nemo_judge.tracking import names as nm
from mlflow_nemo_judge.tracking import resume as rs
from mlflow_nemo_judge.tracking.identity import Outcome
from mlflow_nemo_judge.tracking.mlflow_sink import MlflowSink
from mlflow_nemo_judge.tracking.names import DEFAULT_TABLE_MAX_ROWS
from mlflow_nemo_judge.tracking.reports import Tracked, report_of, reused_with_report, sink_report
from mlflow_nemo_judge.tracking.runs import RunTracker
from mlflow_nemo_judge.tracking.sink import RunSink

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.pairwise_report import PairwiseReport

logger = logging.getLogger(__package__)


@dataclass
class Settings:
    """What every target's evaluation of one call shares."""

    backend_name: str
    backend: Backend
    options: RunOptions
    trace_samples: int
    table_max_rows: int
    # A trace-write failure fails the run unless this is set (then the run records what is missing).
    allow_partial_tracking: bool = False


# ---------------------------------------------------------------------------------- one target


def sink_for(tracker: RunTracker, s: Settings, config: EvalConfig, **kw: Any) -> RunSink:
    """The MLflow sink of one run with the call's shared settings."""
    return MlflowSink(
        tracker,
        config,
        backend=s.backend_name,
        limit=s.options.limit,
        table_max_rows=s.table_max_rows,
        trace_samples=s.trace_samples,
        allow_partial_tracking=s.allow_partial_tracking,
        **kw,
    )


async def track_one(
    cl: Any,
    experiment_id: str,
    s: Settings,
    p: Prepared,
    *,
    role: str,
    run_name: str | None,
    force: bool,
    parent_run_id: str | None = None,
    default_name: str | None = None,
) -> Outcome:
    """One target's evaluation as one run: an identical FINISHED run is reused, else a new run is
    created, its prompts registered and linked, and the evaluation streamed into it."""
    tags = ident.identity(p.config, p.target, p.datasets, s.backend_name, s.options.limit)
    async with _one_run_per_identity(cl, experiment_id, s, tags, p.target.display_name, force):
        if not force and (found := ident.find_finished(cl, experiment_id, tags)) is not None:
            _backfill(
                cl, found.run_id, s.trace_samples, collect(p.config, p.target), s.allow_partial_tracking
            )
            return reused_with_report(cl, found)
        tags |= ident.resume_tags(p.config, p.target, p.parallelism, s.options.cache_dir)
        tags |= {trk.TAG_ROLE: role, trk.TAG_TARGET: p.target.display_name}
        if s.allow_partial_tracking:
            tags[nm.TAG_PARTIAL_TRACKING] = "true"
        tracker = RunTracker.create(
            cl,
            experiment_id,
            run_name=run_name or default_name or run_names.run_name_for(p.target.display_name, p),
            description=trk.describe_run(p.config, p.target, p.datasets, s.backend_name),
            tags=tags,
            parent_run_id=parent_run_id,
            secrets=collect(p.config, p.target),
            n_tasks=len(p.config.tasks or {}),
        )
        with health.translated(cl.tracking_uri, tracker.run_id):
            _log_sources(tracker, ident.source_paths(p.config, p.target, s.options.cache_dir))
            prompts.register_and_link(cl, tracker.run_id, p.config, tracker.secrets)
            sink = sink_for(tracker, s, p.config)
            result = await execute(s.backend, p, sink)
    return Tracked(result, tracker.run_id, False, tracker.model_id, sink_report(sink))


def _log_sources(tracker: RunTracker, paths: dict[str, str]) -> None:
    """The absolute source paths for a resume from another folder (``identity.source_paths``)."""
    if paths:
        tracker.log_files({"sources.json": json.dumps(paths, indent=2)})


def _one_run_per_identity(
    cl: Any, experiment_id: str, s: Settings, tags: dict[str, str], what: str, force: bool
) -> contextlib.AbstractAsyncContextManager[None]:
    """The identity lock (see ``health.identity_lock``), in the cache folder's ``locks/``; ``force`` asks
    for a new run anyway, so it takes none."""
    if force:
        return contextlib.nullcontext()
    from mlflow_nemo_judge.http.cache import default_cache_dir

    lock_dir = Path(s.options.cache_dir or default_cache_dir()) / "locks"
    return health.identity_lock(lock_dir, health.identity_key(cl.tracking_uri, experiment_id, tags), what)


async def track_many(
    cl: Any,
    experiment_id: str,
    s: Settings,
    config: EvalConfig,
    prepared: list[Prepared],
    *,
    run_name: str | None,
    force: bool,
) -> tuple[list[Outcome], str, PairwiseReport | None]:
    """Several targets: a parent run with one child per target and the comparison on the parent (and,
    with a ``pairwise`` block, the pairwise report, also returned)."""
    targets = [p.target for p in prepared]
    tags = ident.parent_identity(
        config, targets, [d for p in prepared for d in p.datasets], s.backend_name, s.options.limit
    )
    names = [t.display_name for t in targets]
    async with _one_run_per_identity(cl, experiment_id, s, tags, ", ".join(names), force):
        return await _track_parent(
            cl, experiment_id, s, config, prepared, tags, run_name=run_name, force=force
        )


async def _track_parent(
    cl: Any,
    experiment_id: str,
    s: Settings,
    config: EvalConfig,
    prepared: list[Prepared],
    tags: dict[str, str],
    *,
    run_name: str | None,
    force: bool,
) -> tuple[list[Outcome], str, PairwiseReport | None]:
    from mlflow_nemo_judge.tracking.reports import read_pairwise

    targets = [p.target for p in prepared]
    if not force and (found := ident.find_finished_parent(cl, experiment_id, tags, targets)) is not None:
        for o, p in zip(found[0], prepared, strict=True):
            _backfill(cl, o.run_id, s.trace_samples, collect(config, p.target), s.allow_partial_tracking)
        return [reused_with_report(cl, o) for o in found[0]], found[1], read_pairwise(cl, found[1])
    names = [t.display_name for t in targets]
    tags |= ident.resume_tags(config, None, prepared[0].parallelism, s.options.cache_dir)
    tags[trk.TAG_TARGET] = ", ".join(names)
    if s.allow_partial_tracking:
        tags[nm.TAG_PARTIAL_TRACKING] = "true"
    child_names = run_names.child_names(names, prepared)
    parent = RunTracker.create(
        cl,
        experiment_id,
        run_name=run_name or run_names.parent_name(names, prepared),
        description=trk.describe_parent(config, names, prepared[0].datasets, s.backend_name),
        tags=tags,
        secrets=collect(config, *targets),
    )
    with health.translated(cl.tracking_uri, parent.run_id), _ending(parent):
        params = trk.build_params(
            config,
            targets[0],
            backend=s.backend_name,
            limit=s.options.limit,
            parallelism=prepared[0].parallelism,
            datasets=prepared[0].datasets,
        )
        parent.log_parent_setup(config, targets, params)
        _log_sources(parent, ident.source_paths(config, None, s.options.cache_dir))
        prompts.register_and_link(cl, parent.run_id, config, parent.secrets)
        outcomes = [
            await track_one(
                cl,
                experiment_id,
                s,
                p,
                role="child",
                run_name=None,
                force=True,
                parent_run_id=parent.run_id,
                default_name=child_name,
            )
            for p, child_name in zip(prepared, child_names, strict=True)
        ]
        pw = await run_pairwise(
            config,
            [o.result for o in outcomes],
            _labels(names),
            s.options,
            prepared[0].parallelism,
        )
        finish_parent(parent, outcomes, names, config.display_name, pairwise=pw)
    return outcomes, parent.run_id, pw


def _labels(names: Sequence[str]) -> list[str]:
    from mlflow_nemo_judge.tracking import comparison

    return comparison.labels(names)


def finish_parent(
    parent: RunTracker,
    outcomes: Sequence[Outcome],
    names: Sequence[str],
    config_name: str = "",
    *,
    pairwise: PairwiseReport | None = None,
) -> None:
    """The comparison on the parent (leaderboard and paired tests as metrics, tables and charts), the
    pairwise report and the children's reliability table when there are any, then FINISHED."""
    from mlflow_nemo_judge.tracking import comparison
    from mlflow_nemo_judge.tracking.reports import log_children_reliability, log_pairwise

    run_names = [_run_name(parent.cl, o.run_id) for o in outcomes]
    labels = comparison.labels(names)
    children = [
        comparison.Child(n, lab, o.run_id, rn, o.result)
        for n, lab, o, rn in zip(names, labels, outcomes, run_names, strict=True)
    ]
    comparison.log_comparison(parent, children, config_name)
    log_children_reliability(
        parent, [(c.label, c.run_id, report_of(o)) for c, o in zip(children, outcomes, strict=True)]
    )
    if pairwise is not None:
        log_pairwise(parent, pairwise)
    parent.mark_finished()


def _run_name(cl: Any, run_id: str) -> str:
    return str(cl.get_run(run_id).info.run_name or "")


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
        _backfill(cl, run, ts, (), allow_partial_tracking)
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

    pid, exp_id = prun.info.run_id, prun.info.experiment_id
    docs = rs.target_documents(cl, prun)
    shas = rs.target_shas(cl, prun, docs)
    if prun.info.status == "FINISHED":
        finished = ident.children(cl, exp_id, pid)
        found = [ident.reuse(cl, finished[sha]) if sha in finished else None for sha in shas]
        outs = [f for f in found if f is not None]  # in the order the targets were given
        ts = trace_samples_default() if trace_samples is None else max(0, int(trace_samples))
        for o in outs:
            _backfill(cl, o.run_id, ts, (), allow_partial_tracking)
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
        pw = await run_pairwise(cfg, [o.result for o in outcomes], _labels(names), opts, None)
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


def _backfill(
    cl: Any, run: Any, trace_samples: int, secrets: Sequence[str], allow_partial_tracking: bool
) -> None:
    """A reused FINISHED run whose traces are missing (the store refused them, or a version of this
    package lost them silently) gets them now; see ``trace_outcome.backfill_traces``. ``run`` is a run
    or its id (the tags decide whether anything is missing, so a complete run costs one read)."""
    from mlflow_nemo_judge.tracking.trace_outcome import backfill_traces

    if trace_samples <= 0:
        return
    if isinstance(run, str):
        run = cl.get_run(run)
    backfill_traces(
        cl,
        run,
        trace_samples=trace_samples,
        secrets=list(secrets),
        allow_partial_tracking=allow_partial_tracking,
    )
