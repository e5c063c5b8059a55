"""Score-distribution charts drawn in a helper process, beside a finishing run's uploads.

A chart costs ~60 ms of CPU (matplotlib's text layout and Agg drawing, all under the GIL), and a run
draws one per metric after its last model call: on a 25-sample run that was most of what tracking added
to the wall time (issue 15). Threads cannot overlap CPU work under the GIL, and at a run's finish this
process's GIL is busy with the last traces and the metric batch: a chart drawn here then took 0.2-0.3 s
instead of 0.06 s (measured). A second process draws on the otherwise idle core. So one worker per
process (``shared()``, started by an early start or on a run's setup thread while the model calls go
on, then reused by every later run of the process) imports matplotlib once, and at the finish draws
every chart while this process writes the run's metrics, other files and last traces.

The worker is ``python -m mlflow_nemo_judge.compare.plot_worker`` (``helper_process.Helper``). It reads
one JSON job per line on stdin and answers ``ok`` or ``error <reason>`` per job on stdout; it gets
scores, titles and a file path, never a config or a key. Anything wrong with it (it is still starting
after ``READY_WAIT``, cannot start, dies, answers late or with an error) makes ``render`` draw that
chart in this process instead, so a run never loses a chart to the optimisation.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_nemo_judge.helper_process import Helper

logger = logging.getLogger(__name__)

ANSWER_TIMEOUT = 30.0  # seconds for one chart's answer before this process draws it itself
READY_WAIT = 0.5  # seconds a finishing run waits for a worker still starting (then it draws here)
READY = "ready"


class _NotReady(Exception):
    """The worker is still importing matplotlib: this time the charts are drawn here."""


@dataclass
class Chart:
    """One score-distribution chart to draw (``plots.score_distribution``'s arguments)."""

    title: str
    scores: Mapping[str, Sequence[float | None]]
    path: Path
    model: str | None = None


class PlotWorker:
    """The helper process; one request at a time (a lock), from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._helper: Helper | None = None
        self._ready = False

    def start(self) -> None:
        """Start the process if none is running (cheap: it imports matplotlib on its own core)."""
        with self._lock:
            if self._helper is not None and self._helper.alive:
                return
            self._helper = Helper("mlflow_nemo_judge.compare.plot_worker")
            self._ready = False

    def render(self, charts: Sequence[Chart]) -> list[Path]:
        """Draw ``charts`` in the worker; a chart it does not answer for (or every chart, when it is not
        usable) is drawn here. Returns their paths."""
        from mlflow_nemo_judge.compare.plots import score_distribution

        done: set[int] = set()
        with self._lock:
            try:
                self._send(charts)
                done = self._answers(len(charts))
            except _NotReady:
                pass  # kept: a later run of this process will find it ready
            except Exception as exc:  # the worker is an optimisation: draw here instead
                logger.debug("plot worker unavailable (%s); drawing in this process", exc)
                self._stop()
        for i, c in enumerate(charts):
            if i not in done:
                score_distribution(c.title, c.scores, c.path, model=c.model)
        return [c.path for c in charts]

    def _send(self, charts: Sequence[Chart]) -> None:
        if not charts:
            return
        helper = self._helper
        if helper is None or not helper.alive:
            raise RuntimeError("not running")
        if not self._ready:
            try:
                line = helper.readline(READY_WAIT)
            except TimeoutError:
                raise _NotReady from None
            if line != READY:
                raise RuntimeError("did not start")
            self._ready = True
        for c in charts:
            c.path.parent.mkdir(parents=True, exist_ok=True)
            job = {"title": c.title, "scores": {k: _floats(v) for k, v in c.scores.items()}}
            helper.send(json.dumps({**job, "path": str(c.path), "model": c.model}))

    def _answers(self, n: int) -> set[int]:
        """Which of the ``n`` charts sent the worker drew."""
        helper = self._helper
        if helper is None:
            raise RuntimeError("not running")
        done: set[int] = set()
        for i in range(n):
            answer = helper.readline(ANSWER_TIMEOUT)
            if answer == "ok":
                done.add(i)
            elif answer.startswith("error"):
                logger.debug("plot worker: %s", answer)
            else:
                raise RuntimeError(f"answered {answer[:80]!r}")
        return done

    def _stop(self, wait: bool = True) -> None:
        helper, self._helper = self._helper, None
        if helper is not None:
            helper.stop(wait)

    def close(self, wait: bool = True) -> None:
        with self._lock:
            self._stop(wait)


def _floats(values: Sequence[float | None]) -> list[float | None]:
    """JSON has no NaN: an unparsed score travels as null (``plots`` counts both as NaN)."""
    return [None if v is None or v != v else float(v) for v in values]


_SHARED: PlotWorker | None = None
_SHARED_LOCK = threading.Lock()


def shared() -> PlotWorker:
    """This process's worker (started if needed), closed at exit."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = PlotWorker()
            atexit.register(_SHARED.close, False)
        worker = _SHARED
    worker.start()
    return worker


def main() -> None:
    """The worker's side: warm up, say ready, then draw one chart per stdin line."""
    from mlflow_nemo_judge.compare.plots import score_distribution, warm_up

    warm_up()
    print(READY, flush=True)
    for line in sys.stdin:
        try:
            job: dict[str, Any] = json.loads(line)
            score_distribution(job["title"], job["scores"], job["path"], model=job.get("model"))
            print("ok", flush=True)
        except Exception as exc:
            print(f"error {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)


if __name__ == "__main__":
    main()
