"""Every judgment of one ``llm-judge`` metric on one sample — each (judge, repeat) of its reliability
plan — and the headline score they reduce to; plus the row's human labels.

The judgments of a sample are sent at once through the run's one ``OpenAIClient`` (its semaphore is the
concurrency bound, as for every other call). Repeat ``r`` carries ``seed + r`` (and the declared
``temperature``) in its request body, which is what the response cache keys on: a repeat is never
served another repeat's cached reply, and a rerun of the same config is served its own.

Headline (``MetricOutcome.scores``) per score: each judge's repeats reduced with the metric's reducer,
then the judges reduced with the same reducer, NaN judgments excluded (all NaN → NaN). Reducers:

- ``mean``;
- ``median`` of the finite values (an even count → the mean of the two middle values);
- ``majority``: the most frequent value; a tie between modes → the median of the tied modes (for two
  tied modes, their mean — so 2 × "3" and 2 × "4" give 3.5, said plainly rather than picking one).

A metric judged once per sample (one judge, one repeat, no seed or temperature declared) takes exactly
today's path: ``run_judge``, the same request body, the same record.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from mlflow_nemo_judge.http.openai import OpenAIClient
from mlflow_nemo_judge.plan_metrics import JudgeSpec, MetricPlan
from mlflow_nemo_judge.results import NAN, Judgment, MetricOutcome, SampleRecord
from mlflow_nemo_judge.scoring.judge import RenderMemo, run_judge

__all__ = ["headline", "human_labels", "reduce_values", "run_judgments", "set_human_labels"]

T = TypeVar("T")


def reduce_values(values: Sequence[float], reducer: str) -> float:
    """``values`` reduced by ``reducer`` (mean | median | majority), NaNs excluded; all NaN → NaN."""
    vals = [float(v) for v in values if math.isfinite(v)]
    if not vals:
        return NAN
    if reducer == "mean":
        return math.fsum(vals) / len(vals)
    if reducer == "median":
        return float(statistics.median(vals))
    if reducer == "majority":
        counts = Counter(vals)
        top = max(counts.values())
        return float(statistics.median(sorted(v for v, c in counts.items() if c == top)))
    raise ValueError(f"unknown reducer {reducer!r}")


def headline(
    score_names: Sequence[str], judgments: Sequence[Judgment], reducer: str
) -> tuple[dict[str, float], str | None]:
    """The headline scores of ``judgments`` (per judge over repeats, then over judges) and the error:
    None when every headline score is finite, else the judgments' reasons joined."""
    by_judge: dict[str, list[Judgment]] = {}
    for j in judgments:
        by_judge.setdefault(j.judge, []).append(j)
    scores: dict[str, float] = {}
    for s in score_names:
        per_judge = [reduce_values([j.scores.get(s, NAN) for j in js], reducer) for js in by_judge.values()]
        scores[s] = reduce_values(per_judge, reducer)
    if all(math.isfinite(v) for v in scores.values()):
        return scores, None
    reasons: list[str] = []
    for j in judgments:
        if j.error:
            reason = f"{j.judge} r{j.repeat + 1}: {j.error}"
            if reason not in reasons:
                reasons.append(reason)
    return scores, "; ".join(reasons) or "no judgment gave a score"


async def _all_or_cancel(calls: Sequence[Awaitable[T]]) -> list[T]:
    """``gather`` that cancels the other calls when one raises (``EndpointUnhealthy`` stops the run:
    the sibling judgments must not keep calling), re-raising that exception unchanged."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        pending = [t for t in tasks if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _temperature(judge: JudgeSpec, override: float | None) -> float | None:
    """The temperature the request carried: the declared one, else the judge's own (template first, as
    the body is built), else None (the server's default)."""
    if override is not None:
        return override
    value = judge.template.get("temperature", judge.inference.get("temperature"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


async def run_judgments(
    metric: MetricPlan, ctx: Mapping[str, Any], client: OpenAIClient, memo: RenderMemo | None = None
) -> MetricOutcome:
    """Every judgment of ``metric`` on one sample, and their headline (see the module docstring)."""
    rp = metric.reliability
    if rp is None or (not rp.multi and rp.seed_for(0) is None and rp.temperature is None):
        return await run_judge(metric, ctx, client, memo)
    plan: list[tuple[str, JudgeSpec, int, dict[str, Any]]] = []
    for label, spec in rp.judges:
        for r in range(rp.repeats):
            overrides: dict[str, Any] = {}
            if (seed := rp.seed_for(r)) is not None:
                overrides["seed"] = seed
            if rp.temperature is not None:
                overrides["temperature"] = rp.temperature
            plan.append((label, spec, r, overrides))
    outcomes = await _all_or_cancel(
        [run_judge(metric, ctx, client, memo, judge=spec, body_overrides=o) for _, spec, _, o in plan]
    )
    if not rp.multi:
        return outcomes[0]
    judgments = [
        Judgment(
            judge=label,
            repeat=r,
            scores=out.scores,
            raw=out.raw,
            error=out.error,
            timing=out.timing,
            usage=out.usage,
            seed=o.get("seed"),
            temperature=_temperature(spec, rp.temperature),
        )
        for (label, spec, r, o), out in zip(plan, outcomes, strict=True)
    ]
    scores, error = headline(metric.score_names, judgments, rp.reducer)
    first = outcomes[0]
    return MetricOutcome(
        scores=scores,
        raw=first.raw,
        error=error,
        timing=first.timing,
        usage=first.usage,
        judgments=judgments,
    )


def human_labels(metric: MetricPlan, row: Mapping[str, Any]) -> dict[str, float]:
    """Score → the row's human label, converted like a judge's score of that type; NaN when the cell is
    missing, empty, or not a number / bool of that type. Empty when the metric declares no labels."""
    from mlflow_nemo_judge.scoring.parsing import convert_value

    rp = metric.reliability
    if rp is None or not rp.human_labels:
        return {}
    types = rp.settings.score_types
    out: dict[str, float] = {}
    for score, column in rp.human_labels.items():
        cell = row.get(column)
        if isinstance(cell, str) and not cell.strip():
            cell = None
        ok = isinstance(cell, (str, int, float, bool))
        out[score] = convert_value(cell, types.get(score, "float")).value if ok else NAN
    return out


def set_human_labels(metrics: Sequence[MetricPlan], row: Mapping[str, Any], rec: SampleRecord) -> None:
    """Fill ``MetricOutcome.human`` of ``rec`` for every metric that declares human label columns."""
    for m in metrics:
        out = rec.metrics.get(m.name)
        if out is not None and (labels := human_labels(m, row)):
            out.human = labels
