"""Secrets: the one walker and the one mask, for every place a key could leak or must be resolved.

A config or target can carry a secret in five forms: a literal value under a secret-named key
(``api_key``, ``token``, ``password``, …), a header value (``api_endpoint.headers``), an environment
variable named by ``api_key_env`` (our extension), a URL's userinfo password, and a credential in a
URL's query (``?api-key=…``). :func:`walk` visits each of them once, with its config path; everything
else here is built on it:

- :func:`redact` — a dump safe for logs, params and artifacts (every secret replaced by :data:`MASK`);
- :func:`collect` — the secret values themselves, to mask out of free text (:func:`redact_text`): a
  provider's error message, a traceback, a table cell, a trace span;
- :func:`masked_paths` — where a stored (redacted) dump lost a secret, so ``resume`` can say which key
  it needs;
- :func:`resolve_env` — the copy submitted to NeMo, with each ``api_key_env`` replaced by its value.

``MASK`` is NeMo's own mask (``******``), so a redacted dump reads like one NeMo returns.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from mlflow_nemo_judge.errors import SecretError

MASK = "******"
# Keys whose values are secrets wherever they appear in a config or target.
SECRET_KEYS = frozenset(
    {
        "api_key",
        "hf_token",
        "token",
        "authorization",
        "password",
        "secret",
        "access_token",
        "bearer_token",
    }
)
# Query parameters that carry credentials in some providers' URLs (e.g. Azure's ``api-key``).
SECRET_QUERY = frozenset(
    {
        "key",
        "api_key",
        "api-key",
        "apikey",
        "token",
        "access_token",
        "sig",
        "signature",
        "code",
        "password",
        "secret",
        "subscription-key",
    }
)
# Shorter values would mangle unrelated text when masked out of it; real keys are long.
MIN_SECRET_LENGTH = 4

Kind = Literal["key", "header", "env", "url"]


@dataclass(frozen=True)
class Secret:
    """One secret found by :func:`walk`: where (config path), in which form, and its value."""

    path: str
    kind: Kind
    value: str


def url_secrets(url: str) -> list[str]:
    """Credentials embedded in a URL: the userinfo password and secret-looking query values."""
    if "://" not in url:
        return []
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unparseable netloc (e.g. a bad port) still must not leak its userinfo
        return []
    found = [password] if password else []
    found += [
        v for k, v in parse_qsl(parts.query, keep_blank_values=False) if k.lower() in SECRET_QUERY and v
    ]
    return found


def redact_url(url: str) -> str:
    """``url`` with embedded credentials masked, so endpoint URLs can be logged and recorded."""
    for secret in url_secrets(url):
        url = url.replace(secret, MASK)
    return url


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def walk(obj: Any, path: str = "") -> Iterator[Secret]:
    """Every secret in a plain (JSON-like) config or target dump, with its path, in document order."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            p, lk = _join(path, k), str(k).lower()
            if lk in SECRET_KEYS and isinstance(v, str) and v:
                yield Secret(p, "key", v)
            elif lk == "headers" and isinstance(v, Mapping):
                yield from (Secret(_join(p, hk), "header", str(hv)) for hk, hv in v.items() if hv)
            elif lk == "api_key_env" and isinstance(v, str) and v:
                value = os.environ.get(v)
                if value:
                    yield Secret(p, "env", value)
            elif isinstance(v, str) and "://" in v:
                yield from (Secret(p, "url", s) for s in url_secrets(v))
            else:
                yield from walk(v, p)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk(v, f"{path}[{i}]")
    elif isinstance(obj, str) and "://" in obj:
        yield from (Secret(path, "url", s) for s in url_secrets(obj))


def _plain(obj: Any) -> Any:
    to_dict = getattr(obj, "to_dict", None)
    return to_dict() if callable(to_dict) else obj


def collect(*objs: Any) -> list[str]:
    """Every secret value the configs/targets can send, longest first (so overlapping ones mask whole).

    Accepts config/target models (anything with ``to_dict()``) and plain dumps. The mask itself is not
    a secret: a dump already redacted contributes nothing.
    """
    found = {s.value for obj in objs for s in walk(_plain(obj)) if s.value != MASK}
    return sorted((s for s in found if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def redact(obj: Any) -> Any:
    """A deep copy of a dump with every secret masked; ``api_key_env`` names are kept (they are not keys)."""
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            lk = str(k).lower()
            if lk in SECRET_KEYS and v not in (None, ""):
                out[k] = MASK
            elif lk == "headers" and isinstance(v, Mapping):
                out[k] = {hk: MASK for hk in v}
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str) and "://" in obj:
        return redact_url(obj)
    return obj


def redact_text(text: str, secrets: Sequence[str]) -> str:
    """Free text with every known secret value (from :func:`collect`) replaced by :data:`MASK`."""
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


def redact_strings(obj: Any, secrets: Sequence[str]) -> Any:
    """``obj`` with every string in it passed through :func:`redact_text` (for free-form documents)."""
    if not secrets:
        return obj
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    if isinstance(obj, Mapping):
        return {k: redact_strings(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_strings(v, secrets) for v in obj]
    return obj


def masked_paths(obj: Any, path: str = "") -> list[str]:
    """Config paths at which a stored dump holds :data:`MASK` instead of a secret."""
    if isinstance(obj, Mapping):
        return [p for k, v in obj.items() for p in masked_paths(v, _join(path, k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in masked_paths(v, f"{path}[{i}]")]
    return [path] if obj == MASK else []


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
                out["api_key"] = value
        return out
    if isinstance(obj, list):
        return [resolve_env(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    return obj


def resolve_key(api_key: str | None, api_key_env: str | None, url: str, path: str) -> str | None:
    """The key one endpoint sends: ``api_key`` if given, else the value of the ``api_key_env`` variable."""
    if api_key:
        return api_key
    if api_key_env:
        value = os.environ.get(api_key_env)
        if not value:
            raise SecretError(
                f"{path}.api_key_env",
                f"environment variable {api_key_env} is not set (it should hold the API key for {redact_url(url)})",
            )
        return value
    return None
