"""PNG charts for runs and comparisons: score distributions and means with 95% confidence intervals.

matplotlib is imported lazily (it costs ~0.5 s) and only through its object-oriented API with the Agg
canvas: no ``pyplot`` global state, no GUI backend, so charts render the same in a headless CI job, a
notebook or a thread, and never change the backend a caller's own pyplot session uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Interval:
    """One bar of a comparison chart: a label's mean and 95% CI for one score (None when unknown)."""

    label: str
    mean: float | None
    low: float | None
    high: float | None


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def warm_up() -> None:
    """Import matplotlib and draw one small chart (fonts, Agg renderer, PNG writer), so a run's first
    real chart costs only its own drawing (~70 ms instead of ~0.6 s cold). Called off the critical
    path, by the chart worker when it starts (``compare/plot_worker.py``): the evaluating process does
    not import matplotlib unless the worker cannot draw."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nemo-judge-warm-up-") as tmp:
        score_distribution("warm-up", {"warm-up": [1.0, 2.0, None]}, Path(tmp) / "w.png", model="warm-up")


def _finite(values: Sequence[float | None]) -> tuple[list[float], int]:
    from mlflow_nemo_judge.scoring.stats import split_nan

    return split_nan(values)


def score_distribution(
    title: str, scores: Mapping[str, Sequence[float | None]], path: str | Path, *, model: str | None = None
) -> Path:
    """One panel per score of a metric: counts per value (a bar per distinct value when the scores are
    few distinct numbers, as judge ratings are; a histogram otherwise), with the NaN count shown, since
    unparseable judge output is part of the distribution a reader must see.

    Sized to be read in MLflow's artifact viewer without zooming (~500×380 px per panel) and titled
    with the model (when given) and the score, so a PNG seen on its own says what it shows.
    """
    path = Path(path)
    names = list(scores) or ["(no scores)"]
    fig = _figure(max(5.0, 5.0 * len(names)), 4.2 if model else 3.8)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        values, nan = _finite(scores.get(name, []))
        distinct = sorted(set(values))
        if values and len(distinct) <= 12:
            counts = [values.count(v) for v in distinct]
            labels = [f"{v:g}" for v in distinct]
            bars = ax.bar(range(len(distinct)), counts, color="#4c72b0")
            ax.bar_label(bars, fontsize=9)
            ax.set_ylim(0, max(counts) * 1.15)  # the count labels stay clear of the title
            ax.set_xticks(range(len(distinct)), labels, fontsize=10)
            ax.set_xlabel(name, fontsize=10)
        elif values:
            ax.hist(values, bins=min(30, max(5, int(math.sqrt(len(values))))), color="#4c72b0")
            ax.set_xlabel(name, fontsize=10)
        else:
            ax.text(0.5, 0.5, "no parseable scores", ha="center", va="center", transform=ax.transAxes)
        mean = sum(values) / len(values) if values else None
        subtitle = f"n={len(values)}   NaN={nan}" + (f"   mean={mean:.3g}" if mean is not None else "")
        ax.set_title(f"{name}\n{subtitle}", fontsize=11)
        ax.set_ylabel("samples", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    # The model on its own line: "vendor/model — task / metric" overflows a one-panel figure.
    fig.suptitle(f"{model}\n{title}" if model else title, fontsize=12, fontweight="bold")
    # Fixed margins instead of tight_layout(): the layout pass costs as much as drawing, and these
    # panels have predictable labels. This chart is drawn for every metric of every run.
    top = 0.72 if model else 0.78  # room for the two-line title
    fig.subplots_adjust(left=0.1 / len(names) + 0.04, right=0.98, bottom=0.16, top=top, wspace=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def comparison_chart(
    panels: Mapping[str, Sequence[Interval]], path: str | Path, title: str | None = None
) -> Path:
    """One panel per score key, one row per target: the mean as a dot with its 95% CI as error bars and
    the value written beside it, so overlapping intervals (no clear winner) are visible at a glance.
    Panels of differences get a zero line: an interval crossing it is no evidence of a difference."""
    path = Path(path)
    keys = list(panels) or ["(no scores)"]
    n_labels = max((len(v) for v in panels.values()), default=1)
    cols = min(len(keys), 2)
    rows = math.ceil(len(keys) / cols)
    fig = _figure(max(6.0, 6.0 * cols), 1.0 + (0.55 * n_labels + 1.3) * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, key in enumerate(keys):
        ax = axes[i // cols][i % cols]
        items = list(panels.get(key, []))
        ys = list(range(len(items)))
        for y, it in zip(ys, items, strict=True):
            if it.mean is None:
                ax.text(0.02, y, "no scores", va="center", fontsize=9, transform=ax.get_yaxis_transform())
                continue
            lo = it.mean - it.low if it.low is not None else 0.0
            hi = it.high - it.mean if it.high is not None else 0.0
            ax.errorbar([it.mean], [y], xerr=[[lo], [hi]], fmt="o", capsize=5, color="#4c72b0", markersize=7)
            ci = f" [{it.low:.3g}, {it.high:.3g}]" if it.low is not None and it.high is not None else ""
            ax.annotate(
                f"{it.mean:.3g}{ci}",
                (it.mean, y),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=9,
            )
        if "difference" in key:
            ax.axvline(0.0, color="#c44e52", linewidth=1, alpha=0.7)
        ax.margins(x=0.15)  # room for the value labels at the ends of the axis
        ax.set_yticks(ys, [it.label for it in items], fontsize=10)
        ax.set_ylim(-0.7, max(len(items) - 0.3, 0.7))
        head, _, last = key.rpartition("/")
        ax.set_title(f"{last}\n{head}" if head else key, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    for j in range(len(keys), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path
