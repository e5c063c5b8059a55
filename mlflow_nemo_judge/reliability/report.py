"""The reliability report: every figure ``analysis.analyze`` computed, as MLflow metrics, ``report.json``,
a markdown report a person reads, confusion tables and plots.

One ``ScoreReliability`` per judged score ``S = <task>/<metric>/<score>``. ``metrics()`` yields the keys
of the design (``reliability/S/…``) for the figures that could be computed — never NaN, never None — so
a run without a panel has no ``alpha`` key rather than a blank one. ``report.json`` holds everything
(``from_dict(to_dict())`` is the identity), and is what ``compare`` and ``load_reliability`` read back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow_nemo_judge.tracking.names import ART_DIR, _safe_name, sanitize_key

ART_RELIABILITY = f"{ART_DIR}/reliability"
ART_REPORT_MD = f"{ART_RELIABILITY}/report.md"
ART_REPORT_JSON = f"{ART_RELIABILITY}/report.json"
REPORT_VERSION = 1

# Krippendorff (2004, Content Analysis, §12.6): α ≥ 0.800 to rely on the data, 0.667 ≤ α < 0.800 for
# tentative conclusions only, below 0.667 not at all. The same bars are applied to κ against humans.
RELIABLE = 0.8
TENTATIVE = 0.667
# Koo & Li (2016): ICC < 0.5 poor, 0.5–0.75 moderate, 0.75–0.9 good, > 0.9 excellent.
ICC_GOOD = 0.75
FLIP_WARN = 0.2  # one item in five changes its score between repeats of the same judge
SMALL_N = 30  # below this many items every interval here is wide


def _num(v: float | None) -> float | None:
    """JSON-safe: NaN/inf become None."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass
class RepeatStats:
    """Stability of one judge (or of all judges pooled) over repeats of the same item.

    ``items``: (item, judge) rows with ≥ 2 finite repeats; ``flip_rate``: share of those whose repeats
    differ; ``spread``: mean within-item sample stddev; ``icc``: ICC(1,1) with its exact 95% CI."""

    items: int = 0
    flip_rate: float | None = None
    spread: float | None = None
    icc: float | None = None
    icc_low: float | None = None
    icc_high: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RepeatStats:
        return cls(
            items=int(d.get("items") or 0),
            flip_rate=_opt(d.get("flip_rate")),
            spread=_opt(d.get("spread")),
            icc=_opt(d.get("icc")),
            icc_low=_opt(d.get("icc_low")),
            icc_high=_opt(d.get("icc_high")),
        )

    def figures(self) -> Iterator[tuple[str, float | None]]:
        """(key suffix, value) in the design's names."""
        yield "flip_rate", self.flip_rate
        yield "repeat_spread", self.spread
        yield "icc", self.icc
        yield "icc/ci95_low", self.icc_low
        yield "icc/ci95_high", self.icc_high
        yield "items", float(self.items)


@dataclass
class Distribution:
    """Counts of the per-(item, judge) within-item stddev, for the repeat-spread plot. Kept as counts,
    not values, so ``report.json`` stays small for any number of items: ``width`` None means one bar per
    distinct value (judge ratings give few), else ``values`` are left bin edges of that width."""

    values: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    width: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Distribution:
        return cls(
            values=[float(v) for v in d.get("values") or []],
            counts=[int(c) for c in d.get("counts") or []],
            width=_opt(d.get("width")),
        )


@dataclass
class JudgeHuman:
    """One panel judge against the human labels."""

    n: int = 0
    kappa: float | None = None
    spearman: float | None = None
    exact: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JudgeHuman:
        return cls(
            n=int(d.get("n") or 0),
            kappa=_opt(d.get("kappa")),
            spearman=_opt(d.get("spearman")),
            exact=_opt(d.get("exact")),
        )


@dataclass
class HumanAgreement:
    """The headline score against the human label of the same item (pairs with a NaN on either side are
    left out; ``missing`` counts items whose label cell was empty or not a number). ``matrix[i][j]``:
    items the judge scored ``labels[i]`` and the humans ``labels[j]``."""

    n: int = 0
    missing: int = 0
    kappa: float | None = None
    kappa_low: float | None = None
    kappa_high: float | None = None
    spearman: float | None = None
    exact: float | None = None
    within1: float | None = None
    labels: list[float] = field(default_factory=list)
    matrix: list[list[int]] = field(default_factory=list)
    judges: dict[str, JudgeHuman] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HumanAgreement:
        return cls(
            n=int(d.get("n") or 0),
            missing=int(d.get("missing") or 0),
            kappa=_opt(d.get("kappa")),
            kappa_low=_opt(d.get("kappa_low")),
            kappa_high=_opt(d.get("kappa_high")),
            spearman=_opt(d.get("spearman")),
            exact=_opt(d.get("exact")),
            within1=_opt(d.get("within1")),
            labels=[float(v) for v in d.get("labels") or []],
            matrix=[[int(c) for c in row] for row in d.get("matrix") or []],
            judges={str(k): JudgeHuman.from_dict(v) for k, v in (d.get("judges") or {}).items()},
        )

    def csv(self) -> str:
        """The confusion matrix as CSV: a row per judge value, a column per human value."""
        head = ["judge \\ human", *(_label(v) for v in self.labels)]
        rows = [",".join(head)]
        for v, row in zip(self.labels, self.matrix, strict=True):
            rows.append(",".join([_label(v), *(str(c) for c in row)]))
        return "\n".join(rows) + "\n"


def _label(v: float) -> str:
    return f"{v:g}"


# The pairwise judge × judge statistic by measurement level: κ needs categories, so interval scores get
# the two-judge interval α instead (shown in the heat map and report, never logged as a kappa key).
PAIRWISE_STAT = {"ordinal": "kappa_quadratic", "nominal": "kappa", "interval": "alpha_interval"}


@dataclass
class ScoreReliability:
    """Every reliability figure of one score. ``judges`` in panel order (the first is the primary);
    ``repeats`` is the largest number of repeats a judge actually made of an item (``declared_repeats``
    what the config asked for: a NeMo run makes one)."""

    task: str
    metric: str
    score: str
    level: str
    reducer: str = "mean"
    repeats: int = 1
    declared_repeats: int = 1
    judges: list[str] = field(default_factory=list)
    declared_judges: int = 1
    items: int = 0
    judgments: int = 0
    nan_judgments: int = 0
    repeat: RepeatStats | None = None
    repeat_by_judge: dict[str, RepeatStats] = field(default_factory=dict)
    spread: Distribution | None = None
    alpha: float | None = None
    alpha_low: float | None = None
    alpha_high: float | None = None
    alpha_items: int = 0
    judge_means: dict[str, float | None] = field(default_factory=dict)
    pairwise: dict[str, float | None] = field(default_factory=dict)  # "J1__J2" -> κ (or α, interval)
    pairwise_ci: dict[str, list[float]] = field(default_factory=dict)  # "J1__J2" -> [low, high] (κ only)
    human: HumanAgreement | None = None

    @property
    def key(self) -> str:
        """``<task>/<metric>/<score>`` as MLflow keys spell it."""
        return sanitize_key(f"{self.task}/{self.metric}/{self.score}")

    @property
    def pairwise_stat(self) -> str:
        return PAIRWISE_STAT.get(self.level, "kappa")

    @property
    def panel(self) -> bool:
        return len(self.judges) >= 2

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScoreReliability:
        rep = d.get("repeat")
        spread = d.get("spread")
        human = d.get("human")
        return cls(
            task=str(d["task"]),
            metric=str(d["metric"]),
            score=str(d["score"]),
            level=str(d.get("level") or "interval"),
            reducer=str(d.get("reducer") or "mean"),
            repeats=int(d.get("repeats") or 1),
            declared_repeats=int(d.get("declared_repeats") or 1),
            judges=[str(j) for j in d.get("judges") or []],
            declared_judges=int(d.get("declared_judges") or 1),
            items=int(d.get("items") or 0),
            judgments=int(d.get("judgments") or 0),
            nan_judgments=int(d.get("nan_judgments") or 0),
            repeat=RepeatStats.from_dict(rep) if isinstance(rep, Mapping) else None,
            repeat_by_judge={
                str(k): RepeatStats.from_dict(v) for k, v in (d.get("repeat_by_judge") or {}).items()
            },
            spread=Distribution.from_dict(spread) if isinstance(spread, Mapping) else None,
            alpha=_opt(d.get("alpha")),
            alpha_low=_opt(d.get("alpha_low")),
            alpha_high=_opt(d.get("alpha_high")),
            alpha_items=int(d.get("alpha_items") or 0),
            judge_means={str(k): _opt(v) for k, v in (d.get("judge_means") or {}).items()},
            pairwise={str(k): _opt(v) for k, v in (d.get("pairwise") or {}).items()},
            pairwise_ci={
                str(k): [float(x) for x in v]
                for k, v in (d.get("pairwise_ci") or {}).items()
                if isinstance(v, list) and len(v) == 2
            },
            human=HumanAgreement.from_dict(human) if isinstance(human, Mapping) else None,
        )

    def metrics(self) -> Iterator[tuple[str, float | None]]:
        """(key, value) for every figure of the design's §4 (values may be None/NaN: filtered later)."""
        s = f"reliability/{self.key}"
        if self.repeats > 1 and self.repeat is not None:
            yield f"{s}/repeats", float(self.repeats)
            for suffix, value in self.repeat.figures():
                yield f"{s}/{suffix}", value
            if self.panel:
                for judge, stats in self.repeat_by_judge.items():
                    for suffix, value in stats.figures():
                        yield f"{s}/judge/{judge}/{suffix}", value
        if self.panel:
            yield f"{s}/judges", float(len(self.judges))
            yield f"{s}/alpha", self.alpha
            yield f"{s}/alpha/ci95_low", self.alpha_low
            yield f"{s}/alpha/ci95_high", self.alpha_high
            for judge, mean in self.judge_means.items():
                yield f"{s}/judge/{judge}/mean", mean
            if self.pairwise_stat.startswith("kappa"):
                for pair, kappa in self.pairwise.items():
                    yield f"{s}/kappa/{pair}", kappa
                    if pair in self.pairwise_ci:
                        yield f"{s}/kappa/{pair}/ci95_low", self.pairwise_ci[pair][0]
                        yield f"{s}/kappa/{pair}/ci95_high", self.pairwise_ci[pair][1]
        h = self.human
        if h is not None and h.n > 0:
            yield f"{s}/human/n", float(h.n)
            yield f"{s}/human/kappa", h.kappa
            yield f"{s}/human/kappa/ci95_low", h.kappa_low
            yield f"{s}/human/kappa/ci95_high", h.kappa_high
            yield f"{s}/human/spearman", h.spearman
            yield f"{s}/human/exact", h.exact
            yield f"{s}/human/within1", h.within1
            if self.panel:
                for judge, jh in h.judges.items():
                    yield f"{s}/human/judge/{judge}/kappa", jh.kappa
                    yield f"{s}/human/judge/{judge}/spearman", jh.spearman
                    yield f"{s}/human/judge/{judge}/exact", jh.exact

    def warnings(self) -> list[str]:
        """Plain-language warnings a reader should not miss."""
        out: list[str] = []
        if self.declared_repeats > self.repeats or self.declared_judges > len(self.judges):
            out.append(
                f"the config asks for {self.declared_repeats} repeat(s) by {self.declared_judges} judge(s), "
                f"the records hold {self.repeats} by {len(self.judges)}: repeats and panels run on the "
                "local backend only (a NeMo job judges each sample once)."
            )
        if self.nan_judgments:
            out.append(
                f"{self.nan_judgments} of {self.judgments} judgments were unparseable (NaN) and are left "
                "out of every figure."
            )
        r = self.repeat
        if r is not None and self.repeats > 1:
            if r.flip_rate is not None and r.flip_rate >= FLIP_WARN:
                out.append(
                    f"flip rate {r.flip_rate:.0%}: the same judge changes its score on {r.flip_rate:.0%} of "
                    "the items when asked again; a single judgment is noisy — keep the repeats and the "
                    f"{self.reducer} reducer."
                )
            if r.icc is not None and r.icc < ICC_GOOD:
                out.append(
                    f"ICC {r.icc:.2f} < {ICC_GOOD}: repeats explain too much of the score's variance "
                    "(Koo & Li 2016: below 0.75 is moderate at best)."
                )
        if self.panel and self.alpha is not None:
            if self.alpha < TENTATIVE:
                out.append(
                    f"α = {self.alpha:.2f} < {TENTATIVE}: the judges do not agree well enough to trust a "
                    "single judge (Krippendorff's convention: rely on data only from α ≥ 0.8, tentative "
                    "conclusions from 0.667)."
                )
            elif self.alpha < RELIABLE:
                out.append(
                    f"α = {self.alpha:.2f} is between {TENTATIVE} and {RELIABLE}: good enough for tentative "
                    "conclusions only (Krippendorff)."
                )
        h = self.human
        if h is not None and h.n > 0:
            if h.kappa is not None and h.kappa < TENTATIVE:
                out.append(
                    f"κ with the humans = {h.kappa:.2f} < {TENTATIVE}: the judge does not agree with the "
                    "human labels well enough to replace them (the same 0.667/0.8 bars as for α)."
                )
            if h.missing:
                out.append(f"{h.missing} items have no usable human label (empty or not a number).")
        n = max(self.alpha_items, h.n if h is not None else 0, r.items if r is not None else 0)
        if 0 < n < SMALL_N:
            out.append(f"only {n} items: every interval here is wide; read the CIs, not the point values.")
        return out


@dataclass
class ReliabilityReport:
    """The reliability figures of one run (one target), per judged score."""

    scores: list[ScoreReliability] = field(default_factory=list)
    backend: str = "local"

    def metrics(self) -> dict[str, float]:
        """MLflow metrics: the design's ``reliability/…`` keys, finite values only."""
        out: dict[str, float] = {}
        for sr in self.scores:
            for key, value in sr.metrics():
                v = _num(value)
                if v is not None:
                    out[sanitize_key(key)] = v
        return out

    def to_dict(self) -> dict[str, Any]:
        """``report.json``: every figure, NaN as null."""
        out: dict[str, Any] = _jsonable(
            {"version": REPORT_VERSION, "backend": self.backend, "scores": self.scores}
        )
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReliabilityReport:
        return cls(
            scores=[ScoreReliability.from_dict(s) for s in d.get("scores") or []],
            backend=str(d.get("backend") or "local"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)

    def markdown(self) -> str:
        from mlflow_nemo_judge.reliability.markdown import render

        return render(self)

    def files(self, tmpdir: str | Path) -> dict[str, Path | str | bytes]:
        """Artifact path (under ``nemo_judge/``) → content: text for the report and CSVs, a ``Path`` (in
        ``tmpdir``) for every plot."""
        from mlflow_nemo_judge.reliability import plots

        tmp = Path(tmpdir)
        out: dict[str, Path | str | bytes] = {
            ART_REPORT_MD: self.markdown(),
            ART_REPORT_JSON: self.to_json() + "\n",
        }
        for sr in self.scores:
            rel = "/".join(_safe_name(p) for p in (sr.task, sr.metric, sr.score))
            h = sr.human if sr.human is not None and sr.human.n > 0 else None
            if h is not None and h.labels:
                out[f"{ART_RELIABILITY}/{rel}/confusion.csv"] = h.csv()
            base = f"{ART_RELIABILITY}/plots/{rel}"
            for name, path in plots.score_plots(sr, tmp / "reliability_plots" / rel).items():
                out[f"{base}/{name}"] = path
        return out


def _jsonable(v: Any) -> Any:
    """Dataclasses → dicts, non-finite floats → None (JSON has no NaN)."""
    if hasattr(v, "__dataclass_fields__"):
        return _jsonable(asdict(v))
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float):
        return _num(v)
    return v
