"""Aggregation of the FAKE NeMo service's per-row scores into NeMo's results tree (reference §7.1, §8.2).

NeMo's rules, implemented here without the package's ``stats``: NaN values are excluded from every
statistic and counted in ``nan_count``; ``value`` is the mean of what is left; ``stddev``/``variance``
are population figures. A score with no finite value at all is answered with ``value: NaN`` and stats
holding only ``count: 0`` and ``nan_count``: the SDK's ``Score.value`` is a required float (``null`` and
an omitted value fail its strict validation), and NaN is the float that says "nothing measured".
``stderr`` is the standard error of the mean with the sample standard deviation (see ``aggregate``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlflow_nemo_judge.testing.fake_nemo.scorer_metrics import NAN, bleu_corpus

__all__ = ["MINIMAL_STATS", "NEMO_STATS", "aggregate", "group_tree", "score_entry", "task_tree"]

NEMO_STATS = (
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "stddev",
    "variance",
    "stderr",
    "sum_squared",
    "nan_count",
)
MINIMAL_STATS = ("count", "sum", "mean")  # what the 2025-05 server in the seed notebook returned

# (metric, score) -> per-row values, in row order
Values = dict[tuple[str, str], list[float]]
# metric -> (candidates, references) for corpus BLEU
Corpus = dict[str, tuple[list[str], list[list[str]]]]


def aggregate(values: Iterable[float]) -> dict[str, Any]:
    """NeMo's ScoreStats of ``values`` (NaN excluded and counted); None for what cannot be computed."""
    vals = list(values)
    finite = [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    n = len(finite)
    stats: dict[str, Any] = {"count": n, "nan_count": len(vals) - n}
    if n == 0:
        return stats
    total = math.fsum(finite)
    mean = total / n
    variance = math.fsum((v - mean) ** 2 for v in finite) / n  # population variance, as NeMo documents
    stddev = math.sqrt(variance)
    stats.update(
        sum=total,
        mean=mean,
        min=min(finite),
        max=max(finite),
        variance=variance,
        stddev=stddev,
        # The standard error of the mean, s/sqrt(n) with the sample standard deviation: NeMo does not
        # define it beyond "the standard error", and this is the conventional reading (none for n = 1).
        stderr=math.sqrt(variance * n / (n - 1)) / math.sqrt(n) if n > 1 else None,
        sum_squared=math.fsum(v * v for v in finite),
    )
    return stats


def score_entry(values: Sequence[float], minimal: bool) -> dict[str, Any]:
    stats = aggregate(values)
    keep = MINIMAL_STATS if minimal else NEMO_STATS
    return {
        "value": stats.get("mean", NAN),
        "stats": {k: stats[k] for k in keep if stats.get(k) is not None},
    }


def _metrics(values: Values, corpus: Corpus, minimal: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (metric, score), vals in values.items():
        out.setdefault(metric, {"scores": {}})["scores"][score] = score_entry(vals, minimal)
    for metric, (cands, refs) in corpus.items():
        # corpus BLEU is one figure over all rows: a value without stats, as NeMo reports it
        out.setdefault(metric, {"scores": {}})["scores"]["corpus"] = {"value": bleu_corpus(cands, refs)}
    return out


def task_tree(values: Values, corpus: Corpus, minimal: bool) -> dict[str, Any]:
    return {"metrics": _metrics(values, corpus, minimal)}


def group_tree(
    groups: Mapping[str, Any],
    per_task: Mapping[str, tuple[Values, Corpus]],
    minimal: bool,
) -> dict[str, Any]:
    """Groups pool their tasks' rows (nested groups pool their own tasks and their subgroups' tasks).

    How NeMo combines a group's tasks is undocumented (reference §11). Pooling rows is the reading under
    which a group of one task equals that task; a score is pooled over the member tasks that have it.
    Corpus BLEU is a per-task figure and is not recomputed for groups.
    """
    out: dict[str, Any] = {}
    for name, spec in (groups or {}).items():
        spec = spec if isinstance(spec, Mapping) else {}
        known = [per_task[t][0] for t in _members(spec) if t in per_task]
        pooled: Values = {}
        for values in known:
            for key, vals in values.items():
                pooled.setdefault(key, []).extend(vals)
        node: dict[str, Any] = {"metrics": _metrics(pooled, {}, minimal)}
        if spec.get("groups"):
            node["groups"] = group_tree(spec["groups"], per_task, minimal)
        out[name] = node
    return out


def _members(spec: Mapping[str, Any]) -> list[str]:
    tasks = [str(t) for t in spec.get("tasks") or []]
    for sub in (spec.get("groups") or {}).values():
        if isinstance(sub, Mapping):
            tasks += [t for t in _members(sub) if t not in tasks]
    return tasks
