"""Aggregation of a local run: the per-sample scores of each task, pooled into NeMo-shaped statistics.

:class:`TaskAggregator` keeps only the scores (floats) of a task's records, in item order, plus corpus
BLEU's (candidate, references) pairs; :func:`score_of` turns a score's values into its mean and stats,
:func:`group_scores` pools the values of the tasks of each config group, and :func:`require_a_score`
fails a run that measured nothing. The engine (:mod:`mlflow_nemo_judge.engine`) feeds records in.

Groups: NeMo documents no group arithmetic, so this package's is explicit. A group's score of
``(metric, score)`` is :func:`score_of` over the per-sample values of that score in **all** its member
tasks, pooled: every sample weighs the same (a task with 300 rows counts three times one with 100; it is
not a mean of task means), NaN samples count in ``nan_count`` as in a task. Members are the group's
``tasks`` plus, recursively, its nested ``groups``' tasks, each task once; a nested group gets its own
pooled scores under its path. A score only some member tasks have is pooled over those that have it.
Group-level ``metrics`` are refused at plan time (``config.groups.refuse_group_metrics``).
"""

from __future__ import annotations

from mlflow_nemo_judge.config.groups import group_specs
from mlflow_nemo_judge.errors import EvaluationError
from mlflow_nemo_judge.plan import Plan, TaskPlan
from mlflow_nemo_judge.results import NAN, MetricTree, SampleRecord, Score, ScoreStats
from mlflow_nemo_judge.scoring.stats import summarize

# nested groups by path: ("outer", "inner") -> metric -> score -> Score
GroupTree = dict[tuple[str, ...], dict[str, dict[str, Score]]]


class TaskAggregator:
    """One task's score values, one per record per ``(metric, score)`` (NaN where it has none)."""

    def __init__(self, tp: TaskPlan) -> None:
        self.tp = tp
        self.values: dict[tuple[str, str], list[float]] = {}
        self.corpus: dict[str, tuple[list[str], list[list[str]]]] = {}
        for m in tp.metrics:
            for s in m.score_names:
                if s != "corpus":
                    self.values[(m.name, s)] = []
            if m.type == "bleu":
                self.corpus[m.name] = ([], [])

    def add(self, rec: SampleRecord) -> None:
        for (mname, sname), vals in self.values.items():
            out = rec.metrics.get(mname)
            vals.append(out.scores.get(sname, NAN) if out else NAN)
        for mname, (cands, refs) in self.corpus.items():
            out = rec.metrics.get(mname)
            if out is not None and out.corpus_item is not None:
                cands.append(out.corpus_item[0])
                refs.append(out.corpus_item[1])

    def tree(self) -> dict[str, dict[str, Score]]:
        out: dict[str, dict[str, Score]] = {m.name: {} for m in self.tp.metrics}
        for (mname, sname), vals in self.values.items():
            out[mname][sname] = score_of(vals)
        for mname, (cands, refs) in self.corpus.items():
            from mlflow_nemo_judge.scoring.builtin import bleu_corpus

            # NeMo reports corpus BLEU as a value without stats.
            out[mname]["corpus"] = Score(value=bleu_corpus(cands, refs) if cands else None)
        return out


def score_of(values: list[float]) -> Score:
    s = summarize(values)
    return Score(value=s.mean, stats=ScoreStats.from_summary(s))


def require_a_score(aggs: list[TaskAggregator], samples: int, first_error: str | None) -> None:
    """A run in which no score of any sample could be computed measured nothing: it must fail, not
    finish with a table of NaNs (a model that always answers empty, a judge that never follows the
    format, a template that fails on every row). Some NaNs are results (``nan_count``); only all is not."""
    if samples == 0 or any(v == v for a in aggs for vals in a.values.values() for v in vals):
        return  # v == v is False only for NaN
    raise EvaluationError(
        f"evaluation measured nothing: every score of all {samples} sample(s) is NaN; "
        f"the first sample's reason: {first_error or 'unknown'}"
    )


def group_scores(plan: Plan, aggs: list[TaskAggregator]) -> tuple[MetricTree, GroupTree]:
    """``(top-level groups, nested groups by path)``: each group's scores pool the per-sample values of
    all its member tasks' same-named ``(metric, score)``, members taken recursively through nested
    groups, each task once (:func:`mlflow_nemo_judge.config.groups.group_specs`). Every sample weighs
    the same; corpus-level scores (bleu ``corpus``) have no per-sample values and are not pooled."""
    top: MetricTree = {}
    nested: GroupTree = {}
    by_task = {a.tp.name: a for a in aggs}
    for spec in group_specs(plan.config.groups):
        pooled: dict[tuple[str, str], list[float]] = {}
        for tname in spec.tasks:
            agg = by_task.get(tname)
            if agg is None:
                continue
            for key, vals in agg.values.items():
                pooled.setdefault(key, []).extend(vals)
        tree: dict[str, dict[str, Score]] = {}
        for (mname, sname), vals in pooled.items():
            tree.setdefault(mname, {})[sname] = score_of(vals)
        if len(spec.path) == 1:
            top[spec.path[0]] = tree
        else:
            nested[spec.path] = tree
    return top, nested
