"""Leaderboards and paired tests across evaluation runs, read back from MLflow.

``leaderboard`` gives one row per run (per target) with every score's mean, 95% CI, sample count and
NaN count, straight from the run metrics; ``paired`` compares two runs item by item (the per-sample
tables, aligned on task and item id) with a paired t-test, which is far more sensitive than comparing
two independent CIs when both runs judged the same items. ``reliability_frame`` gives one row per run
with the judge's reliability figures (its ``reliability/…`` metrics) and ``pairwise_frame`` a parent
run's pairwise figures; neither kind is ever a score of the leaderboard. mlflow is reached only through
``tracking``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge import tracking
from mlflow_nemo_judge.compare.figures import (
    format_pairwise,
    format_reliability,
    judge_figures,
    pairwise_frame,
    reliability_frame,
)
from mlflow_nemo_judge.compare.pairs import PAIRED_COLUMNS, _selected, paired, paired_results
from mlflow_nemo_judge.results import EvalResult

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "ID_COLUMNS",
    "PAIRED_COLUMNS",
    "SCORE_COLUMNS",
    "Entry",
    "entries_from_results",
    "entries_from_runs",
    "format_pairwise",
    "format_reliability",
    "format_table",
    "frame",
    "judge_figures",
    "leaderboard",
    "paired",
    "paired_results",
    "pairwise_frame",
    "reliability_frame",
    "score_keys",
    "write_chart",
]

ID_COLUMNS = ("target", "run_id", "run_name", "status", "config")
# Per score key K the leaderboard has K (the mean) and these K/<stat> columns.
SCORE_COLUMNS = ("ci95_low", "ci95_high", "count", "nan_count")


@dataclass
class Entry:
    """One leaderboard row before it becomes a DataFrame row."""

    target: str
    run_id: str
    run_name: str = ""
    status: str = ""
    config: str = ""
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)


def entries_from_runs(runs: Iterable[tracking.RunSummary]) -> list[Entry]:
    """Score keys are recognised structurally: every metric that is not ``usage/…``/``progress``, not a
    figure about the judge (``reliability/…``, ``pairwise/…``), not a nemo run's recomputation
    (``recomputed/…``: the run's scores are NeMo's) and not a ``<key>/<stat>`` of another logged key."""
    from mlflow_nemo_judge.tracking.recomputed import is_recomputed_key
    from mlflow_nemo_judge.tracking.reports import is_report_key

    out: list[Entry] = []
    for r in runs:
        if r.tags.get(tracking.TAG_ROLE) == "parent":
            continue
        keys = set(r.metrics)
        scores: dict[str, dict[str, float | None]] = {}
        for k in sorted(keys):
            if k.startswith("usage/") or k == "progress" or is_report_key(k) or is_recomputed_key(k):
                continue
            head, _, last = k.rpartition("/")
            if last in tracking.STATS and head in keys:
                continue
            scores[k] = {"mean": r.metrics[k], **{s: r.metrics.get(f"{k}/{s}") for s in SCORE_COLUMNS}}
        out.append(
            Entry(
                target=r.tags.get(tracking.TAG_TARGET, ""),
                run_id=r.run_id,
                run_name=r.run_name,
                status=r.status,
                config=r.tags.get(tracking.TAG_CONFIG_NAME, ""),
                scores=scores,
            )
        )
    return out


def entries_from_results(
    items: Iterable[tuple[str, str, EvalResult]], *, run_names: Sequence[str] = (), config: str = ""
) -> list[Entry]:
    """Leaderboard rows for results still in memory (the parent run's comparison), keyed like metrics;
    ``run_names`` (in the same order) and ``config`` fill the identity columns a reader looks for."""
    out: list[Entry] = []
    for i, (label, run_id, res) in enumerate(items):
        metrics = {m.key: m.value for m in tracking.score_metrics(res)}
        heads = [m.key for m in tracking.score_metrics(res) if m.headline]
        scores = {
            k: {"mean": metrics[k], **{s: metrics.get(f"{k}/{s}") for s in SCORE_COLUMNS}} for k in heads
        }
        name = run_names[i] if i < len(run_names) else ""
        out.append(
            Entry(target=label, run_id=run_id, run_name=name, status="FINISHED", config=config, scores=scores)
        )
    return out


def frame(entries: Sequence[Entry], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Wide DataFrame: identity columns, then per score key its mean and ``/ci95_low``, ``/ci95_high``,
    ``/count``, ``/nan_count``; sorted by the first score's mean, best first (NaN last)."""
    import pandas as pd

    keys: list[str] = []
    for e in entries:
        for k in e.scores:
            if k not in keys and _selected(k, metrics):
                keys.append(k)
    rows = []
    for e in entries:
        row: dict[str, Any] = {
            "target": e.target,
            "run_id": e.run_id,
            "run_name": e.run_name,
            "status": e.status,
            "config": e.config,
        }
        for k in keys:
            sc = e.scores.get(k, {})
            row[k] = _f(sc.get("mean"))
            for s in SCORE_COLUMNS:
                row[f"{k}/{s}"] = _f(sc.get(s))
        rows.append(row)
    columns = list(ID_COLUMNS) + [c for k in keys for c in (k, *(f"{k}/{s}" for s in SCORE_COLUMNS))]
    df = pd.DataFrame(rows, columns=columns)
    if keys and len(df):
        df = df.sort_values(keys[0], ascending=False, na_position="last", kind="stable").reset_index(
            drop=True
        )
    return df


def _f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def score_keys(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if f"{c}/ci95_low" in df.columns]


def leaderboard(
    experiment: str | None = None,
    *,
    run_ids: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """One row per evaluation run of ``experiment`` (or of ``run_ids``): scores with CIs and counts."""
    runs = tracking.fetch_runs(experiment, run_ids, tracking_uri)
    return frame(entries_from_runs(runs), metrics)


# ------------------------------------------------------------------------------------- rendering


def _num(v: Any) -> str:
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "NaN"
    if f == int(f) and abs(f) < 1e15:
        return str(int(f))
    return f"{f:.4g}"


def _dec(v: Any) -> str:
    """Score values with three decimals, as the CLI's per-run tables print them."""
    return "NaN" if _isnan(v) else f"{float(v):.3f}"


def _render(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_table(df: pd.DataFrame) -> str:
    """A fixed-width text table. A leaderboard prints one line per (target, score): mean, 95% CI, n and
    NaN count, which stays readable however many scores a config has; other frames print as they are."""
    keys = score_keys(df)
    if "mean_diff" in df.columns and len(df):
        return _format_paired(df)
    if not len(df):
        return "(no runs)" if keys or "target" in df.columns else "(no rows)"
    if keys:
        headers = ["target", "run", "score", "mean", "95% CI", "n", "NaN"]
        rows = []
        for _, r in df.iterrows():
            for k in keys:
                lo, hi = r.get(f"{k}/ci95_low"), r.get(f"{k}/ci95_high")
                ci = f"[{_dec(lo)}, {_dec(hi)}]" if not (_isnan(lo) or _isnan(hi)) else "-"
                rows.append(
                    [
                        str(r["target"]),
                        str(r["run_id"])[:8],
                        k,
                        _dec(r[k]),
                        ci,
                        _num(r.get(f"{k}/count")),
                        _num(r.get(f"{k}/nan_count")),
                    ]
                )
        return _render(headers, rows, {3, 5, 6})
    headers = [str(c) for c in df.columns]
    numeric = {i for i, c in enumerate(df.columns) if df[c].dtype.kind in "iuf"}
    return _render(
        headers,
        [[_num(v) if i in numeric else str(v) for i, v in enumerate(r)] for r in df.itertuples(index=False)],
        numeric,
    )


def _format_paired(df: pd.DataFrame) -> str:
    """A paired frame: per pair and score the difference with its CI, n, p-value and the test; the
    effect size when the frame has one, and the power warning column when any row has a warning (a
    ``min_effect`` was given and some sample is too small to detect it)."""
    headers = ["compared", "score", "mean diff", "95% CI", "n", "p", "test"]
    effect = "effect_size" in df.columns and bool(df["effect_size"].notna().any())
    warn = "warning" in df.columns and bool(df["warning"].fillna("").astype(str).str.len().gt(0).any())
    if effect:
        headers.append("effect")
    if warn:
        headers.append("warning")
    rows = []
    for _, r in df.iterrows():
        lo, hi = r.get("ci95_low"), r.get("ci95_high")
        ci = f"[{_dec(lo)}, {_dec(hi)}]" if not (_isnan(lo) or _isnan(hi)) else "-"
        pair = f"{r['b']} − {r['a']}" if "a" in df.columns else "b − a"
        row = [
            pair,
            str(r["metric"]),
            _dec(r["mean_diff"]),
            ci,
            _num(r["n"]),
            _p(r["p_value"]),
            str(r["test"]),
        ]
        if effect:
            name = r.get("effect_size_name")
            row.append("-" if _isnan(r["effect_size"]) else f"{_dec(r['effect_size'])} {name or ''}".rstrip())
        if warn:
            w = r.get("warning")
            row.append("" if w is None or _isnan(w) else str(w))
        rows.append(row)
    return _render(headers, rows, {2, 4, 5})


def _p(v: Any) -> str:
    """A p-value as computed: never printed as 0 (a tiny p keeps its exponent)."""
    if _isnan(v):
        return "-"
    f = float(v)
    return f"{f:.4g}" if f >= 1e-4 or f == 0 else f"{f:.2e}"


def _isnan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _intervals(df: pd.DataFrame) -> dict[str, list[Any]]:
    from mlflow_nemo_judge.compare.plots import Interval

    panels: dict[str, list[Any]] = {}
    if "mean_diff" in df.columns and "a" in df.columns:  # the parent's pairs: a panel per score
        for _, r in df.iterrows():
            panels.setdefault(f"{r['metric']}: difference, 95% CI", []).append(
                Interval(
                    f"{r['b']} − {r['a']}",
                    None if _isnan(r["mean_diff"]) else float(r["mean_diff"]),
                    None if _isnan(r["ci95_low"]) else float(r["ci95_low"]),
                    None if _isnan(r["ci95_high"]) else float(r["ci95_high"]),
                )
            )
        return panels
    if "mean_diff" in df.columns:  # one pair: one panel of differences
        panels["mean difference (b − a), 95% CI"] = [
            Interval(
                str(r["metric"]),
                None if _isnan(r["mean_diff"]) else float(r["mean_diff"]),
                None if _isnan(r["ci95_low"]) else float(r["ci95_low"]),
                None if _isnan(r["ci95_high"]) else float(r["ci95_high"]),
            )
            for _, r in df.iterrows()
        ]
        return panels
    labels = [str(t) for t in df["target"]]
    dup = {x for x in labels if labels.count(x) > 1}
    labels = [f"{t} ({str(rid)[:6]})" if t in dup else t for t, rid in zip(labels, df["run_id"], strict=True)]
    for k in score_keys(df):
        panels[k] = [
            Interval(
                lab,
                None if _isnan(r[k]) else float(r[k]),
                None if _isnan(r[f"{k}/ci95_low"]) else float(r[f"{k}/ci95_low"]),
                None if _isnan(r[f"{k}/ci95_high"]) else float(r[f"{k}/ci95_high"]),
            )
            for lab, (_, r) in zip(labels, df.iterrows(), strict=True)
        ]
    return panels


def write_chart(df: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """PNG of a leaderboard (mean with 95% CI per score per target) or of a paired frame."""
    from mlflow_nemo_judge.compare.plots import comparison_chart

    return comparison_chart(_intervals(df), path, title=title)
