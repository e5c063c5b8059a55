"""A config's reliability settings, resolved per ``llm-judge`` metric from the ``mlflow_nemo_judge:`` block.

:mod:`.extension` validates the block as written; this module derives what a run uses from it: for each
metric, :class:`MetricSettings` (block → metric → ``--judge-repeats``, with the defaults filled in: one
repeat, ``mean``, a measurement level per score from its type), the judges' labels used in records,
columns and metric keys, and what of the block only the local backend applies (:func:`local_only`).
Pure config: no endpoint is checked and no key read, so the settings also describe results fetched from
NeMo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.config.common import ModelSpec
from mlflow_nemo_judge.config.extension import (
    Level,
    MetricReliability,
    Reducer,
    Reliability,
    _judge_metrics,
    _metric_path,
)

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.config.models import EvalConfig

__all__ = [
    "MetricSettings",
    "default_level",
    "judge_label",
    "judge_labels",
    "local_only",
    "metric_settings",
]

_LABEL_BAD = re.compile(r"[^A-Za-z0-9_-]")


def default_level(score_type: str | None) -> Level:
    """A score's measurement level when none is declared: bool → nominal, int → ordinal, else interval."""
    kind = (score_type or "float").strip().lower()
    if kind in ("bool", "boolean"):
        return "nominal"
    if kind in ("int", "integer"):
        return "ordinal"
    return "interval"


def judge_label(model_id: str) -> str:
    """A judge's label in records, columns and metric keys: the model id, ``[^A-Za-z0-9_-]`` → ``_``."""
    return _LABEL_BAD.sub("_", model_id) or "judge"


def judge_labels(model_ids: list[str]) -> list[str]:
    """Labels of a panel in order, de-duplicated with ``-2``, ``-3`` suffixes."""
    out: list[str] = []
    for mid in model_ids:
        base = judge_label(mid)
        label, n = base, 1
        while label in out:
            n += 1
            label = f"{base}-{n}"
        out.append(label)
    return out


@dataclass(frozen=True)
class MetricSettings:
    """One ``llm-judge`` metric's reliability settings, resolved (block → metric → ``--judge-repeats``).

    Pure config: no endpoint is checked and no key read, so it also serves results fetched from NeMo.
    ``judges`` are the labels of the judges in order (the panel, or ``params.model``); the first is the
    primary. ``seed`` is the base seed (repeat ``r`` sends ``seed + r``), None when none is sent.
    """

    task: str
    metric: str
    path: str  # the metric's settings path in the block (for error messages)
    repeats: int
    reducer: Reducer
    seed: int | None
    temperature: float | None
    judges: list[str]
    panel: list[ModelSpec] | None
    levels: dict[str, Level] = field(default_factory=dict)  # every score
    human_labels: dict[str, str] = field(default_factory=dict)  # only the declared ones
    score_types: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.task}/{self.metric}"

    @property
    def judgments(self) -> int:
        """Judge calls per sample."""
        return self.repeats * len(self.judges)


def _model_id(model: Any) -> str:
    if isinstance(model, ModelSpec):
        return model.api_endpoint.model_id if model.api_endpoint else "judge"
    return str(model)


def metric_settings(
    config: EvalConfig, judge_repeats: int | None = None
) -> dict[tuple[str, str], MetricSettings]:
    """``(task, metric)`` → the resolved settings of every ``llm-judge`` metric of ``config``.

    ``judge_repeats`` (``--judge-repeats``) overrides every ``repeats``, the block's and the metrics'.
    """
    ext = config.mlflow_nemo_judge
    rel = ext.reliability if ext is not None else Reliability()
    rel = rel or Reliability()
    out: dict[tuple[str, str], MetricSettings] = {}
    for key, (tname, mname, metric) in _judge_metrics(config).items():
        own = (rel.metrics or {}).get(key) or MetricReliability()
        repeats = judge_repeats or own.repeats or rel.repeats or 1
        seed = own.seed if own.seed is not None else rel.seed
        temp = own.temperature if own.temperature is not None else rel.temperature
        ids = [_model_id(m) for m in own.panel] if own.panel else [_model_id(metric.params.model)]
        scores = metric.params.scores
        levels: dict[str, Level] = {s: default_level(sc.type) for s, sc in scores.items()}
        levels.update(own.levels or {})
        out[(tname, mname)] = MetricSettings(
            task=tname,
            metric=mname,
            path=_metric_path(key),
            repeats=int(repeats),
            reducer=own.reducer or rel.reducer or "mean",
            seed=seed if seed is not None else (0 if repeats > 1 else None),
            temperature=float(temp) if temp is not None else None,
            judges=judge_labels(ids),
            panel=list(own.panel) if own.panel else None,
            levels=levels,
            human_labels=dict(own.human_labels or {}),
            score_types={s: sc.type or "float" for s, sc in scores.items()},
        )
    return out


def local_only(config: EvalConfig) -> list[str]:
    """What of the block a NeMo job does not apply (it runs with ``--backend local`` only), in words
    without a secret (metric keys, task names, counts): for the ``nemo`` backend's warning. Human-label
    agreement is not listed: it is computed on the per-sample results fetched from NeMo."""
    ext = config.mlflow_nemo_judge
    if ext is None:
        return []
    settings = metric_settings(config).values()
    out: list[str] = []
    repeats = [f"{s.key} x{s.repeats}" for s in settings if s.repeats > 1]
    if repeats:
        out.append(f"judge repeats ({', '.join(repeats)})")
    panels = [f"{s.key}: {len(s.judges)} judges" for s in settings if s.panel]
    if panels:
        out.append(f"judge panels ({', '.join(panels)})")
    if any(s.seed is not None or s.temperature is not None for s in settings):
        out.append("the judges' seed/temperature for repeats")
    if ext.pairwise:
        out.append(f"pairwise judging ({', '.join(ext.pairwise)})")
    return out
