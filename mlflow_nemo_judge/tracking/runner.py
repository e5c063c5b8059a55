"""Tracked evaluations: each prepared target as an MLflow run (single, or children of a parent run with
the comparison), reusing a FINISHED run of the same evaluation, and resuming interrupted runs in place.

The pipeline (``pipeline.py``) decides what to evaluate; this module decides which MLflow runs hold it.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_nemo_judge import tracking as trk
from mlflow_nemo_judge.backends.base import Backend, Prepared
from mlflow_nemo_judge.config import EvalConfig, load_target, sha256_json
from mlflow_nemo_judge.config.secrets import collect, masked_paths
from mlflow_nemo_judge.data.scan import combined_digest
from mlflow_nemo_judge.engine import RunOptions
from mlflow_nemo_judge.errors import TrackingError
from mlflow_nemo_judge.pipeline import Evaluation, _ending, _targets, execute, make_backend
from mlflow_nemo_judge.settings import trace_samples_default
from mlflow_nemo_judge.tracking import identity as ident
from mlflow_nemo_judge.tracking import resume as rs
from mlflow_nemo_judge.tracking.identity import Outcome
from mlflow_nemo_judge.tracking.mlflow_sink import MlflowSink
from mlflow_nemo_judge.tracking.names import DEFAULT_TABLE_MAX_ROWS
from mlflow_nemo_judge.tracking.runs import RunTracker
from mlflow_nemo_judge.tracking.sink import RunSink


@dataclass
class Settings:
    """What every target's evaluation of one call shares."""

    backend_name: str
    backend: Backend
    options: RunOptions
    trace_samples: int
    table_max_rows: int


# ---------------------------------------------------------------------------------- one target


def sink_for(tracker: RunTracker, s: Settings, config: EvalConfig, **kw: Any) -> RunSink:

    return MlflowSink(
        tracker,
        config,
        backend=s.backend_name,
        limit=s.options.limit,
        table_max_rows=s.table_max_rows,
        trace_samples=s.trace_samples,
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
) -> Outcome:

    tags = ident.identity(p.config, p.target, p.datasets, s.backend_name, s.options.limit)
    if not force and (found := ident.find_finished(cl, experiment_id, tags)) is not None:
        return found
    tags |= ident.resume_tags(p.config, p.target, s.options.parallelism, s.options.cache_dir)
    tags |= {trk.TAG_ROLE: role, trk.TAG_TARGET: p.target.display_name}
    tracker = RunTracker.create(
        cl,
        experiment_id,
        run_name=run_name or f"{p.target.display_name} · {p.config.display_name}",
        description=trk.describe_run(p.config, p.target, p.datasets, s.backend_name),
        tags=tags,
        parent_run_id=parent_run_id,
        secrets=collect(p.config, p.target),
        n_tasks=len(p.config.tasks or {}),
    )
    result = await execute(s.backend, p, sink_for(tracker, s, p.config))
    return ident.Outcome(result, tracker.run_id, False, tracker.model_id)


async def track_many(
    cl: Any,
    experiment_id: str,
    s: Settings,
    config: EvalConfig,
    prepared: list[Prepared],
    *,
    run_name: str | None,
    force: bool,
) -> tuple[list[Outcome], str]:

    targets = [p.target for p in prepared]
    tags = ident.parent_identity(
        config, targets, [d for p in prepared for d in p.datasets], s.backend_name, s.options.limit
    )
    if not force and (found := ident.find_finished_parent(cl, experiment_id, tags, targets)) is not None:
        return found
    names = [t.display_name for t in targets]
    tags |= ident.resume_tags(config, None, s.options.parallelism, s.options.cache_dir)
    tags[trk.TAG_TARGET] = ", ".join(names)
    parent = RunTracker.create(
        cl,
        experiment_id,
        run_name=run_name or f"{config.display_name} · {len(targets)} targets",
        description=trk.describe_parent(config, names, prepared[0].datasets, s.backend_name),
        tags=tags,
        secrets=collect(config, *targets),
    )
    with _ending(parent):
        params = trk.build_params(
            config,
            targets[0],
            backend=s.backend_name,
            limit=s.options.limit,
            parallelism=prepared[0].parallelism,
            datasets=prepared[0].datasets,
        )
        parent.log_parent_setup(config, targets, params)
        outcomes = [
            await track_one(
                cl, experiment_id, s, p, role="child", run_name=None, force=True, parent_run_id=parent.run_id
            )
            for p in prepared
        ]
        finish_parent(parent, outcomes, names)
    return outcomes, parent.run_id


def finish_parent(parent: RunTracker, outcomes: Sequence[Outcome], names: Sequence[str]) -> None:
    from mlflow_nemo_judge import compare

    entries = compare.entries_from_results(
        [(n, o.run_id, o.result) for n, o in zip(names, outcomes, strict=True)]
    )
    df = compare.frame(entries)
    with tempfile.TemporaryDirectory(prefix="nemo-judge-cmp-") as tmp:
        chart = compare.write_chart(df, Path(tmp) / "comparison.png", title="mean with 95% CI per target")
        parent.log_comparison(df, chart)
    parent.mark_finished()


def settings_for(
    backend_name: str, opts: RunOptions, backend_options: dict[str, Any] | None, trace_samples: int | None
) -> Settings:

    ts = trace_samples_default() if trace_samples is None else max(0, int(trace_samples))
    return Settings(
        backend_name, make_backend(backend_name, opts, backend_options), opts, ts, DEFAULT_TABLE_MAX_ROWS
    )


async def resume_run(
    cl: Any,
    run: Any,
    config: Any,
    target: Any,
    options: RunOptions | None,
    trace_samples: int | None,
    backend_options: dict[str, Any] | None = None,
) -> Outcome:

    if run.info.status == "FINISHED":
        found = ident.reuse(cl, run)
        if found is None:
            raise TrackingError(f"MLflow run {run.info.run_id} is FINISHED but has no {trk.ART_RESULTS}")
        return found
    tags = run.data.tags
    backend_name = tags.get(trk.TAG_BACKEND, "local")
    # A nemo run that got as far as submitting its job is re-attached to that job; the job already
    # holds the keys, so redacted ones in the stored config/target do not matter.
    job_id = tags.get(trk.TAG_JOB_ID) if backend_name == "nemo" else None
    cfg = rs.reload(cl, run, "config", config, allow_masked=bool(job_id))
    tgt = rs.reload(cl, run, "target", target, allow_masked=bool(job_id))
    s = settings_for(backend_name, rs.recorded_options(run, options), backend_options, trace_samples)
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
    result = await execute(s.backend, prepared, sink, attach_job_id=job_id)
    return ident.Outcome(result, tracker.run_id, False, tracker.model_id)


async def resume_parent(
    cl: Any, prun: Any, config: Any, targets: Any, options: RunOptions | None, trace_samples: int | None
) -> Evaluation:

    pid, exp_id = prun.info.run_id, prun.info.experiment_id
    docs = rs.target_documents(cl, prun)
    if prun.info.status == "FINISHED":
        finished = ident.children(cl, exp_id, pid)
        found = [
            ident.reuse(cl, finished[sha]) if (sha := sha256_json(d)) in finished else None for d in docs
        ]
        outs = [f for f in found if f is not None]  # in the order the targets were given
        return Evaluation([o.result for o in outs], [o.run_id for o in outs], pid, exp_id, [True] * len(outs))
    cfg = rs.reload(cl, prun, "config", config)
    given = {t.sha256(): t for t in (_targets(targets) if targets is not None else [])}
    kids = ident.children(cl, exp_id, pid, status=None)
    opts = dataclasses.replace(options or RunOptions(), limit=rs.recorded_limit(prun.data.tags))
    backend_name = prun.data.tags.get(trk.TAG_BACKEND, "local")
    parent = RunTracker.reopen(cl, prun, secrets=collect(cfg, *given.values()))
    names: list[str] = []
    outcomes: list[Outcome] = []
    with _ending(parent):
        for doc in docs:
            sha = sha256_json(doc)
            tgt_given = given.get(sha)
            if sha in kids:
                o = await resume_run(cl, kids[sha], cfg, tgt_given, opts, trace_samples)
                names.append(kids[sha].data.tags.get(trk.TAG_TARGET, sha[:12]))
            else:
                if tgt_given is None and masked_paths(doc):
                    raise TrackingError(
                        f"target {doc.get('name') or sha[:12]} of MLflow run {pid} held literal secrets; "
                        "pass the original targets (target=[...]) to resume"
                    )
                tgt = tgt_given or load_target(doc)
                s = settings_for(backend_name, opts, None, trace_samples)
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
        finish_parent(parent, outcomes, names)
    return Evaluation(
        [o.result for o in outcomes], [o.run_id for o in outcomes], pid, exp_id, [o.reused for o in outcomes]
    )
