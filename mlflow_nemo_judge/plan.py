"""Turn a typed config + target into a validated execution plan, before any model call.

``config.load`` has already checked the structure (types, required fields, parser shapes, positive
limits) with the config path in every error. Checked here, again as a one-line ``ConfigError`` naming
the config path, is what the *local* backend needs on top: task/metric/target types it implements,
models and datasets given inline rather than by reference, each metric's local needs
(``MetricConfig.check_local``: regexes with a capture group, score types it converts, references),
Jinja syntax, metric keys too long for MLflow, missing API-key env vars (the metric half, judges
included, is built by :mod:`mlflow_nemo_judge.plan_metrics`); and, in one streamed pass over
every row used (``data.scan.scan_plan``, which also takes the digests and counts), the data itself:
syntax, object rows, UTF-8, nesting, cached outputs, and every template rendered against every row.
``mlflow-nemo-judge validate`` is exactly ``build_plan`` without the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlflow_nemo_judge.config import (
    TARGET_TYPES_LOCAL,
    TASK_TYPES_LOCAL,
    APIEndpoint,
    DatasetRef,
    EvalConfig,
    Target,
    TaskConfig,
    source_path,
)
from mlflow_nemo_judge.errors import ConfigError
from mlflow_nemo_judge.plan_metrics import (
    MetricPlan,
    check_candidates,
    check_metric_keys,
    kind_for,
    metric_plan,
    request_template,
    unsupported,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.data.scan import DatasetInfo

DEFAULT_PARALLELISM = 8
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5
# Row fields that name a cached output, in order of preference (cached_outputs targets / data tasks).
# Never "answer": in NVIDIA's own datasets (the math examples) it is the *reference*, and reading it as the
# model's output would score the reference against itself.
OUTPUT_FIELDS = ("output_text", "output", "response", "completion")
ID_FIELDS = ("id", "ID", "item_id", "_id", "uuid", "Id")


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
        raise unsupported("target.type", "target type", target.type, TARGET_TYPES_LOCAL)
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
            raise unsupported(f"{tpath}.type", "task type", task.type, TASK_TYPES_LOCAL)
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
            template = request_template(raw, f"{tpath}.params.template", "the request template")
        if not task.metrics:
            raise ConfigError(f"{tpath}.metrics", "required: at least one metric")
        metrics = [metric_plan(tpath, mname, m, resolve_secrets) for mname, m in task.metrics.items()]
        check_candidates(task.type, cached, metrics)
        limits = [x for x in (ds_limit, params.limit_samples if params else None, limit) if x is not None]
        tp = TaskPlan(
            name=tname,
            type=task.type,
            path=tpath,
            template=template,
            data=data,
            limit=min(limits) if limits else None,
            metrics=metrics,
            kind=kind_for(endpoint.url, template) if endpoint else "chat",
            cached_output=cached,
        )
        check_metric_keys(tname, metrics)
        tasks.append(tp)
    from mlflow_nemo_judge.config.groups import refuse_group_metrics
    from mlflow_nemo_judge.plan_reliability import attach_reliability

    refuse_group_metrics(config)  # NeMo defines no group-level semantics to reproduce locally

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
