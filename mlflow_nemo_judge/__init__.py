"""mlflow-nemo-judge: NeMo Evaluator custom LLM-as-a-judge configs, run locally or on NeMo, tracked in MLflow.

The names below are the public API (a test pins the list). They are imported lazily, so that
``import mlflow_nemo_judge`` (and the CLI's ``--help``) stays fast: mlflow, pandas and the NeMo backend
load only when used.

- run: ``evaluate`` / ``evaluate_async`` (tracked), ``run_local`` (untracked), ``resume``, ``attach``
- inputs: ``load_config``, ``load_target``, ``EvalConfig``, ``Target``, ``RunOptions``
- outputs: ``Evaluation``, ``EvalResult``, ``SampleRecord``, ``Score``, ``ScoreStats``
- compare: ``leaderboard``, ``paired``
- errors: ``NemoJudgeError`` and its subclasses (see ``mlflow_nemo_judge.errors``)
- test doubles: ``MockLLMServer``, ``FakeNemoService`` (loopback servers, no network)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "evaluate": "mlflow_nemo_judge.pipeline",
    "evaluate_async": "mlflow_nemo_judge.pipeline",
    "resume": "mlflow_nemo_judge.pipeline",
    "resume_async": "mlflow_nemo_judge.pipeline",
    "attach": "mlflow_nemo_judge.pipeline",
    "attach_async": "mlflow_nemo_judge.pipeline",
    "Evaluation": "mlflow_nemo_judge.pipeline",
    "run_local": "mlflow_nemo_judge.engine",
    "RunOptions": "mlflow_nemo_judge.engine",
    "load_config": "mlflow_nemo_judge.config",
    "load_target": "mlflow_nemo_judge.config",
    "EvalConfig": "mlflow_nemo_judge.config",
    "Target": "mlflow_nemo_judge.config",
    "EvalResult": "mlflow_nemo_judge.results",
    "SampleRecord": "mlflow_nemo_judge.results",
    "Score": "mlflow_nemo_judge.results",
    "ScoreStats": "mlflow_nemo_judge.results",
    "leaderboard": "mlflow_nemo_judge.compare",
    "paired": "mlflow_nemo_judge.compare",
    "gate": "mlflow_nemo_judge.gate",
    "NemoJudgeError": "mlflow_nemo_judge.errors",
    "ConfigError": "mlflow_nemo_judge.errors",
    "DatasetError": "mlflow_nemo_judge.errors",
    "EndpointError": "mlflow_nemo_judge.errors",
    "EvaluationError": "mlflow_nemo_judge.errors",
    "TrackingError": "mlflow_nemo_judge.errors",
    "MockLLMServer": "mlflow_nemo_judge.testing.mock_llm",
    "FakeNemoService": "mlflow_nemo_judge.testing.fake_nemo",
}

__all__ = [
    "__version__",
    "ConfigError",
    "DatasetError",
    "EndpointError",
    "EvalConfig",
    "EvalResult",
    "Evaluation",
    "EvaluationError",
    "FakeNemoService",
    "MockLLMServer",
    "NemoJudgeError",
    "RunOptions",
    "SampleRecord",
    "Score",
    "ScoreStats",
    "Target",
    "TrackingError",
    "attach",
    "attach_async",
    "evaluate",
    "evaluate_async",
    "gate",
    "leaderboard",
    "load_config",
    "load_target",
    "paired",
    "resume",
    "resume_async",
    "run_local",
]

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.compare import leaderboard, paired
    from mlflow_nemo_judge.config import EvalConfig, Target, load_config, load_target
    from mlflow_nemo_judge.engine import RunOptions, run_local
    from mlflow_nemo_judge.errors import (
        ConfigError,
        DatasetError,
        EndpointError,
        EvaluationError,
        NemoJudgeError,
        TrackingError,
    )
    from mlflow_nemo_judge.gate import gate
    from mlflow_nemo_judge.pipeline import (
        Evaluation,
        attach,
        attach_async,
        evaluate,
        evaluate_async,
        resume,
        resume_async,
    )
    from mlflow_nemo_judge.results import EvalResult, SampleRecord, Score, ScoreStats
    from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService
    from mlflow_nemo_judge.testing.mock_llm import MockLLMServer


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlflow_nemo_judge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
