"""The model registry: each evaluated target's LoggedModel registered as a version, with its scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlflow_nemo_judge.tracking import names as n
from mlflow_nemo_judge.tracking.identity import Outcome
from mlflow_nemo_judge.tracking.params import score_metrics
from mlflow_nemo_judge.tracking.store import register, registered_version, set_alias, set_run_tag


def register_outcomes(cl: Any, outcomes: Sequence[Outcome], name: str, alias: str | None) -> None:
    """Register each target's LoggedModel as a version of ``name`` (once: a rerun reuses the version),
    headline scores as version tags; with several targets the alias goes to the best first score."""
    best: tuple[float, str] | None = None
    for o in outcomes:
        if not o.model_id:
            continue
        heads = {m.key: m.value for m in score_metrics(o.result) if m.headline}
        version = registered_version(o.model_id, name)
        if version is None:
            version = register(o.model_id, name, tags={k: f"{v:.6g}" for k, v in heads.items()})
            set_run_tag(cl, o.run_id, n.TAG_REGISTERED, f"{name}/{version}")
        first = next(iter(heads.values()), float("nan"))
        if best is None or (first == first and (best[0] != best[0] or first > best[0])):
            best = (first, version)
    if alias and best is not None:
        set_alias(name, alias, best[1])
