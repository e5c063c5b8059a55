"""Local orchestration: stream rows, call the target, run judges, aggregate — with bounded concurrency.

Shape of the work: one coroutine per sample; the target call, then that sample's judge calls at once
(so judging starts the moment its output exists, not after a whole batch). HTTP concurrency is bounded
by the client's per-endpoint adaptive limits (``params.parallelism``, or a model's
``api_endpoint.max_concurrency``; see ``http.limits``). The samples in flight are bounded by a window of
``4 × parallelism`` whose slots are released when a record is *written* (in item order, to a JSONL spill
file), not when its sample finishes: one stalled sample holds new samples back instead of letting
finished records pile up, so memory is bounded by the window whatever the dataset size or the stalls.
Only the scores (floats) stay in memory for the statistics (:mod:`mlflow_nemo_judge.engine_aggregate`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mlflow_nemo_judge.config import EvalConfig, Target, load_config, load_target
from mlflow_nemo_judge.config.secrets import collect, redact_text
from mlflow_nemo_judge.engine_aggregate import TaskAggregator, group_scores, require_a_score
from mlflow_nemo_judge.errors import EndpointUnhealthy, EvaluationError, NemoJudgeError
from mlflow_nemo_judge.http.wire import has_tool_calls
from mlflow_nemo_judge.plan import Plan, TaskPlan, build_plan, cached_output_text, item_id
from mlflow_nemo_judge.results import NAN, EvalResult, MetricOutcome, MetricTree, SampleRecord, Usage
from mlflow_nemo_judge.scoring.templating import build_context, render_value

# (task name, samples done, samples total or None)
ProgressCallback = Callable[[str, int, "int | None"], None]
# Samples in flight per unit of parallelism: enough to keep every HTTP slot busy while some samples
# wait on their judges, few enough that memory does not grow with the dataset.
_INFLIGHT_FACTOR = 4


@dataclass
class RunOptions:
    """Knobs of a local run; the config's own ``params`` win where both set something."""

    cache: bool = True
    cache_dir: Path | None = None
    limit: int | None = None
    parallelism: int | None = None
    work_dir: Path | None = None
    progress_bar: bool | None = None  # None: only when stderr is a terminal
    on_progress: ProgressCallback | None = None
    on_record: Callable[[SampleRecord], None] | None = None  # each record, in item order, once written
    task_totals: dict[str, int] | None = None  # rows per task when already counted (the plan's data scan)
    http_client: Any = None  # an httpx.AsyncClient to use (tests inject MockTransport clients)
    # (task name, row index) -> a record kept from an earlier run (no model call), or None to compute
    # the row: what ``resume --retry-errors`` uses to re-run only the rows that errored.
    prior_records: Callable[[str, int], SampleRecord | None] | None = None
    # The client's retry backoff (seconds; see mlflow_nemo_judge.http.retry); tests make it small.
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    judge_repeats: int | None = None  # --judge-repeats: every llm-judge metric's repeats (plan_reliability)


class _Bar:
    """A terminal progress bar (tqdm, which huggingface_hub already brings) or nothing."""

    def __init__(self, enabled: bool | None) -> None:
        import sys

        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None

    def start(self, desc: str, total: int | None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True, leave=True)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _OrderedWriter:
    """Writes records in item order although samples finish out of order.

    The reorder buffer is bounded by the in-flight window: a sample's slot in the window is released
    when its record is *written* (not when it finishes), so however long one sample stalls, at most
    ``window`` records wait here and no new sample starts until the stalled one is written.
    """

    def __init__(
        self,
        fh: IO[str],
        agg: TaskAggregator,
        window: asyncio.Semaphore,
        secrets: list[str],
        on_record: Callable[[SampleRecord], None],
    ) -> None:
        self.fh, self.agg, self.window, self.secrets, self.on_record = fh, agg, window, secrets, on_record
        self.pending: dict[int, SampleRecord] = {}
        self.next = 0

    def push(self, rec: SampleRecord) -> None:
        self.pending[rec.index] = rec
        while self.next in self.pending:
            r = self.pending.pop(self.next)
            line = json.dumps(r.to_dict(), ensure_ascii=False)
            # An endpoint's error text can quote a header or URL credential back: the spill file is
            # a temp file, and a temp file must not hold a secret either.
            self.fh.write(redact_text(line, self.secrets) + "\n")
            self.agg.add(r)
            self.next += 1
            self.window.release()
            self.on_record(r)


class LocalEngine:
    def __init__(self, plan: Plan, client: Any, usage: Usage) -> None:
        from mlflow_nemo_judge.http.openai import Endpoint

        self.plan, self.client, self.usage = plan, client, usage
        self.first_error: str | None = None  # the first row's reason for a NaN, for "measured nothing"
        self.secrets = collect(plan.config, plan.target)
        ep = plan.target_endpoint
        self.target = (
            Endpoint(
                url=ep.url,
                model_id=ep.model_id,
                api_key=plan.target_api_key,
                headers=ep.headers,
                max_concurrency=ep.max_concurrency,
            )
            if ep is not None
            else None
        )

    def _endpoints(self, tp: TaskPlan) -> list[Any]:
        """The task's target and judge endpoints (``Endpoint`` / ``APIEndpoint``)."""
        judges = [m.judge.endpoint for m in tp.metrics if m.judge is not None]
        return [self.target, *judges] if self.target is not None and tp.calls_target else judges

    async def sample(self, tp: TaskPlan, index: int, row: dict[str, Any]) -> SampleRecord:
        """One row: render, call the target, judge. A failure of this row alone (a template that does not
        render for it, a failed or empty target call) is recorded in the record with its reason and every
        metric NaN; only :class:`EndpointUnhealthy` (an endpoint that refuses us or keeps failing) stops
        the run."""
        from mlflow_nemo_judge.scoring.judge import run_simple
        from mlflow_nemo_judge.scoring.judgments import run_judgments, set_human_labels

        rec = SampleRecord(task=tp.name, index=index, item_id=item_id(row, index), item=row)
        sample: dict[str, Any] | None = None
        reason = ""  # why every metric of this row is NaN, when the row has no target output
        try:
            if tp.calls_target:
                assert self.target is not None and tp.template is not None
                rendered = render_value(tp.template, build_context(row), f"{tp.path}.params.template")
                body = {**self.plan.inference_defaults, **rendered}
                rec.request = body
                started = time.time_ns()
                res = await self.client.call(self.target, body, kind=tp.kind)
                rec.timings["target"] = (started, time.time_ns())  # measured, for the trace span
                if isinstance(res.raw.get("usage"), dict):
                    rec.usage["target"] = res.raw["usage"]
                rec.output_text, rec.finish_reason = res.text, res.finish_reason
                sample = {"output_text": res.text or "", "response": res.raw}
                if (res.text is None or not res.text.strip()) and not has_tool_calls(res.raw):
                    # Judging "" would score a missing answer as a (bad) answer and move every mean;
                    # a reply of tool calls alone is an answer (the tool-calling metric reads them).
                    rec.target_error = reason = (
                        f"the target returned no content (finish_reason={res.finish_reason})"
                    )
            elif tp.cached_output:
                rec.output_text = cached_output_text(row)
                sample = {"output_text": rec.output_text or "", "response": {}}
                if not (rec.output_text or "").strip():
                    rec.target_error = reason = "the row's cached output is empty"
        except EndpointUnhealthy:
            raise
        except NemoJudgeError as exc:  # this row's call failed, or a template error on this row
            rec.target_error = str(exc)
            reason = f"no target output: {exc}"
        if rec.target_error is not None:
            for m in tp.metrics:
                rec.metrics[m.name] = MetricOutcome(
                    scores={s: NAN for s in m.score_names if s != "corpus"}, error=reason
                )
            set_human_labels(tp.metrics, row, rec)
            return rec
        ctx = build_context(row, sample)
        judges = [m for m in tp.metrics if m.judge is not None]
        memo: dict[Any, str] = {}
        results = await asyncio.gather(*(run_judgments(m, ctx, self.client, memo) for m in judges))
        by_name = dict(zip((m.name for m in judges), results, strict=True))
        for m in tp.metrics:
            rec.metrics[m.name] = (
                by_name[m.name] if m.name in by_name else run_simple(m, ctx, rec.output_text)
            )
        set_human_labels(tp.metrics, row, rec)
        return rec

    def restored(self, tp: TaskPlan, index: int, row: dict[str, Any], kept: SampleRecord) -> SampleRecord:
        """A record kept from an earlier run, at this row's index, with what the spill file does not
        store recomputed without a model call: corpus BLEU's (candidate, references) pair."""
        from mlflow_nemo_judge.scoring.judge import run_simple

        rec = kept if kept.index == index else dataclasses.replace(kept, index=index)
        for m in tp.metrics:
            out = rec.metrics.get(m.name)
            if m.type == "bleu" and out is not None and out.corpus_item is None and out.error is None:
                ctx = build_context(row, {"output_text": rec.output_text or "", "response": {}})
                out.corpus_item = run_simple(m, ctx, rec.output_text).corpus_item
        return rec

    async def run_task(self, tp: TaskPlan, fh: IO[str], bar: _Bar, opts: RunOptions) -> TaskAggregator:
        totals = opts.task_totals or {}
        total = totals[tp.name] if tp.name in totals else sum(1 for _ in tp.data.iter_rows(tp.limit))
        agg = TaskAggregator(tp)
        done = 0
        bar.start(f"{tp.name}", total)

        def on_record(rec: SampleRecord) -> None:
            nonlocal done
            done += 1
            self.usage.samples += 1
            if self.first_error is None:
                errors = (m.error for m in rec.metrics.values() if m.error)
                self.first_error = rec.target_error or next(errors, None)
            bar.update()
            if opts.on_record is not None:
                opts.on_record(rec)
            if opts.on_progress is not None:
                opts.on_progress(tp.name, done, total)

        # A model's own max_concurrency above parallelism needs samples in flight to match.
        widest = max([self.plan.parallelism, *(ep.max_concurrency or 0 for ep in self._endpoints(tp))])
        window = asyncio.Semaphore(max(1, widest * _INFLIGHT_FACTOR))
        writer = _OrderedWriter(fh, agg, window, self.secrets, on_record)
        inflight: set[asyncio.Task[SampleRecord]] = set()
        fatal: list[BaseException] = []

        def finished(t: asyncio.Task[SampleRecord]) -> None:
            inflight.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                fatal.append(exc)
            else:
                try:
                    writer.push(t.result())  # releases the window slot of every record it writes
                except BaseException as write_exc:  # a sink that fails (disk full, tracking) stops the run
                    fatal.append(write_exc)

        prior = opts.prior_records
        try:
            for index, row in enumerate(tp.data.iter_rows(tp.limit)):
                await window.acquire()
                if fatal:
                    break
                kept = prior(tp.name, index) if prior is not None else None
                if kept is not None:
                    # Kept as is, but through the writer like any record: in item order, aggregated,
                    # handed to on_record, and releasing the window slot just taken.
                    try:
                        writer.push(self.restored(tp, index, row, kept))
                    except BaseException as write_exc:
                        fatal.append(write_exc)
                        break
                    continue
                t = asyncio.ensure_future(self.sample(tp, index, row))
                inflight.add(t)
                t.add_done_callback(finished)
                # Let the new sample (and I/O callbacks already due) run now: starting a whole window
                # of samples without yielding would delay the first requests by all their rendering.
                await asyncio.sleep(0)
            while inflight and not fatal:
                await asyncio.wait(set(inflight), return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in list(inflight):
                t.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
            bar.close()
        if fatal:
            raise fatal[0]
        return agg


def pool_size(plan: Plan) -> int:
    """Connections the keep-alive pool may open: the sum of every endpoint's own limit (its
    ``max_concurrency``, else ``parallelism``). The per-endpoint limits (``http.limits``) are the only
    ceiling on calls in flight; a pool of ``parallelism`` would cap the target and the judges together
    (8 in all at the default, where each endpoint may take 8)."""
    limits: dict[tuple[str, str], int] = {}

    def add(ep: Any) -> None:
        if ep is not None:
            limits[(str(ep.url), str(ep.model_id))] = int(ep.max_concurrency or plan.parallelism)

    add(plan.target_endpoint)
    for tp in plan.tasks:
        for m in tp.metrics:
            if m.judge is not None:
                add(m.judge.endpoint)
            rel = getattr(m, "reliability", None)
            for _, member in getattr(rel, "judges", None) or []:
                add(getattr(member, "endpoint", None))
    return max(plan.parallelism, sum(limits.values()))


async def run_plan_async(plan: Plan, options: RunOptions | None = None) -> EvalResult:
    """Execute a validated plan against the endpoints; returns NeMo-shaped results.

    Records stream to ``options.on_record`` in item order as they are written. Without
    ``options.work_dir`` the engine makes its own work folder and owns it: it is removed if the run fails
    or is cancelled, and handed to the result (``EvalResult.own``) if it succeeds.
    """
    import httpx

    from mlflow_nemo_judge.http.openai import OpenAIClient
    from mlflow_nemo_judge.http.transport import make_http_transport

    opts = options or RunOptions()
    usage = Usage()
    own_dir = opts.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="nemo-judge-")) if opts.work_dir is None else opts.work_dir
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        samples_path = work_dir / "samples.jsonl"
        cache = None
        if opts.cache:
            from mlflow_nemo_judge.http.cache import ResponseCache

            cache = ResponseCache(opts.cache_dir / "responses.sqlite" if opts.cache_dir else None)
        own_http = opts.http_client is None
        http: Any = opts.http_client or make_http_transport(
            pool_size(plan), httpx.Timeout(plan.timeout, connect=min(10.0, plan.timeout))
        )
        start = time.perf_counter()
        aggs: list[TaskAggregator] = []
        bar = _Bar(opts.progress_bar)
        try:
            client = OpenAIClient(
                http,
                usage=usage,
                cache=cache,
                max_concurrency=plan.parallelism,
                max_retries=plan.max_retries,
                timeout=plan.timeout,
                backoff_base=opts.backoff_base,
                backoff_max=opts.backoff_max,
            )
            engine = LocalEngine(plan, client, usage)
            with open(samples_path, "w", encoding="utf-8") as fh:
                for tp in plan.tasks:
                    aggs.append(await engine.run_task(tp, fh, bar, opts))
            require_a_score(aggs, usage.samples, engine.first_error)
        except EndpointUnhealthy as exc:
            raise EvaluationError(f"evaluation stopped: {exc}") from None
        finally:
            usage.wall_seconds = time.perf_counter() - start
            if own_http:
                await http.aclose()
            if cache is not None:
                cache.close()
    except BaseException:
        if own_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise
    tasks: MetricTree = {a.tp.name: a.tree() for a in aggs}
    groups, subgroups = group_scores(plan, aggs)
    result = EvalResult(
        tasks=tasks,
        groups=groups,
        subgroups=subgroups,
        usage=usage,
        samples_path=samples_path,
        backend="local",
    )
    if own_dir:
        result.own(work_dir)
    return result


def run_local(
    config: EvalConfig | dict[str, Any] | str | Path,
    target: Target | dict[str, Any] | str | Path,
    options: RunOptions | None = None,
    **kwargs: Any,
) -> EvalResult:
    """Validate and run an evaluation with the local engine, untracked (blocking, also from a notebook
    cell). ``kwargs`` set ``RunOptions``."""
    from mlflow_nemo_judge.pipeline import run_sync

    opts = options or RunOptions(**kwargs)
    cfg = load_config(config)
    tgt = load_target(target)
    plan = build_plan(
        cfg, tgt, limit=opts.limit, parallelism=opts.parallelism, judge_repeats=opts.judge_repeats
    )
    return run_sync(run_plan_async(plan, opts))
