"""The model registry: each evaluated target's LoggedModel registered as a version, with its scores, and
the alias moved only on evidence (the gate's policy, ``mlflow_nemo_judge.gate``).

With an alias, ``register_outcomes`` applies the policy (default: ``gate.Policy()``):

- no version holds the alias yet: it goes to the best target under the policy's primary score (in the
  score's direction; a target whose primary mean is NaN never wins over one that has a mean);
- a version holds it: every other target is gated against that champion, pair by pair on the shared
  items (the champion's run on the same config and items is taken from this evaluation when it is one
  of the targets, else reused or evaluated like ``gate`` does). Each comparison is logged as a decision
  run; the alias moves to the GO target with the largest primary effect, and stays put otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow_nemo_judge.config import EvalConfig
from mlflow_nemo_judge.tracking import names as n
from mlflow_nemo_judge.tracking.identity import Outcome


def register_outcomes(
    cl: Any,
    outcomes: Sequence[Outcome],
    name: str,
    alias: str | None,
    *,
    policy: Any = None,
    config: EvalConfig | None = None,
    run_options: Mapping[str, Any] | None = None,
) -> None:
    """Register each target's LoggedModel as a version of ``name`` (once: a rerun reuses the version),
    headline scores as version tags; with ``alias``, move it under ``policy`` (see the module docstring).
    ``config`` is the evaluated config (else re-read from the first run, which needs keys in env vars)."""
    from mlflow_nemo_judge.gate import run as gr

    sides = []
    for o in outcomes:
        if not o.model_id:
            continue
        label = cl.get_run(o.run_id).data.tags.get(n.TAG_TARGET) or o.run_id
        side = gr.Side(o.run_id, o.result, o.model_id, label)
        gr.register_side(cl, name, side)
        sides.append(side)
    if alias and sides:
        _move_alias(cl, sides, name, alias, policy, config, run_options or {})


def _move_alias(
    cl: Any,
    sides: list[Any],
    name: str,
    alias: str,
    policy: Any,
    config: EvalConfig | None,
    run_options: Mapping[str, Any],
) -> None:
    from mlflow_nemo_judge.gate import run as gr
    from mlflow_nemo_judge.gate.policy import load_policy, resolve
    from mlflow_nemo_judge.tracking import resume as rs

    pol, where = load_policy(policy)
    keys = [n.sanitize_key(f"{t}/{m}/{s}") for t, m, s, _ in sides[0].result.scores() if s != "corpus"]
    resolved = resolve(pol, keys, where)
    mv = gr.champion_version(cl, name, alias)
    if mv is None:
        best = _best(sides, resolved.primary.key, resolved.primary.direction)
        cl.set_registered_model_alias(name, alias, best.version)
        cl.set_model_version_tag(name, best.version, f"{gr.TAG_PREFIX}first_champion", "true")
        return
    holder = gr.version_model_id(mv)
    candidates = [s for s in sides if s.model_id != holder]
    if not candidates:
        return
    first = cl.get_run(sides[0].run_id)
    exp_id = str(first.info.experiment_id)
    champ = next((s for s in sides if s.model_id == holder), None)
    if champ is None:
        cfg = config if config is not None else rs.reload(cl, first, "config", None)
        champ = gr.evaluate_side(
            cfg,
            gr.champion_target(cl, name, mv),
            experiment=str(cl.get_experiment(exp_id).name),
            tracking_uri=cl.tracking_uri,
            limit=rs.recorded_limit(first.data.tags),
            backend=first.data.tags.get(n.TAG_BACKEND, "local"),
            run_options=run_options,
        )
    champ.version = str(mv.version)
    decisions = [
        gr.judge(cl, exp_id, resolved, name, alias, c, champ, promote_on_go=False) for c in candidates
    ]
    gos = [d for d in decisions if d.verdict == "GO"]
    if gos:
        winner = max(gos, key=lambda d: _effect(d.decision.scores[0].effect if d.decision.scores else None))
        gr.promote(cl, winner)
        gr.tag_versions(cl, winner)


def _effect(v: float | None) -> float:
    return -math.inf if v is None else v


def _best(sides: Sequence[Any], key: str, direction: str) -> Any:
    """The side with the best mean of ``key`` (NaN/absent last; the first given wins a tie)."""
    from mlflow_nemo_judge.tracking.params import score_metrics

    def rank(side: Any) -> float:
        value = next((m.value for m in score_metrics(side.result) if m.key == key), math.nan)
        if value != value:
            return -math.inf
        return value if direction == "higher" else -value

    return max(sides, key=rank)
