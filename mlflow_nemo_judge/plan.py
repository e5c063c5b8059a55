"""Turn a typed config + target into a validated execution plan, before any model call.

``config.load`` has already checked the structure (types, required fields, parser shapes, positive
limits) with the config path in every error. Checked here, again as a one-line ``ConfigError`` naming
the config path, is what the *local* backend needs on top: task/metric/target types it implements,
models and datasets given inline rather than by reference, each metric's local needs
(``MetricConfig.check_local``: regexes with a capture group, score types it converts, references),
Jinja syntax, metric keys too long for MLflow, missing API-key env vars; and, in one streamed pass over
every row used (``data.scan.scan_plan``, which also takes the digests and counts), the data itself:
syntax, object rows, UTF-8, nesting, cached outputs, and every template rendered against every row.
``mlflow-nemo-judge validate`` is exactly ``build_plan`` without the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlflow_nemo_judge.config import (
    METRIC_TYPES_LOCAL,
    TARGET_TYPES_LOCAL,
    TASK_TYPES_LOCAL,
    APIEndpoint,
    DatasetRef,
    EvalConfig,
    JudgeMetric,
    JudgeParams,
    Metric,
    MetricConfig,
    RequestTemplate,
    Target,
    TaskConfig,
    source_path,
)
from mlflow_nemo_judge.errors import ConfigError
from mlflow_nemo_judge.scoring.templating import check_syntax

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.config import ModelRef
    from mlflow_nemo_judge.data.scan import DatasetInfo
    from mlflow_nemo_judge.plan_reliability import ReliabilityPlan

DEFAULT_PARALLELISM = 8
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5
# Row fields that name a cached output, in order of preference (cached_outputs targets / data tasks).
OUTPUT_FIELDS = ("output_text", "output", "response", "completion", "answer")
ID_FIELDS = ("id", "ID", "item_id", "_id", "uuid", "Id")


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


SCORE_NAMES: dict[str, tuple[str, ...]] = {
    "string-check": ("string-check",),
    "number-check": ("number-check",),
    "em": ("em",),
    "f1": ("f1",),
    "bleu": ("sentence", "corpus"),
    "rouge": ("rouge_1_score", "rouge_2_score", "rouge_3_score", "rouge_L_score"),
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


@dataclass
class DataPlan:
    """Where a task's rows come from: a dataset location or inline rows."""

    description: str
    files_url: str | None = None
    rows: list[dict[str, Any]] | None = None
    hf_endpoint: str | None = None
    format: str | None = None
    base_dir: Path | None = None

    @classmethod
    def of(cls, ref: DatasetRef, base_dir: Path | None) -> DataPlan:
        return cls(ref.files_url, ref.files_url, None, ref.hf_endpoint, ref.format, base_dir)

    def iter_rows(self, limit: int | None) -> Iterator[dict[str, Any]]:
        if self.rows is not None:
            yield from (self.rows if limit is None else self.rows[:limit])
            return
        from mlflow_nemo_judge.data import iter_rows

        yield from iter_rows(self._source(), limit=limit)

    def iter_located(self, limit: int | None) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(where, row)``: ``where`` names the row unambiguously in a message (``file:line`` or
        ``target.rows[i]``)."""
        if self.rows is not None:
            rows = self.rows if limit is None else self.rows[:limit]
            yield from ((f"target.rows[{i}]", row) for i, row in enumerate(rows))
            return
        from mlflow_nemo_judge.data import iter_located_rows

        for name, line, row in iter_located_rows(self._source(), limit=limit):
            yield f"{name}:{line}", row

    def _source(self) -> Any:
        from mlflow_nemo_judge.data import DatasetSource

        assert self.files_url is not None
        return DatasetSource(
            url=self.files_url, hf_endpoint=self.hf_endpoint, format=self.format, base_dir=self.base_dir
        )


@dataclass
class TaskPlan:
    name: str
    type: str
    path: str
    template: dict[str, Any] | None
    data: DataPlan
    limit: int | None
    metrics: list[MetricPlan]
    kind: Literal["chat", "completions"] = "chat"
    # True when the target output comes from the row (cached_outputs), not from a model call.
    cached_output: bool = False

    @property
    def calls_target(self) -> bool:
        return self.type in ("chat-completion", "completion") and not self.cached_output


@dataclass
class Plan:
    config: EvalConfig
    target: Target
    tasks: list[TaskPlan]
    target_endpoint: APIEndpoint | None
    target_api_key: str | None
    parallelism: int
    timeout: float
    max_retries: int
    inference_defaults: dict[str, Any]
    # The data pass (``data.scan.scan_plan``) made while planning, and the row cap it kept rows under.
    datasets: list[DatasetInfo] | None = None
    scan_max_rows: int | None = None

    @property
    def judge_models(self) -> list[str]:
        seen: list[str] = []
        for t in self.tasks:
            for m in t.metrics:
                if m.judge and m.judge.endpoint.model_id not in seen:
                    seen.append(m.judge.endpoint.model_id)
        return seen


def item_id(row: Mapping[str, Any], index: int) -> str:
    for key in ID_FIELDS:
        if key in row and row[key] not in (None, ""):
            return str(row[key])
    return str(index)


def cached_output_text(row: Mapping[str, Any]) -> str | None:
    for key in OUTPUT_FIELDS:
        if key in row and isinstance(row[key], str):
            return str(row[key])
    sample = row.get("sample")
    if isinstance(sample, Mapping) and isinstance(sample.get("output_text"), str):
        return str(sample["output_text"])
    return None


# ------------------------------------------------------------------------------------------- building


def _positive(value: Any, path: str) -> None:
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
        raise ConfigError(path, f"must be a positive number, got {value!r}")


def _unsupported(path: str, what: str, value: str, supported: tuple[str, ...]) -> ConfigError:
    return ConfigError(
        path, f"unknown {what} {value!r} for the local backend (supported: {', '.join(supported)})"
    )


def _kind_for(url: str, template: Mapping[str, Any] | None) -> Literal["chat", "completions"]:
    u = url.rstrip("/")
    if u.endswith("/chat/completions"):
        return "chat"
    if u.endswith("/completions"):
        return "completions"
    if template is not None and "prompt" in template and "messages" not in template:
        return "completions"
    return "chat"


def _template(template: RequestTemplate | None, path: str, what: str) -> dict[str, Any]:
    if template is None or not template.has_prompt:
        raise ConfigError(path, f"required: {what} with 'messages' (or 'prompt' for completion models)")
    out = template.to_dict()
    check_syntax(out, path)
    return out


def _data_for_task(
    tpath: str, task: TaskConfig, target: Target, base_dir: Path | None, target_base: Path | None
) -> tuple[DataPlan, int | None, bool]:
    cached = target.type == "cached_outputs"
    ds, path = task.dataset, f"{tpath}.dataset"
    if ds is None:  # no task dataset: the data comes from the target
        if target.type == "rows":
            if not target.rows:
                raise ConfigError("target.rows", "a 'rows' target needs at least one row")
            return DataPlan(f"{len(target.rows)} inline rows", rows=target.rows), None, False
        if target.type not in ("dataset", "cached_outputs"):
            raise ConfigError(
                path,
                "required: the task has no dataset and the target provides no data "
                "(give tasks.<task>.dataset.files_url, or a rows/dataset/cached_outputs target)",
            )
        ds = target.dataset if target.type == "dataset" else target.cached_outputs
        path, base_dir = f"target.{target.type}", target_base
        if ds is None:
            raise ConfigError(path, "required field is missing")
    if isinstance(ds, str):
        raise ConfigError(
            path,
            f"dataset reference {ds!r} names an Entity Store dataset; the local backend needs "
            "{'files_url': ...} (use --backend nemo for references)",
        )
    return DataPlan.of(ds, base_dir), ds.limit, cached


def _judge_spec(
    mpath: str,
    p: JudgeParams,
    resolve_secrets: bool,
    model: ModelRef | None = None,
    model_path: str | None = None,
) -> JudgeSpec:
    """The judge of ``p`` (or ``model`` at ``model_path`` instead of ``p.model``: a panel member)."""
    model = p.model if model is None else model
    model_path = model_path or f"{mpath}.params.model"
    if isinstance(model, str):
        raise ConfigError(
            model_path,
            f"model reference {model!r} is only supported with --backend nemo; "
            "give {'api_endpoint': {'url': ..., 'model_id': ...}}",
        )
    ep = model.api_endpoint
    if ep is None:
        raise ConfigError(f"{model_path}.api_endpoint", "required field is missing")
    key = ep.resolve_api_key(f"{model_path}.api_endpoint") if resolve_secrets else None
    prompt = model.prompt
    inference = prompt.inference_params.to_dict() if prompt and prompt.inference_params else {}
    # Call settings for our client, not fields of the request body.
    timeout, retries = inference.pop("request_timeout", None), inference.pop("max_retries", None)
    template = _template(p.template, f"{mpath}.params.template", "a judge template")
    return JudgeSpec(
        endpoint=ep,
        api_key=key,
        template=template,
        inference=inference,
        system_prompt=prompt.system_prompt if prompt else None,
        end_token=prompt.reasoning_params.end_token if prompt and prompt.reasoning_params else None,
        timeout=float(timeout) if timeout is not None else None,
        max_retries=int(retries) if retries is not None else None,
        kind=_kind_for(ep.url, template),
    )


def _metric_plan(tpath: str, name: str, metric: Metric, resolve_secrets: bool) -> MetricPlan:
    mpath = f"{tpath}.metrics.{name}"
    if metric.type not in METRIC_TYPES_LOCAL:
        raise _unsupported(f"{mpath}.type", "metric type", metric.type, METRIC_TYPES_LOCAL)
    metric.check_local(mpath)
    plan = MetricPlan(name, metric.type, mpath, metric.params_dict(), config=metric)
    if isinstance(metric, JudgeMetric):
        plan.judge = _judge_spec(mpath, metric.params, resolve_secrets)
        plan.scores = [
            ScoreSpec(sname, s.type or "float", s.parser.to_dict())
            for sname, s in metric.params.scores.items()
        ]
    else:
        check_syntax(plan.params, f"{mpath}.params")
    return plan


def build_plan(
    config: EvalConfig,
    target: Target,
    *,
    check_data: bool = True,
    resolve_secrets: bool = True,
    limit: int | None = None,
    parallelism: int | None = None,
    judge_repeats: int | None = None,
) -> Plan:
    """Validate ``config`` and ``target`` for the local backend and compile them into a ``Plan``.

    ``judge_repeats`` (``--judge-repeats``) overrides every llm-judge metric's ``repeats``."""
    if config.type != "custom":
        raise ConfigError(
            "type",
            f"the local backend runs 'custom' configs, got {config.type!r} "
            "(other config types run only on NeMo: --backend nemo)",
        )
    if target.type not in TARGET_TYPES_LOCAL:
        raise _unsupported("target.type", "target type", target.type, TARGET_TYPES_LOCAL)
    params = config.params  # its limits and timeouts were checked (positive) when it was loaded
    _positive(limit, "--limit")
    _positive(parallelism, "--parallelism")
    src, tsrc = source_path(config), source_path(target)

    endpoint: APIEndpoint | None = None
    key: str | None = None
    if target.type == "model":
        if isinstance(target.model, str):
            raise ConfigError(
                "target.model",
                f"model reference {target.model!r} is only supported with --backend "
                "nemo; give {'api_endpoint': {'url': ..., 'model_id': ...}}",
            )
        endpoint = target.endpoint
        if endpoint is None:
            raise ConfigError("target.model.api_endpoint", "required field is missing")
        key = endpoint.resolve_api_key("target.model.api_endpoint") if resolve_secrets else None

    defaults = {"max_tokens", "temperature", "top_p", "stop"}
    inference_defaults = {k: v for k, v in (params.to_dict() if params else {}).items() if k in defaults}

    tasks: list[TaskPlan] = []
    for tname, task in (config.tasks or {}).items():
        tpath = f"tasks.{tname}"
        if task.type not in TASK_TYPES_LOCAL:
            raise _unsupported(f"{tpath}.type", "task type", task.type, TASK_TYPES_LOCAL)
        data, ds_limit, cached = _data_for_task(
            tpath, task, target, src.parent if src else None, tsrc.parent if tsrc else None
        )
        raw = task.params.template if task.params else None
        template = raw.to_dict() if raw is not None else None
        if task.type in ("chat-completion", "completion") and not cached:
            if target.type != "model":
                raise ConfigError(
                    f"{tpath}.type",
                    f"a {task.type!r} task calls the target model, but the target is "
                    f"of type {target.type!r}: use a 'model' target, or task type "
                    "'data' to judge existing outputs",
                )
            template = _template(raw, f"{tpath}.params.template", "the request template")
        if not task.metrics:
            raise ConfigError(f"{tpath}.metrics", "required: at least one metric")
        metrics = [_metric_plan(tpath, mname, m, resolve_secrets) for mname, m in task.metrics.items()]
        limits = [x for x in (ds_limit, params.limit_samples if params else None, limit) if x is not None]
        tp = TaskPlan(
            name=tname,
            type=task.type,
            path=tpath,
            template=template,
            data=data,
            limit=min(limits) if limits else None,
            metrics=metrics,
            kind=_kind_for(endpoint.url, template) if endpoint else "chat",
            cached_output=cached,
        )
        _check_metric_keys(tname, metrics)
        tasks.append(tp)
    from mlflow_nemo_judge.plan_reliability import attach_reliability

    attach_reliability(config, tasks, judge_repeats=judge_repeats, resolve_secrets=resolve_secrets)

    plan = Plan(
        config=config,
        target=target,
        tasks=tasks,
        target_endpoint=endpoint,
        target_api_key=key,
        parallelism=int(parallelism or (params and params.parallelism) or DEFAULT_PARALLELISM),
        timeout=float(params.request_timeout) if params and params.request_timeout else DEFAULT_TIMEOUT,
        max_retries=DEFAULT_MAX_RETRIES
        if params is None or params.max_retries is None
        else int(params.max_retries),
        inference_defaults=inference_defaults,
    )
    if check_data:
        # The one pass over the data (digests, counts, every row checked); prepare() reuses it.
        from mlflow_nemo_judge.data.scan import scan_plan
        from mlflow_nemo_judge.tracking.names import DEFAULT_TABLE_MAX_ROWS

        scan_plan(plan, max_rows=DEFAULT_TABLE_MAX_ROWS)
    return plan


def _check_metric_keys(tname: str, metrics: list[MetricPlan]) -> None:
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
