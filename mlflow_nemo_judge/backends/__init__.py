"""Backends turn a validated config + target into an ``EvalResult``.

``local`` runs the evaluation in this process; ``nemo`` submits it to a NeMo Evaluator deployment.
Both follow ``base.Backend`` and return the same result shape, so tracking and comparison never branch
on the backend. Each is imported only when chosen.
"""

from __future__ import annotations

from typing import Any

from mlflow_nemo_judge.backends.base import Backend, Prepared, ProgressCallback, RunEvents

BACKENDS = ("local", "nemo")

__all__ = ["BACKENDS", "Backend", "Prepared", "ProgressCallback", "RunEvents", "get_backend"]


def get_backend(name: str, **options: Any) -> Backend:
    if name == "local":
        from mlflow_nemo_judge.backends.local import LocalBackend

        return LocalBackend(**options)
    if name == "nemo":
        from mlflow_nemo_judge.backends.nemo import NemoBackend

        return NemoBackend(**options)
    from mlflow_nemo_judge.errors import ConfigError

    raise ConfigError("--backend", f"unknown backend {name!r} (choose from: {', '.join(BACKENDS)})")
