"""The reliability and pairwise reports in MLflow: their metrics and files on a run, and read back.

A child (or single) run holds its target's reliability report: the figures as ``reliability/…`` metrics
(logged by ``RunTracker.finish`` in the same batch as the scores) and the files under
``nemo_judge/reliability/`` (``report.json`` is what ``load_reliability`` reads back). A parent run holds
the pairwise report (``pairwise/…`` metrics, ``nemo_judge/pairwise/``) and a short table of its
children's headline reliability figures.

**The parent's reliability table** is an artifact (``nemo_judge/reliability/children.md`` and the
MLflow table ``nemo_judge/reliability/children.json``) plus only the headline figures as metrics
(``<label>/reliability/<task>/<metric>/<score>/<figure>`` for flip rate, ICC, α and human κ). Every
figure of every child would be hundreds of parent metrics with a panel (per judge, per judge pair), which
swamps the parent's chart view; the full set stays on each child, one click away, and the headlines are
what one compares across targets.

mlflow is imported inside the functions only.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.tracking.identity import Outcome
from mlflow_nemo_judge.tracking.names import ART_DIR, sanitize_key

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.pairwise_report import PairwiseReport
    from mlflow_nemo_judge.reliability.report import ReliabilityReport
    from mlflow_nemo_judge.tracking.runs import RunTracker

RELIABILITY_DIR = "reliability"
PAIRWISE_DIR = "pairwise"
ART_RELIABILITY = f"{ART_DIR}/{RELIABILITY_DIR}/report.json"
ART_PAIRWISE = f"{ART_DIR}/{PAIRWISE_DIR}/report.json"
ART_CHILDREN_TABLE = f"{ART_DIR}/{RELIABILITY_DIR}/children.json"
# The figures of a child that the parent shows as metrics (the tail of the key after S).
HEADLINE_FIGURES = ("flip_rate", "icc", "alpha", "human/kappa")
# Metric-key prefixes that are figures about the judge, not scores (leaderboards skip them).
REPORT_PREFIXES = (f"{RELIABILITY_DIR}/", f"{PAIRWISE_DIR}/")


@dataclass
class Tracked(Outcome):
    """A tracked outcome with its target's reliability report (None when the config measures none):
    computed by ``execute`` for a run made or resumed now, read back for a reused one."""

    reliability: ReliabilityReport | None = None


def report_of(o: Outcome) -> ReliabilityReport | None:
    return o.reliability if isinstance(o, Tracked) else None


def sink_report(sink: Any) -> ReliabilityReport | None:
    """The report a sink finished with (``MlflowSink.reliability``/``MemorySink.reliability``)."""
    report: ReliabilityReport | None = getattr(sink, "reliability", None)
    return report


def reused_with_report(cl: Any, o: Outcome) -> Tracked:
    """A reused FINISHED run's outcome with the report it logged (none logged: None)."""
    return Tracked(o.result, o.run_id, o.reused, o.model_id, read_reliability(cl, o.run_id))


def is_report_key(key: str) -> bool:
    """A ``reliability/…`` or ``pairwise/…`` metric: a figure about the judge, never a score."""
    return key.startswith(REPORT_PREFIXES)


def report_metrics(report: Any) -> dict[str, float]:
    """The report's figures as metrics: keys sanitised, figures a run could not compute omitted (a
    report should not return them; a NaN that slips through is dropped, never logged)."""
    out: dict[str, float] = {}
    for k, v in (report.metrics() if report is not None else {}).items():
        if v is None:
            continue
        f = float(v)
        if math.isfinite(f):
            out[sanitize_key(k)] = f
    return out


def report_files(report: Any, tmp: str | Path, folder: str) -> dict[str, str | bytes | Path]:
    """The report's files keyed by their path under ``nemo_judge/``, each under ``folder/`` (a report
    may give its paths with or without that folder)."""
    out: dict[str, str | bytes | Path] = {}
    Path(tmp).mkdir(parents=True, exist_ok=True)
    for rel, content in report.files(Path(tmp)).items():
        rel = str(rel).lstrip("/")
        if rel.startswith(f"{ART_DIR}/"):
            rel = rel[len(ART_DIR) + 1 :]
        if not rel.startswith(f"{folder}/"):
            rel = f"{folder}/{rel}"
        out[rel] = content
    return out


def log_pairwise(parent: RunTracker, report: PairwiseReport) -> None:
    """On the parent: the pairwise figures as metrics and its files under ``nemo_judge/pairwise/``."""
    from mlflow.entities import Metric

    from mlflow_nemo_judge.tracking.progress import _now_ms

    ts = _now_ms()
    values = report_metrics(report)
    if values:
        parent.cl.log_batch(parent.run_id, metrics=[Metric(k, v, ts, 0) for k, v in values.items()])
    with tempfile.TemporaryDirectory(prefix="nemo-judge-pairwise-") as tmp:
        parent.log_files(report_files(report, tmp, PAIRWISE_DIR))


def children_rows(children: Sequence[tuple[str, str, ReliabilityReport | None]]) -> list[dict[str, Any]]:
    """One row per (child, figure) of the headline figures: target label, run id, score, figure, value."""
    rows: list[dict[str, Any]] = []
    for label, run_id, report in children:
        for key, value in sorted(report_metrics(report).items()):
            body = key[len(RELIABILITY_DIR) + 1 :]
            for fig in HEADLINE_FIGURES:
                if body.endswith(f"/{fig}") and "/judge/" not in body:
                    score = body[: -len(fig) - 1]
                    rows.append(
                        {"target": label, "run_id": run_id, "score": score, "figure": fig, "value": value}
                    )
    return rows


def log_children_reliability(
    parent: RunTracker, children: Sequence[tuple[str, str, ReliabilityReport | None]]
) -> None:
    """On the parent: the children's headline reliability figures as ``<label>/reliability/…`` metrics,
    a markdown table and an MLflow table (nothing when no child has a report)."""
    rows = children_rows(children)
    if not rows:
        return
    import pandas as pd
    from mlflow.entities import Metric

    from mlflow_nemo_judge.tracking.progress import _now_ms

    ts = _now_ms()
    metrics = [
        Metric(sanitize_key(f"{r['target']}/{RELIABILITY_DIR}/{r['score']}/{r['figure']}"), r["value"], ts, 0)
        for r in rows
    ]
    parent.cl.log_batch(parent.run_id, metrics=metrics)
    lines = [
        "# Judge reliability per target",
        "",
        "Headline figures of each child run (every figure is on the child, under `reliability/…`).",
        "",
        "| target | score | figure | value |",
        "|---|---|---|---:|",
        *(f"| {r['target']} | {r['score']} | {r['figure']} | {r['value']:.4g} |" for r in rows),
    ]
    parent.log_files({f"{RELIABILITY_DIR}/children.md": "\n".join(lines) + "\n"})
    parent._log_table(pd.DataFrame(rows), ART_CHILDREN_TABLE)


# ---------------------------------------------------------------------------------- read back


def _doc(cl: Any, run_id: str, path: str) -> Mapping[str, Any] | None:
    from mlflow_nemo_judge.tracking.store import download_json

    doc = download_json(cl, run_id, path)
    return doc if isinstance(doc, Mapping) else None


def read_reliability(cl: Any, run_id: str) -> ReliabilityReport | None:
    """The reliability report a run logged (``nemo_judge/reliability/report.json``), or None."""
    doc = _doc(cl, run_id, ART_RELIABILITY)
    if doc is None:
        return None
    from mlflow_nemo_judge.reliability.report import ReliabilityReport

    return ReliabilityReport.from_dict(dict(doc))


def read_pairwise(cl: Any, run_id: str) -> PairwiseReport | None:
    """The pairwise report a parent run logged (``nemo_judge/pairwise/report.json``), or None."""
    doc = _doc(cl, run_id, ART_PAIRWISE)
    if doc is None:
        return None
    from mlflow_nemo_judge.reliability.pairwise_report import PairwiseReport

    return PairwiseReport.from_dict(dict(doc))


def load_reliability(run_id: str, tracking_uri: str | None = None) -> ReliabilityReport | None:
    """``read_reliability`` by run id, with the default (or given) tracking URI."""
    from mlflow_nemo_judge.tracking.store import client

    return read_reliability(client(tracking_uri), run_id)


def load_pairwise(run_id: str, tracking_uri: str | None = None) -> PairwiseReport | None:
    """``read_pairwise`` by run id, with the default (or given) tracking URI."""
    from mlflow_nemo_judge.tracking.store import client

    return read_pairwise(client(tracking_uri), run_id)
