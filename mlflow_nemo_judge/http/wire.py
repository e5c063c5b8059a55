"""The wire format of OpenAI-compatible calls, without I/O: endpoints, URLs, request headers and bodies,
reading a response's text and usage, and a provider's error message with the endpoint's secrets removed.

Split from :mod:`mlflow_nemo_judge.http.openai` (the client: concurrency, retries, cache, health), which
uses these pure functions on its hot path; several are memoised because they run once per request.

A URL's userinfo (``http://user:pass@host/v1``) is never sent in the URL: it becomes a ``Basic``
``Authorization`` header (what ``httpx.AsyncClient`` would do), so every transport behaves alike
(aiohttp would refuse the combination with an explicit header, httpcore would drop it). Config
validation refuses userinfo together with an API key, which would need a second ``Authorization``.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from mlflow_nemo_judge.config.secrets import MIN_SECRET_LENGTH, redact_text, url_secrets
from mlflow_nemo_judge.http.transport import USER_AGENT

Kind = Literal["chat", "completions"]
MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class Endpoint:
    """Where to send a request. ``url`` is a full ``…/chat/completions``/``…/completions`` URL or a base
    ``…/v1`` URL (see :func:`resolve_url`)."""

    url: str
    model_id: str
    # repr=False keeps secrets out of logs and tracebacks that print the endpoint.
    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] | None = field(default=None, repr=False)
    # This model's concurrency maximum (``api_endpoint.max_concurrency``); None: the run's parallelism.
    max_concurrency: int | None = None


@dataclass
class CallResult:
    """One model answer. ``text`` is ``choices[0].message.content`` (chat; ``reasoning_content`` is
    ignored) or ``choices[0].text`` (completions)."""

    text: str | None
    finish_reason: str | None
    raw: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    attempts: int


@functools.lru_cache(maxsize=256)
def resolve_url(url: str, kind: Kind) -> str:
    """Keep a URL already ending in ``/chat/completions`` or ``/completions``; otherwise treat it as a
    base URL (``…/v1`` or ``…/v1/``) and append the path for ``kind``. Query strings (e.g. Azure's
    ``api-version``) are preserved."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if not (path.endswith("/chat/completions") or path.endswith("/completions")):
        path = path + ("/chat/completions" if kind == "chat" else "/completions")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


@functools.lru_cache(maxsize=256)
def request_url(url: str, kind: Kind) -> tuple[str, httpx.URL]:
    """The resolved URL as text (messages, cache keys) and parsed once: httpx parses a ``str`` URL on
    every request (~25 us, a visible share of a zero-latency run) but only copies a URL object."""
    resolved = resolve_url(url, kind)
    parsed = httpx.URL(resolved)
    # The userinfo travels as a Basic Authorization header (request_headers), never in the URL.
    return resolved, parsed.copy_with(userinfo=b"") if parsed.userinfo else parsed


@functools.lru_cache(maxsize=64)
def http_timeout(secs: float) -> tuple[httpx.Timeout, dict[str, Any]]:
    """The per-request timeout, as ``httpx.Timeout`` (client path) and as the request extension every
    httpx transport reads (``request.extensions["timeout"]``: connect/read/write/pool seconds)."""
    timeout = httpx.Timeout(secs, connect=min(10.0, secs))
    return timeout, {"timeout": timeout.as_dict()}


def dumps(payload: dict[str, Any]) -> bytes:
    """The request body as httpx's ``json=`` encodes it (compact, UTF-8, NaN/Infinity rejected)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


# What httpx.AsyncClient would add to every request; a transport adds nothing (Host and Content-Length
# come from httpx.Request). Only encodings httpx decodes without optional packages are advertised.
TRANSPORT_HEADERS = (
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip, deflate"),
    ("Connection", "keep-alive"),
    ("User-Agent", USER_AGENT),
)
_JSON = ("Content-Type", "application/json")


def endpoint_secrets(endpoint: Endpoint) -> tuple[str, ...]:
    """Every secret an endpoint sends: its key, every header value and the URL's credentials, longest
    first. A provider may echo any of them (a header, the request URL with its ``?subscription-key=``)
    in an error body, which becomes a record's error, a spill-file line or the fatal line."""
    found = {endpoint.api_key or "", *(endpoint.headers or {}).values(), *url_secrets(endpoint.url)}
    return tuple(sorted((v for v in found if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True))


def illegal_header(endpoint: Endpoint) -> str | None:
    """The name of a header whose name or value cannot be sent (CR, LF or NUL: header injection)."""
    for name, value in (endpoint.headers or {}).items():
        if any(c in name or c in str(value) for c in "\r\n\0"):
            return name
    return None


def truncate(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def provider_message(response: httpx.Response) -> str:
    """The provider's own explanation: ``error.message``, ``error`` (str), ``detail``, ``message``, or
    the body text."""
    try:
        data = response.json()
    except ValueError:
        data = None
    msg: Any = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or err.get("msg") or err
        elif err:
            msg = err
        if not msg:
            msg = data.get("detail") or data.get("message")
    if msg is None or msg == "":
        msg = response.text
    if isinstance(msg, str):
        return msg
    # FastAPI-style 422 detail is a list of dicts; show it compactly rather than as a Python repr.
    return json.dumps(msg, ensure_ascii=False, default=str)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def content_text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        # Some servers return content as a list of parts ({"type": "text", "text": ...}); join the text.
        texts: list[str] = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        return "".join(texts)
    return str(content)


def extract(data: dict[str, Any]) -> tuple[str | None, str | None, int, int]:
    """(text, finish_reason, prompt_tokens, completion_tokens) from a well-formed response."""
    choice = data["choices"][0]
    if not isinstance(choice, dict):
        return None, None, 0, 0
    # Decide by shape rather than by the requested kind, so a base URL that really points at the other
    # API still yields its text.
    message = choice.get("message")
    text = (
        content_text(message.get("content"))
        if isinstance(message, dict)
        else content_text(choice.get("text"))
    )
    finish = choice.get("finish_reason")
    raw_usage = data.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    return (
        text,
        finish if isinstance(finish, str) else None,
        _int(usage.get("prompt_tokens")),
        _int(usage.get("completion_tokens")),
    )


def has_tool_calls(data: Any) -> bool:
    """Whether the first choice's message holds tool calls: an answer (for the tool-calling metric)
    even when its ``content`` is null or empty, as a tool-calling reply's usually is."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    message = choices[0].get("message")
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    return isinstance(calls, list) and len(calls) > 0


def well_formed(data: Any) -> bool:
    choices = data.get("choices") if isinstance(data, dict) else None
    return isinstance(choices, list) and len(choices) > 0


def request_headers(url: httpx.URL, endpoint: Endpoint, *, transport: bool) -> httpx.Headers:
    """Headers for a request to ``endpoint`` at ``url``: for a transport, ``Host`` and the defaults
    ``httpx.AsyncClient`` would add; then ``Content-Type``, the endpoint's own headers (which win,
    case-insensitively), and the key. ``Content-Length`` is set per request."""
    headers = httpx.Headers((("Host", url.netloc.decode("ascii")), *TRANSPORT_HEADERS) if transport else ())
    headers[_JSON[0]] = _JSON[1]
    if endpoint.headers:
        headers.update(endpoint.headers)
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    elif "Authorization" not in headers:
        userinfo = httpx.URL(resolve_url(endpoint.url, "chat"))
        if userinfo.username or userinfo.password:
            pair = f"{userinfo.username}:{userinfo.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    return headers


def hide(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` on one line, without any of the endpoint's secrets."""
    return " ".join(redact_text(text, secrets).split())
