"""The public Python API: ``evaluate``, ``resume``, ``compare``, ``paired``.

``evaluate`` runs a config against one or several targets on a backend and makes each evaluation an
MLflow run (a parent run with one child per target when there are several). It is idempotent: an
identical evaluation (same config, target, dataset content and limit, same backend) already FINISHED in
the experiment is returned instead of re-run. ``resume`` continues an interrupted run in place; with
the response cache, the calls it had completed cost nothing the second time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge import tracking
from mlflow_nemo_judge.config import (
    EvalConfig,
    Target,
    load_config,
    load_target,
    sha256_json,
    source_path,
)
from mlflow_nemo_judge.config.secrets import masked_paths
from mlflow_nemo_judge.engine import RunOptions
from mlflow_nemo_judge.errors import ConfigError, TrackingError
from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.tracking import DatasetInfo, RunTracker

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlflow_nemo_judge.backends import Backend

ConfigLike = EvalConfig | Mapping[str, Any] | str | os.PathLike[str]
TargetLike = Target | Mapping[str, Any] | str | os.PathLike[str]

TRACE_SAMPLES_ENV = "NEMO_JUDGE_TRACE_SAMPLES"
# Module-level alias: inside evaluate() the name ``tracking`` is its boolean parameter.
_TABLE_MAX_ROWS = tracking.DEFAULT_TABLE_MAX_ROWS


@dataclass
class Evaluation:
    """What ``evaluate``/``resume`` return: one result and one MLflow run per target, in order."""

    results: list[EvalResult]
    run_ids: list[str] = field(default_factory=list)
    parent_run_id: str | None = None
    experiment_id: str | None = None
    reused: list[bool] = field(default_factory=list)

    @property
    def result(self) -> EvalResult:
        """The single (or first) target's result."""
        return self.results[0]


@dataclass
class _Job:
    """One target's evaluation as planned for tracking: its data lineage and identity tags."""

    target: Target
    datasets: list[DatasetInfo]
    identity: dict[str, str]


@dataclass
class _Settings:
    backend_name: str
    backend: Backend
    options: RunOptions
    trace_samples: int
    table_max_rows: int = tracking.DEFAULT_TABLE_MAX_ROWS


# ------------------------------------------------------------------------------------------- helpers


def _targets(targets: TargetLike | Sequence[TargetLike]) -> list[Target]:
    items: list[Any] = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    if not items:
        raise ConfigError("targets", "at least one target is required")
    return [load_target(t) for t in items]


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


def _backend(name: str, options: RunOptions, backend_options: Mapping[str, Any] | None) -> Backend:
    from mlflow_nemo_judge import backends

    if name == "local":
        return backends.get_backend(name, options=options, **dict(backend_options or {}))
    extra = dict(backend_options or {})
    # The nemo backend applies the same row limit (by rewriting the submitted config's dataset limits).
    extra.setdefault("limit", options.limit)
    return backends.get_backend(name, **extra)


def _trace_samples(value: int | None) -> int:
    if value is not None:
        return max(0, int(value))
    env = os.environ.get(TRACE_SAMPLES_ENV)
    return max(0, int(env)) if env else tracking.DEFAULT_TRACE_SAMPLES


def _row_digest(h: Any, row: Mapping[str, Any]) -> None:
    h.update(
        json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode(
            "utf-8"
        )
    )
    h.update(b"\n")


def _local_source(files_url: str, base_dir: Path | None) -> str | None:
    """An absolute location for a local dataset (what MLflow records as the source), else the URL."""
    if "://" in files_url and not files_url.startswith("file://"):
        return files_url
    from mlflow_nemo_judge.data import DatasetSource, resolve_files

    try:
        files = resolve_files(DatasetSource(url=files_url, base_dir=base_dir))
    except Exception:
        return None
    if len(files) == 1:
        return str(files[0][1].resolve())
    return str(Path(os.path.commonpath([str(p.resolve()) for _, p in files]))) if files else None


def _dataset_name(files_url: str | None, fallback: str) -> str:
    if not files_url:
        return fallback
    tail = [p for p in files_url.rstrip("/").split("/") if p]
    name = tail[-1] if tail else fallback
    for ext in (".jsonl", ".json", ".csv"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name[:500] or fallback


def describe_datasets(
    config: EvalConfig,
    target: Target,
    *,
    backend: str,
    limit: int | None,
    parallelism: int | None = None,
    max_rows: int = tracking.DEFAULT_TABLE_MAX_ROWS,
) -> list[DatasetInfo]:
    """Per task: where its rows come from and a digest of the rows the run uses (``limit`` applied).

    The local backend reads the rows (streamed; kept only while they are few enough to log as an MLflow
    dataset), so a dataset edited in place gets a new digest and is not mistaken for the old one. The
    nemo backend's data live in the NeMo Data Store, so its digest is of the location and limits.
    """
    infos: list[DatasetInfo] = []
    if backend == "local":
        from mlflow_nemo_judge.plan import build_plan

        plan = build_plan(
            config, target, check_data=False, resolve_secrets=False, limit=limit, parallelism=parallelism
        )
        seen: dict[tuple[str | None, int | None, str], DatasetInfo] = {}
        for tp in plan.tasks:
            key = (tp.data.files_url, tp.limit, tp.data.description)
            if key in seen and tp.data.rows is None:
                infos.append(dataclasses.replace(seen[key], task=tp.name))
                continue
            h = hashlib.sha256()
            rows: list[dict[str, Any]] | None = []
            n = 0
            for row in tp.data.iter_rows(tp.limit):
                _row_digest(h, row)
                n += 1
                if rows is not None:
                    rows.append(row)
                    if len(rows) > max_rows:
                        rows = None
            url = tp.data.files_url
            info = DatasetInfo(
                task=tp.name,
                name=_dataset_name(url, f"{target.display_name}-rows" if url is None else tp.name),
                files_url=url,
                source=_local_source(url, tp.data.base_dir) if url else None,
                digest=h.hexdigest()[:16],
                num_rows=n,
                limit=tp.limit,
                rows=rows,
            )
            seen[key] = info
            infos.append(info)
        return infos
    for tname, task in (config.tasks or {}).items():
        ref: Any = task.dataset
        if ref is None:
            ref = target.dataset or target.cached_outputs
        url = ref if isinstance(ref, str) else getattr(ref, "files_url", None)
        ds_limit = getattr(ref, "limit", None)
        lim = min(x for x in (ds_limit, limit) if x is not None) if (ds_limit or limit) else None
        digest = sha256_json({"url": url, "limit": lim, "rows": target.rows})[:16]
        infos.append(
            DatasetInfo(
                task=tname,
                name=_dataset_name(url, tname),
                files_url=url,
                source=url if url and "://" in url else None,
                digest=digest,
                num_rows=len(target.rows) if target.rows is not None else None,
                limit=lim,
            )
        )
    return infos


def _combined_digest(datasets: Sequence[DatasetInfo]) -> str:
    return hashlib.sha256("|".join(f"{d.task}={d.digest}" for d in datasets).encode("utf-8")).hexdigest()[:16]


def _identity(
    config: EvalConfig, target: Target, datasets: Sequence[DatasetInfo], backend: str, limit: int | None
) -> dict[str, str]:
    """The tags that make two evaluations "the same": config, target, data content, limit, backend."""
    return {
        tracking.TAG_CONFIG_SHA: config.sha256(),
        tracking.TAG_TARGET_SHA: target.sha256(),
        tracking.TAG_DATASET_DIGEST: _combined_digest(datasets),
        tracking.TAG_LIMIT: str(limit) if limit else "none",
        tracking.TAG_BACKEND: backend,
    }


def _resume_tags(config: EvalConfig, target: Target, options: RunOptions) -> dict[str, str]:
    """What ``resume`` needs besides the artifacts: where relative dataset paths resolve, and options."""
    tags = {
        tracking.TAG_CONFIG_NAME: config.display_name,
        tracking.TAG_PARALLELISM: str(options.parallelism) if options.parallelism else "config",
    }
    for tag, obj in ((tracking.TAG_CONFIG_PATH, config), (tracking.TAG_TARGET_PATH, target)):
        src = source_path(obj)
        if src is not None:
            tags[tag] = str(Path(src).resolve())
    if options.cache_dir is not None:
        tags[tracking.TAG_CACHE_DIR] = str(Path(options.cache_dir).resolve())
    return tags


def _judge_models(config: EvalConfig) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for tname, task in (config.tasks or {}).items():
        for mname, metric in (task.metrics or {}).items():
            model = (metric.params or {}).get("model")
            if isinstance(model, Mapping):
                mid = (model.get("api_endpoint") or {}).get("model_id")
                if mid:
                    out[(tname, mname)] = str(mid)
            elif isinstance(model, str):
                out[(tname, mname)] = model
    return out


# ------------------------------------------------------------------------------------- one target


@dataclass
class _Outcome:
    result: EvalResult
    run_id: str
    reused: bool
    model_id: str | None


@contextlib.contextmanager
def _ends_run(tracker: RunTracker) -> Iterator[None]:
    """Whatever leaves the block sets the run's status: Ctrl-C or cancellation KILLED (MLflow itself
    would say FAILED), any other exception FAILED with its traceback."""
    import asyncio

    try:
        yield
    except (KeyboardInterrupt, asyncio.CancelledError):
        tracker.kill()
        raise
    except BaseException as exc:
        tracker.fail(exc)
        raise


def _execute(
    tracker: RunTracker,
    s: _Settings,
    config: EvalConfig,
    job: _Job,
    existing_params: Mapping[str, str] | None = None,
    setup_done: bool = False,
    attach_job_id: str | None = None,
) -> EvalResult:
    """Setup, run, finish — and on any way out, the matching MLflow status.

    ``attach_job_id``: the run already submitted this remote job (nemo backend); wait for it instead of
    submitting the evaluation again."""
    with _ends_run(tracker):
        params = tracking.build_params(
            config,
            job.target,
            backend=s.backend_name,
            limit=s.options.limit,
            parallelism=s.options.parallelism,
            datasets=job.datasets,
        )
        tracker.log_setup(
            config=config,
            target=job.target,
            params=params,
            datasets=job.datasets,
            model=tracking.model_spec(job.target),
            existing_params=existing_params,
            setup_done=setup_done,
        )
        attach = getattr(s.backend, "attach", None)
        if attach_job_id and attach is not None:
            result = attach(attach_job_id, progress=tracker.progress_callback())
        else:
            result = s.backend.run(
                config, job.target, progress=tracker.progress_callback(), on_job=tracker.on_job
            )
        tracker.finish(
            result,
            config=config,
            datasets=job.datasets,
            table_max_rows=s.table_max_rows,
            trace_samples=s.trace_samples,
            judge_models=_judge_models(config),
        )
    result.run_ids = [tracker.run_id]
    return result


def _reuse(cl: Any, run: Any) -> _Outcome | None:
    try:
        res = tracking.load_result(cl, run)
    except TrackingError:
        return None  # a FINISHED run without our results (edited by hand): not a valid reuse
    return _Outcome(res, run.info.run_id, True, run.data.tags.get(tracking.TAG_MODEL_ID))


def _track_one(
    cl: Any,
    experiment_id: str,
    s: _Settings,
    config: EvalConfig,
    job: _Job,
    *,
    role: str,
    parent_run_id: str | None,
    run_name: str | None,
    force: bool,
) -> _Outcome:
    if not force:
        for run in tracking.find_runs(cl, experiment_id, job.identity, max_results=5):
            found = _reuse(cl, run)
            if found is not None:
                return found
    secrets = tracking.collect_secrets(config, job.target)
    tags = {
        **job.identity,
        **_resume_tags(config, job.target, s.options),
        tracking.TAG_ROLE: role,
        tracking.TAG_TARGET: job.target.display_name,
    }
    tracker = RunTracker.create(
        cl,
        experiment_id,
        run_name=run_name or f"{job.target.display_name} · {config.display_name}",
        description=tracking.describe_run(config, job.target, job.datasets, s.backend_name),
        tags=tags,
        parent_run_id=parent_run_id,
        secrets=secrets,
        n_tasks=len(config.tasks or {}),
    )
    result = _execute(tracker, s, config, job)
    return _Outcome(result, tracker.run_id, False, tracker.model_id)


def _register(cl: Any, outcomes: Sequence[_Outcome], name: str, alias: str | None) -> None:
    """Register each target's LoggedModel as a version of ``name`` (once: a rerun reuses the version),
    headline scores as version tags; with several targets the alias goes to the best first score."""
    best: tuple[float, str] | None = None
    for o in outcomes:
        if not o.model_id:
            continue
        heads = {m.key: m.value for m in tracking.score_metrics(o.result) if m.headline}
        version = tracking.registered_version(o.model_id, name)
        if version is None:
            version = tracking.register(o.model_id, name, tags={k: f"{v:.6g}" for k, v in heads.items()})
            tracking.set_run_tag(cl, o.run_id, tracking.TAG_REGISTERED, f"{name}/{version}")
        first = next(iter(heads.values()), float("nan"))
        if best is None or (first == first and (best[0] != best[0] or first > best[0])):
            best = (first, version)
    if alias and best is not None:
        tracking.set_alias(name, alias, best[1])


# ---------------------------------------------------------------------------------------- evaluate


def evaluate(
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
    **run_options: Any,
) -> Evaluation:
    """Evaluate ``config`` against each target and record every evaluation as an MLflow run.

    ``targets`` is one target or a list (then a parent run holds one child run per target, plus a
    comparison table and chart). ``tracking=False`` runs the backend only. ``force`` re-runs an
    evaluation that already finished; ``register_model`` registers each target's LoggedModel (``alias``
    on the best). ``run_options`` set ``RunOptions`` fields (``limit``, ``parallelism``, ``cache``...);
    ``trace_samples`` caps the per-sample traces (default 200, env ``NEMO_JUDGE_TRACE_SAMPLES``, 0 = none);
    runs with more than ``table_max_rows`` samples (default 20 000) log their rows as JSONL, not a table.
    """
    cfg = load_config(config)
    tlist = _targets(targets)
    opts = _options(options, run_options)
    if alias and not register_model:
        raise ConfigError("alias", "an alias needs register_model=NAME")
    be = _backend(backend, opts, backend_options)
    for t in tlist:
        be.validate(cfg, t)  # every config/target error surfaces before any run or model call
    if not tracking:
        return Evaluation(results=[be.run(cfg, t) for t in tlist], reused=[False] * len(tlist))
    s = _Settings(
        backend,
        be,
        opts,
        _trace_samples(trace_samples),
        table_max_rows if table_max_rows is not None else _TABLE_MAX_ROWS,
    )
    from mlflow_nemo_judge import tracking as trk

    with trk.tracking_scope(tracking_uri):
        cl = trk.client(tracking_uri)
        exp_id = trk.resolve_experiment(cl, experiment or _default_experiment(cfg))
        jobs = []
        for t in tlist:
            ds = describe_datasets(cfg, t, backend=backend, limit=opts.limit, parallelism=opts.parallelism)
            jobs.append(_Job(t, ds, _identity(cfg, t, ds, backend, opts.limit)))
        if len(jobs) == 1:
            o = _track_one(
                cl, exp_id, s, cfg, jobs[0], role="single", parent_run_id=None, run_name=run_name, force=force
            )
            if register_model:
                _register(cl, [o], register_model, alias)
            return Evaluation([o.result], [o.run_id], None, exp_id, [o.reused])
        outcomes, parent_id = _evaluate_many(cl, exp_id, s, cfg, jobs, run_name=run_name, force=force)
        if register_model:
            _register(cl, outcomes, register_model, alias)
        return Evaluation(
            [o.result for o in outcomes],
            [o.run_id for o in outcomes],
            parent_id,
            exp_id,
            [o.reused for o in outcomes],
        )


def _parent_identity(
    config: EvalConfig, jobs: Sequence[_Job], backend: str, limit: int | None
) -> dict[str, str]:
    return {
        tracking.TAG_CONFIG_SHA: config.sha256(),
        tracking.TAG_ROLE: "parent",
        tracking.TAG_TARGETS_SHA: sha256_json([j.target.sha256() for j in jobs]),
        tracking.TAG_DATASET_DIGEST: _combined_digest([d for j in jobs for d in j.datasets]),
        tracking.TAG_LIMIT: str(limit) if limit else "none",
        tracking.TAG_BACKEND: backend,
    }


def _children(cl: Any, experiment_id: str, parent_id: str, status: str | None = "FINISHED") -> dict[str, Any]:
    """The parent's child runs by target sha (the newest per target)."""
    out: dict[str, Any] = {}
    for run in tracking.find_runs(
        cl, experiment_id, {"mlflow.parentRunId": parent_id}, status=status, max_results=1000
    ):
        out.setdefault(run.data.tags.get(tracking.TAG_TARGET_SHA, ""), run)
    return out


def _evaluate_many(
    cl: Any,
    experiment_id: str,
    s: _Settings,
    config: EvalConfig,
    jobs: list[_Job],
    *,
    run_name: str | None,
    force: bool,
) -> tuple[list[_Outcome], str]:
    identity = _parent_identity(config, jobs, s.backend_name, s.options.limit)
    if not force:
        for prun in tracking.find_runs(cl, experiment_id, identity, max_results=5):
            kids = _children(cl, experiment_id, prun.info.run_id)
            found = [_reuse(cl, kids[j.target.sha256()]) if j.target.sha256() in kids else None for j in jobs]
            if all(f is not None for f in found):
                return [f for f in found if f is not None], prun.info.run_id
    names = [j.target.display_name for j in jobs]
    secrets = tracking.collect_secrets(config, *[j.target for j in jobs])
    tags = {
        **identity,
        **_resume_tags(config, jobs[0].target, s.options),
        tracking.TAG_TARGET: ", ".join(names),
    }
    tags.pop(tracking.TAG_TARGET_PATH, None)
    parent = RunTracker.create(
        cl,
        experiment_id,
        run_name=run_name or f"{config.display_name} · {len(jobs)} targets",
        description=tracking.describe_parent(config, names, jobs[0].datasets, s.backend_name),
        tags=tags,
        secrets=secrets,
    )
    with _ends_run(parent):
        params = tracking.build_params(
            config,
            jobs[0].target,
            backend=s.backend_name,
            limit=s.options.limit,
            parallelism=s.options.parallelism,
            datasets=jobs[0].datasets,
        )
        parent.log_parent_setup(config, [j.target for j in jobs], params)
        outcomes = [
            _track_one(
                cl,
                experiment_id,
                s,
                config,
                j,
                role="child",
                parent_run_id=parent.run_id,
                run_name=None,
                force=True,
            )
            for j in jobs
        ]
        _finish_parent(parent, outcomes, names)
    return outcomes, parent.run_id


def _finish_parent(parent: RunTracker, outcomes: Sequence[_Outcome], names: Sequence[str]) -> None:
    import tempfile

    from mlflow_nemo_judge import compare

    df = compare.frame(
        compare.entries_from_results([(n, o.run_id, o.result) for n, o in zip(names, outcomes, strict=True)])
    )
    with tempfile.TemporaryDirectory(prefix="nemo-judge-cmp-") as tmp:
        chart = compare.write_chart(df, Path(tmp) / "comparison.png", title="mean with 95% CI per target")
        parent.log_comparison(df, chart)
    parent.mark_finished()


# ------------------------------------------------------------------------------------------ resume


def _reload(cl: Any, run: Any, what: str, given: Any, allow_masked: bool = False) -> Any:
    """The config or target a run was started with: the one passed (must be the same, by sha256), or
    the redacted artifact, which works when every secret comes from ``api_key_env``."""
    run_id = run.info.run_id
    tags = run.data.tags
    sha_tag = tracking.TAG_CONFIG_SHA if what == "config" else tracking.TAG_TARGET_SHA
    loader = load_config if what == "config" else load_target
    if given is not None:
        obj = loader(given)
        if obj.sha256() != tags.get(sha_tag):
            raise TrackingError(
                f"the {what} passed is not the one MLflow run {run_id} was started with "
                f"(sha256 {obj.sha256()[:12]} vs {str(tags.get(sha_tag))[:12]}); resume with the original "
                f"{what}, or start a new evaluation"
            )
        return obj
    art = tracking.ART_CONFIG if what == "config" else tracking.ART_TARGET
    doc = tracking.download_json(cl, run_id, art)
    if doc is None:
        raise TrackingError(f"MLflow run {run_id} has no {art}; pass {what}= (--{what}) to resume it")
    masked = [] if allow_masked else masked_paths(doc)
    if masked:
        raise TrackingError(
            f"MLflow run {run_id} was started with literal secrets in its {what} ({', '.join(masked)}), "
            f"which are redacted in {art}; pass the original {what} ({what}= in Python, --{what} on the "
            "command line) to resume it, or keep keys in environment variables (api_key_env)"
        )
    obj = loader(doc)
    src = tags.get(tracking.TAG_CONFIG_PATH if what == "config" else tracking.TAG_TARGET_PATH)
    if src:
        obj._source = Path(src)  # relative dataset paths resolve against the original file's folder
    if obj.sha256() != tags.get(sha_tag):
        raise TrackingError(f"{art} of MLflow run {run_id} does not match its {sha_tag} tag; pass {what}=")
    return obj


def _resume_run(
    cl: Any,
    run: Any,
    *,
    config: Any,
    target: Any,
    options: RunOptions | None,
    trace_samples: int | None,
    backend_options: dict[str, Any] | None = None,
) -> _Outcome:
    if run.info.status == "FINISHED":
        found = _reuse(cl, run)
        if found is None:
            raise TrackingError(f"MLflow run {run.info.run_id} is FINISHED but has no {tracking.ART_RESULTS}")
        return found
    tags = run.data.tags
    backend_name = tags.get(tracking.TAG_BACKEND, "local")
    # A nemo run that got as far as submitting its job is re-attached to that job; the job already
    # holds the keys, so redacted ones in the stored config/target do not matter.
    job_id = tags.get(tracking.TAG_JOB_ID) if backend_name == "nemo" else None
    cfg = _reload(cl, run, "config", config, allow_masked=bool(job_id))
    tgt = _reload(cl, run, "target", target, allow_masked=bool(job_id))
    recorded_limit = None if tags.get(tracking.TAG_LIMIT, "none") == "none" else int(tags[tracking.TAG_LIMIT])
    opts = options or RunOptions()
    if opts.limit is not None and opts.limit != recorded_limit:
        raise TrackingError(
            f"MLflow run {run.info.run_id} was started with limit {recorded_limit}; a resume must "
            f"use the same limit (got {opts.limit})"
        )
    par = tags.get(tracking.TAG_PARALLELISM, "config")
    opts = dataclasses.replace(
        opts,
        limit=recorded_limit,
        parallelism=opts.parallelism or (int(par) if par.isdigit() else None),
        cache_dir=opts.cache_dir
        or (Path(tags[tracking.TAG_CACHE_DIR]) if tags.get(tracking.TAG_CACHE_DIR) else None),
    )
    be = _backend(backend_name, opts, backend_options)
    if not job_id:
        be.validate(cfg, tgt)  # e.g. an api_key_env variable not set in this shell fails here, clearly
    datasets = describe_datasets(
        cfg, tgt, backend=backend_name, limit=opts.limit, parallelism=opts.parallelism
    )
    if _combined_digest(datasets) != tags.get(tracking.TAG_DATASET_DIGEST):
        raise TrackingError(
            f"the dataset of MLflow run {run.info.run_id} changed since the run started (digest "
            f"{_combined_digest(datasets)} vs {tags.get(tracking.TAG_DATASET_DIGEST)}); start a new "
            "evaluation instead of resuming"
        )
    s = _Settings(backend_name, be, opts, _trace_samples(trace_samples))
    tracker = RunTracker.reopen(
        cl, run, secrets=tracking.collect_secrets(cfg, tgt), n_tasks=len(cfg.tasks or {})
    )
    job = _Job(tgt, datasets, _identity(cfg, tgt, datasets, backend_name, opts.limit))
    result = _execute(
        tracker,
        s,
        cfg,
        job,
        existing_params=run.data.params,
        setup_done=tags.get(tracking.TAG_SETUP) == "true",
        attach_job_id=job_id,
    )
    return _Outcome(result, tracker.run_id, False, tracker.model_id)


def resume(
    run_id: str,
    *,
    tracking_uri: str | None = None,
    config: ConfigLike | None = None,
    target: TargetLike | Sequence[TargetLike] | None = None,
    options: RunOptions | None = None,
    trace_samples: int | None = None,
    backend_options: dict[str, Any] | None = None,
) -> Evaluation:
    """Continue an interrupted run (left RUNNING by a killed process, or FAILED/KILLED) in place.

    Config and target are re-read from the run's artifacts; keys come from their ``api_key_env``
    variables, or pass ``config=``/``target=`` when the originals held literal keys. A parent run
    resumes each unfinished child and then records the comparison. A FINISHED run is returned as is.
    """
    from mlflow_nemo_judge import tracking as trk

    with trk.tracking_scope(tracking_uri):
        cl = trk.client(tracking_uri)
        run = trk.get_run(cl, run_id)
        tags = run.data.tags
        if trk.TAG_CONFIG_SHA not in tags:
            raise TrackingError(
                f"MLflow run {run_id} was not made by mlflow-nemo-judge (no {trk.TAG_CONFIG_SHA} tag)"
            )
        exp_id = run.info.experiment_id
        if tags.get(trk.TAG_ROLE) == "parent":
            return _resume_parent(
                cl, run, config=config, targets=target, options=options, trace_samples=trace_samples
            )
        if isinstance(target, (list, tuple)):
            if len(target) != 1:
                raise TrackingError(f"MLflow run {run_id} evaluated one target; pass one target=")
            target = target[0]
        o = _resume_run(
            cl,
            run,
            config=config,
            target=target,
            options=options,
            trace_samples=trace_samples,
            backend_options=backend_options,
        )
        return Evaluation([o.result], [o.run_id], tags.get("mlflow.parentRunId"), exp_id, [o.reused])


def attach(
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

    with trk.tracking_scope(tracking_uri):
        cl = trk.client(tracking_uri)
        exp_ids = [e.experiment_id for e in cl.search_experiments()]
        runs = (
            list(
                cl.search_runs(
                    exp_ids,
                    f"tags.`{trk.TAG_JOB_ID}` = {trk.quote(job_id)}",
                    max_results=1,
                    order_by=["attributes.start_time DESC"],
                )
            )
            if exp_ids
            else []
        )
    if runs:
        return resume(
            runs[0].info.run_id,
            tracking_uri=tracking_uri,
            trace_samples=trace_samples,
            backend_options=backend_options,
        )
    be = _backend("nemo", RunOptions(), backend_options)
    result = be.attach(job_id)  # type: ignore[attr-defined]
    return Evaluation([result], [], None, None, [False])


def _resume_parent(
    cl: Any, prun: Any, *, config: Any, targets: Any, options: RunOptions | None, trace_samples: int | None
) -> Evaluation:
    pid, exp_id = prun.info.run_id, prun.info.experiment_id
    docs = tracking.download_json(cl, pid, tracking.ART_TARGETS)
    if not isinstance(docs, list):
        raise TrackingError(
            f"MLflow run {pid} has no {tracking.ART_TARGETS}; cannot tell which targets it evaluated"
        )
    if prun.info.status == "FINISHED":
        finished = _children(cl, exp_id, pid)
        found = [_reuse(cl, finished[sha]) if (sha := sha256_json(d)) in finished else None for d in docs]
        outs = [f for f in found if f is not None]  # in the order the targets were given
        return Evaluation([o.result for o in outs], [o.run_id for o in outs], pid, exp_id, [True] * len(outs))
    cfg = _reload(cl, prun, "config", config)
    given = {t.sha256(): t for t in (_targets(targets) if targets is not None else [])}
    kids = _children(cl, exp_id, pid, status=None)
    opts = options or RunOptions()
    recorded_limit = (
        None
        if prun.data.tags.get(tracking.TAG_LIMIT, "none") == "none"
        else int(prun.data.tags[tracking.TAG_LIMIT])
    )
    opts = dataclasses.replace(opts, limit=recorded_limit)
    backend_name = prun.data.tags.get(tracking.TAG_BACKEND, "local")
    parent = RunTracker.reopen(cl, prun, secrets=tracking.collect_secrets(cfg, *given.values()))
    names: list[str] = []
    outcomes: list[_Outcome] = []
    with _ends_run(parent):
        for doc in docs:
            sha = sha256_json(doc)
            tgt_given = given.get(sha)
            if sha in kids:
                o = _resume_run(
                    cl, kids[sha], config=cfg, target=tgt_given, options=opts, trace_samples=trace_samples
                )
                names.append(kids[sha].data.tags.get(tracking.TAG_TARGET, sha[:12]))
            else:
                if tgt_given is None and masked_paths(doc):
                    raise TrackingError(
                        f"target {doc.get('name') or sha[:12]} of MLflow run {pid} held literal secrets; "
                        "pass the original targets (target=[...]) to resume"
                    )
                tgt = tgt_given or load_target(doc)
                be = _backend(backend_name, opts, None)
                be.validate(cfg, tgt)
                ds = describe_datasets(
                    cfg, tgt, backend=backend_name, limit=opts.limit, parallelism=opts.parallelism
                )
                s = _Settings(backend_name, be, opts, _trace_samples(trace_samples))
                o = _track_one(
                    cl,
                    exp_id,
                    s,
                    cfg,
                    _Job(tgt, ds, _identity(cfg, tgt, ds, backend_name, opts.limit)),
                    role="child",
                    parent_run_id=pid,
                    run_name=None,
                    force=True,
                )
                names.append(tgt.display_name)
            outcomes.append(o)
        _finish_parent(parent, outcomes, names)
    return Evaluation(
        [o.result for o in outcomes], [o.run_id for o in outcomes], pid, exp_id, [o.reused for o in outcomes]
    )


# ----------------------------------------------------------------------------------------- compare


def compare(
    experiment: str | None = None,
    *,
    run_ids: list[str] | None = None,
    metrics: list[str] | None = None,
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """Leaderboard: one row per evaluation run (target) with every score's mean, 95% CI and counts."""
    from mlflow_nemo_judge.compare import leaderboard

    return leaderboard(experiment, run_ids=run_ids, metrics=metrics, tracking_uri=tracking_uri)


def paired(
    run_a: str, run_b: str, *, metrics: list[str] | None = None, tracking_uri: str | None = None
) -> pd.DataFrame:
    """Per score, the paired difference ``b − a`` over shared items: mean, 95% CI, t-test p-value."""
    from mlflow_nemo_judge.compare import paired as _paired

    return _paired(run_a, run_b, metrics=metrics, tracking_uri=tracking_uri)
