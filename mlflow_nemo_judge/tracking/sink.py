"""Where an evaluation's record goes while it runs: the ``RunSink`` protocol and an in-memory sink.

The pipeline drives a sink through one evaluation: ``start`` before the backend runs, ``sample``
for every per-sample record as it is written (item order), ``progress`` and ``job`` while running, then
exactly one of ``finish`` / ``fail`` / ``kill``. ``finish`` also gets the run's reliability report
(``reliability.analyze``; None when the config asks for no repeats, panel or human labels): it travels
beside the result, never inside it, so ``EvalResult`` stays free of report state. The MLflow sink (``mlflow_sink.py``) makes the run;
``MemorySink`` keeps what an untracked call needs (counts, the ending; never every record).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mlflow_nemo_judge.backends.base import Prepared
from mlflow_nemo_judge.results import EvalResult, SampleRecord

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.report import ReliabilityReport


class RunSink(Protocol):
    """The lifecycle of one evaluation's record."""

    @property
    def run_id(self) -> str | None: ...

    def start(self, prepared: Prepared) -> None: ...

    def sample(self, record: SampleRecord) -> None: ...

    def progress(self, task: str, done: int, total: int | None) -> None: ...

    def job(self, job: Mapping[str, Any]) -> None: ...

    def finish(self, result: EvalResult, reliability: ReliabilityReport | None = None) -> None: ...

    def fail(self, exc: BaseException) -> None: ...

    def kill(self) -> None: ...


@dataclass
class MemorySink:
    """The sink of an untracked evaluation (and of tests): the count of records, the last progress, the
    job, and how the evaluation ended. Not the records themselves: they are in the result's spill file
    (``EvalResult.iter_samples``), and holding them cost ~10 KB per sample (1.1 GB at 100k, measured)."""

    run_id: str | None = None
    prepared: Prepared | None = None
    count: int = 0
    last_record: SampleRecord | None = None
    last_progress: tuple[str, int, int | None] | None = None
    jobs: list[dict[str, Any]] = field(default_factory=list)
    result: EvalResult | None = None
    reliability: ReliabilityReport | None = None
    error: BaseException | None = None
    state: str = "new"  # new → running → finished | failed | killed

    def start(self, prepared: Prepared) -> None:
        self.prepared, self.state = prepared, "running"

    def sample(self, record: SampleRecord) -> None:
        self.count += 1
        self.last_record = record

    def progress(self, task: str, done: int, total: int | None) -> None:
        self.last_progress = (task, done, total)

    def job(self, job: Mapping[str, Any]) -> None:
        self.jobs.append(dict(job))

    def finish(self, result: EvalResult, reliability: ReliabilityReport | None = None) -> None:
        self.result, self.reliability, self.state = result, reliability, "finished"

    def fail(self, exc: BaseException) -> None:
        self.error, self.state = exc, "failed"

    def kill(self) -> None:
        self.state = "killed"
