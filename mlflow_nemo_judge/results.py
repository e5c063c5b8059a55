"""The one output shape both backends return.

``EvalResult`` holds the aggregate tree in NeMo Evaluator's results shape
(``tasks → metrics → scores → {value, stats}``), usage figures, and the per-sample records. Samples are
kept in a JSONL spill file rather than in memory, so a 100k-row evaluation costs disk, not RAM;
``iter_samples()`` streams them back in item order.
"""

from __future__ import annotations

import json
import math
import shutil
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.scoring.stats import Summary

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.recomputed import Recomputed

NAN = float("nan")


def _num(v: float | None) -> float | None:
    """JSON-safe number: NaN/inf become None (JSON has no NaN)."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


@dataclass
class ScoreStats:
    """NeMo's ``ScoreStats`` plus our 95% CI; every field optional as NeMo servers may omit them."""

    count: int | None = None
    sum: float | None = None
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    stddev: float | None = None
    variance: float | None = None
    stderr: float | None = None
    sum_squared: float | None = None
    nan_count: int | None = None
    ci95_low: float | None = None
    ci95_high: float | None = None

    @classmethod
    def from_summary(cls, s: Summary) -> ScoreStats:
        return cls(
            count=s.count,
            sum=s.sum,
            mean=s.mean,
            min=s.min,
            max=s.max,
            stddev=s.stddev,
            variance=s.variance,
            stderr=s.stderr,
            sum_squared=s.sum_squared,
            nan_count=s.nan_count,
            ci95_low=s.ci95_low,
            ci95_high=s.ci95_high,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ScoreStats | None:
        if not d:
            return None
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if v is None:
                continue
            out[k] = v if isinstance(v, int) and not isinstance(v, bool) else _num(v)
        return out


@dataclass
class Score:
    """One aggregated score: ``value`` is the mean of the non-NaN samples (None if all were NaN)."""

    value: float | None
    stats: ScoreStats | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": _num(self.value)}
        if self.stats is not None:
            d["stats"] = self.stats.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Score:
        v = d.get("value")
        return cls(value=None if v is None else float(v), stats=ScoreStats.from_dict(d.get("stats")))


# task/group name -> metric name -> score name -> Score
MetricTree = dict[str, dict[str, dict[str, Score]]]


def _scores_json(scores: dict[str, float]) -> dict[str, float | None]:
    return {k: _num(v) for k, v in scores.items()}


def _scores_from(d: Any) -> dict[str, float]:
    return {k: (NAN if v is None else float(v)) for k, v in (d or {}).items()} if isinstance(d, dict) else {}


def _verdict(
    scores: dict[str, float],
    raw: str | None,
    error: str | None,
    timing: tuple[int, int] | None,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """The JSON of what a judge call gave (an outcome's or a judgment's): timing/usage only when set."""
    out: dict[str, Any] = {"scores": _scores_json(scores), "raw": raw, "error": error}
    if timing is not None:
        out["timing"] = list(timing)
    if usage:
        out["usage"] = usage
    return out


@dataclass
class Judgment:
    """One judge call of a metric on a sample: judge ``judge`` (its label), repeat ``repeat`` (0-based).

    Kept on :attr:`MetricOutcome.judgments` when a metric is judged more than once per sample (repeats,
    a judge panel), so every judgment can be analysed and traced; ``seed`` and ``temperature`` are the
    values the request carried (None: not sent / the judge's default).
    """

    judge: str
    repeat: int
    scores: dict[str, float] = field(default_factory=dict)  # NaN when unparseable
    raw: str | None = None
    error: str | None = None
    timing: tuple[int, int] | None = None
    usage: dict[str, Any] | None = None
    seed: int | None = None
    temperature: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"judge": self.judge, "repeat": self.repeat}
        out.update(_verdict(self.scores, self.raw, self.error, self.timing, self.usage))
        if self.seed is not None:
            out["seed"] = self.seed
        if self.temperature is not None:
            out["temperature"] = _num(self.temperature)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Judgment:
        seed, temp = d.get("seed"), d.get("temperature")
        return cls(
            judge=str(d.get("judge", "")),
            repeat=int(d.get("repeat", 0)),
            scores=_scores_from(d.get("scores")),
            raw=d.get("raw"),
            error=d.get("error"),
            timing=_span_time(d.get("timing")),
            usage=d.get("usage") if isinstance(d.get("usage"), dict) else None,
            seed=int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None,
            temperature=float(temp)
            if isinstance(temp, (int, float)) and not isinstance(temp, bool)
            else None,
        )


@dataclass
class MetricOutcome:
    """One metric's verdict on one sample: scores (NaN when unparseable), judge text, error.

    With more than one judgment per sample (repeats, a judge panel) ``scores`` is the headline (each
    judge's repeats reduced, then the judges; ``scoring.judgments``), ``raw``/``timing``/``usage`` are
    the first judgment's and ``judgments`` holds every one; with one judgment ``judgments`` is empty
    (this outcome is that judgment). ``human`` is the row's human label per score, when declared.
    """

    scores: dict[str, float] = field(default_factory=dict)
    raw: str | None = None
    error: str | None = None
    # (candidate, references) for corpus-level metrics (bleu 'corpus'); used in aggregation, not stored.
    corpus_item: tuple[str, list[str]] | None = field(default=None, repr=False, compare=False)
    # The judge call as measured, for its trace span: (start, end) in epoch ns, and the reply's `usage`.
    timing: tuple[int, int] | None = field(default=None, repr=False, compare=False)
    usage: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    judgments: list[Judgment] = field(default_factory=list)
    human: dict[str, float] = field(default_factory=dict)  # score -> human label (NaN: empty/not a number)

    def to_dict(self) -> dict[str, Any]:
        out = _verdict(self.scores, self.raw, self.error, self.timing, self.usage)
        # Only when there is more than one: plain runs' records (and old spill files) are unchanged.
        if len(self.judgments) > 1:
            out["judgments"] = [j.to_dict() for j in self.judgments]
        if self.human:
            out["human"] = _scores_json(self.human)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricOutcome:
        judgments = d.get("judgments")
        return cls(
            scores=_scores_from(d.get("scores")),
            raw=d.get("raw"),
            error=d.get("error"),
            timing=_span_time(d.get("timing")),
            usage=d.get("usage") if isinstance(d.get("usage"), dict) else None,
            judgments=[Judgment.from_dict(j) for j in judgments if isinstance(j, dict)]
            if isinstance(judgments, list)
            else [],
            human=_scores_from(d.get("human")),
        )


def _span_time(value: Any) -> tuple[int, int] | None:
    """A stored (start, end) pair of epoch nanoseconds, or None for anything else (older records)."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(x, int) for x in value):
        return int(value[0]), int(value[1])
    return None


@dataclass
class SampleRecord:
    """Everything about one evaluated item, kept so any score can be traced to its raw judge text."""

    task: str
    index: int
    item_id: str
    item: dict[str, Any]
    output_text: str | None = None
    finish_reason: str | None = None
    target_error: str | None = None
    metrics: dict[str, MetricOutcome] = field(default_factory=dict)
    # Rendered inputs the target saw (the request body minus model), for the per-sample table.
    request: dict[str, Any] | None = None
    # The target call as measured, for its trace span: span name ("target") -> (start, end) in epoch ns,
    # and -> the reply's `usage`. The judge calls carry theirs on their MetricOutcome.
    timings: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False, compare=False)
    usage: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = self._fields()
        if self.timings:
            out["timings"] = {k: list(v) for k, v in self.timings.items()}
        if self.usage:
            out["usage"] = self.usage
        return out

    def _fields(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "index": self.index,
            "item_id": self.item_id,
            "item": self.item,
            "output_text": self.output_text,
            "finish_reason": self.finish_reason,
            "target_error": self.target_error,
            "request": self.request,
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SampleRecord:
        return cls(
            task=d["task"],
            index=int(d["index"]),
            item_id=str(d["item_id"]),
            item=d.get("item") or {},
            output_text=d.get("output_text"),
            finish_reason=d.get("finish_reason"),
            target_error=d.get("target_error"),
            request=d.get("request"),
            metrics={k: MetricOutcome.from_dict(m) for k, m in (d.get("metrics") or {}).items()},
            timings={k: t for k, v in (d.get("timings") or {}).items() if (t := _span_time(v)) is not None},
            usage={k: v for k, v in (d.get("usage") or {}).items() if isinstance(v, dict)},
        )


@dataclass
class Usage:
    """Run-level figures, logged under ``usage/…``."""

    requests: int = 0
    retries: int = 0
    second_rounds: int = 0  # calls given a second round of retries after theirs ran out
    cache_hits: int = 0
    failed_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    samples: int = 0
    truncated_outputs: int = 0
    empty_outputs: int = 0
    wall_seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        d: dict[str, float] = {k: v for k, v in asdict(self).items()}
        d["samples_per_second"] = self.samples_per_second
        return d


@dataclass
class EvalResult:
    """Aggregate results (NeMo shape), usage, and a stream of per-sample records."""

    tasks: MetricTree
    groups: MetricTree = field(default_factory=dict)
    # nested groups by path (("outer", "inner") -> metric -> score -> Score); see group_tree.py
    subgroups: dict[tuple[str, ...], dict[str, dict[str, Score]]] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    samples_path: Path | None = None
    backend: str = "local"
    job: dict[str, Any] | None = None
    # nemo runs with per-sample data: the package's own statistics of them, beside the service's
    # numbers in tasks/groups (which are never replaced; see recomputed.py). None otherwise.
    recomputed: Recomputed | None = None
    _cleanup: Any = field(default=None, init=False, repr=False, compare=False)

    def own(self, directory: Path) -> None:
        """Make ``directory`` (the samples' spill folder) this result's: it is removed by :meth:`close`, when
        the result is garbage-collected, or at interpreter exit, whichever comes first. So a finished run
        leaves no temp folder behind, while ``iter_samples()`` works for as long as the result is held."""
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(directory), True)

    def close(self) -> None:
        """Remove the owned spill folder now (``iter_samples()`` yields nothing afterwards)."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> EvalResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def to_nemo_dict(self) -> dict[str, Any]:
        """The results document in NeMo Evaluator's ``EvaluationResult`` shape (tasks/groups)."""

        from mlflow_nemo_judge.group_tree import nest

        def render(metrics: dict[str, dict[str, Score]]) -> dict[str, Any]:
            return {
                m: {"scores": {s: sc.to_dict() for s, sc in scores.items()}} for m, scores in metrics.items()
            }

        tasks = {name: {"metrics": render(metrics)} for name, metrics in self.tasks.items()}
        return {"tasks": tasks, "groups": nest(self.groups, self.subgroups, render)}

    @classmethod
    def from_nemo_dict(cls, d: dict[str, Any], **kw: Any) -> EvalResult:
        from mlflow_nemo_judge.group_tree import unnest

        def parse(metrics: Any) -> dict[str, dict[str, Score]]:
            return {
                m: {s: Score.from_dict(sc) for s, sc in ((mv or {}).get("scores") or {}).items()}
                for m, mv in (metrics or {}).items()
            }

        tasks = {name: parse((node or {}).get("metrics")) for name, node in (d.get("tasks") or {}).items()}
        groups, subgroups = unnest(d.get("groups"), parse)  # group results may nest (GroupResult.groups)
        return cls(tasks=tasks, groups=groups, subgroups=subgroups, **kw)

    def scores(self) -> Iterator[tuple[str, str, str, Score]]:
        """Yield ``(task, metric, score_name, Score)`` for every task score."""
        for task, metrics in self.tasks.items():
            for metric, scores in metrics.items():
                for name, sc in scores.items():
                    yield task, metric, name, sc

    def iter_samples(self) -> Iterator[SampleRecord]:
        """Stream the per-sample records (in task, item order)."""
        if self.samples_path is None or not Path(self.samples_path).exists():
            return
        with open(self.samples_path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield SampleRecord.from_dict(json.loads(line))
