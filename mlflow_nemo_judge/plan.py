"""Turn a config + target into a validated execution plan, before any model call.

Everything a user can get wrong is checked here and reported as a one-line ``ConfigError`` naming the
config path: unknown task/metric/parser/score types, regexes that do not compile or lack a capture
group, Jinja syntax errors, template variables the dataset rows do not have (rendered against the
first row), missing or empty datasets, missing API-key env vars, non-positive limits or parallelism.
``mlflow-nemo-judge validate`` is exactly ``build_plan`` without the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlflow_nemo_judge.config import (
    METRIC_TYPES_LOCAL,
    TARGET_TYPES_LOCAL,
    TASK_TYPES_LOCAL,
    APIEndpoint,
    DatasetRef,
    EvalConfig,
    ModelSpec,
    Target,
    source_path,
)
from mlflow_nemo_judge.errors import ConfigError, DatasetError
from mlflow_nemo_judge.scoring.templating import build_context, check_syntax, render_value

DEFAULT_PARALLELISM = 8
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5
SCORE_TYPES = ("int", "integer", "float", "number", "bool", "boolean")
PARSER_TYPES = ("regex", "json")
# Judge inference params that are request settings for us, not body fields for the endpoint.
_CALL_SETTINGS = ("max_retries", "request_timeout")
# Row fields that name a cached output, in order of preference (cached_outputs targets / data tasks).
OUTPUT_FIELDS = ("output_text", "output", "response", "completion", "answer")
ID_FIELDS = ("id", "ID", "item_id", "_id", "uuid", "Id")


@dataclass
class ScoreSpec:
    name: str
    type: str
    parser: dict[str, Any]


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


@dataclass
class MetricPlan:
    name: str
    type: str
    path: str
    params: dict[str, Any]
    judge: JudgeSpec | None = None
    scores: list[ScoreSpec] = field(default_factory=list)

    @property
    def score_names(self) -> list[str]:
        if self.type == "llm-judge":
            return [s.name for s in self.scores]
        return list(SCORE_NAMES[self.type])


SCORE_NAMES: dict[str, tuple[str, ...]] = {
    "string-check": ("string-check",),
    "number-check": ("number-check",),
    "em": ("em",),
    "f1": ("f1",),
    "bleu": ("sentence", "corpus"),
    "rouge": ("rouge_1_score", "rouge_2_score", "rouge_3_score", "rouge_L_score"),
}


@dataclass
class DataPlan:
    """Where a task's rows come from: a dataset location or inline rows."""

    description: str
    files_url: str | None = None
    rows: list[dict[str, Any]] | None = None
    hf_endpoint: str | None = None
    format: str | None = None
    base_dir: Path | None = None

    def iter_rows(self, limit: int | None) -> Iterator[dict[str, Any]]:
        if self.rows is not None:
            rows = self.rows if limit is None else self.rows[:limit]
            yield from rows
            return
        from mlflow_nemo_judge.data import DatasetSource, iter_rows

        assert self.files_url is not None
        src = DatasetSource(
            url=self.files_url, hf_endpoint=self.hf_endpoint, format=self.format, base_dir=self.base_dir
        )
        yield from iter_rows(src, limit=limit)


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
            return row[key]
    sample = row.get("sample")
    if isinstance(sample, Mapping) and isinstance(sample.get("output_text"), str):
        return str(sample["output_text"])
    return None


# ------------------------------------------------------------------------------------------- building


def _positive(value: Any, path: str) -> None:
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
        raise ConfigError(path, f"must be a positive number, got {value!r}")


def _kind_for(url: str, template: Mapping[str, Any] | None) -> Literal["chat", "completions"]:
    u = url.rstrip("/")
    if u.endswith("/chat/completions"):
        return "chat"
    if u.endswith("/completions"):
        return "completions"
    if template is not None and "prompt" in template and "messages" not in template:
        return "completions"
    return "chat"


def _data_for_task(
    task_name: str, task: Any, target: Target, base_dir: Path | None, target_base: Path | None
) -> tuple[DataPlan, int | None, bool]:
    path = f"tasks.{task_name}.dataset"
    ds = task.dataset
    if isinstance(ds, DatasetRef):
        _positive(ds.limit, f"{path}.limit")
        return (
            DataPlan(
                description=ds.files_url,
                files_url=ds.files_url,
                hf_endpoint=ds.hf_endpoint,
                format=ds.format,
                base_dir=base_dir,
            ),
            ds.limit,
            target.type == "cached_outputs",
        )
    if isinstance(ds, str):
        raise ConfigError(
            path,
            f"dataset reference {ds!r} names an Entity Store dataset; the local backend needs "
            "{'files_url': ...} (use --backend nemo for references)",
        )
    # No task dataset: the data comes from the target.
    if target.type == "rows":
        if not target.rows:
            raise ConfigError("target.rows", "a 'rows' target needs at least one row")
        return DataPlan(description=f"{len(target.rows)} inline rows", rows=target.rows), None, False
    if target.type in ("dataset", "cached_outputs"):
        ref = target.dataset if target.type == "dataset" else target.cached_outputs
        tpath = f"target.{target.type}"
        if ref is None:
            raise ConfigError(tpath, "required field is missing")
        if isinstance(ref, str):
            raise ConfigError(
                tpath,
                f"dataset reference {ref!r} is only supported with --backend nemo; give {{'files_url': ...}}",
            )
        _positive(ref.limit, f"{tpath}.limit")
        return (
            DataPlan(
                description=ref.files_url,
                files_url=ref.files_url,
                hf_endpoint=ref.hf_endpoint,
                format=ref.format,
                base_dir=target_base,
            ),
            ref.limit,
            target.type == "cached_outputs",
        )
    raise ConfigError(
        path,
        "required: the task has no dataset and the target provides no data "
        "(give tasks.<task>.dataset.files_url, or a rows/dataset/cached_outputs target)",
    )


def _judge_spec(mpath: str, params: Mapping[str, Any], resolve_secrets: bool) -> JudgeSpec:
    model_raw = params.get("model")
    if model_raw is None:
        raise ConfigError(f"{mpath}.params.model", "required field is missing (the judge model)")
    if isinstance(model_raw, str):
        raise ConfigError(
            f"{mpath}.params.model",
            "a model reference is only supported with --backend nemo; "
            "give {'api_endpoint': {'url': ..., 'model_id': ...}}",
        )
    try:
        model = ModelSpec.model_validate(model_raw)
    except Exception as exc:
        raise ConfigError(
            f"{mpath}.params.model", f"invalid judge model: {str(exc).splitlines()[0]}"
        ) from None
    if model.api_endpoint is None:
        raise ConfigError(f"{mpath}.params.model.api_endpoint", "required field is missing")
    ep = model.api_endpoint
    key = ep.resolve_api_key(f"{mpath}.params.model.api_endpoint") if resolve_secrets else None
    prompt = dict(model.prompt or {})
    inference = dict(prompt.get("inference_params") or {})
    timeout = inference.pop("request_timeout", None)
    retries = inference.pop("max_retries", None)
    _positive(timeout, f"{mpath}.params.model.prompt.inference_params.request_timeout")
    reasoning = prompt.get("reasoning_params") or {}
    template = params.get("template")
    if not isinstance(template, Mapping) or not ("messages" in template or "prompt" in template):
        raise ConfigError(
            f"{mpath}.params.template", "required: a judge template with 'messages' (or 'prompt')"
        )
    check_syntax(template, f"{mpath}.params.template")
    return JudgeSpec(
        endpoint=ep,
        api_key=key,
        template=dict(template),
        inference=inference,
        system_prompt=prompt.get("system_prompt"),
        end_token=reasoning.get("end_token"),
        timeout=float(timeout) if timeout is not None else None,
        max_retries=int(retries) if retries is not None else None,
        kind=_kind_for(ep.url, template),
    )


def _metric_plan(tpath: str, name: str, metric: Any, resolve_secrets: bool) -> MetricPlan:
    mpath = f"{tpath}.metrics.{name}"
    mtype = metric.type
    params = dict(metric.params or {})
    if mtype not in METRIC_TYPES_LOCAL:
        raise ConfigError(
            f"{mpath}.type",
            f"unknown metric type {mtype!r} for the local backend "
            f"(supported: {', '.join(METRIC_TYPES_LOCAL)})",
        )
    plan = MetricPlan(name=name, type=mtype, path=mpath, params=params)
    if mtype == "llm-judge":
        plan.judge = _judge_spec(mpath, params, resolve_secrets)
        scores = params.get("scores")
        if not isinstance(scores, Mapping) or not scores:
            raise ConfigError(
                f"{mpath}.params.scores", "required: at least one score with a type and a parser"
            )
        from mlflow_nemo_judge.scoring.parsing import compile_regex

        for sname, s in scores.items():
            spath = f"{mpath}.params.scores.{sname}"
            if not isinstance(s, Mapping):
                raise ConfigError(spath, "must be a mapping with 'type' and 'parser'")
            stype = s.get("type", "float")
            if stype not in SCORE_TYPES:
                raise ConfigError(
                    f"{spath}.type", f"unknown score type {stype!r} (supported: {', '.join(SCORE_TYPES)})"
                )
            parser = s.get("parser")
            if not isinstance(parser, Mapping):
                raise ConfigError(
                    f"{spath}.parser",
                    "required: {'type': 'regex', 'pattern': ...} or {'type': 'json', 'json_path': ...}",
                )
            ptype = parser.get("type")
            if ptype not in PARSER_TYPES:
                raise ConfigError(
                    f"{spath}.parser.type", f"unknown parser type {ptype!r} (supported: regex, json)"
                )
            if ptype == "regex":
                pattern = parser.get("pattern")
                if not isinstance(pattern, str) or not pattern:
                    raise ConfigError(
                        f"{spath}.parser.pattern", "required: a regular expression with one capture group"
                    )
                try:
                    compile_regex(pattern)
                except ValueError as exc:
                    raise ConfigError(f"{spath}.parser.pattern", str(exc)) from None
            else:
                from mlflow_nemo_judge.scoring.parsing import parse_json_path

                json_path = parser.get("json_path")
                if not isinstance(json_path, str) or not json_path:
                    raise ConfigError(
                        f"{spath}.parser.json_path", "required: the key (path) holding the score"
                    )
                try:
                    parse_json_path(json_path)
                except ValueError as exc:
                    raise ConfigError(f"{spath}.parser.json_path", str(exc)) from None
            plan.scores.append(ScoreSpec(name=str(sname), type=str(stype), parser=dict(parser)))
    elif mtype in ("string-check", "number-check"):
        check = params.get("check")
        if not isinstance(check, list):
            raise ConfigError(
                f"{mpath}.params.check",
                "required: a list such as ['{{sample.output_text}}', 'equals', '{{item.expected}}']",
            )
        if mtype == "string-check":
            from mlflow_nemo_judge.scoring.builtin import validate_string_check

            try:
                validate_string_check(check)
            except ValueError as exc:
                raise ConfigError(f"{mpath}.params.check", str(exc)) from None
        else:
            from mlflow_nemo_judge.scoring.builtin import validate_number_check

            try:
                validate_number_check(check)
            except ValueError as exc:
                raise ConfigError(f"{mpath}.params.check", str(exc)) from None
        check_syntax(check, f"{mpath}.params.check")
    elif mtype == "bleu":
        refs = params.get("references")
        if not isinstance(refs, list) or not refs:
            raise ConfigError(
                f"{mpath}.params.references",
                "required: a list of reference templates, e.g. ['{{ item.reference }}']",
            )
        check_syntax(params, f"{mpath}.params")
    else:  # rouge, em, f1
        if not isinstance(params.get("reference"), str):
            # similarity_metrics-style configs name no reference; we need one to compare against.
            raise ConfigError(
                f"{mpath}.params.reference",
                "required: a reference template, e.g. '{{ item.reference_answer }}'",
            )
        check_syntax(params, f"{mpath}.params")
    if mtype in ("bleu", "rouge"):
        from mlflow_nemo_judge.scoring.builtin import require_optional

        require_optional(mtype)
    return plan


def build_plan(
    config: EvalConfig,
    target: Target,
    *,
    check_data: bool = True,
    resolve_secrets: bool = True,
    limit: int | None = None,
    parallelism: int | None = None,
) -> Plan:
    """Validate ``config`` and ``target`` for the local backend and compile them into a ``Plan``."""
    if config.type != "custom":
        raise ConfigError(
            "type",
            f"the local backend runs 'custom' configs, got {config.type!r} "
            "(other config types run only on NeMo: --backend nemo)",
        )
    if target.type not in TARGET_TYPES_LOCAL:
        raise ConfigError(
            "target.type",
            f"unknown target type {target.type!r} for the local backend "
            f"(supported: {', '.join(TARGET_TYPES_LOCAL)})",
        )
    params = config.params
    p_parallel = params.parallelism if params else None
    for value, path in (
        (p_parallel, "params.parallelism"),
        (params.request_timeout if params else None, "params.request_timeout"),
        (params.limit_samples if params else None, "params.limit_samples"),
        (limit, "--limit"),
        (parallelism, "--parallelism"),
    ):
        _positive(value, path)
    if params and params.max_retries is not None and params.max_retries < 0:
        raise ConfigError("params.max_retries", f"must be >= 0, got {params.max_retries}")
    base_dir = source_path(config)
    base = base_dir.parent if base_dir else None
    tsrc = source_path(target)
    target_base = tsrc.parent if tsrc else None

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

    inference_defaults: dict[str, Any] = {}
    if params:
        for k in ("max_tokens", "temperature", "top_p", "stop"):
            v = getattr(params, k)
            if v is not None:
                inference_defaults[k] = v

    tasks: list[TaskPlan] = []
    for tname, task in (config.tasks or {}).items():
        tpath = f"tasks.{tname}"
        if task.type not in TASK_TYPES_LOCAL:
            raise ConfigError(
                f"{tpath}.type",
                f"unknown task type {task.type!r} for the local backend "
                f"(supported: {', '.join(TASK_TYPES_LOCAL)})",
            )
        data, ds_limit, cached = _data_for_task(tname, task, target, base, target_base)
        template = (task.params or {}).get("template")
        if task.type in ("chat-completion", "completion") and not cached:
            if target.type != "model":
                raise ConfigError(
                    f"{tpath}.type",
                    f"a {task.type!r} task calls the target model, but the target is "
                    f"of type {target.type!r}: use a 'model' target, or task type "
                    "'data' to judge existing outputs",
                )
            if not isinstance(template, Mapping) or not ("messages" in template or "prompt" in template):
                raise ConfigError(
                    f"{tpath}.params.template",
                    "required: the request template with 'messages' (or 'prompt' for completion models)",
                )
            check_syntax(template, f"{tpath}.params.template")
        if not task.metrics:
            raise ConfigError(f"{tpath}.metrics", "required: at least one metric")
        metrics = [_metric_plan(tpath, mname, m, resolve_secrets) for mname, m in task.metrics.items()]
        limits = [x for x in (ds_limit, params.limit_samples if params else None, limit) if x is not None]
        kind = _kind_for(endpoint.url, template) if endpoint else "chat"
        tp = TaskPlan(
            name=tname,
            type=task.type,
            path=tpath,
            template=dict(template) if isinstance(template, Mapping) else None,
            data=data,
            limit=min(limits) if limits else None,
            metrics=metrics,
            kind=kind,
            cached_output=cached,
        )
        if check_data:
            _check_against_first_row(tp)
        tasks.append(tp)

    return Plan(
        config=config,
        target=target,
        tasks=tasks,
        target_endpoint=endpoint,
        target_api_key=key,
        parallelism=int(parallelism or p_parallel or DEFAULT_PARALLELISM),
        timeout=float(params.request_timeout) if params and params.request_timeout else DEFAULT_TIMEOUT,
        max_retries=int(params.max_retries)
        if params and params.max_retries is not None
        else DEFAULT_MAX_RETRIES,
        inference_defaults=inference_defaults,
    )


def _check_against_first_row(tp: TaskPlan) -> None:
    """Render every template against the first row so a missing field fails now, not mid-run."""
    try:
        first = next(iter(tp.data.iter_rows(1)), None)
    except DatasetError as exc:
        raise ConfigError(f"{tp.path}.dataset", str(exc)) from None
    if first is None:
        raise ConfigError(f"{tp.path}.dataset", f"dataset is empty: {tp.data.description}")
    if tp.cached_output and cached_output_text(first) is None:
        raise ConfigError(
            f"{tp.path}.dataset",
            "cached outputs need an output field in each row (one of "
            f"{', '.join(OUTPUT_FIELDS)}); the first row has: "
            f"{', '.join(sorted(first))}",
        )
    if tp.calls_target or tp.cached_output:
        sample: dict[str, Any] | None = {"output_text": "", "response": {}}
    else:
        sample = None
    ctx = build_context(first, sample)
    if tp.calls_target and tp.template is not None:
        render_value(tp.template, ctx, f"{tp.path}.params.template")
    for m in tp.metrics:
        try:
            if m.judge is not None:
                render_value(m.judge.template, ctx, f"{m.path}.params.template")
            else:
                render_value(m.params, ctx, f"{m.path}.params")
        except ConfigError as exc:
            if sample is None and ("output_text" in exc.message or "response" in exc.message):
                raise ConfigError(
                    exc.path,
                    exc.message + " (a 'data' task makes no model call, so there is no "
                    "sample.*: judge a row field such as item.<field> instead)",
                ) from None
            raise
