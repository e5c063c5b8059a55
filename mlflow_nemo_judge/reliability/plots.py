"""The reliability plots of one score: repeat spread, judge × judge agreement, judge × human confusion.

Same rules as ``compare.plots`` (its Agg figure, no pyplot state, matplotlib imported on first use):
small figures titled with the score key and ``n = …`` so a PNG seen alone says what it shows, and the
numbers written on the chart (cell values of a heat map, counts over bars), since a colour scale alone
is hard to read off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow_nemo_judge.compare.plots import _figure

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.report import Distribution, ScoreReliability

STAT_TITLE = {
    "kappa_quadratic": "quadratic-weighted κ",
    "kappa": "Cohen's κ",
    "alpha_interval": "pairwise α (interval)",
}


def _save(fig: object, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)  # type: ignore[attr-defined]
    return path


def repeat_spread(key: str, dist: Distribution, path: str | Path, *, judges: int = 1) -> Path:
    """Bars of the within-item standard deviation across repeats (0 = the judge always gave the same
    score), one count per (item, judge)."""
    path = Path(path)
    n = sum(dist.counts)
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    if dist.width is None:
        xs = list(range(len(dist.values)))
        bars = ax.bar(xs, dist.counts, color="#4c72b0")
        ax.set_xticks(xs, [f"{v:.3g}" for v in dist.values], fontsize=9)
    else:
        bars = ax.bar(dist.values, dist.counts, width=dist.width, align="edge", color="#4c72b0")
    ax.bar_label(bars, fontsize=8)
    ax.set_ylim(0, max(dist.counts or [1]) * 1.18)
    ax.set_xlabel("within-item standard deviation across repeats", fontsize=10)
    ax.set_ylabel("items" if judges == 1 else "items × judges", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    pooled = f", pooled over {judges} judges" if judges > 1 else ""
    ax.set_title(f"{key}\nrepeat spread (n = {n}{pooled})", fontsize=10)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.83)
    return _save(fig, path)


def heatmap(
    title: str,
    rows: Sequence[str],
    cols: Sequence[str],
    matrix: Sequence[Sequence[float | None]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    counts: bool = False,
) -> Path:
    """A heat map with every cell's value written in it: κ in [-1, 1] (diverging colours, red below 0)
    or counts (sequential); an empty cell (None) is grey and reads "—"."""
    import numpy as np
    from matplotlib import colormaps

    path = Path(path)
    data = np.array([[math.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)
    size = max(len(rows), len(cols))
    side = min(9.0, 3.2 + 0.7 * size)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    if counts:
        top = float(np.nanmax(data)) if np.isfinite(data).any() else 1.0
        image = ax.imshow(
            data, cmap=colormaps["Blues"].with_extremes(bad="#dddddd"), vmin=0, vmax=max(top, 1.0)
        )
    else:
        image = ax.imshow(data, cmap=colormaps["RdBu"].with_extremes(bad="#dddddd"), vmin=-1.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = data[i, j]
            text = "—" if not math.isfinite(v) else (f"{int(v)}" if counts else f"{v:.2f}")
            dark = math.isfinite(v) and (v > 0.6 * float(np.nanmax(data)) if counts else abs(v) > 0.6)
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    long = any(len(c) > 3 for c in cols)  # judge labels slant; rating values stay upright
    ax.set_xticks(
        range(len(cols)), list(cols), fontsize=8, rotation=30 if long else 0, ha="right" if long else "center"
    )
    ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()  # drawn once per score, and the judge labels vary in length
    return _save(fig, path)


def _kappa_matrix(sr: ScoreReliability) -> list[list[float | None]]:
    """Judge × judge, symmetric, 1 on the diagonal."""
    index = {j: i for i, j in enumerate(sr.judges)}
    m: list[list[float | None]] = [[1.0 if i == j else None for j in index.values()] for i in index.values()]
    for pair, v in sr.pairwise.items():
        a, _, b = pair.partition("__")
        if a in index and b in index:
            m[index[a]][index[b]] = m[index[b]][index[a]] = v
    return m


def score_plots(sr: ScoreReliability, folder: str | Path) -> dict[str, Path]:
    """File name → PNG for every plot this score's figures allow (none when there is nothing to draw)."""
    folder = Path(folder)
    out: dict[str, Path] = {}
    if sr.spread is not None and sr.spread.counts:
        out["repeat_spread.png"] = repeat_spread(
            sr.key, sr.spread, folder / "repeat_spread.png", judges=len(sr.judges)
        )
    h = sr.human if sr.human is not None and sr.human.n > 0 and sr.human.labels else None
    confusion = None
    if h is not None:
        names = [f"{v:g}" for v in h.labels]
        confusion = heatmap(
            f"{sr.key}\njudge × human labels (n = {h.n})",
            names,
            names,
            [[float(c) for c in row] for row in h.matrix],
            folder / "human_confusion.png",
            xlabel="human label",
            ylabel=f"judge ({sr.reducer} of the judgments)" if sr.judgments > sr.items else "judge",
            counts=True,
        )
        out["human_confusion.png"] = confusion
    if sr.panel and sr.pairwise:
        stat = STAT_TITLE.get(sr.pairwise_stat, sr.pairwise_stat)
        out["agreement.png"] = heatmap(
            f"{sr.key}\n{stat} between judges (n = {sr.alpha_items})",
            sr.judges,
            sr.judges,
            _kappa_matrix(sr),
            folder / "agreement.png",
            xlabel="judge",
            ylabel="judge",
        )
    elif confusion is not None:  # no panel: the agreement that exists is with the humans
        out["agreement.png"] = confusion
    return out
