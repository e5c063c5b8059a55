"""Compute one metric for one sample: judge calls and parsing, or the simple reference metrics.

A judge call that fails (after the client's retries), a template that does not render for the row, or
output that does not parse yields NaN with the reason (and the raw text) kept; nothing is coerced to 0.
One policy for target, judge and simple metrics: a row's own failure is that row's error, never an abort.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from mlflow_nemo_judge.errors import EndpointError, EndpointUnhealthy, NemoJudgeError
from mlflow_nemo_judge.http.openai import Endpoint, OpenAIClient
from mlflow_nemo_judge.plan_metrics import JudgeSpec, MetricPlan
from mlflow_nemo_judge.results import NAN, MetricOutcome
from mlflow_nemo_judge.scoring.templating import render_value

# Per-sample memo of rendered template strings: (source, key) -> rendered text.
RenderMemo = dict[tuple[str, "str | None"], str]


def _render_memo(obj: Any, ctx: Mapping[str, Any], path: str, key: str | None, memo: RenderMemo) -> Any:
    """``render_value`` with string leaves memoised per sample.

    Judges of one sample usually share their user prompt (the seed config's two judges render the same
    ``Full Consult: … Summary: …`` text), so the second render is a dict lookup. Only string results are
    memoised; a leaf that renders to a JSON structure is rendered afresh so no two bodies share it.
    """
    if isinstance(obj, str):
        mk = (obj, key)
        hit = memo.get(mk)
        if hit is not None:
            return hit
        out = render_value(obj, ctx, path, key)
        if isinstance(out, str):
            memo[mk] = out
        return out
    if isinstance(obj, dict):
        return {k: _render_memo(v, ctx, f"{path}.{k}", str(k), memo) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_render_memo(v, ctx, f"{path}[{i}]", key, memo) for i, v in enumerate(obj)]
    return render_value(obj, ctx, path, key)


def judge_request(
    metric: MetricPlan,
    ctx: Mapping[str, Any],
    memo: RenderMemo | None = None,
    judge: JudgeSpec | None = None,
) -> dict[str, Any]:
    """The judge request body (without ``model``): rendered template + judge inference params.

    ``memo`` (one dict per sample, shared by that sample's judges) saves re-rendering identical strings.
    ``judge`` is the judge to ask instead of ``metric.judge`` (a panel member: its own system prompt and
    inference params, the metric's template).
    """
    judge = judge or metric.judge
    assert judge is not None
    tpath = f"{metric.path}.params.template"
    body = (
        render_value(judge.template, ctx, tpath)
        if memo is None
        else _render_memo(judge.template, ctx, tpath, None, memo)
    )
    if judge.system_prompt and isinstance(body.get("messages"), list):
        # NeMo's prompt.system_prompt (e.g. "detailed thinking on") goes first, before the template's own.
        body["messages"] = [{"role": "system", "content": judge.system_prompt}, *body["messages"]]
    for k, v in judge.inference.items():
        body.setdefault(k, v)
    return dict(body)


async def run_judge(
    metric: MetricPlan,
    ctx: Mapping[str, Any],
    client: OpenAIClient,
    memo: RenderMemo | None = None,
    *,
    judge: JudgeSpec | None = None,
    body_overrides: Mapping[str, Any] | None = None,
) -> MetricOutcome:
    """One judge call of ``metric`` (by ``judge``, default ``metric.judge``) on one sample.

    ``body_overrides`` are set in the request body last (a repeat's ``seed``/``temperature``): they are
    part of the body, hence of the response cache key, so one repeat is never served another's reply.
    """
    from mlflow_nemo_judge.scoring.parsing import parse_score, strip_reasoning

    judge = judge or metric.judge
    assert judge is not None
    try:
        body = judge_request(metric, ctx, memo, judge)
        body.update(body_overrides or {})
    except NemoJudgeError as exc:  # the judge template does not render for this row: this row's error
        return MetricOutcome(scores={s.name: NAN for s in metric.scores}, error=f"judge template: {exc}")
    endpoint = Endpoint(
        url=judge.endpoint.url,
        model_id=judge.endpoint.model_id,
        api_key=judge.api_key,
        headers=judge.endpoint.headers,
        max_concurrency=judge.endpoint.max_concurrency,
    )
    started = time.time_ns()
    try:
        result = await client.call(
            endpoint, body, kind=judge.kind, timeout=judge.timeout, max_retries=judge.max_retries
        )
    except EndpointUnhealthy:
        raise  # a wrong key, URL or model id, or a dead endpoint: stop rather than NaN every sample
    except EndpointError as exc:
        return MetricOutcome(
            scores={s.name: NAN for s in metric.scores}, raw=None, error=f"judge call failed: {exc}"
        )
    raw = result.text
    text, reason_err = strip_reasoning(
        raw, judge.end_token, include_if_not_finished=judge.include_if_not_finished
    )
    scores: dict[str, float] = {}
    errors: list[str] = []
    if reason_err:
        scores = {s.name: NAN for s in metric.scores}
        errors.append(reason_err)
    else:
        for s in metric.scores:
            parsed = parse_score(text, s.parser, s.type)
            scores[s.name] = parsed.value
            if parsed.error:
                errors.append(f"{s.name}: {parsed.error}" if len(metric.scores) > 1 else parsed.error)
    if not raw:
        errors.append(f"empty judge output (finish_reason={result.finish_reason})")
    usage = result.raw.get("usage")
    return MetricOutcome(
        scores=scores,
        raw=raw,
        error="; ".join(errors) or None,
        timing=(started, time.time_ns()),  # measured, for the judge's trace span
        usage=usage if isinstance(usage, dict) else None,
    )


def run_simple(metric: MetricPlan, ctx: Mapping[str, Any], output_text: str | None) -> MetricOutcome:
    """string-check, number-check, em, f1, bleu (sentence; corpus is aggregated later), rouge,
    tool-calling (reads ``sample.response``, not the output text)."""
    from mlflow_nemo_judge.scoring import builtin as scorers

    mtype, params, path = metric.type, metric.params, f"{metric.path}.params"
    if mtype == "tool-calling":
        from mlflow_nemo_judge.scoring.tool_calling import score

        return score(params, ctx, path)
    try:
        if mtype == "string-check":
            left, op, right = render_value(params["check"], ctx, f"{path}.check")
            return MetricOutcome(
                scores={"string-check": scorers.string_check(str(left), str(op), str(right))}
            )
        if mtype == "number-check":
            rendered = render_value(params["check"], ctx, f"{path}.check")
            value, err = scorers.number_check(rendered)
            return MetricOutcome(scores={"number-check": value}, error=err)
        candidate = _candidate(params, ctx, path, output_text)
        if candidate is None:
            return MetricOutcome(
                scores={n: NAN for n in metric.score_names},
                error="no candidate text (the target produced no output)",
            )
        if mtype == "bleu":
            refs = [str(r) for r in render_value(params["references"], ctx, f"{path}.references")]
            # 'corpus' has no per-sample value; it is computed over all samples at aggregation.
            return MetricOutcome(
                scores={"sentence": scorers.bleu_sentence(candidate, refs)}, corpus_item=(candidate, refs)
            )
        reference = str(render_value(params["reference"], ctx, f"{path}.reference"))
        if mtype == "em":
            return MetricOutcome(scores={"em": scorers.exact_match(candidate, reference)})
        if mtype == "f1":
            return MetricOutcome(scores={"f1": scorers.token_f1(candidate, reference)})
        if mtype == "rouge":
            return MetricOutcome(scores=dict(scorers.rouge_scores(candidate, reference)))
    except NemoJudgeError as exc:
        return MetricOutcome(scores={n: NAN for n in metric.score_names}, error=str(exc))
    raise AssertionError(f"unhandled metric type {mtype}")  # plan validation makes this unreachable


def _candidate(
    params: Mapping[str, Any], ctx: Mapping[str, Any], path: str, output_text: str | None
) -> str | None:
    if isinstance(params.get("candidate"), str):
        return str(render_value(params["candidate"], ctx, f"{path}.candidate"))
    return output_text
