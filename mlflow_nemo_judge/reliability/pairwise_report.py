"""The pairwise report: what position-swapped pairwise judging found, as MLflow metrics, JSON, markdown
and artifact files.

Built by :func:`mlflow_nemo_judge.reliability.pairwise.judge_pairwise`; read back from ``report.json``
with :meth:`PairwiseReport.from_dict` (then without the judgment files, which stay in MLflow).

Metric keys (``pairwise/<task>/…``, every key through ``tracking.sanitize_key``; a figure the data
cannot give is omitted, never logged as NaN):

- ``<X>_vs_<Y>/win_rate`` (+``/ci95_low``, ``/ci95_high``): X's share of the judged items, a tie
  counting half; ``/wins``, ``/ties``, ``/losses`` (from X's side), ``/unjudged`` (a call failed or a
  verdict did not parse), ``/position_inconsistency`` (share of judged items whose two orders disagree);
- ``strength/<X>`` (+ci): Bradley–Terry strength as a share (all targets' shares sum to 1: the chance
  X beats a random opponent is not this, but the order and the ratios are), ``rank/<X>`` (1 = best).
"""

from __future__ import annotations

import json
import math
import shutil
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_nemo_judge.tracking.names import ART_DIR, _safe_name, sanitize_key

ART_PAIRWISE = f"{ART_DIR}/pairwise"

#: Above this share of position-inconsistent items the report warns: the judge's verdict then depends
#: on the order of the outputs about as often as on the outputs themselves.
INCONSISTENCY_WARNING = 0.2

REPORT_VERSION = 1


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


@dataclass
class PairStats:
    """One pair of targets on one task, from ``a``'s side (``a`` came first in the target list)."""

    a: str
    b: str
    wins: int = 0
    ties: int = 0
    losses: int = 0
    unjudged: int = 0
    inconsistent: int = 0  # judged items whose two orders disagreed (counted as ties)
    win_rate: float | None = None
    ci95_low: float | None = None
    ci95_high: float | None = None
    # Why items were unjudged: reason -> count (the most frequent few; the rest counted under "other").
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def judged(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def position_inconsistency(self) -> float | None:
        return self.inconsistent / self.judged if self.judged else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "unjudged": self.unjudged,
            "inconsistent": self.inconsistent,
            "position_inconsistency": _num(self.position_inconsistency),
            "win_rate": _num(self.win_rate),
            "ci95_low": _num(self.ci95_low),
            "ci95_high": _num(self.ci95_high),
            "unjudged_reasons": dict(self.reasons),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairStats:
        return cls(
            a=str(d["a"]),
            b=str(d["b"]),
            wins=int(d.get("wins") or 0),
            ties=int(d.get("ties") or 0),
            losses=int(d.get("losses") or 0),
            unjudged=int(d.get("unjudged") or 0),
            inconsistent=int(d.get("inconsistent") or 0),
            win_rate=_num(d.get("win_rate")),
            ci95_low=_num(d.get("ci95_low")),
            ci95_high=_num(d.get("ci95_high")),
            reasons={str(k): int(v) for k, v in (d.get("unjudged_reasons") or {}).items()},
        )


@dataclass
class TaskPairwise:
    """One task's pairwise results over all pairs of targets."""

    task: str
    judge: str  # the pairwise judge's model id
    labels: list[str]
    pairs: list[PairStats]
    # Bradley–Terry, per target in ``labels`` order: strength share, its 95% CI, rank (1 = best).
    strengths: list[float | None] = field(default_factory=list)
    strength_ci: list[tuple[float, float] | None] = field(default_factory=list)
    ranks: list[int | None] = field(default_factory=list)
    judgments: Path | None = None  # the judgments.jsonl of this run (not serialised)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "judge": self.judge,
            "labels": list(self.labels),
            "pairs": [p.to_dict() for p in self.pairs],
            "ranking": [
                {
                    "target": lab,
                    "strength": _num(self.strengths[i]) if i < len(self.strengths) else None,
                    "ci95_low": _num(ci[0]) if (ci := self._ci(i)) else None,
                    "ci95_high": _num(ci[1]) if ci else None,
                    "rank": self.ranks[i] if i < len(self.ranks) else None,
                }
                for i, lab in enumerate(self.labels)
            ],
        }

    def _ci(self, i: int) -> tuple[float, float] | None:
        return self.strength_ci[i] if i < len(self.strength_ci) else None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskPairwise:
        ranking = d.get("ranking") or []
        cis: list[tuple[float, float] | None] = []
        for r in ranking:
            lo, hi = _num(r.get("ci95_low")), _num(r.get("ci95_high"))
            cis.append((lo, hi) if lo is not None and hi is not None else None)
        return cls(
            task=str(d["task"]),
            judge=str(d.get("judge") or ""),
            labels=[str(x) for x in d.get("labels") or []],
            pairs=[PairStats.from_dict(p) for p in d.get("pairs") or []],
            strengths=[_num(r.get("strength")) for r in ranking],
            strength_ci=cis,
            ranks=[int(r["rank"]) if r.get("rank") is not None else None for r in ranking],
        )

    def win_matrix(self) -> list[list[float | None]]:
        """``m[r][c]``: the win rate of target ``r`` over target ``c`` (None on the diagonal or unjudged)."""
        index = {lab: i for i, lab in enumerate(self.labels)}
        n = len(self.labels)
        m: list[list[float | None]] = [[None] * n for _ in range(n)]
        for p in self.pairs:
            i, j = index[p.a], index[p.b]
            if p.win_rate is not None:
                m[i][j], m[j][i] = p.win_rate, 1.0 - p.win_rate
        return m


@dataclass
class PairwiseReport:
    """Every task's pairwise results; ``metrics()``, ``to_dict()``, ``markdown()``, ``files()``."""

    tasks: list[TaskPairwise]
    calls: int = 0  # judge calls made (cache hits included), both orders counted
    _cleanup: Any = field(default=None, init=False, repr=False, compare=False)

    def own(self, directory: Path) -> None:
        """Make ``directory`` (where the judgments were written) this report's: removed when the report
        is garbage-collected or at exit, so a run leaves no temp folder behind."""
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(directory), True)

    def metrics(self) -> dict[str, float]:
        """The ``pairwise/…`` metric keys (finite values only)."""
        out: dict[str, float] = {}

        def put(key: str, value: float | int | None) -> None:
            if value is not None and math.isfinite(float(value)):
                out[sanitize_key(key)] = float(value)

        for t in self.tasks:
            for p in t.pairs:
                base = f"pairwise/{t.task}/{p.a}_vs_{p.b}"
                put(f"{base}/win_rate", p.win_rate)
                put(f"{base}/win_rate/ci95_low", p.ci95_low)
                put(f"{base}/win_rate/ci95_high", p.ci95_high)
                for name in ("wins", "ties", "losses", "unjudged"):
                    put(f"{base}/{name}", getattr(p, name))
                put(f"{base}/position_inconsistency", p.position_inconsistency)
            for i, lab in enumerate(t.labels):
                if i < len(t.strengths):
                    put(f"pairwise/{t.task}/strength/{lab}", t.strengths[i])
                ci = t._ci(i)
                if ci is not None:
                    put(f"pairwise/{t.task}/strength/{lab}/ci95_low", ci[0])
                    put(f"pairwise/{t.task}/strength/{lab}/ci95_high", ci[1])
                if i < len(t.ranks):
                    put(f"pairwise/{t.task}/rank/{lab}", t.ranks[i])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "calls": self.calls,
            "outcome_rule": (
                "each item is judged twice, with the outputs in both positions; the same winner both "
                "times is a win, a disagreement between the orders is a tie (and position-inconsistent); "
                "win_rate = (wins + ties/2) / judged"
            ),
            "tasks": [t.to_dict() for t in self.tasks],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairwiseReport:
        return cls(
            tasks=[TaskPairwise.from_dict(t) for t in d.get("tasks") or []], calls=int(d.get("calls") or 0)
        )

    def markdown(self) -> str:
        """What a person reads: per task the win matrix, the ranking with CIs, position inconsistency."""
        lines = ["# Pairwise judging with position swap", ""]
        lines += [
            "Each item was judged twice, with the two outputs in both positions (A, B) and (B, A). The "
            "same winner both times is a win; a disagreement between the orders counts as a tie. A call "
            "that failed or a verdict that did not parse leaves the item unjudged (not counted).",
            "",
        ]
        for t in self.tasks:
            lines += _task_markdown(t)
        return "\n".join(lines).rstrip() + "\n"

    def files(self, tmpdir: Path | str) -> dict[str, Path | str | bytes]:
        """Artifact path (under ``nemo_judge/``, for the parent run) -> content: ``pairwise/report.md``,
        ``pairwise/report.json``, and per task ``pairwise/<task>/judgments.jsonl`` (when this run wrote
        it; a report read back from JSON has none) and ``pairwise/<task>/win_matrix.png``."""
        tmp = Path(tmpdir)
        out: dict[str, Path | str | bytes] = {
            f"{ART_PAIRWISE}/report.md": self.markdown(),
            f"{ART_PAIRWISE}/report.json": json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n",
        }
        for t in self.tasks:
            folder = _safe_name(t.task)
            local = tmp / "pairwise" / folder
            local.mkdir(parents=True, exist_ok=True)
            if t.judgments is not None and t.judgments.exists():
                # Copied into the caller's folder: its lifetime is the caller's, not this report's.
                dest = local / "judgments.jsonl"
                shutil.copyfile(t.judgments, dest)
                out[f"{ART_PAIRWISE}/{folder}/judgments.jsonl"] = dest
            if len(t.labels) >= 2:
                out[f"{ART_PAIRWISE}/{folder}/win_matrix.png"] = win_matrix_png(t, local / "win_matrix.png")
        return out


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _task_markdown(t: TaskPairwise) -> list[str]:
    lines = [f"## {t.task}", "", f"Pairwise judge: `{t.judge}`.", ""]
    matrix = t.win_matrix()
    lines += ["### Win matrix", "", "Win rate of the row's target over the column's (ties count half).", ""]
    lines.append("| | " + " | ".join(t.labels) + " |")
    lines.append("|---" * (len(t.labels) + 1) + "|")
    for r, lab in enumerate(t.labels):
        cells = ["" if r == c else _fmt(matrix[r][c]) for c in range(len(t.labels))]
        lines.append(f"| **{lab}** | " + " | ".join(cells) + " |")
    lines += ["", "### Pairs", ""]
    lines.append("| pair | win rate (95% CI) | wins | ties | losses | unjudged | position-inconsistent |")
    lines.append("|---|---|---|---|---|---|---|")
    for p in t.pairs:
        ci = f" ({_fmt(p.ci95_low)}–{_fmt(p.ci95_high)})" if p.ci95_low is not None else ""
        pi = p.position_inconsistency
        lines.append(
            f"| {p.a} vs {p.b} | {_fmt(p.win_rate)}{ci} | {p.wins} | {p.ties} | {p.losses} | "
            f"{p.unjudged} | {p.inconsistent} ({_fmt(None if pi is None else 100 * pi, 1)} %) |"
        )
    lines += [
        "",
        "Position inconsistency: the share of judged items on which the verdict changed when the two "
        "outputs swapped places; it measures how much the judge prefers a position rather than an answer.",
        "",
    ]
    worst = max((p.position_inconsistency or 0.0 for p in t.pairs), default=0.0)
    if worst > INCONSISTENCY_WARNING:
        lines += [
            f"> **Warning:** position inconsistency reaches {100 * worst:.0f} % (above "
            f"{100 * INCONSISTENCY_WARNING:.0f} %): this judge's pairwise verdicts depend strongly on the "
            "order of the outputs; treat its wins and ranking with caution.",
            "",
        ]
    reasons: dict[str, int] = {}
    for p in t.pairs:
        for k, v in p.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    if reasons:
        lines += ["Why items were unjudged:", ""]
        lines += [f"- {n} × {k}" for k, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
        lines.append("")
    if any(s is not None for s in t.strengths):
        lines += ["### Ranking (Bradley–Terry)", ""]
        lines += ["Strength as a share (the targets' shares sum to 1); 95% CI by bootstrap over items.", ""]
        lines += ["| rank | target | strength | 95% CI |", "|---|---|---|---|"]
        order = sorted(range(len(t.labels)), key=lambda i: (t.ranks[i] or 1 << 30) if i < len(t.ranks) else 0)
        for i in order:
            interval = t._ci(i)
            shown = f"{_fmt(interval[0])}–{_fmt(interval[1])}" if interval else "–"
            rank = t.ranks[i] if i < len(t.ranks) else None
            strength = t.strengths[i] if i < len(t.strengths) else None
            lines.append(f"| {rank or '–'} | {t.labels[i]} | {_fmt(strength)} | {shown} |")
        lines.append("")
    return lines


def win_matrix_png(t: TaskPairwise, path: Path) -> Path:
    """A heat map of the win matrix (row's win rate over the column's), the numbers in the cells.

    matplotlib's object-oriented API on an Agg canvas (as ``compare.plots``): no pyplot state, no GUI.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(t.labels)
    matrix = t.win_matrix()
    values = [[math.nan if v is None else v for v in row] for row in matrix]
    size = max(3.5, 1.0 + 0.9 * n)
    fig = Figure(figsize=(size + 1.2, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="RdYlGn", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), t.labels, rotation=30, ha="right")
    ax.set_yticks(range(n), t.labels)
    ax.set_xlabel("opponent")
    ax.set_ylabel("target")
    for r in range(n):
        for c in range(n):
            if r != c:
                ax.text(c, r, _fmt(matrix[r][c], 2), ha="center", va="center", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="win rate (ties count half)")
    ax.set_title(f"{t.task}\nwin rate of the row over the column", fontsize=10)  # two lines: never clipped
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
