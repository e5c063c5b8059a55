"""Backends turn a validated config + target into an ``EvalResult``.

``local`` runs the evaluation in this process; ``nemo`` submits it to a NeMo Evaluator deployment.
Both return the same result shape so tracking and comparison never branch on the backend.
"""

from __future__ import annotations

from typing import Any, Protocol

from mlflow_nemo_judge.config import EvalConfig, Target
from mlflow_nemo_judge.engine import ProgressCallback
from mlflow_nemo_judge.results import EvalResult

BACKENDS = ("local", "nemo")


class Backend(Protocol):
    name: str

    def validate(self, config: EvalConfig, target: Target) -> None:
        """Raise a ``ConfigError`` for anything this backend cannot run, before any call."""

    def run(
        self,
        config: EvalConfig,
        target: Target,
        *,
        progress: ProgressCallback | None = None,
        on_job: Any = None,
    ) -> EvalResult:
        """Run to completion and return NeMo-shaped results. ``on_job(job_dict)`` is called once a
        remote job exists (nemo backend) so tracking can record its id before waiting."""


def get_backend(name: str, **options: Any) -> Backend:
    if name == "local":
        from mlflow_nemo_judge.backends.local import LocalBackend

        return LocalBackend(**options)
    if name == "nemo":
        from mlflow_nemo_judge.backends.nemo import NemoBackend

        return NemoBackend(**options)
    from mlflow_nemo_judge.errors import ConfigError

    raise ConfigError("--backend", f"unknown backend {name!r} (choose from: {', '.join(BACKENDS)})")
