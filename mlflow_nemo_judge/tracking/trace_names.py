"""The names and limits of what a trace holds: MLflow's column limits, assessment names that never
collide with MLflow's built-in scorers (the rule is in ``traces.py``'s docstring), token usage.

Pure functions, no mlflow import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

# MLflow's column limits (mlflow/store/tracking/dbmodels/models.py), enforced by PostgreSQL and MySQL
# although sqlite ignores them; tests/test_store_limits.py checks them against the models themselves.
MAX_PREVIEW = 1000  # trace_info.request_preview / response_preview: String(1000)
MAX_TRACE_KEY = 250  # trace_tags.key, trace_request_metadata.key: String(250)
MAX_TRACE_TAG = 4096  # trace_info.trace_name: String(4096) (a trace tag; MLflow validates tags to it)
MAX_ASSESSMENT_NAME = 250  # assessments.name: String(250)
MAX_SOURCE_ID = 250  # assessments.source_id: String(250)
# An Expectation's value is Text, but a 10k-char reference would swamp the panel; the item is on the
# root span's inputs whole.
MAX_EXPECTATION = 4000

SERVICE_NAME = "mlflow-nemo-judge"


def fit(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: cut to ``limit - 1`` plus an ellipsis (never ``limit + 1``)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fit_name(name: str, limit: int) -> str:
    """A name within ``limit`` characters that stays unique: a long one keeps its head and ends in a
    hash of the whole (two long names differing at the end must not become one assessment)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    return name[: limit - 13] + "~" + digest


def feedback_name(metric: str, score: str) -> str:
    """``<metric>/<score>``: recognisable, and never one of MLflow's built-in scorer names (no ``/``)."""
    return fit_name(f"{metric}/{score}", MAX_ASSESSMENT_NAME)


def expectation_name(field_name: str) -> str:
    return fit_name(f"item/{field_name}", MAX_ASSESSMENT_NAME)


def token_usage(raw: Any) -> dict[str, int]:
    """An OpenAI ``usage`` object as MLflow's span token usage (input/output/total tokens)."""
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, int] = {}
    for src, dst in (
        ("prompt_tokens", "input_tokens"),
        ("completion_tokens", "output_tokens"),
        ("total_tokens", "total_tokens"),
    ):
        v = raw.get(src, raw.get(dst))
        if isinstance(v, int) and not isinstance(v, bool):
            out[dst] = v
    if "total_tokens" not in out and {"input_tokens", "output_tokens"} <= out.keys():
        out["total_tokens"] = out["input_tokens"] + out["output_tokens"]
    return out
