"""The registry gate: is the challenger better than the champion on the same items, by a margin that
matters, without getting worse elsewhere? GO / NO-GO / INCONCLUSIVE, recorded in MLflow.

- ``policy``: the declarative policy (file, dict or flags) and its validation
- ``decision``: pure paired statistics and the verdict
- ``run``: finding/evaluating both runs, the decision run, registration and the alias
- ``cli``: the ``gate`` subcommand (exit 0 GO, 1 NO-GO, 3 INCONCLUSIVE, 2 bad input)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.gate.decision import EXIT_CODES, Decision, ScoreFigures
    from mlflow_nemo_judge.gate.policy import Policy, load_policy
    from mlflow_nemo_judge.gate.run import GateDecision

# Loaded on first use: the CLI declares the `gate` subcommand from this package on every start, and
# `--help` must not pay for pydantic models and statistics it does not use.
_LAZY = {
    "EXIT_CODES": "mlflow_nemo_judge.gate.decision",
    "Decision": "mlflow_nemo_judge.gate.decision",
    "ScoreFigures": "mlflow_nemo_judge.gate.decision",
    "Policy": "mlflow_nemo_judge.gate.policy",
    "load_policy": "mlflow_nemo_judge.gate.policy",
    "GateDecision": "mlflow_nemo_judge.gate.run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EXIT_CODES",
    "Decision",
    "GateDecision",
    "Policy",
    "ScoreFigures",
    "gate",
    "load_policy",
]


def gate(
    config: Any = None,
    challenger: Any = None,
    *,
    model: str,
    alias: str = "champion",
    challenger_run: str | None = None,
    policy: Policy | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    policy_source: str | None = None,
    champion_target: Any = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    backend: str = "local",
    limit: int | None = None,
    promote: bool = True,
    **run_options: Any,
) -> GateDecision:
    """Evaluate ``challenger`` (a target) with ``config`` — or take the finished run ``challenger_run`` —
    against the version of ``model`` under ``alias``, and decide under ``policy``.

    The champion's run on the same config and items is reused, or evaluated from the target stored with
    its run (``champion_target`` overrides it, e.g. when that target held a literal key). The decision
    is always logged as an MLflow run; on GO (and ``promote``) the challenger is registered and the alias
    moved. Without a champion the challenger is judged alone (NaN budget, ``min_items``) and becomes
    the first champion on GO. ``run_options`` are ``RunOptions`` fields (``parallelism``, ``cache``...).
    """
    from mlflow_nemo_judge.config import load_config, load_target
    from mlflow_nemo_judge.gate import run as gr
    from mlflow_nemo_judge.gate.policy import config_score_keys, load_policy, resolve
    from mlflow_nemo_judge.gate.run import Side
    from mlflow_nemo_judge.pipeline import _tracking
    from mlflow_nemo_judge.tracking import names as n
    from mlflow_nemo_judge.tracking import resume as rs

    pol, where = load_policy(policy)
    where = policy_source or where  # the file a CLI policy came from, before flags were applied
    if (challenger is None) == (challenger_run is None):
        raise ConfigError("challenger", "give either a challenger target or a finished challenger run id")
    if challenger is not None:
        if config is None:
            raise ConfigError("config", "a CONFIG is needed to evaluate a challenger target")
        cfg = load_config(config)
        resolved = resolve(pol, config_score_keys(cfg), where)  # bad policy: refused before any call
        chall = gr.evaluate_side(
            cfg,
            load_target(challenger),
            experiment=experiment,
            tracking_uri=tracking_uri,
            limit=limit,
            backend=backend,
            run_options=run_options,
        )
    with _tracking(tracking_uri) as cl:
        if challenger_run is not None:
            chall, run = gr.finished_side(cl, challenger_run)
            cfg = rs.reload(cl, run, "config", config)
            resolved = resolve(pol, config_score_keys(cfg), where)
            limit = rs.recorded_limit(run.data.tags)
            backend = run.data.tags.get(n.TAG_BACKEND, backend)
        exp_id = str(cl.get_run(chall.run_id).info.experiment_id)
        exp_name = str(cl.get_experiment(exp_id).name)
        mv = gr.champion_version(cl, model, alias)
        champ_target = None
        if mv is not None and gr.version_model_id(mv) != chall.model_id:
            champ_target = gr.champion_target(cl, model, mv, champion_target)
    champ: Side | None = None
    if mv is not None and champ_target is None:
        champ = Side(chall.run_id, chall.result, chall.model_id, chall.label, str(mv.version))
    elif mv is not None and champ_target is not None:
        # ``force`` re-runs the challenger only: the champion's finished run on these items is the baseline.
        champ_opts = {k: v for k, v in run_options.items() if k != "force"}
        champ = gr.evaluate_side(
            cfg,
            champ_target,
            experiment=exp_name,
            tracking_uri=tracking_uri,
            limit=limit,
            backend=backend,
            run_options=champ_opts,
        )
        champ.version = str(mv.version)
    with _tracking(tracking_uri) as cl:
        return gr.judge(cl, exp_id, resolved, model, alias, chall, champ, promote_on_go=promote)
