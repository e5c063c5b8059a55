"""Position-swapped pairwise judging of the targets' outputs (``mlflow_nemo_judge.pairwise``).

For each task with a pairwise block, each pair of targets ``(i, j)`` with ``i < j`` and each item both
targets answered (non-empty output; aligned on (item id, occurrence) as ``compare.pairs`` does), the
pairwise judge is asked twice at once: with ``output_a`` = i's and ``output_b`` = j's output, and with
the two swapped. ``scoring.ranking.combine_orders`` turns the two verdicts into i's outcome: the same
winner both times is a win or a loss, a disagreement is a tie and counts as position-inconsistent, and a
verdict that did not parse (or a call that failed) leaves the item unjudged, with the reason kept.

Memory stays bounded whatever the dataset size: the targets' outputs are indexed in a temporary sqlite
file (not a dict of every text), items are judged through a window of ``4 × parallelism`` whose slots
are released when an item's judgments are *written* (in order, to ``judgments.jsonl`` in a temp folder
the report owns), and only small records stay in memory (per item and pair: the outcome, for the
Bradley–Terry bootstrap over items).

Calls go through :class:`~mlflow_nemo_judge.http.openai.OpenAIClient`: the judges' retries, endpoint
health, response cache and secret redaction. An endpoint that refuses us or keeps failing stops the
stage with :class:`~mlflow_nemo_judge.errors.EvaluationError`, as the engine does.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mlflow_nemo_judge.config import EvalConfig
from mlflow_nemo_judge.errors import EndpointError, EndpointUnhealthy, EvaluationError, NemoJudgeError
from mlflow_nemo_judge.http.openai import Endpoint, Kind, OpenAIClient
from mlflow_nemo_judge.reliability.pairwise_data import OutputIndex, Tally, finish
from mlflow_nemo_judge.reliability.pairwise_report import PairwiseReport
from mlflow_nemo_judge.results import EvalResult, Usage

__all__ = ["PairwiseSpec", "judge_pairwise", "pairwise_specs", "parse_verdict"]

# (task, pairs × items done, total)
ProgressCallback = Callable[[str, int, int], None]
_INFLIGHT_FACTOR = 4  # items in flight per unit of parallelism (two calls each), as in the engine
_WRAPPERS = " \t\r\n\"'`*_()[]{}.,;:!?"  # around a bare verdict: "**A**", "(B).", "'TIE'"
BOOTSTRAP_REPS = 1000


@dataclass(frozen=True)
class PairwiseSpec:
    """One task's pairwise judge, resolved: where to send, what to send, how to read the verdict."""

    task: str
    path: str  # the block's config path, for template errors
    endpoint: Endpoint
    template: dict[str, Any]
    inference: dict[str, Any]
    system_prompt: str | None
    end_token: str | None
    timeout: float | None
    max_retries: int | None
    kind: Kind
    pattern: str
    ties: frozenset[str]
    include_if_not_finished: bool | None = None  # reasoning_params, as for llm-judge metrics


def pairwise_specs(config: EvalConfig) -> list[PairwiseSpec]:
    """The config's pairwise judges, with API keys resolved (``SecretError`` when an env var is unset)."""
    from mlflow_nemo_judge.config.extension import BLOCK, pairwise_tasks
    from mlflow_nemo_judge.plan_metrics import model_judge, request_template

    out: list[PairwiseSpec] = []
    for task, pw in pairwise_tasks(config).items():
        path = f"{BLOCK}.pairwise.{task}"
        template = request_template(pw.template, f"{path}.template", "a pairwise judge template")
        judge = model_judge(pw.model, f"{path}.model", template, resolve_secrets=True)
        ep = judge.endpoint
        out.append(
            PairwiseSpec(
                task=task,
                path=path,
                endpoint=Endpoint(
                    url=ep.url,
                    model_id=ep.model_id,
                    api_key=judge.api_key,
                    headers=ep.headers,
                    max_concurrency=ep.max_concurrency,
                ),
                template=judge.template,
                # the block's own inference_params win over the model's prompt.inference_params
                inference={
                    **judge.inference,
                    **(pw.inference_params.to_dict() if pw.inference_params else {}),
                },
                system_prompt=judge.system_prompt,
                end_token=judge.end_token,
                timeout=judge.timeout,
                max_retries=judge.max_retries,
                kind=judge.kind,
                pattern=pw.parser.pattern,
                ties=frozenset(pw.ties),
                include_if_not_finished=judge.include_if_not_finished,
            )
        )
    return out


def _require_a_verdict(tally: Tally) -> None:
    """A pairwise stage whose judge never gave a usable verdict (a format it never follows, a template
    that fails on every item) measured nothing: it fails like an evaluation that did, rather than
    leaving a parent run with nothing but ``unjudged`` counts. Some unjudged items are results; all is
    not."""
    asked = sum(p.unjudged for p in tally.pairs.values())
    if tally.outcomes or asked == 0:
        return
    reasons = [r for p in tally.pairs.values() for r in p.reasons]
    raise EvaluationError(
        f"pairwise judging measured nothing: no verdict for any of the {asked} item(s) of task "
        f"{tally.task!r}; the first reason: {reasons[0] if reasons else 'unknown'}"
    )


def parse_verdict(text: str | None, spec: PairwiseSpec) -> tuple[str | None, str | None]:
    """``("A" | "B" | "TIE", None)`` or ``(None, reason)``: the block's regex, first capture group, its
    value compared case-insensitively (the pattern itself applies as written; add ``(?i)`` to it for a
    case-insensitive match)."""
    from mlflow_nemo_judge.scoring.parsing import (
        REGEX_TIMEOUT_S,
        _excerpt,
        compile_regex,
        strip_reasoning,
        strip_think,
    )

    # Pairwise judging is this package's own (NeMo has none): it keeps stripping a leading <think> block
    # when no end_token is configured, where llm-judge metrics follow NeMo and leave the text alone.
    body, err = (
        strip_reasoning(text, spec.end_token, include_if_not_finished=spec.include_if_not_finished)
        if spec.end_token
        else strip_think(text or "")
    )
    if err:
        return None, err
    if not body.strip():
        return None, "empty judge output"
    try:
        m = compile_regex(spec.pattern).search(body, timeout=REGEX_TIMEOUT_S)
    except TimeoutError:
        return None, f"regex timed out after {REGEX_TIMEOUT_S}s on a {len(body)}-character judge output"
    if m is None:
        return None, f"no match for pattern '{spec.pattern}' in judge output {_excerpt(body)}"
    group = m.group(1)
    word = (group or "").strip(_WRAPPERS).upper()
    if word in ("A", "B"):
        return word, None
    if word in spec.ties:
        return "TIE", None
    allowed = ", ".join(["A", "B", *sorted(spec.ties)])
    return None, f"verdict {_excerpt(group or '')} is none of {allowed}"


@dataclass
class _Order:
    verdict: str | None
    raw: str | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "raw": self.raw, "error": self.error}


async def _ask(
    client: OpenAIClient, spec: PairwiseSpec, row_ctx: dict[str, Any], out_a: str, out_b: str
) -> _Order:
    """One order: render, call, parse. A failure of this item alone is its error, never an abort."""
    from mlflow_nemo_judge.scoring.templating import render_value

    ctx = {**row_ctx, "output_a": out_a, "output_b": out_b}
    try:
        body = dict(render_value(spec.template, ctx, f"{spec.path}.template"))
    except NemoJudgeError as exc:
        return _Order(None, None, f"pairwise template: {exc}")
    if spec.system_prompt and isinstance(body.get("messages"), list):
        body["messages"] = [{"role": "system", "content": spec.system_prompt}, *body["messages"]]
    for k, v in spec.inference.items():
        body.setdefault(k, v)
    try:
        res = await client.call(
            spec.endpoint, body, kind=spec.kind, timeout=spec.timeout, max_retries=spec.max_retries
        )
    except EndpointUnhealthy:
        raise
    except EndpointError as exc:
        return _Order(None, None, f"judge call failed: {exc}")
    verdict, err = parse_verdict(res.text, spec)
    return _Order(verdict, res.text, err)


async def _run_task(
    spec: PairwiseSpec,
    labels: Sequence[str],
    outputs: OutputIndex,
    client: OpenAIClient,
    fh: IO[str],
    secrets: Sequence[str],
    parallelism: int,
    on_progress: ProgressCallback | None,
) -> Tally:
    from mlflow_nemo_judge.config.secrets import redact_text
    from mlflow_nemo_judge.scoring.ranking import combine_orders
    from mlflow_nemo_judge.scoring.templating import build_context

    tally = Tally(spec.task, spec.endpoint.model_id, labels)
    n = len(labels)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    total = sum(outputs.count(spec.task, i, j) for i, j in pairs)
    window = asyncio.Semaphore(max(1, parallelism * _INFLIGHT_FACTOR))
    pending: dict[int, tuple[int, int, tuple[str, int], int, _Order, _Order]] = {}
    next_seq, done = 0, 0
    inflight: set[asyncio.Task[None]] = set()
    fatal: list[BaseException] = []

    def write() -> None:
        # In order, so judgments.jsonl is deterministic; each write frees a window slot.
        nonlocal next_seq, done
        while next_seq in pending:
            i, j, key, index, first, second = pending.pop(next_seq)
            outcome, consistent = combine_orders(first.verdict, second.verdict)
            reason = None if outcome is not None else (first.error or second.error)
            if reason is not None:
                reason = redact_text(reason, secrets)  # kept in the report: no credential in it
            tally.add(i, j, key, outcome, consistent, reason)
            line = {
                "task": spec.task,
                "a": labels[i],
                "b": labels[j],
                "item_id": key[0],
                "occurrence": key[1],
                "index": index,
                "first": first.to_dict(),
                "second": second.to_dict(),
                "outcome": outcome,
                "consistent": consistent,
                "reason": reason,
            }
            # An endpoint's error text can quote a credential back: the temp file must not hold it.
            fh.write(redact_text(json.dumps(line, ensure_ascii=False), secrets) + "\n")
            next_seq += 1
            done += 1
            window.release()
            if on_progress is not None:
                on_progress(spec.task, done, total)

    async def judge(
        seq: int, i: int, j: int, key: tuple[str, int], index: int, oi: str, oj: str, row: dict[str, Any]
    ) -> None:
        ctx = build_context(row)
        # Both orders at once: first (A = i, B = j), second (A = j, B = i).
        first, second = await asyncio.gather(_ask(client, spec, ctx, oi, oj), _ask(client, spec, ctx, oj, oi))
        pending[seq] = (i, j, key, index, first, second)
        write()

    def finished(t: asyncio.Task[None]) -> None:
        inflight.discard(t)
        exc = None if t.cancelled() else t.exception()
        if exc is not None:
            fatal.append(exc)
            # Its item is never written, so its window slot would never be freed: free it here, or the
            # loop below could wait on a full window forever instead of seeing the failure.
            window.release()

    seq = 0
    try:
        for i, j in pairs:
            for item_id, occ, index, oi, oj, row in outputs.pairs(spec.task, i, j):
                await window.acquire()
                if fatal:
                    break
                t = asyncio.ensure_future(judge(seq, i, j, (item_id, occ), index, oi, oj, row))
                inflight.add(t)
                t.add_done_callback(finished)
                seq += 1
                await asyncio.sleep(0)
            if fatal:
                break
        while inflight and not fatal:
            await asyncio.wait(set(inflight), return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for t in list(inflight):
            t.cancel()
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
    if fatal:
        raise fatal[0]
    return tally


async def judge_pairwise(
    config: EvalConfig,
    results: Sequence[EvalResult],
    labels: Sequence[str],
    *,
    http_client: Any = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    parallelism: int = 8,
    backoff_base: float = 0.5,
    backoff_max: float = 30.0,
    on_progress: ProgressCallback | None = None,
    bootstrap_reps: int = BOOTSTRAP_REPS,
    seed: int = 0,
) -> PairwiseReport | None:
    """Judge every pair of ``results`` (one per target, ``labels`` their metric-key labels) on every
    task with a pairwise block, both orders per item; None when the config has no pairwise block.

    ``http_client``: an ``httpx`` transport or ``AsyncClient`` to use (else one is made and closed);
    ``cache_dir``/``use_cache``: the response cache, as for a run. Raises ``EvaluationError`` when the
    pairwise judge's endpoint refuses us or keeps failing.
    """
    import httpx

    from mlflow_nemo_judge.config.secrets import collect
    from mlflow_nemo_judge.http.transport import make_http_transport

    specs = pairwise_specs(config)
    if not specs:
        return None
    if len(results) != len(labels):
        raise ValueError(f"{len(results)} results but {len(labels)} labels")
    if len(results) < 2:
        raise EvaluationError("pairwise judging needs two or more targets")
    secrets = collect(config)
    work = Path(tempfile.mkdtemp(prefix="nemo-judge-pairwise-"))
    report = PairwiseReport(tasks=[])
    report.own(work)  # the judgments stay as long as the report; the folder goes with it
    usage = Usage()
    cache = None
    if use_cache:
        from mlflow_nemo_judge.http.cache import ResponseCache

        cache = ResponseCache(cache_dir / "responses.sqlite" if cache_dir else None)
    # The run's own call settings (``params``), as the engine uses them for its judges.
    from mlflow_nemo_judge.plan import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT

    params = config.params
    timeout = float(params.request_timeout) if params and params.request_timeout else DEFAULT_TIMEOUT
    retries = DEFAULT_MAX_RETRIES if params is None or params.max_retries is None else int(params.max_retries)
    own_http = http_client is None
    http: Any = http_client or make_http_transport(
        parallelism, httpx.Timeout(timeout, connect=min(10.0, timeout))
    )
    outputs = OutputIndex(work / "outputs.sqlite")
    try:
        outputs.load(results, {s.task for s in specs})
        client = OpenAIClient(
            http,
            usage=usage,
            cache=cache,
            max_concurrency=parallelism,
            max_retries=retries,
            timeout=timeout,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
        )
        for spec in specs:
            path = work / f"{len(report.tasks)}-judgments.jsonl"
            with open(path, "w", encoding="utf-8") as fh:
                tally = await _run_task(spec, labels, outputs, client, fh, secrets, parallelism, on_progress)
            _require_a_verdict(tally)
            report.tasks.append(finish(tally, path, bootstrap_reps, seed))
    except EndpointUnhealthy as exc:
        raise EvaluationError(f"pairwise judging stopped: {exc}") from None
    finally:
        outputs.close()
        (work / "outputs.sqlite").unlink(missing_ok=True)  # the texts are no longer needed
        if own_http:
            await http.aclose()
        if cache is not None:
            cache.close()
    report.calls = usage.requests + usage.cache_hits
    return report
