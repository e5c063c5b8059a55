"""Entity envelopes the FAKE NeMo service stores and echoes back (a test double; see ``fake_nemo``).

Entity expansion mimics what NeMo Evaluator echoes back for inline configs and targets (ids,
``schema_version``, ``type_prefix``, unset fields as null, ``format`` defaulting to ``"nim"``) as
captured in NVIDIA's notebooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow_nemo_judge.testing.fake_nemo.wire import new_id, now

__all__ = ["entity", "expand_config", "expand_dataset", "expand_model", "expand_target"]


def entity(
    prefix: str | None, body: Mapping[str, Any], namespace: str | None = None, versioned: bool = False
) -> dict[str, Any]:
    """The common entity envelope NeMo wraps around stored objects, then the object's own fields."""
    eid = new_id(prefix or "dataset")
    ts = now()
    out: dict[str, Any] = {
        "schema_version": "1.0",
        "id": eid,
        "description": body.get("description"),
        "type_prefix": prefix,
        "namespace": body.get("namespace") or namespace or "default",
        "project": body.get("project"),
        "created_at": ts,
        "updated_at": ts,
        "custom_fields": body.get("custom_fields") or {},
        "ownership": body.get("ownership"),
        "name": body.get("name") or eid,
    }
    if versioned:
        out.update({"version_id": "main", "version_tags": []})
    return out


def _with(base: dict[str, Any], body: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in defaults.items():
        base[k] = body.get(k, v)
    for k, v in body.items():  # unknown fields pass through, as NeMo keeps them
        base.setdefault(k, v)
    return base


def expand_dataset(ds: Any, namespace: str) -> Any:
    if not isinstance(ds, Mapping):
        return ds  # a "namespace/name" reference stays a string
    return _with(
        entity(None, ds, namespace, versioned=True),
        ds,
        {"format": None, "files_url": None, "hf_endpoint": None, "split": None, "limit": None},
    )


def expand_config(body: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    tasks = {}
    for name, task in (body.get("tasks") or {}).items():
        t = dict(task or {})
        tasks[name] = {
            "type": t.get("type"),
            "params": t.get("params"),
            "metrics": t.get("metrics"),
            "dataset": expand_dataset(t.get("dataset"), namespace),
            **{k: v for k, v in t.items() if k not in ("type", "params", "metrics", "dataset")},
        }
    out = _with(entity("eval-config", body, namespace), body, {"type": None, "params": None, "groups": None})
    out["tasks"] = tasks if body.get("tasks") is not None else None
    return out


def expand_model(model: Any, namespace: str) -> Any:
    if not isinstance(model, Mapping):
        return model
    out = _with(
        entity("model", model, namespace, versioned=True),
        model,
        {
            "spec": None,
            "artifact": None,
            "base_model": None,
            "api_endpoint": None,
            "peft": None,
            "prompt": None,
            "guardrails": None,
        },
    )
    ep = out.get("api_endpoint")
    if isinstance(ep, Mapping):
        # Observed quirk (§10.5): an omitted format is stored as "nim".
        out["api_endpoint"] = {**ep, "format": ep.get("format") or "nim"}
    return out


def expand_target(body: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    out = _with(
        entity("eval-target", body, namespace),
        body,
        {
            "type": None,
            "cached_outputs": None,
            "model": None,
            "retriever": None,
            "rag": None,
            "rows": None,
            "dataset": None,
        },
    )
    out["model"] = expand_model(body.get("model"), namespace)
    out["dataset"] = expand_dataset(body.get("dataset"), namespace)
    return out
