"""The nemo backend: NeMo Evaluator client, dataset staging, job lifecycle, results mapping."""

from mlflow_nemo_judge.backends.nemo.backend import NemoBackend
from mlflow_nemo_judge.errors import NemoJobError, NemoJobTimeout

__all__ = ["NemoBackend", "NemoJobError", "NemoJobTimeout"]
