"""The package's own statistics of a nemo run, kept beside the service's numbers (never instead of them).

A nemo run's ``EvalResult.tasks``/``groups`` hold what NeMo Evaluator reported, so MLflow agrees with
NeMo's own API and UI. When the job's per-sample data exist, the nemo backend also summarises them with
the same ``stats.summarize`` the local engine uses (NaN excluded and counted, population stddev,
t-interval CI): that is ``Recomputed``, logged under ``recomputed/…`` and in
``nemo_judge/recomputed.json``. ``differences`` names the scores whose two values disagree, so a
service that counts, rounds or aggregates differently is visible instead of silently overwritten.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mlflow_nemo_judge.results import MetricTree, Score

# Two values are "the same" within this tolerance: JSON round trips and a service summing in another
# order move the last bits, which is not a disagreement worth flagging.
REL_TOL = 1e-6
ABS_TOL = 1e-9


def same_value(a: float | None, b: float | None) -> bool:
    """Equal within the tolerance; None (every sample NaN) equals None and NaN only."""
    a_missing = a is None or math.isnan(a)
    b_missing = b is None or math.isnan(b)
    if a_missing or b_missing:
        return a_missing and b_missing
    assert a is not None and b is not None
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


@dataclass
class Difference:
    """One score whose service value and per-sample recomputation disagree."""

    kind: str  # "tasks" or "groups"
    name: str  # the task or group
    metric: str
    score: str
    service: float | None
    recomputed: float | None

    @property
    def path(self) -> str:
        """``<task>/<metric>/<score>``, or ``groups/<group>/…``: the shape of the run's metric key."""
        head = "groups/" if self.kind == "groups" else ""
        return f"{head}{self.name}/{self.metric}/{self.score}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "service": _num(self.service), "recomputed": _num(self.recomputed)}


@dataclass
class Recomputed:
    """Scores recomputed from the per-sample data, in the same tree shape as ``EvalResult.tasks``."""

    tasks: MetricTree = field(default_factory=dict)
    groups: MetricTree = field(default_factory=dict)

    def scores(self) -> Iterator[tuple[str, str, str, str, Score]]:
        """``(kind, name, metric, score, Score)`` for every recomputed score, tasks first."""
        for kind, tree in (("tasks", self.tasks), ("groups", self.groups)):
            for name, metrics in tree.items():
                for metric, scores in metrics.items():
                    for sname, sc in scores.items():
                        yield kind, name, metric, sname, sc

    def differences(self, tasks: MetricTree, groups: MetricTree) -> list[Difference]:
        """The scores present on both sides whose values differ beyond the tolerance (only the value:
        a service's stats may legitimately be fewer or computed another way, e.g. ``stddev``)."""
        service = {"tasks": tasks, "groups": groups}
        out: list[Difference] = []
        for kind, name, metric, sname, sc in self.scores():
            theirs = service[kind].get(name, {}).get(metric, {}).get(sname)
            if theirs is not None and not same_value(theirs.value, sc.value):
                out.append(Difference(kind, name, metric, sname, theirs.value, sc.value))
        return out

    def to_dict(self, tasks: MetricTree, groups: MetricTree) -> dict[str, Any]:
        """``recomputed.json``: the recomputed tree (NeMo's results shape) and what differs from the
        service's tree (``tasks``/``groups``), with the tolerance used."""

        def tree(t: MetricTree) -> dict[str, Any]:
            return {
                name: {
                    "metrics": {
                        m: {"scores": {s: sc.to_dict() for s, sc in scores.items()}}
                        for m, scores in metrics.items()
                    }
                }
                for name, metrics in t.items()
            }

        return {
            "about": (
                "Statistics recomputed by mlflow-nemo-judge from the job's per-sample results, beside "
                "the service's own numbers (which are the run's metrics and results.json)."
            ),
            "tolerance": {"rel": REL_TOL, "abs": ABS_TOL},
            "differs": [d.to_dict() for d in self.differences(tasks, groups)],
            "tasks": tree(self.tasks),
            "groups": tree(self.groups),
        }


def _num(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None
