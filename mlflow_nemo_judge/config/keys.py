"""Resolving API keys: the value an endpoint sends (``api_key``, else the ``api_key_env`` variable), and
the copy of a config submitted to NeMo with every ``api_key_env`` replaced by its value.

Every key resolved here is registered at once for the process-wide log filter
(:func:`mlflow_nemo_judge.config.secrets.register`): it is known before any request can log it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mlflow_nemo_judge.config.secrets import redact_url, register
from mlflow_nemo_judge.errors import SecretError


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def resolve_env(obj: Any, path: str = "") -> Any:
    """A copy where every ``api_key_env`` is replaced by ``api_key`` from the environment.

    A literal ``api_key`` wins; ``api_key_env`` is removed either way because NeMo does not know the
    field. Raises :class:`SecretError` naming the path when the variable is not set.
    """
    if isinstance(obj, Mapping):
        out = {k: resolve_env(v, _join(path, k)) for k, v in obj.items()}
        if "api_key_env" in out:
            name = out.pop("api_key_env")
            if not out.get("api_key") and name:
                value = os.environ.get(str(name))
                if not value:
                    raise SecretError(
                        _join(path, "api_key_env"),
                        f"environment variable {name} is not set (it should hold the API key "
                        f"for {redact_url(str(out.get('url', 'this endpoint')))})",
                    )
                register([value])
                out["api_key"] = value
        return out
    if isinstance(obj, list):
        return [resolve_env(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    return obj


def resolve_key(api_key: str | None, api_key_env: str | None, url: str, path: str) -> str | None:
    """The key one endpoint sends: ``api_key`` if given, else the value of the ``api_key_env`` variable."""
    # Registered for the log filter at once: a key is known here before any request can log it.
    if api_key:
        register([api_key])
        return api_key
    if api_key_env:
        value = os.environ.get(api_key_env)
        register([value] if value else [])
        if not value:
            raise SecretError(
                f"{path}.api_key_env",
                f"environment variable {api_key_env} is not set (it should hold the API key for {redact_url(url)})",
            )
        return value
    return None
