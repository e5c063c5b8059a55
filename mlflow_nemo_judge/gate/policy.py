"""The promotion policy: which scores decide, in which direction, by how much, with what confidence.

A policy is a small YAML/JSON file (or the same fields as flags / a dict)::

    primary: consult_summary_eval/completeness/completeness   # the score the challenger must win on
    confidence: 0.95        # two-sided level of every interval
    min_items: 10           # fewer shared items (or judged pairs of a score) -> INCONCLUSIVE
    nan_budget: 0.1         # max share of NaN per score and run (default for every score)
    margin: 0.0             # default non-inferiority margin of the guard rails
    scores:
      consult_summary_eval/completeness/completeness: {direction: higher, min_effect: 0.25}
      consult_summary_eval/correctness/correctness: {direction: higher, margin: 0.25}

The primary score is a superiority test (``min_effect``); every other listed score is a guard rail, a
non-inferiority test (``margin``). Without ``scores`` every score of the config counts: the primary
(default: the config's first score) and the rest as guard rails with ``margin``. Score keys are the
MLflow metric keys ``<task>/<metric>/<score>``, or a unique ending or metric name of one
(``correctness``, ``house_style``).
Validation mirrors ``config/``: pydantic, and one ``ConfigError`` naming the file and field path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlflow_nemo_judge.config import EvalConfig
from mlflow_nemo_judge.errors import ConfigError

Direction = Literal["higher", "lower"]


class ScoreRule(BaseModel):
    """One score's rule; ``min_effect`` belongs to the primary score, ``margin`` to guard rails."""

    model_config = ConfigDict(extra="forbid")

    direction: Direction = "higher"
    min_effect: float | None = Field(default=None, ge=0)
    margin: float | None = Field(default=None, ge=0)
    nan_budget: float | None = Field(default=None, ge=0, le=1)


class Policy(BaseModel):
    """The declarative policy (see the module docstring for the file shape and the defaults)."""

    model_config = ConfigDict(extra="forbid")

    primary: str | None = None
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    min_items: int = Field(default=10, ge=2)
    nan_budget: float = Field(default=0.1, ge=0, le=1)
    margin: float = Field(default=0.0, ge=0)
    scores: dict[str, ScoreRule] = Field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """A policy rule resolved against the scores a config produces."""

    key: str
    role: Literal["primary", "guardrail"]
    direction: Direction
    threshold: float  # min_effect (primary) or margin (guard rail), in score units
    nan_budget: float


@dataclass(frozen=True)
class Resolved:
    """The policy bound to one config: its rules, primary first."""

    policy: Policy
    rules: tuple[Rule, ...]
    where: str  # the policy's file (or "policy"), for messages

    @property
    def primary(self) -> Rule:
        return self.rules[0]


def load_policy(source: Policy | Mapping[str, Any] | str | os.PathLike[str] | None) -> tuple[Policy, str]:
    """The policy and where it came from (its file, else ``"policy"``), validated with one-line errors."""
    from mlflow_nemo_judge.config.load import _read_mapping, _with_source, validate_model

    if source is None:
        return Policy(), "policy"
    if isinstance(source, Policy):
        return source, "policy"
    data, path = _read_mapping(source, "policy")
    try:
        policy = validate_model(Policy, data)
    except ConfigError as err:
        raise _with_source(err, path) from None
    return policy, str(path) if path else "policy"


def _first(policy: Policy) -> str | None:
    return next(iter(policy.scores), None)


def config_score_keys(config: EvalConfig) -> list[str]:
    """The MLflow metric keys of every task score the config produces, in config order."""
    from mlflow_nemo_judge.config.metrics import JudgeMetric
    from mlflow_nemo_judge.plan_metrics import SCORE_NAMES
    from mlflow_nemo_judge.tracking.names import sanitize_key

    keys: list[str] = []
    for tname, task in (config.tasks or {}).items():
        for mname, metric in (task.metrics or {}).items():
            names: Iterable[str] = (
                metric.params.scores if isinstance(metric, JudgeMetric) else SCORE_NAMES.get(metric.type, ())
            )
            keys += [sanitize_key(f"{tname}/{mname}/{s}") for s in names if s != "corpus"]
    return keys


def _match(name: str, keys: Sequence[str], field: str, where: str) -> str:
    if name in keys:
        return name
    # A unique ending (``correctness``, ``completeness/completeness``) or metric name (``house_style``)
    hits = [k for k in keys if k.endswith("/" + name) or k.split("/")[-2:-1] == [name]]
    if len(hits) == 1:
        return hits[0]
    why = f"is ambiguous ({', '.join(hits)})" if hits else "is not a score of the config"
    raise ConfigError(f"{where}: {field}", f"{name!r} {why}; its scores: {', '.join(keys) or 'none'}")


def resolve(policy: Policy, keys: Sequence[str], where: str = "policy") -> Resolved:
    """Bind ``policy`` to the score ``keys`` of a config; an unknown or ambiguous key is bad input."""
    if not keys:
        raise ConfigError(f"{where}: scores", "the config produces no scores to decide on")
    named = {_match(k, keys, f"scores.{k}", where): r for k, r in policy.scores.items()}
    if policy.primary is not None:
        primary = _match(policy.primary, keys, "primary", where)
    else:
        primary = next(iter(named), keys[0])
    order = [primary] + [k for k in (named or dict.fromkeys(keys)) if k != primary]
    rules = []
    for key in order:
        r = named.get(key, ScoreRule())
        is_primary = key == primary
        # The two thresholds mean different tests: refuse the one that would be silently ignored.
        wrong = r.margin if is_primary else r.min_effect
        if wrong is not None:
            field = "margin" if is_primary else "min_effect"
            what = "the primary score takes min_effect" if is_primary else "a guard rail takes margin"
            raise ConfigError(f"{where}: scores.{key}.{field}", f"{what}, not {field}")
        given = r.min_effect if is_primary else r.margin
        threshold = given if given is not None else (0.0 if is_primary else policy.margin)
        budget = policy.nan_budget if r.nan_budget is None else r.nan_budget
        rules.append(Rule(key, "primary" if is_primary else "guardrail", r.direction, threshold, budget))
    return Resolved(policy, tuple(rules), where)


def policy_from_flags(
    base: Policy,
    *,
    primary: str | None = None,
    direction: Direction | None = None,
    min_effect: float | None = None,
    margin: float | None = None,
    confidence: float | None = None,
    nan_budget: float | None = None,
    min_items: int | None = None,
) -> Policy:
    """``base`` with the CLI's flags applied on top (a flag wins over the file), validated again."""
    from mlflow_nemo_judge.config.load import validate_model

    data = base.model_dump(exclude_none=True)
    for name, value in (
        ("primary", primary),
        ("confidence", confidence),
        ("nan_budget", nan_budget),
        ("min_items", min_items),
        ("margin", margin),
    ):
        if value is not None:
            data[name] = value
    if direction is not None or min_effect is not None:
        key = data.get("primary") or _first(base)
        if key is None:
            raise ConfigError("--primary", "--direction/--min-effect need --primary KEY (or a policy file)")
        rule = dict(data.get("scores", {}).get(key, {}))
        rule.update(
            {k: v for k, v in (("direction", direction), ("min_effect", min_effect)) if v is not None}
        )
        data.setdefault("scores", {})[key] = rule
        data["primary"] = key
    return validate_model(Policy, data, prefix="")
