"""The package's recomputation of a NeMo job's scores from its per-sample data (``recomputed.py``).

The service's ``value``/``stats`` stay the scores of the run; this builds the second opinion beside them,
with the same ``stats.summarize`` the local engine uses, and says in one WARNING line where the two
disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from mlflow_nemo_judge.recomputed import Difference, Recomputed
from mlflow_nemo_judge.results import EvalResult, MetricTree, Score, ScoreStats
from mlflow_nemo_judge.scoring.stats import summarize

log = logging.getLogger(__name__)

# (task, metric, score) -> that score's per-sample values in item order (NaN where unparseable)
Values = Mapping[tuple[str, str, str], list[float]]
_SHOWN = 5  # differences spelled out in the warning; the rest are counted (all are in recomputed.json)


def _score(values: list[float]) -> Score:
    s = summarize(values)
    return Score(value=s.mean, stats=ScoreStats.from_summary(s))


def recompute(res: EvalResult, values: Values, group_tasks: Mapping[str, Iterable[str]] | None) -> Recomputed:
    """Every task score with per-sample values, summarised; a group's scores pooled over its member
    tasks' samples (as the local engine aggregates a group) when every member has them.

    A service score without stats is corpus-level (bleu ``corpus``): it is not a mean of per-sample
    values, so no recomputation of it is made (a mean would be a different quantity under its name).
    """
    tasks: MetricTree = {}
    for (task, metric, name), vals in values.items():
        theirs = res.tasks.get(task, {}).get(metric, {}).get(name)
        if theirs is not None and theirs.stats is None:
            continue
        tasks.setdefault(task, {}).setdefault(metric, {})[name] = _score(vals)
    groups: MetricTree = {}
    for group, metrics in res.groups.items():
        members = list((group_tasks or {}).get(group) or [])
        for metric, scores in metrics.items():
            for name, theirs in scores.items():
                pooled = [values.get((t, metric, name)) for t in members]
                if not members or theirs.stats is None or any(p is None for p in pooled):
                    continue
                flat = [v for p in pooled for v in p or []]
                groups.setdefault(group, {}).setdefault(metric, {})[name] = _score(flat)
    return Recomputed(tasks=tasks, groups=groups)


def warn_differences(res: EvalResult, where: str) -> list[Difference]:
    """One WARNING line naming the scores whose service value differs from the recomputation."""
    if res.recomputed is None:
        return []
    diffs = res.recomputed.differences(res.tasks, res.groups)
    if diffs:
        shown = "; ".join(f"{d.path}: service {d.service}, per-sample {d.recomputed}" for d in diffs[:_SHOWN])
        more = f"; and {len(diffs) - _SHOWN} more" if len(diffs) > _SHOWN else ""
        log.warning(
            "%s: NeMo's reported value differs from the mean of its own per-sample results for %d "
            "score(s): %s%s. The run keeps NeMo's numbers; the recomputation is logged beside them "
            "(recomputed/... metrics, nemo_judge/recomputed.json)",
            where,
            len(diffs),
            shown,
            more,
        )
    return diffs
