"""Plan each metric of a task for the local backend: its ``MetricPlan``, its judge, its score names.

The metric half of :func:`mlflow_nemo_judge.plan.build_plan`, which plans the tasks and their data.
Built here: an ``llm-judge`` metric's :class:`JudgeSpec` (endpoint given inline, API key from the
environment, call settings, Jinja syntax of its template; also every panel member's, through
``plan_reliability``) and its :class:`ScoreSpec` list, a simple metric's checked params (a
``tool-calling`` metric's without the judge ``model`` it never calls); and the check
that every MLflow metric key a task's scores will be logged under fits MLflow's limit, made before any
model call. ``kind_for`` and ``request_template`` are shared with the task's own request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mlflow_nemo_judge.config import (
    METRIC_TYPES_LOCAL,
    APIEndpoint,
    JudgeMetric,
    JudgeParams,
    Metric,
    MetricConfig,
    RequestTemplate,
)
from mlflow_nemo_judge.config.metrics import ToolCallingMetric
from mlflow_nemo_judge.errors import ConfigError, ConfigWarning
from mlflow_nemo_judge.scoring.templating import check_syntax

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.config import ModelRef
    from mlflow_nemo_judge.plan_reliability import ReliabilityPlan


@dataclass
class ScoreSpec:
    name: str
    type: str
    parser: dict[str, Any]  # the parser as written ({"type": "regex", "pattern": ...}), for parse_score


@dataclass
class JudgeSpec:
    endpoint: APIEndpoint
    api_key: str | None
    template: dict[str, Any]
    inference: dict[str, Any]
    system_prompt: str | None
    end_token: str | None
    timeout: float | None
    max_retries: int | None
    kind: Literal["chat", "completions"]
    # NeMo's reasoning_params.include_if_not_finished: None/True keeps a reply without end_token, False
    # makes it NaN (scoring.parsing.strip_reasoning).
    include_if_not_finished: bool | None = None


SCORE_NAMES: dict[str, tuple[str, ...]] = {
    "string-check": ("string-check",),
    "number-check": ("number-check",),
    "em": ("em",),
    "f1": ("f1",),
    "bleu": ("sentence", "corpus"),
    "rouge": ("rouge_1_score", "rouge_2_score", "rouge_3_score", "rouge_L_score"),
    "tool-calling": ("function_name_accuracy", "function_name_and_args_accuracy"),
}


@dataclass
class MetricPlan:
    name: str
    type: str
    path: str
    params: dict[str, Any]  # as written: the templates the scorers render
    judge: JudgeSpec | None = None
    scores: list[ScoreSpec] = field(default_factory=list)
    config: MetricConfig | None = None  # the typed metric, for consumers that want typed params
    # llm-judge: repeats, judge panel, human labels (``plan_reliability``); None for other metrics.
    reliability: ReliabilityPlan | None = None

    @property
    def score_names(self) -> list[str]:
        if self.type == "llm-judge":
            return [s.name for s in self.scores]
        return list(SCORE_NAMES[self.type])


def unsupported(path: str, what: str, value: str, supported: tuple[str, ...]) -> ConfigError:
    return ConfigError(
        path, f"unknown {what} {value!r} for the local backend (supported: {', '.join(supported)})"
    )


def kind_for(url: str, template: Mapping[str, Any] | None) -> Literal["chat", "completions"]:
    u = url.rstrip("/")
    if u.endswith("/chat/completions"):
        return "chat"
    if u.endswith("/completions"):
        return "completions"
    if template is not None and "prompt" in template and "messages" not in template:
        return "completions"
    return "chat"


def request_template(template: RequestTemplate | None, path: str, what: str) -> dict[str, Any]:
    if template is None or not template.has_prompt:
        raise ConfigError(path, f"required: {what} with 'messages' (or 'prompt' for completion models)")
    out = template.to_dict()
    check_syntax(out, path)
    return out


def judge_spec(
    mpath: str,
    p: JudgeParams,
    resolve_secrets: bool,
    model: ModelRef | None = None,
    model_path: str | None = None,
) -> JudgeSpec:
    """The judge of ``p`` (or ``model`` at ``model_path`` instead of ``p.model``: a panel member)."""
    template = request_template(p.template, f"{mpath}.params.template", "a judge template")
    return model_judge(
        p.model if model is None else model, model_path or f"{mpath}.params.model", template, resolve_secrets
    )


def model_judge(
    model: ModelRef, model_path: str, template: dict[str, Any], resolve_secrets: bool
) -> JudgeSpec:
    """A judge model (``{api_endpoint, prompt}`` at ``model_path``) with its request ``template``: the one
    builder for llm-judge metrics, panel members and the pairwise judge, so every judge gets the same
    endpoint checks, key resolution, call settings and ``reasoning_params``."""
    if isinstance(model, str):
        raise ConfigError(
            model_path,
            f"model reference {model!r} was not resolved: with --nemo-url (or NEMO_ENTITY_STORE_URL) "
            "the local backend reads it from NeMo's Entity Store, --backend nemo lets NeMo resolve it; "
            "or give {'api_endpoint': {'url': ..., 'model_id': ...}}",
        )
    ep = model.api_endpoint
    if ep is None:
        raise ConfigError(f"{model_path}.api_endpoint", "required field is missing")
    key = ep.resolve_api_key(f"{model_path}.api_endpoint") if resolve_secrets else None
    prompt = model.prompt
    inference = prompt.inference_params.to_dict() if prompt and prompt.inference_params else {}
    # Call settings for our client, not fields of the request body.
    timeout, retries = inference.pop("request_timeout", None), inference.pop("max_retries", None)
    reasoning = prompt.reasoning_params if prompt else None
    if reasoning is not None and reasoning.effort:
        # NeMo's reasoning_params.effort ("low" | "medium" | "high" for OpenAI reasoning models) goes to the
        # judge as OpenAI's chat-completions field; an inference param of the same name wins.
        inference.setdefault("reasoning_effort", reasoning.effort)
    return JudgeSpec(
        endpoint=ep,
        api_key=key,
        template=template,
        inference=inference,
        system_prompt=prompt.system_prompt if prompt else None,
        end_token=prompt.reasoning_params.end_token if prompt and prompt.reasoning_params else None,
        timeout=float(timeout) if timeout is not None else None,
        max_retries=int(retries) if retries is not None else None,
        kind=kind_for(ep.url, template),
        include_if_not_finished=reasoning.include_if_not_finished if reasoning else None,
    )


def metric_plan(tpath: str, name: str, metric: Metric, resolve_secrets: bool) -> MetricPlan:
    mpath = f"{tpath}.metrics.{name}"
    if metric.type not in METRIC_TYPES_LOCAL:
        raise unsupported(f"{mpath}.type", "metric type", metric.type, METRIC_TYPES_LOCAL)
    metric.check_local(mpath)
    plan = MetricPlan(name, metric.type, mpath, metric.params_dict(), config=metric)
    if isinstance(metric, JudgeMetric):
        plan.judge = judge_spec(mpath, metric.params, resolve_secrets)
        plan.scores = [
            ScoreSpec(sname, s.type or "float", s.parser.to_dict())
            for sname, s in metric.params.scores.items()
        ]
    elif isinstance(metric, ToolCallingMetric):
        tool_calling_plan(plan, metric)
    else:
        check_syntax(plan.params, f"{mpath}.params")
    return plan


# Metrics that score the target's output (``sample.output_text``) unless ``params.candidate`` says otherwise.
CANDIDATE_METRICS = ("bleu", "rouge", "em", "f1")


def check_candidates(task_type: str, has_output: bool, metrics: list[MetricPlan]) -> None:
    """A ``data`` task has no target output: a BLEU/ROUGE/EM/F1 metric without ``params.candidate``
    would be NaN on every row, a run that measured nothing. Refuse it at plan time, naming the metric."""
    if task_type != "data" or has_output:
        return
    for m in metrics:
        if m.type in CANDIDATE_METRICS and not isinstance(m.params.get("candidate"), str):
            raise ConfigError(
                f"{m.path}.params.candidate",
                f"a 'data' task makes no model call, so a {m.type!r} metric has no target output to "
                'score: give the text to score, e.g. candidate: "{{ item.output }}" (or use a '
                "cached_outputs target)",
            )


def tool_calling_plan(plan: MetricPlan, metric: ToolCallingMetric) -> None:
    """Only the ground truth is a template; a judge ``model`` (the data-flywheel blueprint passes one)
    is never called: both scores are computed (``scoring.tool_calling``), so it is dropped with a warning
    rather than asked for an API key it would not use."""
    import warnings

    if "model" in plan.params:
        warnings.warn(
            ConfigWarning(
                f"{plan.path}.params.model: ignored by the local backend: tool-calling scores are "
                "computed, not judged (NeMo documents no judge for this metric)"
            ),
            stacklevel=2,
        )
    plan.params = {k: v for k, v in plan.params.items() if k != "model"}
    check_syntax(plan.params, f"{plan.path}.params")


def check_metric_keys(tname: str, metrics: list[MetricPlan]) -> None:
    """A metric key MLflow cannot log would fail only after every model call: refuse it now."""
    from mlflow_nemo_judge.tracking.names import MAX_KEY, STATS

    longest = max(STATS, key=len)
    for m in metrics:
        for sname in m.score_names:
            key = f"{tname}/{m.name}/{sname}/{longest}".replace("@", "_at_")
            if len(key) > MAX_KEY:
                where = f"{m.path}.params.scores.{sname}" if m.type == "llm-judge" else m.path
                raise ConfigError(
                    where[:300],
                    f"the MLflow metric key <task>/<metric>/<score>/{longest} would be {len(key)} "
                    f"characters; MLflow allows {MAX_KEY}: shorten the task, metric or score name",
                )
