"""Score-distribution charts drawn in a helper process, beside a finishing run's uploads.

A chart costs ~60 ms of CPU (matplotlib's text layout and Agg drawing, mostly under the GIL), and a run
draws one per metric after its last model call: on a 25-sample run that was most of what tracking added
to the wall time (issue 15). Threads cannot overlap CPU work under the GIL; a second process can, on the
otherwise idle core. So one worker per process (``shared()``, started on a run's setup thread while the
model calls go on, then reused by every later run of the process) imports matplotlib once, and at the
finish draws every other chart while this process draws the rest (warmed up on the same setup thread)
and the run's metrics, other files and last traces are written.

The worker is ``python -m mlflow_nemo_judge.compare.plot_worker``: a subprocess, not ``multiprocessing``,
whose spawn would re-run a user's unguarded script. It reads one JSON job per line on stdin and answers
``ok`` or ``error <reason>`` per job on stdout; it gets scores, titles and a file path, never a config or
a key. Anything wrong with it (it cannot start, dies, answers late or with an error) makes ``render``
draw that chart in this process instead, so a run never loses a chart to the optimisation.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

ANSWER_TIMEOUT = 30.0  # seconds for one chart's answer before this process draws it itself
READY_WAIT = 0.05  # seconds a finishing run waits for a worker still starting (then it draws here)
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
    """The helper process and its pipes; one request at a time (a lock), from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._ready = False

    def start(self) -> None:
        """Start the process if none is running (cheap: it imports matplotlib on its own core)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            import mlflow_nemo_judge

            env = dict(os.environ)
            # Importable as this process imports it, installed or from a checkout.
            root = str(Path(mlflow_nemo_judge.__file__).resolve().parents[1])
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow_nemo_judge.compare.plot_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            self._ready = False

    def render(self, charts: Sequence[Chart]) -> list[Path]:
        """Draw ``charts``: every other one in the worker and the rest here, at the same time (two
        cores); a chart the worker does not answer for is drawn here too. Returns their paths."""
        from mlflow_nemo_judge.compare.plots import score_distribution

        remote = list(charts[0::2])
        done: set[int] = set()
        with self._lock:
            try:
                self._send(remote)
            except _NotReady:
                remote = []  # kept: a later run of this process will find it ready
            except Exception as exc:  # the worker is an optimisation: draw here instead
                logger.debug("plot worker unavailable (%s); drawing in this process", exc)
                self._stop()
                remote = []
            for c in charts[1::2] if remote else charts:
                score_distribution(c.title, c.scores, c.path, model=c.model)
            if remote:
                try:
                    done = self._answers(len(remote))
                except Exception as exc:
                    logger.debug("plot worker failed (%s); drawing its charts here", exc)
                    self._stop()
        for i, c in enumerate(remote):
            if i not in done:
                score_distribution(c.title, c.scores, c.path, model=c.model)
        return [c.path for c in charts]

    def _send(self, charts: Sequence[Chart]) -> None:
        if not charts:
            return
        proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None or proc.stdout is None:
            raise RuntimeError("not running")
        if not self._ready:
            try:
                line = _readline(proc.stdout, READY_WAIT)
            except TimeoutError:
                raise _NotReady from None
            if line != READY:
                raise RuntimeError("did not start")
            self._ready = True
        for c in charts:
            c.path.parent.mkdir(parents=True, exist_ok=True)
            job = {"title": c.title, "scores": {k: _floats(v) for k, v in c.scores.items()}}
            proc.stdin.write(json.dumps({**job, "path": str(c.path), "model": c.model}) + "\n")
        proc.stdin.flush()

    def _answers(self, n: int) -> set[int]:
        """Which of the ``n`` charts sent the worker drew."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise RuntimeError("not running")
        done: set[int] = set()
        for i in range(n):
            answer = _readline(proc.stdout, ANSWER_TIMEOUT)
            if answer == "ok":
                done.add(i)
            elif answer.startswith("error"):
                logger.debug("plot worker: %s", answer)
            else:
                raise RuntimeError(f"answered {answer[:80]!r}")
        return done

    def _stop(self, wait: bool = True) -> None:
        """End the worker: its stdin closes, so it leaves its loop and exits by itself. ``wait=False``
        (at interpreter exit) does not wait for that (~0.15 s)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            if wait:
                proc.wait(timeout=2)
        except Exception:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self, wait: bool = True) -> None:
        with self._lock:
            self._stop(wait)


def _floats(values: Sequence[float | None]) -> list[float | None]:
    """JSON has no NaN: an unparsed score travels as null (``plots`` counts both as NaN)."""
    return [None if v is None or v != v else float(v) for v in values]


def _readline(stream: IO[str], timeout: float) -> str:
    """One line from the worker, or TimeoutError: a stuck worker must not hang a finishing run."""
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not out:
        raise TimeoutError(f"no answer within {timeout:g} s")
    if not out[0]:
        raise RuntimeError("exited")
    return out[0].strip()


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
