"""The ``tool-calling`` metric: did the model call the expected functions, with the expected arguments?

Two scores per row, each 0 or 1 (NeMo's names): ``function_name_accuracy`` and
``function_name_and_args_accuracy``. Params: ``tool_calls_ground_truth``, a template that renders to a
JSON list of OpenAI-style calls ``[{"function": {"name": ..., "arguments": {...}}}, ...]`` (NVIDIA's
examples write ``"{{ item.tool_calls | tojson }}"``). The model's calls are read from
``sample.response.choices[0].message.tool_calls``, whose ``function.arguments`` arrive as a JSON string.

Semantics, as NVIDIA documents and implements them (the sources):

* NeMo Evaluator v1 docs, custom evaluations (``evaluate/evaluation-custom.html``): the metric type, its
  ``tool_calls_ground_truth`` param and score names; CSV data is not supported for it (reference §8).
* NeMo microservices docs, Agentic Evaluation Metrics (``evaluator/metrics/agentic.html``, "Tool
  Calling (template)"): two scores, the order of tool calls is ignored (parallel calls), the comparison
  is case-sensitive, and no judge LLM is needed.
* The successor platform's implementation of the same metric (``nemo_platform.beta.evaluator``,
  ``ToolCallingMetric``), read for the details the docs leave open, re-implemented here:
  names match when the *sets* of ground-truth and predicted function names are equal (so order and
  repeats do not count); arguments match when, for every ground-truth name, the predicted call of that
  name (the last one, if repeated) has ``json.loads(arguments)`` equal to the ground truth's
  ``arguments`` (a missing ``arguments`` counts as ``{}``); a name mismatch makes the args score 0; a
  predicted ``arguments`` that is not valid JSON makes the args score NaN (the name score stands); a
  response without ``tool_calls`` (or ``null``) is a response with no calls; the response is
  ``sample.response``, or the row's own ``response`` field when there was no model call (offline data).
* GenerativeAIExamples' end-to-end tool-calling notebook (``nemo/data-flywheel/tool-calling``) and the
  data-flywheel blueprint (``src/lib/nemo/evaluator.py``): the config shapes, ground-truth arguments
  as JSON objects, and an extra judge ``model`` in the params.

Ground-truth ``arguments`` are compared as written: they must be JSON objects, as in NVIDIA's data (a
JSON *string* there never equals the model's parsed arguments, as on NeMo). The judge ``model`` that
the data-flywheel blueprint passes is accepted and never called: both scores are computed, not judged
(the docs list Tool Calling as needing no judge; the blueprint's own docs call both scores
"Programmatic"); the plan warns that it is ignored.

A row whose ground truth does not render to such a list, or whose response has no ``choices[0].message``,
is that row's error: both scores NaN with the reason (NeMo raises on it), never a silent 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlflow_nemo_judge.errors import NemoJudgeError
from mlflow_nemo_judge.results import NAN, MetricOutcome
from mlflow_nemo_judge.scoring.templating import render_value

NAME_SCORE = "function_name_accuracy"
ARGS_SCORE = "function_name_and_args_accuracy"
SCORE_NAMES = (NAME_SCORE, ARGS_SCORE)
GROUND_TRUTH = "tool_calls_ground_truth"


class ToolCallError(ValueError):
    """The ground truth or the response is not in the shape the metric reads (this row's error)."""


def ground_truth_calls(value: Any) -> dict[str, Any]:
    """``{name: arguments}`` of a rendered ground truth (a list, or JSON text of one)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ToolCallError(
                f"{GROUND_TRUTH} must render to a JSON list of tool calls, got text {value[:80]!r}"
            ) from None
    if not isinstance(value, list):
        raise ToolCallError(f"{GROUND_TRUTH} must render to a list of tool calls, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for i, call in enumerate(value):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or "arguments" not in fn:
            raise ToolCallError(
                f"{GROUND_TRUTH}[{i}] must be {{'function': {{'name': <text>, 'arguments': {{...}}}}}}"
            )
        out[fn["name"]] = fn["arguments"]
    return out


def response_tool_calls(response: Any) -> list[Any]:
    """The calls in ``choices[0].message.tool_calls`` of an OpenAI chat response (none: ``[]``)."""
    choices = response.get("choices") if isinstance(response, Mapping) else None
    if not isinstance(choices, list) or not choices:
        raise ToolCallError("the response has no choices (tool-calling needs a chat-completion response)")
    message = choices[0].get("message") if isinstance(choices[0], Mapping) else None
    if not isinstance(message, Mapping):
        raise ToolCallError("the response has no choices[0].message (tool-calling needs a chat model)")
    calls = message.get("tool_calls")
    return list(calls) if isinstance(calls, list) else []


def compare(expected: Mapping[str, Any], calls: list[Any]) -> tuple[float, float, str | None]:
    """(name score, args score, why the args score is NaN) for the ground truth and the model's calls."""
    names: set[str] = set()  # every named call counts for the names, whether its arguments parse or not
    predicted: dict[str, Any] = {}
    bad_args: str | None = None
    for call in calls:
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or "name" not in fn:
            continue  # a call without a function name names nothing (NeMo skips it too)
        names.add(str(fn["name"]))
        raw = fn.get("arguments")
        if raw is None:
            predicted[str(fn["name"])] = {}
            continue
        try:
            if not isinstance(raw, str):
                raise TypeError(f"arguments must be a JSON string, got {type(raw).__name__}")
            predicted[str(fn["name"])] = json.loads(raw)
        except (ValueError, TypeError) as exc:
            bad_args = bad_args or f"the model's arguments for {fn['name']!r} are not JSON: {exc}"
    names_match = set(expected) == names
    name_score = 1.0 if names_match else 0.0
    if bad_args is not None:
        return name_score, NAN, bad_args
    if not names_match:
        return name_score, 0.0, None
    args_match = all(predicted.get(name) == args for name, args in expected.items())
    return name_score, 1.0 if args_match else 0.0, None


def score(params: Mapping[str, Any], ctx: Mapping[str, Any], path: str) -> MetricOutcome:
    """Both scores for one row (``ctx`` = the template context, with ``sample``)."""
    try:
        rendered = render_value(params[GROUND_TRUTH], ctx, f"{path}.{GROUND_TRUTH}")
        expected = ground_truth_calls(rendered)
        sample = ctx.get("sample")
        response = sample.get("response") if isinstance(sample, Mapping) else None
        if not response:
            item = ctx.get("item")
            response = item.get("response") if isinstance(item, Mapping) else None
        if not response:
            raise ToolCallError("no model response to read tool calls from (sample.response, item.response)")
        calls = response_tool_calls(response)
    except (NemoJudgeError, ToolCallError) as exc:
        return MetricOutcome(scores={n: NAN for n in SCORE_NAMES}, error=str(exc))
    name_score, args_score, why = compare(expected, calls)
    return MetricOutcome(scores={NAME_SCORE: name_score, ARGS_SCORE: args_score}, error=why)
