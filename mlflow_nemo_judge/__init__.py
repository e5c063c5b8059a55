"""mlflow-nemo-judge: NeMo Evaluator custom LLM-as-a-judge configs, run locally or on NeMo, tracked in MLflow.

The public API is imported lazily so that ``import mlflow_nemo_judge`` (and the CLI's ``--help``) stays
fast: mlflow, pandas and the NeMo backend load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "EvalConfig",
    "EvalResult",
    "NemoJudgeError",
    "Target",
    "__version__",
    "evaluate",
    "load_config",
    "load_target",
    "run_local",
]

_LAZY = {
    "EvalConfig": ("mlflow_nemo_judge.config", "EvalConfig"),
    "Target": ("mlflow_nemo_judge.config", "Target"),
    "load_config": ("mlflow_nemo_judge.config", "load_config"),
    "load_target": ("mlflow_nemo_judge.config", "load_target"),
    "EvalResult": ("mlflow_nemo_judge.results", "EvalResult"),
    "NemoJudgeError": ("mlflow_nemo_judge.errors", "NemoJudgeError"),
    "run_local": ("mlflow_nemo_judge.engine", "run_local"),
    "evaluate": ("mlflow_nemo_judge.api", "evaluate"),
}

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.api import evaluate
    from mlflow_nemo_judge.config import EvalConfig, Target, load_config, load_target
    from mlflow_nemo_judge.engine import run_local
    from mlflow_nemo_judge.errors import NemoJudgeError
    from mlflow_nemo_judge.results import EvalResult


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mlflow_nemo_judge' has no attribute {name!r}")
