"""Can this judge be trusted? Reliability figures of a finished evaluation, from its per-sample records.

- ``analysis``: ``analyze(config, result)`` — one streamed pass over the records: repeat stability,
  judge-panel agreement, agreement with human labels
- ``report``: ``ReliabilityReport`` — MLflow metrics (``reliability/…`` keys), ``report.json``, a
  markdown report a person reads, and every artifact file
- ``plots``: repeat spread, agreement and confusion heat maps (matplotlib Agg, imported lazily)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.analysis import analyze
    from mlflow_nemo_judge.reliability.report import ReliabilityReport

__all__ = ["ReliabilityReport", "analyze"]

# Loaded on first use: the pipeline imports this package for every run, and the statistics behind it
# (scipy, krippendorff) cost a second that a run without reliability settings must not pay.
_LAZY = {
    "analyze": "mlflow_nemo_judge.reliability.analysis",
    "ReliabilityReport": "mlflow_nemo_judge.reliability.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
