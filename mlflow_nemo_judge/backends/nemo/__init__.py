"""The nemo backend: NeMo Evaluator client, dataset staging, job lifecycle, results mapping."""

from mlflow_nemo_judge.backends.nemo.backend import NemoBackend, NemoJobError, NemoJobTimeout

__all__ = ["NemoBackend", "NemoJobError", "NemoJobTimeout"]
