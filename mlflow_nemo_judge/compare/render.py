"""Plain-text rendering of results for the terminal (no third-party table library needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mlflow_nemo_judge.results import EvalResult


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{digits}f}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 or not _numeric(c) else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return s in ("-", "nan")


def results_table(result: EvalResult, title: str | None = None) -> str:
    """One line per task/metric/score: mean, 95% CI, count, NaN count."""
    rows = []
    for task, metric, name, score in result.scores():
        st = score.stats
        ci = "-"
        if st is not None and st.ci95_low is not None and st.ci95_high is not None:
            ci = f"[{st.ci95_low:.3f}, {st.ci95_high:.3f}]"
        rows.append(
            [
                f"{task}/{metric}/{name}",
                score.value,
                ci,
                st.count if st else None,
                st.nan_count if st else None,
            ]
        )
    out = table(["score", "mean", "95% CI", "n", "nan"], rows)
    return f"{title}\n{out}" if title else out


def usage_line(result: EvalResult) -> str:
    u = result.usage
    return (
        f"{u.samples} samples in {u.wall_seconds:.1f}s ({u.samples_per_second:.1f}/s); "
        f"{u.requests} requests, {u.retries} retries, {u.cache_hits} cache hits, "
        f"{u.prompt_tokens + u.completion_tokens} tokens"
    )
