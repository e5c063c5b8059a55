"""Tracked evaluations: each prepared target as an MLflow run (single, or children of a parent run with
the comparison), reusing a FINISHED run of the same evaluation (and backfilling its missing traces).

The pipeline (``pipeline.py``) decides what to evaluate; this module decides which MLflow runs hold it.
Each outcome carries its target's reliability report (``Tracked``): computed by ``execute`` for a run
made here, read back from ``nemo_judge/reliability/report.json`` for a reused one. A parent runs the
pairwise stage after its children and logs it (and a table of the children's reliability). Resuming an
interrupted run in place is ``resume_runs.py``'s, with the settings, sinks and parent finish from here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge import tracking as trk
from mlflow_nemo_judge.backends.base import Backend, Prepared
from mlflow_nemo_judge.config import EvalConfig
from mlflow_nemo_judge.config.secrets import collect
from mlflow_nemo_judge.engine import RunOptions
from mlflow_nemo_judge.pipeline import _ending, execute
from mlflow_nemo_judge.pipeline_reliability import run_pairwise
from mlflow_nemo_judge.tracking import health, prompts, run_names
from mlflow_nemo_judge.tracking import identity as ident
from mlflow_nemo_judge.tracking import names as nm
from mlflow_nemo_judge.tracking.identity import Outcome
from mlflow_nemo_judge.tracking.mlflow_sink import MlflowSink
from mlflow_nemo_judge.tracking.reports import Tracked, report_of, reused_with_report, sink_report
from mlflow_nemo_judge.tracking.runs import RunTracker

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.pairwise_report import PairwiseReport
    from mlflow_nemo_judge.tracking.early import EarlyStart


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


def sink_for(tracker: RunTracker, s: Settings, config: EvalConfig, **kw: Any) -> MlflowSink:
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
    early: EarlyStart | None = None,
) -> Outcome:
    """One target's evaluation as one run: an identical FINISHED run is reused, else a new run is
    created and the evaluation streamed into it, its setup (sources, prompts registered and linked,
    params, inputs, LoggedModel) written beside the first model calls. With ``early`` the evaluation
    is already running (``early.py``): a reused run stops it, a new run's sink takes it over."""
    tags = ident.identity(p.config, p.target, p.datasets, s.backend_name, s.options.limit)
    wait = early.cancel if early is not None else None
    async with _one_run_per_identity(cl, experiment_id, s, tags, p.target.display_name, force, wait):
        if early is not None and early.stopped:
            early = None  # stopped while another process ran the same evaluation: run it here anew
        if not force and (found := ident.find_finished(cl, experiment_id, tags)) is not None:
            if early is not None:
                await early.cancel()
            backfill(cl, found.run_id, s.trace_samples, collect(p.config, p.target), s.allow_partial_tracking)
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
        sources = ident.source_paths(p.config, p.target, s.options.cache_dir)
        with health.translated(cl.tracking_uri, tracker.run_id):
            # Written by the sink's setup thread while the first model calls go out (issue 15).
            sink = sink_for(
                tracker,
                s,
                p.config,
                pre_setup=[
                    lambda: _log_sources(tracker, sources),
                    lambda: prompts.register_and_link(cl, tracker.run_id, p.config, tracker.secrets),
                ],
                collected=early.collected if early is not None else None,
            )
            result = await (early.attach(sink) if early is not None else execute(s.backend, p, sink))
    return Tracked(result, tracker.run_id, False, tracker.model_id, sink_report(sink))


def _log_sources(tracker: RunTracker, paths: dict[str, str]) -> None:
    """The absolute source paths for a resume from another folder (``identity.source_paths``)."""
    if paths:
        tracker.log_files({"sources.json": json.dumps(paths, indent=2)})


def _one_run_per_identity(
    cl: Any,
    experiment_id: str,
    s: Settings,
    tags: dict[str, str],
    what: str,
    force: bool,
    on_wait: Callable[[], Awaitable[None]] | None = None,
) -> contextlib.AbstractAsyncContextManager[None]:
    """The identity lock (see ``health.identity_lock``), in the cache folder's ``locks/``; ``force`` asks
    for a new run anyway, so it takes none."""
    if force:
        return contextlib.nullcontext()
    from mlflow_nemo_judge.http.cache import default_cache_dir

    lock_dir = Path(s.options.cache_dir or default_cache_dir()) / "locks"
    key = health.identity_key(cl.tracking_uri, experiment_id, tags)
    return health.identity_lock(lock_dir, key, what, on_wait)


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
            backfill(cl, o.run_id, s.trace_samples, collect(config, p.target), s.allow_partial_tracking)
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


def backfill(
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
