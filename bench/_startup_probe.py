"""Run ``mlflow-nemo-judge ARGS`` in this process and write when each start-up phase ended (``time.time()``,
the same clock as the mock server's request log) to the JSON file named by ``NEMO_JUDGE_PROBE_OUT``.

Used by ``bench_startup.py`` only. The marks are taken by wrapping a few package functions from the
outside (nothing in the package knows about the probe), so the command runs its ordinary code path:

- ``interpreter``: this file's first line ran (the interpreter and ``site`` are up);
- ``cli_imported``: ``mlflow_nemo_judge.cli`` imported (what the console script imports first);
- ``plan_ready``: the last target's ``prepare`` returned (config, plan, the one data pass);
- ``mlflow_import_start`` / ``mlflow_imported``: ``import mlflow`` began / finished (on whatever thread);
- ``store_open``: the checked ``MlflowClient`` exists (the store opened, the preflight read done);
- ``run_created``: ``RunTracker.create`` returned (experiment resolved, identity searched, run created);
- ``setup_logged``: the run's setup was written (sources, prompts, params, inputs, LoggedModel), on the
  sink's setup thread beside the model calls.

The first model request's arrival is read from the mock server's log by the caller, not here.
"""

from __future__ import annotations

import time

T_INTERPRETER = time.time()

import atexit  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.machinery  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from typing import Any  # noqa: E402

marks: dict[str, float] = {"interpreter": T_INTERPRETER}
_lock = threading.Lock()


def mark(name: str, *, first: bool = False) -> None:
    with _lock:
        if first and name in marks:
            return
        marks[name] = time.time()


class _MlflowImportClock(importlib.abc.MetaPathFinder):
    """Marks when the top-level ``mlflow`` package starts and finishes executing."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "mlflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def timed_exec(module: Any) -> None:
            mark("mlflow_import_start", first=True)
            try:
                exec_module(module)
            finally:
                mark("mlflow_imported", first=True)

        loader.exec_module = timed_exec  # type: ignore[method-assign]
        return spec


def _wrap(owner: Any, attr: str, name: str, *, is_async: bool = False) -> None:
    fn = getattr(owner, attr)
    if is_async:

        async def awrapped(*a: Any, **k: Any) -> Any:
            out = await fn(*a, **k)
            mark(name, first=True)
            return out

        setattr(owner, attr, awrapped)
        return

    def wrapped(*a: Any, **k: Any) -> Any:
        out = fn(*a, **k)
        mark(name)  # the last call wins: prepare() runs once per target
        return out

    setattr(owner, attr, wrapped)


def _dump() -> None:
    out = os.environ.get("NEMO_JUDGE_PROBE_OUT")
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(marks, fh)


def main() -> int:
    sys.meta_path.insert(0, _MlflowImportClock())
    atexit.register(_dump)
    from mlflow_nemo_judge import cli

    mark("cli_imported")
    from mlflow_nemo_judge.backends.local import LocalBackend
    from mlflow_nemo_judge.tracking import health
    from mlflow_nemo_judge.tracking.mlflow_sink import MlflowSink
    from mlflow_nemo_judge.tracking.runs import RunTracker

    _wrap(LocalBackend, "prepare", "plan_ready")
    _wrap(health, "open_client", "client_made")
    _wrap(health, "preflight", "store_open")
    _wrap(RunTracker, "create", "run_created")
    _wrap(MlflowSink, "_write_setup", "setup_logged")
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
