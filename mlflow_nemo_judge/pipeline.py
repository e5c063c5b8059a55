"""The evaluation flow, one direction: load → prepare (plan + one data pass) → backend → sink → result.

``evaluate_async`` is the flow; ``evaluate`` is its loop-safe synchronous wrapper (it also works in a
Jupyter cell, whose kernel already runs an event loop). Every config, target and data error surfaces in
``prepare``, before any MLflow run or model call. Each target's evaluation streams its records into a
``RunSink`` (an MLflow run, or memory when untracked); the result type carries no tracking state: run
ids live on the returned :class:`Evaluation`. ``resume`` continues an interrupted run in place and
``attach`` re-attaches to a NeMo job whose submitting process died.

Reliability (the config's ``mlflow_nemo_judge:`` block): after each backend run ``execute`` computes the
target's reliability report from the whole result (``reliability.analyze``) and hands it to the sink
beside the result; after all targets, a ``pairwise`` block runs the position-swapped pairwise judge over
their outputs (``reliability.pairwise``), tracked (on the parent run) or not (both stages:
``pipeline_reliability``). Both reports come back on :class:`Evaluation`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mlflow_nemo_judge.backends.base import Backend, Prepared, RunEvents
from mlflow_nemo_judge.config import EvalConfig, Target, load_config, load_target
from mlflow_nemo_judge.engine import RunOptions
from mlflow_nemo_judge.errors import ConfigError, TrackingError
from mlflow_nemo_judge.pipeline_reliability import check_pairwise, reliability_of, run_pairwise
from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.settings import trace_samples_default
from mlflow_nemo_judge.tracking.sink import MemorySink, RunSink

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.pairwise_report import PairwiseReport
    from mlflow_nemo_judge.reliability.report import ReliabilityReport

T = TypeVar("T")
ConfigLike = EvalConfig | Mapping[str, Any] | str | os.PathLike[str]
TargetLike = Target | Mapping[str, Any] | str | os.PathLike[str]


@dataclass
class Evaluation:
    """What ``evaluate``/``resume`` return: one result and one MLflow run per target, in order."""

    results: list[EvalResult]
    run_ids: list[str] = field(default_factory=list)
    parent_run_id: str | None = None
    experiment_id: str | None = None
    reused: list[bool] = field(default_factory=list)
    # One reliability report per target (None where the config asks for no repeats, panel or human
    # labels), and the pairwise report of a multi-target run with a ``pairwise`` block.
    reliability: list[ReliabilityReport | None] = field(default_factory=list)
    pairwise: PairwiseReport | None = None

    @property
    def result(self) -> EvalResult:
        """The single (or first) target's result."""
        return self.results[0]

    def close(self) -> None:
        """Remove the results' local spill files now (they are removed at exit anyway)."""
        for r in self.results:
            r.close()


# ------------------------------------------------------------------------------------- the flow


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, also where an event loop is already running.

    A Jupyter cell runs inside the kernel's event loop, where ``asyncio.run`` refuses to start a second
    loop; there the coroutine gets a fresh loop on a worker thread and this call waits for it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nemo-judge-loop") as pool:
        return pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def _ending(sink: Any) -> Iterator[None]:
    """Whatever leaves the block ends the record: Ctrl-C or cancellation KILLED (MLflow itself would say
    FAILED), any other exception FAILED with its traceback."""
    try:
        yield
    except (KeyboardInterrupt, asyncio.CancelledError):
        sink.kill()
        raise
    except BaseException as exc:
        sink.fail(exc)
        raise


async def execute(
    backend: Backend, prepared: Prepared, sink: RunSink, attach_job_id: str | None = None
) -> EvalResult:
    """One target's evaluation: start the record, run (or attach to ``attach_job_id``) streaming every
    record into the sink, compute the reliability report, finish with both — and on any way out, the
    matching end state (a failing analysis fails the run: its figures are part of the record)."""
    events = RunEvents(on_record=sink.sample, on_progress=sink.progress, on_job=sink.job)
    with _ending(sink):
        sink.start(prepared)
        if attach_job_id:
            result = await backend.attach(attach_job_id, events)
        else:
            result = await backend.run(prepared, events)
        sink.finish(result, reliability=reliability_of(prepared.config, result))
    return result


async def evaluate_async(
    config: ConfigLike,
    targets: TargetLike | Sequence[TargetLike],
    *,
    backend: str = "local",
    experiment: str | None = None,
    tracking_uri: str | None = None,
    tracking: bool = True,
    force: bool = False,
    register_model: str | None = None,
    alias: str | None = None,
    run_name: str | None = None,
    options: RunOptions | None = None,
    backend_options: dict[str, Any] | None = None,
    trace_samples: int | None = None,
    table_max_rows: int | None = None,
    allow_partial_tracking: bool = False,
    policy: Any = None,
    nemo: Mapping[str, Any] | None = None,
    **run_options: Any,
) -> Evaluation:
    """Evaluate ``config`` against each target and record every evaluation as an MLflow run.

    ``targets`` is one target or a list (then a parent run holds one child run per target, plus a
    comparison table and chart). ``tracking=False`` runs the backend only. ``force`` re-runs an
    evaluation that already finished; ``register_model`` registers each target's LoggedModel, and
    ``alias`` moves only on evidence: under ``policy`` (a gate policy file, dict or ``gate.Policy``;
    default ``gate.Policy()``), see the README's "Promote a model". ``run_options`` set ``RunOptions`` fields (``limit``, ``parallelism``, ``cache``...);
    ``trace_samples`` caps the per-sample traces (default from ``NEMO_JUDGE_TRACE_SAMPLES``, 0 = none);
    runs with more than ``table_max_rows`` samples (default 20 000) log their rows as JSONL, not a table.
    A trace MLflow could not store fails the run, unless ``allow_partial_tracking`` (then the run ends
    FINISHED and says, in a tag and its description, which traces are missing).
    ``config``/targets may be NeMo ``namespace/name`` references, read through the NeMo URLs in
    ``nemo`` (default: ``backend_options`` on the nemo backend, else the ``NEMO_*`` settings).
    """
    from mlflow_nemo_judge.config import references
    from mlflow_nemo_judge.plan_reliability import with_judge_repeats
    from mlflow_nemo_judge.tracking.names import DEFAULT_TABLE_MAX_ROWS

    opts = _options(options, run_options)
    # --judge-repeats is written into the config: the run identity, config.json and a resume follow it
    urls = nemo if nemo is not None else (backend_options if backend == "nemo" else None)
    loaded = load_config(config, nemo=urls)
    cfg = with_judge_repeats(loaded, opts.judge_repeats)
    references.remember(cfg, references.references_of(loaded))
    tlist = _targets(targets, urls)
    if backend == "local":  # NeMo resolves stored datasets and models itself; locally they are read here
        cfg = references.inline_entities(cfg, urls)
        tlist = [references.inline_entities(t, urls) for t in tlist]
    if alias and not register_model:
        raise ConfigError("alias", "an alias needs register_model=NAME")
    if policy is not None:
        if not alias:
            raise ConfigError(
                "policy", "a policy decides who gets the alias: it needs alias= (and register_model=)"
            )
        from mlflow_nemo_judge.gate.policy import config_score_keys, load_policy, resolve

        pol, where = load_policy(policy)
        resolve(pol, config_score_keys(cfg), where)  # a bad policy is bad input: refused before any run
    check_pairwise(cfg, len(tlist))
    be = make_backend(backend, opts, backend_options)
    prepared = [be.prepare(cfg, t) for t in tlist]  # every config, target or data error before any run
    if not tracking:
        from mlflow_nemo_judge.tracking.comparison import labels

        sinks = [MemorySink() for _ in prepared]
        results = [await execute(be, p, sk) for p, sk in zip(prepared, sinks, strict=True)]
        pw = await run_pairwise(
            cfg, results, labels([t.display_name for t in tlist]), opts, prepared[0].parallelism
        )
        return Evaluation(
            results=results,
            reused=[False] * len(results),
            reliability=[sk.reliability for sk in sinks],
            pairwise=pw,
        )
    from mlflow_nemo_judge.tracking import runner
    from mlflow_nemo_judge.tracking.reports import report_of

    s = runner.Settings(
        backend,
        be,
        opts,
        trace_samples_default() if trace_samples is None else max(0, int(trace_samples)),
        DEFAULT_TABLE_MAX_ROWS if table_max_rows is None else table_max_rows,
        allow_partial_tracking,
    )
    from mlflow_nemo_judge import tracking as trk
    from mlflow_nemo_judge.tracking import health
    from mlflow_nemo_judge.tracking.registry import register_outcomes

    exp_name = experiment or _default_experiment(cfg)
    health.check_names(exp_name, run_name)  # bad names are bad input: refused before anything exists
    from mlflow_nemo_judge.tracking import early

    if early.applies(backend, len(prepared), tracking_uri) is not None:  # calls start while MLflow opens
        reg = None
        if register_model:
            model_name = register_model

            def reg(cl: Any, outs: list[Any]) -> None:
                register_outcomes(cl, outs, model_name, alias, policy=policy, config=cfg)

        outcome, exp_id = await early.track_single(
            tracking_uri, exp_name, s, prepared[0], run_name=run_name, force=force, register=reg
        )
        return Evaluation(
            [outcome.result], [outcome.run_id], None, exp_id, [outcome.reused], [report_of(outcome)], None
        )
    with _tracking(tracking_uri) as cl:
        exp_id = trk.resolve_experiment(cl, exp_name)
        pw = None
        if len(prepared) == 1:
            outcomes = [
                await runner.track_one(
                    cl, exp_id, s, prepared[0], role="single", run_name=run_name, force=force
                )
            ]
            parent_id = None
        else:
            outcomes, parent_id, pw = await runner.track_many(
                cl, exp_id, s, cfg, prepared, run_name=run_name, force=force
            )
        if register_model:
            register_outcomes(cl, outcomes, register_model, alias, policy=policy, config=cfg)
    return Evaluation(
        [o.result for o in outcomes],
        [o.run_id for o in outcomes],
        parent_id,
        exp_id,
        [o.reused for o in outcomes],
        [report_of(o) for o in outcomes],
        pw,
    )


def evaluate(config: ConfigLike, targets: TargetLike | Sequence[TargetLike], **kwargs: Any) -> Evaluation:
    """``evaluate_async`` for synchronous code and notebook cells; same arguments."""
    return run_sync(evaluate_async(config, targets, **kwargs))


# -------------------------------------------------------------------------------- resume, attach


async def resume_async(
    run_id: str,
    *,
    tracking_uri: str | None = None,
    config: ConfigLike | None = None,
    target: TargetLike | Sequence[TargetLike] | None = None,
    options: RunOptions | None = None,
    trace_samples: int | None = None,
    backend_options: dict[str, Any] | None = None,
    retry_errors: bool = False,
    allow_partial_tracking: bool = False,
) -> Evaluation:
    """Continue an interrupted run (left RUNNING by a killed process, or FAILED/KILLED) in place.

    Config and target are re-read from the run's artifacts; keys come from their ``api_key_env``
    variables, or pass ``config=``/``target=`` when the originals held literal keys. A parent run
    resumes each unfinished child and then records the comparison. A FINISHED run is returned as is,
    unless ``retry_errors``: then the samples that errored (target or judge) of a single-target run are
    evaluated again, the others kept as recorded, and the run's metrics, table and results replaced.
    """
    from mlflow_nemo_judge import tracking as trk
    from mlflow_nemo_judge.tracking import resume_runs
    from mlflow_nemo_judge.tracking.reports import report_of

    with _tracking(tracking_uri) as cl:
        run = trk.get_run(cl, run_id)
        tags = run.data.tags
        if trk.TAG_CONFIG_SHA not in tags:
            raise TrackingError(
                f"MLflow run {run_id} was not made by mlflow-nemo-judge (no {trk.TAG_CONFIG_SHA} tag)"
            )
        if tags.get(trk.TAG_ROLE) == "parent":
            if retry_errors:
                raise TrackingError(
                    f"MLflow run {run_id} is a parent run; pass one of its child runs to --retry-errors"
                )
            return await resume_runs.resume_parent(
                cl, run, config, target, options, trace_samples, allow_partial_tracking
            )
        if isinstance(target, (list, tuple)):
            if len(target) != 1:
                raise TrackingError(f"MLflow run {run_id} evaluated one target; pass one target=")
            target = target[0]
        o = await resume_runs.resume_run(
            cl,
            run,
            config,
            target,
            options,
            trace_samples,
            backend_options,
            retry_errors=retry_errors,
            allow_partial_tracking=allow_partial_tracking,
        )
        return Evaluation(
            [o.result],
            [o.run_id],
            tags.get("mlflow.parentRunId"),
            run.info.experiment_id,
            [o.reused],
            [report_of(o)],
        )


def resume(run_id: str, **kwargs: Any) -> Evaluation:
    """``resume_async`` for synchronous code and notebook cells; same arguments."""
    return run_sync(resume_async(run_id, **kwargs))


async def attach_async(
    job_id: str,
    *,
    tracking_uri: str | None = None,
    backend_options: dict[str, Any] | None = None,
    trace_samples: int | None = None,
) -> Evaluation:
    """Re-attach to a NeMo Evaluator job after the submitting process died.

    If an MLflow run recorded this job (tag ``nemo_judge.job_id``), that run is resumed and completed;
    otherwise the job is waited for and its results returned without tracking."""
    from mlflow_nemo_judge import tracking as trk

    with _tracking(tracking_uri) as cl:
        exp_ids = [e.experiment_id for e in cl.search_experiments()]
        query = f"tags.`{trk.TAG_JOB_ID}` = {trk.quote(job_id)}"
        runs = (
            list(cl.search_runs(exp_ids, query, max_results=1, order_by=["attributes.start_time DESC"]))
            if exp_ids
            else []
        )
    if runs:
        return await resume_async(
            runs[0].info.run_id,
            tracking_uri=tracking_uri,
            trace_samples=trace_samples,
            backend_options=backend_options,
        )
    be = make_backend("nemo", RunOptions(), backend_options)
    result = await be.attach(job_id, RunEvents())
    return Evaluation([result], [], None, None, [False])


def attach(job_id: str, **kwargs: Any) -> Evaluation:
    """``attach_async`` for synchronous code and notebook cells; same arguments."""
    return run_sync(attach_async(job_id, **kwargs))


# ------------------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def _tracking(tracking_uri: str | None) -> Iterator[Any]:
    """A checked MLflow client for the block: the URI validated and asked once, quickly (a dead server
    fails here in seconds, before any run or model call), MLflow's HTTP retries bounded, and MLflow's
    store errors turned into one-line ``TrackingError``s naming the (redacted) URI."""
    from mlflow_nemo_judge import tracking as trk
    from mlflow_nemo_judge.tracking import health

    uri = trk.current_tracking_uri(tracking_uri)
    health.check_uri(uri)
    with trk.tracking_scope(tracking_uri), health.bounded_http(), health.translated(uri):
        cl = trk.client(uri)
        health.preflight(cl, uri)
        yield cl


def _targets(
    targets: TargetLike | Sequence[TargetLike], nemo: Mapping[str, Any] | None = None
) -> list[Target]:
    items: list[Any] = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    if not items:
        raise ConfigError("targets", "at least one target is required")
    return [load_target(t, nemo=nemo) for t in items]


def _options(options: RunOptions | None, run_options: Mapping[str, Any]) -> RunOptions:
    try:
        return dataclasses.replace(options, **run_options) if options else RunOptions(**run_options)
    except TypeError as exc:
        raise TypeError(f"unknown run option: {exc}") from None


def _default_experiment(config: EvalConfig) -> str | None:
    """Without --experiment, MLflow's env settings win; else the config's name, so runs of one
    evaluation gather in one experiment and ``compare --experiment <config name>`` finds them."""
    if os.environ.get("MLFLOW_EXPERIMENT_ID") or os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        return None
    return config.name


def make_backend(name: str, options: RunOptions, backend_options: Mapping[str, Any] | None) -> Backend:
    """The named backend; the nemo backend applies the same row limit (by rewriting the submitted
    config's dataset limits)."""
    from mlflow_nemo_judge import backends

    extra = dict(backend_options or {})
    if name == "local":
        return backends.get_backend(name, options=options, **extra)
    extra.setdefault("limit", options.limit)
    return backends.get_backend(name, **extra)
