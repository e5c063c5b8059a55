"""Secrets never reach MLflow: what the config/target can send, and masking it out of free text.

Params are built from the redacted dumps (``params.py``); this is the second line of defence for what
is not a param: tags, artifacts, table cells, trace spans and error messages, which may quote a key back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow_nemo_judge.config import MASK, SECRET_KEYS, EvalConfig, Target, url_secrets


def collect_secrets(*objs: EvalConfig | Target | Mapping[str, Any]) -> list[str]:
    """Every secret value a config/target can send: literal keys, header values, and the current
    values of the env vars named by ``api_key_env`` (longest first, so overlapping secrets mask whole)."""
    found: set[str] = set()

    def walk(o: Any) -> None:
        if isinstance(o, Mapping):
            for k, v in o.items():
                lk = str(k).lower()
                if lk in SECRET_KEYS and isinstance(v, str) and v and v != MASK:
                    found.add(v)
                elif lk == "headers" and isinstance(v, Mapping):
                    found.update(str(x) for x in v.values() if x)
                elif lk == "api_key_env" and isinstance(v, str) and os.environ.get(v):
                    found.add(os.environ[v])
                elif isinstance(v, str) and "://" in v:
                    found.update(url_secrets(v))
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    for obj in objs:
        walk(obj.to_dict() if isinstance(obj, (EvalConfig, Target)) else obj)
    # Very short values (e.g. "x") would mangle unrelated text; real keys are long.
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def redact_text(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


def _redact_strings(obj: Any, secrets: Sequence[str]) -> Any:
    """``obj`` with every string passed through ``redact_text`` (span inputs/outputs are free-form)."""
    if not secrets:
        return obj
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    if isinstance(obj, Mapping):
        return {k: _redact_strings(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact_strings(v, secrets) for v in obj]
    return obj


def _redact_obj(obj: Any) -> Any:
    from mlflow_nemo_judge.config import redact

    return redact(obj)
