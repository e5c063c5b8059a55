"""A nemo run's recomputation in MLflow: metrics, the ``recomputed.json`` artifact and the differs tag.

The run's scores (``<task>/<metric>/<score>`` and its stats) are NeMo's own numbers; the package's
recomputation from the per-sample data (``mlflow_nemo_judge.recomputed``) goes beside them under
``recomputed/<task>/<metric>/<score>[/<stat>]`` (groups: ``recomputed/groups/<group>/…``), a prefix the
leaderboards skip like ``usage/``, so a score is never listed twice. The tag
``nemo_judge.recomputed_differs`` names the score keys whose two values differ ("none" when all agree);
a run without a recomputation (local runs, nemo jobs without per-sample data) has none of these.

No mlflow import: ``RunTracker.finish`` writes what these return.
"""

from __future__ import annotations

import json

from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.tracking.names import (
    ART_DIR,
    ART_RECOMPUTED,
    MAX_TAG_VALUE,
    RECOMPUTED_PREFIX,
    STATS,
    TAG_RECOMPUTED_DIFFERS,
    sanitize_key,
)


def is_recomputed_key(key: str) -> bool:
    """A ``recomputed/…`` metric: the package's second opinion on a nemo run, never a score."""
    return key.startswith(RECOMPUTED_PREFIX)


def recomputed_metrics(result: EvalResult) -> dict[str, float]:
    """``recomputed/<key>`` = the recomputed mean (NaN when every sample was NaN) and its stats keys."""
    rec = result.recomputed
    out: dict[str, float] = {}
    if rec is None:
        return out
    for kind, name, metric, sname, sc in rec.scores():
        head = "groups/" if kind == "groups" else ""
        key = sanitize_key(f"{RECOMPUTED_PREFIX}{head}{name}/{metric}/{sname}")
        out[key] = float("nan") if sc.value is None else float(sc.value)
        for stat in STATS if sc.stats is not None else ():
            v = getattr(sc.stats, stat)
            if v is not None:
                out[f"{key}/{stat}"] = float(v)
    return out


def differing_keys(result: EvalResult) -> list[str] | None:
    """The run's score keys whose NeMo value differs from the recomputation; None without one."""
    rec = result.recomputed
    if rec is None:
        return None
    return [sanitize_key(d.path) for d in rec.differences(result.tasks, result.groups)]


def recomputed_tags(result: EvalResult) -> dict[str, str]:
    keys = differing_keys(result)
    if keys is None:
        return {}
    value = ",".join(keys) or "none"
    if len(value) > MAX_TAG_VALUE:
        # A tag is cut at MAX_TAG_VALUE; say so rather than end mid-key (the file has every key).
        shown, n = "", 0
        suffix = f" … (+{{}} more; all in {ART_RECOMPUTED})"
        for k in keys:
            if len(shown) + len(k) + 1 + len(suffix) + 8 > MAX_TAG_VALUE:
                break
            shown, n = f"{shown},{k}" if shown else k, n + 1
        value = shown + suffix.format(len(keys) - n)
    return {TAG_RECOMPUTED_DIFFERS: value}


def recomputed_files(result: EvalResult) -> dict[str, str]:
    """``{path under nemo_judge/: content}``: the recomputed tree and its differences, or nothing."""
    rec = result.recomputed
    if rec is None:
        return {}
    doc = rec.to_dict(result.tasks, result.groups)
    return {ART_RECOMPUTED[len(ART_DIR) + 1 :]: json.dumps(doc, indent=2, ensure_ascii=False)}
