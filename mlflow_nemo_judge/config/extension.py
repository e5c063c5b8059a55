"""The ``mlflow_nemo_judge:`` block of a config: this package's own extensions, never sent to NeMo.

NeMo Evaluator has no place for judge repeats, judge panels, human-label agreement or position-swapped
pairwise judging, so they live under one top-level, clearly namespaced key::

    mlflow_nemo_judge:
      reliability: {repeats, reducer, temperature, seed, metrics: {"<task>/<metric>": {...}}}
      pairwise: {"<task>": {model, template, parser, inference_params, extra, tie_values}}

Unlike the NeMo parts of a config (open: unknown keys pass through to NeMo), this is our own schema, so
it is *strict*: an unknown key is an error naming its path (a misspelt ``repeat:`` must not silently run
one judgment). The models still subclass :class:`~mlflow_nemo_judge.config.common.Open` for its key
order and number types, so ``EvalConfig.to_dict()`` gives the block back as written and ``sha256``
counts it (a run with repeats is a different evaluation from one without). Endpoints inside the block
(panel members, the pairwise judge) are NeMo-shaped ``ModelSpec``\\ s and stay open like the judge's.

Checked here, at load: structure, ranges, names of reducers and levels (:class:`Extension`), and what
refers to the rest of the config (:func:`check_references`): metric keys that name an ``llm-judge``
metric, scores that metric has, ``majority`` only on discrete scores, pairwise tasks that exist.
Endpoints and API keys of panel members are checked when the local run is planned
(``plan_reliability``), like the judge's own. What each metric's settings resolve to (defaults, overrides,
``--judge-repeats``, judge labels) is :mod:`.reliability_settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, StrictInt, StrictStr, ValidationError, field_validator

from mlflow_nemo_judge.config.common import InferenceParams, ModelSpec, Number, Open, RequestTemplate
from mlflow_nemo_judge.config.metrics import JudgeMetric, RegexParser
from mlflow_nemo_judge.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.config.models import EvalConfig

__all__ = [
    "BLOCK",
    "LEVELS",
    "MAX_REPEATS",
    "REDUCERS",
    "Extension",
    "Level",
    "MetricReliability",
    "PairwiseTask",
    "Reducer",
    "Reliability",
    "check_references",
    "pairwise_tasks",
    "parse_extension",
]

BLOCK = "mlflow_nemo_judge"
MAX_REPEATS = 100
Reducer = Literal["mean", "median", "majority"]
Level = Literal["nominal", "ordinal", "interval"]
REDUCERS: tuple[str, ...] = ("mean", "median", "majority")
LEVELS: tuple[str, ...] = ("nominal", "ordinal", "interval")
_DISCRETE = frozenset({"bool", "boolean", "int", "integer"})


class Strict(Open):
    """An :class:`Open` model that refuses unknown keys (our own schema has no pass-through)."""

    model_config = ConfigDict(extra="forbid")


def _repeats_in_range(v: int | None) -> int | None:
    if v is not None and not 1 <= v <= MAX_REPEATS:
        raise ValueError(f"must be between 1 and {MAX_REPEATS}, got {v}")
    return v


def _not_negative(v: int | None) -> int | None:
    if v is not None and v < 0:
        raise ValueError(f"must be >= 0, got {v}")
    return v


def _temperature_ok(v: float | None) -> float | None:
    if v is not None and not 0 <= v <= 2:  # the range OpenAI-compatible servers accept
        raise ValueError(f"must be between 0 and 2, got {v}")
    return v


class MetricReliability(Strict):
    """Settings of one ``"<task>/<metric>"``; each overrides the block's."""

    repeats: StrictInt | None = None
    reducer: Reducer | None = None
    temperature: Number | None = None
    seed: StrictInt | None = None
    # These models INSTEAD of params.model (locally); the first is the "primary" judge.
    panel: list[ModelSpec] | None = None
    human_labels: dict[str, StrictStr] | None = None  # score -> dataset column with the human label
    levels: dict[str, Level] | None = None  # score -> measurement level

    _repeats = field_validator("repeats")(_repeats_in_range)
    _seed = field_validator("seed")(_not_negative)
    _temperature = field_validator("temperature")(_temperature_ok)

    @field_validator("panel")
    @classmethod
    def _two_judges(cls, v: list[ModelSpec] | None) -> list[ModelSpec] | None:
        if v is not None and len(v) < 2:
            raise ValueError(
                f"a panel needs at least 2 models, got {len(v)} (one judge is the metric's params.model)"
            )
        return v

    @field_validator("human_labels")
    @classmethod
    def _columns_named(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for score, column in (v or {}).items():
            if not column.strip():
                raise ValueError(f"score {score!r}: the dataset column name is empty")
        return v


class Reliability(Strict):
    repeats: StrictInt | None = None
    reducer: Reducer | None = None
    temperature: Number | None = None
    seed: StrictInt | None = None
    metrics: dict[str, MetricReliability] | None = None

    _repeats = field_validator("repeats")(_repeats_in_range)
    _seed = field_validator("seed")(_not_negative)
    _temperature = field_validator("temperature")(_temperature_ok)


class PairwiseTask(Strict):
    """A position-swapped pairwise judge of one task's targets (run by ``reliability.pairwise``)."""

    model: ModelSpec
    template: RequestTemplate  # variables: item.*, output_a, output_b
    parser: RegexParser  # the first capture group: A, B or a tie value (case-insensitive)
    inference_params: InferenceParams | None = None
    extra: dict[str, Any] | None = None
    tie_values: list[StrictStr] | None = None

    @field_validator("template")
    @classmethod
    def _has_prompt(cls, v: RequestTemplate) -> RequestTemplate:
        if not v.has_prompt:
            raise ValueError("required: a template with 'messages' (or 'prompt' for completion models)")
        return v

    @field_validator("tie_values")
    @classmethod
    def _ties_named(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not t.strip() for t in v)):
            raise ValueError("must be a non-empty list of non-empty strings, e.g. [TIE]")
        return v

    @property
    def ties(self) -> list[str]:
        """The verdicts that mean a tie, upper-cased (default ``[TIE]``)."""
        return [t.strip().upper() for t in (self.tie_values or ["TIE"])]


class Extension(Strict):
    """The whole ``mlflow_nemo_judge:`` block."""

    reliability: Reliability | None = None
    pairwise: dict[str, PairwiseTask] | None = None


def parse_extension(value: Any) -> Extension:
    """Validate the block; a problem is a ``ConfigError`` whose path starts with ``mlflow_nemo_judge``.

    Called by ``EvalConfig``'s field validator: ``ConfigError`` is not a ``ValueError``, so pydantic lets
    it through as is and ``load_config`` adds the file name, instead of turning it into a message about
    our class names.
    """
    if isinstance(value, Extension):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(BLOCK, f"must be a mapping, got {type(value).__name__}")
    try:
        return Extension.model_validate(value)
    except ValidationError as exc:
        from mlflow_nemo_judge.config.load import config_path, validate_model

        first = exc.errors()[0]
        if first.get("type") == "extra_forbidden":
            path, _ = config_path(Extension, tuple(first.get("loc", ())), BLOCK)
            parent, key = path.rsplit(".", 1)
            known = _known_keys(tuple(first.get("loc", ()))[:-1])
            raise ConfigError(
                path,
                f"unknown key {key!r} in {parent} (the {BLOCK} block is this package's own schema; "
                f"known keys: {', '.join(known)})",
            ) from None
        validate_model(Extension, value, BLOCK)  # raises the ConfigError of the first problem
        raise  # pragma: no cover  (validate_model raised)


def _known_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The fields of the block's model at ``loc`` (a pydantic location), for an unknown-key error."""
    from mlflow_nemo_judge.config.load import config_path

    _, tp = config_path(Extension, loc)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, Open) else []


# ------------------------------------------------------------------------------------- references


def _metric_path(key: str) -> str:
    return f"{BLOCK}.reliability.metrics.{key}"


def _judge_metrics(config: EvalConfig) -> dict[str, tuple[str, str, JudgeMetric]]:
    """``"<task>/<metric>"`` → ``(task, metric, the metric)`` for every ``llm-judge`` metric."""
    out: dict[str, tuple[str, str, JudgeMetric]] = {}
    for tname, task in (config.tasks or {}).items():
        for mname, metric in (task.metrics or {}).items():
            if isinstance(metric, JudgeMetric):
                out[f"{tname}/{mname}"] = (tname, mname, metric)
    return out


def _require_discrete(key: str, metric: JudgeMetric, path: str) -> None:
    """``majority`` counts equal values: it needs bool or int scores (floats rarely repeat)."""
    for sname, s in metric.params.scores.items():
        if (s.type or "float").strip().lower() not in _DISCRETE:
            raise ConfigError(
                path,
                f"'majority' needs discrete scores (bool or int); score {sname!r} of {key} is "
                f"{s.type or 'float'!r}: use mean or median",
            )


def check_references(config: EvalConfig) -> None:
    """What the block says about the rest of the config must be true of it (``ConfigError`` with path)."""
    ext = config.mlflow_nemo_judge
    if ext is None:
        return
    rel = ext.reliability
    judges = _judge_metrics(config)
    block_reducer = rel.reducer if rel else None
    for key, m in ((rel.metrics or {}) if rel else {}).items():
        found = judges.get(key)
        if found is None:
            known = ", ".join(sorted(judges)) or "none"
            raise ConfigError(
                _metric_path(key),
                f"names no llm-judge metric of this config (keys are '<task>/<metric>'; llm-judge "
                f"metrics: {known})",
            )
        scores = found[2].params.scores
        for what, named in (("human_labels", m.human_labels), ("levels", m.levels)):
            for sname in named or {}:
                if sname not in scores:
                    raise ConfigError(
                        f"{_metric_path(key)}.{what}.{sname}",
                        f"the metric has no score {sname!r} (its scores: {', '.join(scores)})",
                    )
        if m.reducer == "majority":
            _require_discrete(key, found[2], f"{_metric_path(key)}.reducer")
    if block_reducer == "majority":  # the metrics without a reducer of their own follow the block's
        for key, (_, _, metric) in judges.items():
            own = (rel.metrics or {}).get(key) if rel else None
            if own is None or own.reducer is None:
                _require_discrete(key, metric, f"{BLOCK}.reliability.reducer")
    from mlflow_nemo_judge.scoring.parsing import compile_regex

    tasks = config.tasks or {}
    for tname, pw in (ext.pairwise or {}).items():
        if tname not in tasks:
            raise ConfigError(
                f"{BLOCK}.pairwise.{tname}",
                f"names no task of this config (tasks: {', '.join(tasks) or 'none'})",
            )
        try:
            compile_regex(pw.parser.pattern)
        except ValueError as exc:
            raise ConfigError(f"{BLOCK}.pairwise.{tname}.parser.pattern", str(exc)) from None
        if pw.model.api_endpoint is None:
            raise ConfigError(f"{BLOCK}.pairwise.{tname}.model.api_endpoint", "required field is missing")


def pairwise_tasks(config: EvalConfig) -> dict[str, PairwiseTask]:
    """Task name → its pairwise judge, for every task with a ``pairwise`` block (validated at load).

    Whether there are at least 2 targets to compare is the pipeline's check (only it knows the targets):
    ``ConfigError(f"mlflow_nemo_judge.pairwise.{task}", ...)``.
    """
    ext = config.mlflow_nemo_judge
    return dict(ext.pairwise or {}) if ext is not None else {}
