"""Typed NeMo Evaluator configs and targets, all the way down to judge score parsers.

The documents (:class:`EvalConfig`, :class:`TaskConfig`, :class:`Target`) are here; their parts live in
``common`` (base model, endpoints, datasets, templates) and ``metrics`` (judge params, scores, parsers,
the simple metrics' params) and are re-exported, so this module is the one to import typed models from.

Every model keeps unknown fields and the key order as written (``common.Open``), so ``to_dict()``
returns the dict that was read, byte for byte, and unknown fields pass through to the ``nemo`` backend.
``redacted()`` dumps replace every secret with ``"******"`` (NeMo's own mask) and are the only dumps
that may be logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import field_validator, model_validator

from mlflow_nemo_judge.config.common import (
    APIEndpoint,
    DatasetLike,
    DatasetRef,
    InferenceParams,
    Message,
    ModelRef,
    ModelSpec,
    Number,
    Open,
    PromptSpec,
    ReasoningParams,
    RequestTemplate,
    RunParams,
    TaskParams,
    sha256_json,
)
from mlflow_nemo_judge.config.extension import Extension, check_references, parse_extension
from mlflow_nemo_judge.config.groups import check_groups
from mlflow_nemo_judge.config.metrics import (
    BleuMetric,
    BleuParams,
    CheckMetric,
    CheckParams,
    JsonParser,
    JudgeMetric,
    JudgeParams,
    Metric,
    MetricConfig,
    OtherMetric,
    Parser,
    ReferenceMetric,
    ReferenceParams,
    RegexParser,
    Score,
)
from mlflow_nemo_judge.config.secrets import fingerprint, redact

__all__ = [
    "METRIC_TYPES_LOCAL",
    "TARGET_TYPES_LOCAL",
    "TASK_TYPES_LOCAL",
    "APIEndpoint",
    "BleuMetric",
    "BleuParams",
    "CheckMetric",
    "CheckParams",
    "DatasetLike",
    "DatasetRef",
    "EvalConfig",
    "Extension",
    "GroupConfig",
    "InferenceParams",
    "JsonParser",
    "JudgeMetric",
    "JudgeParams",
    "Message",
    "Metric",
    "MetricConfig",
    "ModelRef",
    "ModelSpec",
    "Number",
    "Open",
    "OtherMetric",
    "Parser",
    "PromptSpec",
    "ReasoningParams",
    "ReferenceMetric",
    "ReferenceParams",
    "RegexParser",
    "RequestTemplate",
    "RunParams",
    "Score",
    "Target",
    "TaskConfig",
    "TaskParams",
    "sha256_json",
    "source_path",
]

TASK_TYPES_LOCAL = ("chat-completion", "completion", "data")
METRIC_TYPES_LOCAL = (
    "llm-judge",
    "string-check",
    "number-check",
    "em",
    "f1",
    "bleu",
    "rouge",
    "tool-calling",
)
TARGET_TYPES_LOCAL = ("model", "cached_outputs", "rows", "dataset")


class TaskConfig(Open):
    type: str
    params: TaskParams | None = None
    dataset: DatasetLike | None = None
    metrics: dict[str, Metric] | None = None

    def params_dict(self) -> dict[str, Any]:
        return self.params.to_dict() if self.params is not None else {}


class GroupConfig(Open):
    """A NeMo group: member ``tasks``, nested ``groups`` (inline, or ``null`` naming a top-level group)
    and group-level ``metrics`` (kept as written: only NeMo computes them). See ``config.groups``."""

    tasks: list[str] | None = None
    metrics: dict[str, Any] | None = None
    groups: dict[str, GroupConfig | None] | None = None


class EvalConfig(Open):
    """A NeMo Evaluator evaluation config (``type: custom`` for the local backend)."""

    passthrough = frozenset(
        {"id", "custom_fields", "ownership", "created_at", "updated_at", "schema_version"}
    )
    type: str
    name: str | None = None
    namespace: str | None = None
    description: str | None = None
    project: str | None = None
    params: RunParams | None = None
    tasks: dict[str, TaskConfig] | None = None
    groups: dict[str, GroupConfig] | None = None
    # This package's own extensions (repeats, judge panels, human labels, pairwise): never sent to NeMo.
    mlflow_nemo_judge: Extension | None = None

    @field_validator("mlflow_nemo_judge", mode="before")
    @classmethod
    def _strict_extension(cls, v: Any) -> Extension | None:
        # Our own schema: validated strictly, its errors raised as ConfigError with the block's paths.
        return None if v is None else parse_extension(v)

    @model_validator(mode="after")
    def _extension_refers_to_config(self) -> EvalConfig:
        check_references(self)  # raises ConfigError: pydantic lets a non-ValueError through as is
        check_groups(self)  # unknown tasks/groups, reference cycles, empty groups: with their paths
        return self

    def extension(self) -> Extension | None:
        """The typed ``mlflow_nemo_judge:`` block, or None when the config has none."""
        return self.mlflow_nemo_judge

    @field_validator("tasks")
    @classmethod
    def _tasks_not_empty(cls, v: dict[str, TaskConfig] | None) -> dict[str, TaskConfig] | None:
        if v is not None and not v:
            raise ValueError("at least one task is required")
        return v

    def redacted(self) -> dict[str, Any]:
        """The config with every secret masked: safe for logs, params and artifacts."""
        out: dict[str, Any] = redact(self.to_dict())
        return out

    def sha256(self) -> str:
        """Content hash of the config with its credentials masked (``secrets.fingerprint``): the run
        identity, stable across key rotation, different for a different routing header or query."""
        return sha256_json(fingerprint(self.to_dict()))

    @property
    def display_name(self) -> str:
        return self.name or "unnamed-config"

    def judge_models(self) -> dict[tuple[str, str], str]:
        """``(task, metric)`` → the judge's model id (or its ``namespace/name`` reference), for every
        metric that names a judge model (``llm-judge``, and unknown types that carry ``params.model``)."""
        out: dict[tuple[str, str], str] = {}
        for tname, task in (self.tasks or {}).items():
            for mname, metric in (task.metrics or {}).items():
                model: Any = metric.params.model if isinstance(metric, JudgeMetric) else None
                if isinstance(metric, OtherMetric):  # e.g. tool-calling with a judge: untyped params
                    model = (metric.params or {}).get("model")
                    if isinstance(model, dict):
                        model = (model.get("api_endpoint") or {}).get("model_id")
                elif isinstance(model, ModelSpec):
                    model = model.api_endpoint.model_id if model.api_endpoint else None
                if isinstance(model, str) and model:
                    out[(tname, mname)] = model
        return out


class Target(Open):
    """A NeMo Evaluator target: ``model`` (an endpoint), or data: ``rows``, ``dataset``, ``cached_outputs``."""

    passthrough = frozenset({"id", "custom_fields", "ownership", "retriever", "rag", "project"})
    type: str
    name: str | None = None
    namespace: str | None = None
    model: ModelRef | None = None
    cached_outputs: DatasetRef | None = None
    rows: list[dict[str, Any]] | None = None
    dataset: DatasetLike | None = None

    def redacted(self) -> dict[str, Any]:
        out: dict[str, Any] = redact(self.to_dict())
        return out

    def sha256(self) -> str:
        """Like ``EvalConfig.sha256``: credentials masked, every other value counts."""
        return sha256_json(fingerprint(self.to_dict()))

    @property
    def endpoint(self) -> APIEndpoint | None:
        if isinstance(self.model, ModelSpec):
            return self.model.api_endpoint
        return None

    @property
    def display_name(self) -> str:
        """A short human name: the model id for model targets, else the name or type."""
        ep = self.endpoint
        if ep is not None:
            return ep.model_id
        if isinstance(self.model, str):
            return self.model
        return self.name or f"{self.type}-target"


def source_path(obj: EvalConfig | Target) -> Path | None:
    """The file a config/target was loaded from (relative dataset paths resolve against its folder)."""
    return obj._source
