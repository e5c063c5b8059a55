"""Champion vs challenger in MLflow: find or evaluate both runs, decide, log the decision run, promote.

The champion is the registered model version under the alias; its LoggedModel's run holds the target
document (``nemo_judge/target.json``), so the champion can be re-evaluated on the challenger's config
and items. ``pipeline.evaluate`` reuses a FINISHED run of the same config, target, data and limit, so
"find the champion's run, else evaluate it" is one call. The comparison uses the per-sample records
both runs store (``samples.jsonl``), aligned on (task, item id, occurrence).

The decision run is a run of its own in the challenger's experiment (role ``gate``, no config hash, so
leaderboards and identity searches never mistake it for an evaluation), linked to both evaluations by
the tags ``nemo_judge.gate.challenger_run`` / ``nemo_judge.gate.champion_run``: making it their parent
would re-parent finished evaluations that identity and resume look up by parent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow_nemo_judge.config import EvalConfig, Target
from mlflow_nemo_judge.errors import TrackingError
from mlflow_nemo_judge.gate.decision import Decision, ItemKey, Values, decide, render
from mlflow_nemo_judge.gate.policy import Resolved
from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.tracking import names as n

TAG_PREFIX = "nemo_judge.gate."
ART_DECISION = f"{n.ART_DIR}/gate/decision.json"


@dataclass
class Side:
    """One evaluation taking part: its run, its result, and its LoggedModel."""

    run_id: str
    result: EvalResult
    model_id: str | None
    label: str
    version: str | None = None


@dataclass
class GateDecision:
    """What ``gate`` returns: the decision and where it was recorded."""

    decision: Decision
    model: str
    alias: str
    challenger: Side
    champion: Side | None
    decision_run_id: str | None = None
    promoted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return self.decision.verdict

    @property
    def exit_code(self) -> int:
        """0 GO, 1 NO-GO, 3 INCONCLUSIVE (2 stays bad input, raised as ``ConfigError``)."""
        return self.decision.exit_code

    def report(self) -> str:
        champ = (
            f"{self.champion.label} (version {self.champion.version}, run {self.champion.run_id})"
            if self.champion
            else "none"
        )
        title = (
            f"gate {self.model}@{self.alias}\n  challenger: {self.challenger.label} "
            f"(run {self.challenger.run_id})\n  champion:   {champ}"
        )
        out = render(self.decision, title)
        tail = [*self.notes]
        if self.decision_run_id:
            tail.append(f"decision run: {self.decision_run_id}")
        if self.promoted:
            tail.append(f"promoted: {self.model} version {self.challenger.version} is now @{self.alias}")
        return out + ("\n\n" + "\n".join(tail) if tail else "")


# ------------------------------------------------------------------------------------------ sides


def sample_values(result: EvalResult) -> dict[str, dict[ItemKey, float]]:
    """Per score key, every item's value (NaN when unjudged, errored or missing) from the records."""
    keys = {n.sanitize_key(f"{t}/{m}/{s}"): (t, m, s) for t, m, s, _ in result.scores() if s != "corpus"}
    out: dict[str, dict[ItemKey, float]] = {k: {} for k in keys}
    seen: dict[tuple[str, str], int] = {}
    for rec in result.iter_samples():
        occ = seen.get((rec.task, rec.item_id), 0)
        seen[(rec.task, rec.item_id)] = occ + 1
        item: ItemKey = (rec.task, rec.item_id, occ)
        for key, (t, m, s) in keys.items():
            if t != rec.task:
                continue
            mo = rec.metrics.get(m)
            v = mo.scores.get(s) if mo is not None else None
            out[key][item] = float("nan") if v is None or not math.isfinite(v) else float(v)
    return out


def champion_version(cl: Any, model: str, alias: str) -> Any | None:
    """The model version under ``alias``, or None when the model or the alias does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        return cl.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None


def version_model_id(mv: Any) -> str | None:
    mid = getattr(mv, "model_id", None)
    if mid:
        return str(mid)
    src = str(getattr(mv, "source", "") or "")
    return src.removeprefix("models:/").split("/")[0] if src.startswith("models:/") else None


def champion_target(cl: Any, model: str, mv: Any, given: Any = None) -> Target:
    """The target the champion version was evaluated with, from its run (or ``given``)."""
    from mlflow_nemo_judge.config import load_target
    from mlflow_nemo_judge.tracking import resume as rs
    from mlflow_nemo_judge.tracking.store import get_run

    if given is not None:
        return load_target(given)
    where = f"{model} version {mv.version}"
    if not mv.run_id:
        raise TrackingError(f"{where} has no source run; pass the champion's target (--champion-target)")
    run = get_run(cl, mv.run_id)
    if n.TAG_TARGET_SHA not in run.data.tags:
        raise TrackingError(
            f"{where} (run {mv.run_id}) was not evaluated by mlflow-nemo-judge; "
            "pass the champion's target (--champion-target)"
        )
    try:
        target: Target = rs.reload(cl, run, "target", None)
    except TrackingError as exc:
        raise TrackingError(f"champion {where}: {exc} (gate: --champion-target)") from None
    return target


def evaluate_side(
    config: EvalConfig,
    target: Target,
    *,
    experiment: str | None,
    tracking_uri: str | None,
    limit: int | None,
    backend: str,
    run_options: Mapping[str, Any],
) -> Side:
    """Evaluate ``target`` (reusing an identical FINISHED run, as every evaluation does)."""
    from mlflow_nemo_judge.pipeline import evaluate

    opts = dict(run_options)
    opts.setdefault("progress_bar", False)
    ev = evaluate(
        config, target, experiment=experiment, tracking_uri=tracking_uri, backend=backend, limit=limit, **opts
    )
    return Side(ev.run_ids[0], ev.result, _model_of(ev.run_ids[0], tracking_uri), target.display_name)


def _model_of(run_id: str, tracking_uri: str | None) -> str | None:
    from mlflow_nemo_judge.tracking.store import client

    tag = client(tracking_uri).get_run(run_id).data.tags.get(n.TAG_MODEL_ID)
    return str(tag) if tag else None


def finished_side(cl: Any, run_id: str) -> tuple[Side, Any]:
    """A finished evaluation run as a side, and the run itself (for its config and identity tags)."""
    from mlflow_nemo_judge.tracking.store import get_run, load_result

    run = get_run(cl, run_id)
    tags = run.data.tags
    if n.TAG_CONFIG_SHA not in tags or tags.get(n.TAG_ROLE) == "parent":
        raise TrackingError(f"MLflow run {run_id} is not a single evaluation by mlflow-nemo-judge")
    if run.info.status != "FINISHED":
        raise TrackingError(f"MLflow run {run_id} is {run.info.status}; finish it first (resume)")
    label = tags.get(n.TAG_TARGET) or run_id
    return Side(run_id, load_result(cl, run), tags.get(n.TAG_MODEL_ID), label), run


# ------------------------------------------------------------------------------------- recording


def _flat_metrics(d: Decision) -> dict[str, float]:
    out = {"gate/shared_items": float(d.shared_items), "gate/exit_code": float(d.exit_code)}
    for f in d.scores:
        for stat in (
            "effect",
            "ci_low",
            "ci_high",
            "p_value",
            "n",
            "mean_champion",
            "mean_challenger",
            "nan_share_champion",
            "nan_share_challenger",
        ):
            v = getattr(f, stat)
            if v is not None and math.isfinite(float(v)):
                out[n.sanitize_key(f"gate/{f.key}/{stat}")] = float(v)
    return out


def _params(gd: GateDecision, policy: Resolved) -> dict[str, str]:
    p = policy.policy
    out = {
        "gate.model": gd.model,
        "gate.alias": gd.alias,
        "gate.policy": policy.where,
        "gate.primary": policy.primary.key,
        "gate.confidence": f"{p.confidence:g}",
        "gate.min_items": str(p.min_items),
    }
    for r in policy.rules:
        base = n.sanitize_key(f"gate/{r.key}")
        out |= {
            f"{base}/role": r.role,
            f"{base}/direction": r.direction,
            f"{base}/{'min_effect' if r.role == 'primary' else 'margin'}": f"{r.threshold:g}",
            f"{base}/nan_budget": f"{r.nan_budget:g}",
        }
    return out


def _tags(gd: GateDecision) -> dict[str, str]:
    tags = {
        n.TAG_ROLE: "gate",
        f"{TAG_PREFIX}verdict": gd.verdict,
        f"{TAG_PREFIX}model": gd.model,
        f"{TAG_PREFIX}alias": gd.alias,
        f"{TAG_PREFIX}challenger_run": gd.challenger.run_id,
        f"{TAG_PREFIX}reasons": "; ".join(gd.decision.reasons)[: n.MAX_TAG_VALUE],
        "mlflow.note.content": "```\n" + gd.report()[: n.MAX_TAG_VALUE - 10] + "\n```",
    }
    if gd.champion is not None:
        tags[f"{TAG_PREFIX}champion_run"] = gd.champion.run_id
        if gd.champion.version:
            tags[f"{TAG_PREFIX}champion_version"] = gd.champion.version
    return tags


def log_decision(cl: Any, experiment_id: str, gd: GateDecision, policy: Resolved) -> str:
    """The decision as an MLflow run: policy as params, figures as metrics, verdict and links as tags."""
    from mlflow.entities import Metric, Param

    from mlflow_nemo_judge.tracking.health import MAX_RUN_NAME

    name = f"gate · {gd.challenger.label} vs {gd.model}@{gd.alias}"
    run = cl.create_run(experiment_id, run_name=name[:MAX_RUN_NAME], tags=_tags(gd))
    rid = str(run.info.run_id)
    try:
        ts = int(run.info.start_time or 0)
        cl.log_batch(
            rid,
            metrics=[Metric(k, v, ts, 0) for k, v in _flat_metrics(gd.decision).items()],
            params=[Param(k, v) for k, v in _params(gd, policy).items()],
        )
        doc = {"policy": policy.policy.model_dump(), "decision": gd.decision.to_dict()}
        cl.log_dict(rid, json.loads(json.dumps(doc, default=str)), ART_DECISION)
        cl.set_terminated(rid, "FINISHED")
    except BaseException:
        cl.set_terminated(rid, "FAILED")
        raise
    gd.decision_run_id = rid
    return rid


def tag_versions(cl: Any, gd: GateDecision) -> None:
    """The decision on the model versions: the challenger's (if registered) and the champion's."""
    for side, verdict, run in (
        (gd.challenger, "verdict", "decision_run"),
        (gd.champion, "last_challenge", "last_challenge_run"),
    ):
        if side is None or not side.version:
            continue
        for key, value in ((verdict, gd.verdict), (run, gd.decision_run_id or "")):
            cl.set_model_version_tag(gd.model, side.version, f"{TAG_PREFIX}{key}", value)


def register_side(cl: Any, model: str, side: Side) -> str:
    """Register the side's LoggedModel as a version of ``model`` (once) with its headline scores."""
    from mlflow_nemo_judge.tracking.params import score_metrics
    from mlflow_nemo_judge.tracking.store import register, registered_version

    if not side.model_id:
        raise TrackingError(f"MLflow run {side.run_id} has no LoggedModel to register")
    version = registered_version(side.model_id, model)
    if version is None:
        heads = {m.key: f"{m.value:.6g}" for m in score_metrics(side.result) if m.headline}
        version = register(side.model_id, model, tags=heads)
        cl.set_tag(side.run_id, n.TAG_REGISTERED, f"{model}/{version}")
    side.version = version
    return version


def promote(cl: Any, gd: GateDecision) -> None:
    """Register the challenger (if needed) and move the alias to it; mark the decision run."""
    register_side(cl, gd.model, gd.challenger)
    cl.set_registered_model_alias(gd.model, gd.alias, gd.challenger.version)
    gd.promoted = True
    if gd.decision_run_id:
        cl.set_tag(gd.decision_run_id, f"{TAG_PREFIX}promoted", "true")
        cl.set_tag(gd.decision_run_id, f"{TAG_PREFIX}challenger_version", str(gd.challenger.version))


def judge(
    cl: Any,
    experiment_id: str,
    policy: Resolved,
    model: str,
    alias: str,
    challenger: Side,
    champion: Side | None,
    *,
    promote_on_go: bool,
) -> GateDecision:
    """Decide, log the decision run, promote on GO (if asked), then tag the model versions."""
    from mlflow_nemo_judge.tracking.store import registered_version

    if challenger.model_id and challenger.version is None:
        challenger.version = registered_version(challenger.model_id, model)
    if champion is not None and champion.model_id and champion.model_id == challenger.model_id:
        d = Decision(
            "INCONCLUSIVE",
            [f"the challenger is the champion itself ({model} version {champion.version})"],
            [],
            0,
            policy.policy.confidence,
            policy.policy.min_items,
        )
    else:
        cvals: Values | None = None if champion is None else sample_values(champion.result)
        d = decide(policy, cvals, sample_values(challenger.result))
    gd = GateDecision(d, model, alias, challenger, champion)
    log_decision(cl, experiment_id, gd, policy)
    if promote_on_go and gd.verdict == "GO":
        promote(cl, gd)
    tag_versions(cl, gd)
    return gd
