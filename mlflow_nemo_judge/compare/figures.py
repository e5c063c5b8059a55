"""The judge's figures across runs, read back from MLflow: reliability per run, pairwise per parent.

``reliability_frame`` gives one row per run with its ``reliability/…`` metrics as columns (prefix
dropped), ``pairwise_frame`` one row per parent run with its ``pairwise/…`` metrics; the metrics are
what the runs logged (``tracking.reports``), so no artifact is downloaded. ``format_reliability`` and
``format_pairwise`` print them as ``compare`` does: one line per (run, score) with the headline figures
and their CIs, and per (task, pair) the win rate, per (task, target) the ranking; every figure is in
``--output json``. Neither kind of figure is ever a leaderboard score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge import tracking

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

ID_COLUMNS = ("target", "run_id", "run_name")


def reliability_frame(
    run_ids: Sequence[str] | None = None,
    tracking_uri: str | None = None,
    *,
    experiment: str | None = None,
) -> pd.DataFrame:
    """One row per run (of ``run_ids``, or of ``experiment``) that logged reliability figures: its
    identity and every ``reliability/…`` metric as a column (keys without their ``reliability/``
    prefix). Runs without any are left out; parent runs too (their figures are on the children). An
    empty ``run_ids`` list is no runs (not the whole experiment)."""
    return _report_frame(_runs(run_ids, tracking_uri, experiment), "reliability/", skip_parents=True)


def pairwise_frame(
    run_ids: Sequence[str] | None = None,
    tracking_uri: str | None = None,
    *,
    experiment: str | None = None,
) -> pd.DataFrame:
    """One row per parent run that logged pairwise figures (``pairwise/…`` metrics, prefix dropped)."""
    return _report_frame(_runs(run_ids, tracking_uri, experiment), "pairwise/", skip_parents=False)


def judge_figures(
    run_ids: Sequence[str], tracking_uri: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What ``compare`` prints beside the leaderboard: the reliability frame of ``run_ids`` and the
    pairwise frame of the parent runs among them and of their parents (each run read once)."""
    runs = _runs(list(dict.fromkeys(run_ids)), tracking_uri, None)
    parents: list[str] = []
    for r in runs:
        pid = r.run_id if r.tags.get(tracking.TAG_ROLE) == "parent" else r.tags.get("mlflow.parentRunId")
        if pid and pid not in parents:
            parents.append(pid)
    known = {r.run_id: r for r in runs}
    parent_runs = [known[p] for p in parents if p in known]
    parent_runs += _runs([p for p in parents if p not in known], tracking_uri, None)
    return (
        _report_frame(runs, "reliability/", skip_parents=True),
        _report_frame(parent_runs, "pairwise/", skip_parents=False),
    )


def _runs(
    run_ids: Sequence[str] | None, tracking_uri: str | None, experiment: str | None
) -> list[tracking.RunSummary]:
    if run_ids is not None and not run_ids:
        return []
    return tracking.fetch_runs(experiment, run_ids, tracking_uri)


def _report_frame(runs: Iterable[tracking.RunSummary], prefix: str, *, skip_parents: bool) -> pd.DataFrame:
    return figures_frame(
        [
            (r.tags.get(tracking.TAG_TARGET, ""), r.run_id, r.run_name, r.metrics)
            for r in runs
            if not (skip_parents and r.tags.get(tracking.TAG_ROLE) == "parent")
        ],
        prefix,
    )


def figures_frame(runs: Sequence[tuple[str, str, str, Mapping[str, float]]], prefix: str) -> pd.DataFrame:
    """``(target, run id, run name, metrics)`` per run → one row per run with figures under ``prefix``
    (also what ``run`` prints from the reports in memory: ``report.metrics()``)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    for target, run_id, run_name, metrics in runs:
        figures = {k[len(prefix) :]: v for k, v in sorted(metrics.items()) if k.startswith(prefix)}
        if not figures:
            continue
        keys += [k for k in figures if k not in keys]
        rows.append({"target": target, "run_id": run_id, "run_name": run_name, **figures})
    return pd.DataFrame(rows, columns=[*ID_COLUMNS, *keys])


# ------------------------------------------------------------------------------------- rendering


def _split(key: str) -> tuple[str, str]:
    """``<task>/<metric>/<score>/<figure…>`` → (score key, figure)."""
    parts = key.split("/")
    return "/".join(parts[:3]), "/".join(parts[3:])


def _v(figs: dict[str, float], name: str, fmt: str = "{:.3f}") -> str:
    v = figs.get(name)
    if v is None or math.isnan(v):
        return "-"
    return str(int(v)) if fmt == "int" else fmt.format(v)


def _with_ci(figs: dict[str, float], name: str) -> str:
    head = _v(figs, name)
    lo, hi = figs.get(f"{name}/ci95_low"), figs.get(f"{name}/ci95_high")
    if head == "-" or lo is None or hi is None:
        return head
    return f"{head} [{lo:.3f}, {hi:.3f}]"


def _render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Fixed width; the figures (every column after the first three, which name what) right-aligned."""
    from mlflow_nemo_judge.compare import _render as render

    return render(headers, rows, set(range(3, len(headers))))


def _row_figures(r: Any, columns: Iterable[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in columns:
        if k in ID_COLUMNS:
            continue
        v = r[k]
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[str(k)] = float(v)
    return out


def format_reliability(df: pd.DataFrame) -> str:
    """Per run and score: repeats k, flip rate, within-item spread, ICC (95% CI), panel size and α
    (95% CI), and the agreement with human labels (n, κ with 95% CI, Spearman ρ, exact, ±1)."""
    if not len(df):
        return "(no reliability figures)"
    headers = ["target", "run", "score", "k", "flip", "spread", "ICC", "judges", "alpha"]
    headers += ["human n", "human kappa", "rho", "exact", "±1"]
    rows = []
    for _, r in df.iterrows():
        by_score: dict[str, dict[str, float]] = {}
        for key, v in _row_figures(r, df.columns).items():
            score, fig = _split(key)
            by_score.setdefault(score, {})[fig] = v
        for score, f in by_score.items():
            rows.append(
                [
                    str(r["target"]),
                    str(r["run_id"])[:8],
                    score,
                    _v(f, "repeats", "int"),
                    _v(f, "flip_rate"),
                    _v(f, "repeat_spread"),
                    _with_ci(f, "icc"),
                    _v(f, "judges", "int"),
                    _with_ci(f, "alpha"),
                    _v(f, "human/n", "int"),
                    _with_ci(f, "human/kappa"),
                    _v(f, "human/spearman"),
                    _v(f, "human/exact"),
                    _v(f, "human/within1"),
                ]
            )
    text = _render(headers, rows)
    return (
        text + "\n(per-judge figures and pairwise kappas: --output json, or the run's reliability/report.md)"
    )


def format_pairwise(df: pd.DataFrame) -> str:
    """Per parent run and task: each pair's win rate (95% CI), wins/ties/losses, unjudged items and the
    position inconsistency; then the ranking (rank, Bradley–Terry strength share with 95% CI)."""
    if not len(df):
        return "(no pairwise figures)"
    pair_rows, rank_rows = [], []
    for _, r in df.iterrows():
        figs = _row_figures(r, df.columns)
        run = str(r["run_id"])[:8]
        pairs: dict[tuple[str, str], dict[str, float]] = {}
        ranks: dict[tuple[str, str], dict[str, float]] = {}
        for key, v in figs.items():
            task, _, rest = key.partition("/")
            kind, _, tail = rest.partition("/")
            if kind in ("strength", "rank"):
                label, _, stat = tail.partition("/")
                ranks.setdefault((task, label), {})[f"{kind}/{stat}".rstrip("/")] = v
            else:
                pairs.setdefault((task, kind), {})[tail] = v
        for (task, pair), f in pairs.items():
            wtl = "/".join(_v(f, n, "int") for n in ("wins", "ties", "losses"))
            pos = _v(f, "position_inconsistency")
            row = [run, task, pair.replace("_vs_", " vs "), _with_ci(f, "win_rate"), wtl]
            pair_rows.append([*row, _v(f, "unjudged", "int"), pos])
        for (task, label), f in sorted(ranks.items(), key=lambda kv: (kv[0][0], kv[1].get("rank", 0))):
            rank_rows.append([run, task, label, _v(f, "rank", "int"), _with_ci(f, "strength")])
    parts = []
    if pair_rows:
        headers = ["run", "task", "pair", "win rate (first)", "W/T/L", "unjudged", "position inconsistency"]
        parts.append(_render(headers, pair_rows))
    if rank_rows:
        parts.append(_render(["run", "task", "target", "rank", "strength"], rank_rows))
    return "\n\n".join(parts)
