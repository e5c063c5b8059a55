"""NeMo Evaluator ``custom`` configs and targets: models, loading, validation paths, secrets.

Compatibility rule: a config NeMo Evaluator accepts is accepted unchanged. Every model keeps unknown
fields (``extra="allow"``) so they pass through to the ``nemo`` backend, and numeric fields accept ints
and floats as written so ``EvalConfig.to_dict()`` reproduces the input exactly (the seed notebook's
config round-trips byte for byte through ``json.dumps``).

Secrets: an endpoint may carry ``api_key`` literally or ``api_key_env: NAME`` (our extension, resolved
from the environment only when a call is about to be made). ``redacted()`` dumps replace every secret
with ``"******"`` (NeMo's own mask) and are the only dumps that may be logged.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, field_validator

from mlflow_nemo_judge.config.secrets import MASK, SECRET_KEYS, redact, redact_url, resolve_key, url_secrets
from mlflow_nemo_judge.errors import ConfigError

__all__ = ["MASK", "SECRET_KEYS", "redact", "redact_url", "url_secrets"]  # re-exported; the models below too

TASK_TYPES_LOCAL = ("chat-completion", "completion", "data")
METRIC_TYPES_LOCAL = ("llm-judge", "string-check", "number-check", "em", "f1", "bleu", "rouge")
TARGET_TYPES_LOCAL = ("model", "cached_outputs", "rows", "dataset")

Number = int | float


class _Open(BaseModel):
    """Base: keep unknown fields, validate on assignment, no coercion surprises."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    # The file this object was loaded from (relative dataset paths resolve against its folder).
    _source: Path | None = PrivateAttr(default=None)


class APIEndpoint(_Open):
    """NeMo ``APIEndpointData`` plus ``api_key_env`` and ``headers`` for gateways."""

    url: str
    model_id: str
    api_key: str | None = None
    api_key_env: str | None = None
    format: str | None = None
    headers: dict[str, str] | None = None

    def resolve_api_key(self, path: str = "api_endpoint") -> str | None:
        """The key to send: ``api_key`` if given, else the env var named by ``api_key_env``."""
        return resolve_key(self.api_key, self.api_key_env, self.url, path)


class ModelSpec(_Open):
    """A model: an API endpoint plus optional prompt settings (judge inference/reasoning params)."""

    api_endpoint: APIEndpoint | None = None
    prompt: dict[str, Any] | None = None


class DatasetRef(_Open):
    files_url: str
    limit: int | None = None
    format: str | None = None
    split: str | None = None
    hf_endpoint: str | None = None


class RunParams(_Open):
    parallelism: int | None = None
    request_timeout: Number | None = None
    max_retries: int | None = None
    limit_samples: int | None = None
    max_tokens: int | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    stop: str | list[str] | None = None
    extra: dict[str, Any] | None = None


class MetricConfig(_Open):
    type: str
    params: dict[str, Any] | None = None


class TaskConfig(_Open):
    type: str
    params: dict[str, Any] | None = None
    dataset: DatasetRef | str | None = None
    metrics: dict[str, MetricConfig] | None = None


class GroupConfig(_Open):
    tasks: list[str] | None = None
    metrics: dict[str, Any] | None = None
    groups: dict[str, Any] | None = None


class EvalConfig(_Open):
    """A NeMo Evaluator evaluation config (``type: custom`` for the local backend)."""

    type: str
    name: str | None = None
    namespace: str | None = None
    description: str | None = None
    project: str | None = None
    params: RunParams | None = None
    tasks: dict[str, TaskConfig] | None = None
    groups: dict[str, GroupConfig] | None = None

    @field_validator("tasks")
    @classmethod
    def _tasks_not_empty(cls, v: dict[str, TaskConfig] | None) -> dict[str, TaskConfig] | None:
        if v is not None and not v:
            raise ValueError("at least one task is required")
        return v

    def to_dict(self) -> dict[str, Any]:
        """The config as written (unset fields omitted); contains secrets — never log it."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)

    def redacted(self) -> dict[str, Any]:
        """The config with every secret masked: safe for logs, params and artifacts."""
        return redact(self.to_dict())

    def sha256(self) -> str:
        """Content hash of the redacted config (stable across key rotation, used as run identity)."""
        return sha256_json(self.redacted())

    @property
    def display_name(self) -> str:
        return self.name or "unnamed-config"


class Target(_Open):
    """A NeMo Evaluator target: ``model`` (an endpoint), or data: ``rows``, ``dataset``, ``cached_outputs``."""

    type: str
    name: str | None = None
    namespace: str | None = None
    model: ModelSpec | str | None = None
    cached_outputs: DatasetRef | None = None
    rows: list[dict[str, Any]] | None = None
    dataset: DatasetRef | str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)

    def redacted(self) -> dict[str, Any]:
        return redact(self.to_dict())

    def sha256(self) -> str:
        return sha256_json(self.redacted())

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


# ---------------------------------------------------------------------------------------------- helpers


def sha256_json(obj: Any) -> str:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _loc_to_path(prefix: str, loc: tuple[Any, ...]) -> str:
    parts: list[str] = [prefix] if prefix else []
    for p in loc:
        if isinstance(p, int):
            if parts:
                parts[-1] = f"{parts[-1]}[{p}]"
            else:
                parts.append(f"[{p}]")
        else:
            # pydantic adds union-branch names (e.g. "DatasetRef", "str") to loc; they are not config keys
            if isinstance(p, str) and (p[:1].isupper() or p in ("str", "list[str]", "int", "float")):
                continue
            parts.append(str(p))
    return ".".join(parts)


def _validation_to_config_error(exc: ValidationError, prefix: str) -> ConfigError:
    errs = exc.errors()
    first = errs[0]
    path = _loc_to_path(prefix, tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        msg = "required field is missing"
    more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
    return ConfigError(path, msg + more)


def _read_mapping(
    source: str | os.PathLike[str] | Mapping[str, Any], what: str
) -> tuple[dict[str, Any], Path | None]:
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), None
    path = Path(source)
    if not path.exists():
        raise ConfigError("", f"{what} file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml  # YAML is a superset of JSON; lazy so --help stays fast

            data = yaml.safe_load(text)
    except (ValueError, Exception) as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise ConfigError("", f"{path}: cannot parse {what}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: a {what} must be a mapping, got {type(data).__name__}")
    return data, path


def load_config(source: str | os.PathLike[str] | Mapping[str, Any] | EvalConfig) -> EvalConfig:
    """Load and structurally validate a config from a YAML/JSON file or a dict.

    Semantic checks that need the dataset (template variables, metric params) happen when the run is
    planned (``plan.build_plan``), still before any model call.
    """
    if isinstance(source, EvalConfig):
        return source
    data, path = _read_mapping(source, "config")
    if "tasks" not in data:
        raise ConfigError("tasks", "required field is missing: a config needs at least one task")
    try:
        cfg = EvalConfig.model_validate(data)
    except ValidationError as exc:
        raise _with_source(_validation_to_config_error(exc, ""), path) from None
    cfg._source = path
    return cfg


def load_target(source: str | os.PathLike[str] | Mapping[str, Any] | Target) -> Target:
    """Load and validate a target from a YAML/JSON file or a dict."""
    if isinstance(source, Target):
        return source
    data, path = _read_mapping(source, "target")
    try:
        target = Target.model_validate(data)
    except ValidationError as exc:
        raise _with_source(_validation_to_config_error(exc, "target"), path) from None
    if target.type == "model" and target.model is None:
        raise _with_source(ConfigError("target.model", "a 'model' target needs model.api_endpoint"), path)
    if isinstance(target.model, ModelSpec) and target.type == "model" and target.model.api_endpoint is None:
        raise _with_source(ConfigError("target.model.api_endpoint", "required field is missing"), path)
    target._source = path
    return target


def source_path(obj: EvalConfig | Target) -> Path | None:
    """The file a config/target was loaded from (relative dataset paths resolve against its folder)."""
    return obj._source


def _with_source(err: ConfigError, path: Path | None) -> ConfigError:
    if path is None:
        return err
    new = ConfigError(err.path, err.message)
    new.args = (f"{path}: {err}",)
    return new
