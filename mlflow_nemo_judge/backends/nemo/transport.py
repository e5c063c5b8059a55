"""The HTTP transport shared by every NeMo call: base URLs, auth headers, errors, retries and paging.

Sync ``httpx`` on purpose: the nemo backend spends its life waiting on a remote job, runs in its own
thread of control, and is tested with ``httpx.MockTransport`` without an event loop.

Where each call goes (NeMo reference §1-§4): the Evaluator (``/v1/evaluation/*``), the Entity Store
(``/v1/namespaces``, ``/v1/datasets``) and the Data Store (``/v1/datastore/namespaces`` plus a Hugging
Face Hub compatible API at ``/v1/hf``) may be separate hosts; each base URL comes from the constructor,
else ``NEMO_EVALUATOR_URL`` / ``NEMO_ENTITY_STORE_URL`` / ``NEMO_DATASTORE_URL``, the last two defaulting
to the evaluator URL (a single ingress serving all three is the common Helm layout).

The API itself has no auth; gateways in front of it often do, so an optional bearer token
(``NEMO_API_TOKEN``) and extra headers are sent with every call. Every non-2xx answer becomes a
``NemoServiceError`` carrying the URL, status and the service's ``detail`` (its plain string, or the 422
list flattened to ``loc: msg`` pairs). 429 and 5xx answers, and connections that never reached the
server, are retried with bounded exponential backoff that honours ``Retry-After``.

The calls themselves are in ``stores`` (Entity Store, Data Store) and ``client`` (Evaluator), whose
``NemoClient`` is the one class callers use.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from mlflow_nemo_judge import settings
from mlflow_nemo_judge.errors import ConfigError, NemoServiceError
from mlflow_nemo_judge.http.retry import backoff_delay, retry_after_seconds

__all__ = [
    "DETAIL_LIMIT",
    "ENV_DATASTORE",
    "ENV_ENTITY_STORE",
    "ENV_EVALUATOR",
    "ENV_TOKEN",
    "EXISTS_STATUSES",
    "NemoTransport",
    "error_detail",
    "format_detail",
    "query_params",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T", bound="NemoTransport")  # ``with NemoClient(...) as c`` types ``c`` as a NemoClient

ENV_EVALUATOR = "NEMO_EVALUATOR_URL"
ENV_DATASTORE = "NEMO_DATASTORE_URL"
ENV_ENTITY_STORE = "NEMO_ENTITY_STORE_URL"
ENV_TOKEN = "NEMO_API_TOKEN"

# Statuses worth another try: rate limiting and server-side trouble. 409 is deliberately absent (the
# SDK retries it, but for NeMo a 409 means "already exists", which the idempotent creates handle).
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Duplicate creates answer 409 or 422 depending on the service and version (reference §10.2).
EXISTS_STATUSES = frozenset({409, 422})
DETAIL_LIMIT = 1000


def _base(url: str | None, *suffixes: str) -> str | None:
    """Normalise a base URL: no trailing slash, and no API suffix a user pasted along with the host."""
    if url is None or not url.strip():
        return None
    out = url.strip().rstrip("/")
    for suffix in suffixes:
        if out.endswith(suffix):
            out = out[: -len(suffix)]
            break
    return out


def format_detail(detail: Any) -> str:
    """The service's ``detail`` as one readable line.

    Only ``loc`` and ``msg`` of 422 entries are used: FastAPI also echoes the offending ``input``, which
    can be a whole request body with API keys in it.
    """
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for entry in detail:
            if isinstance(entry, Mapping) and "msg" in entry:
                loc = ".".join(str(p) for p in entry.get("loc") or [])
                parts.append(f"{loc}: {entry['msg']}" if loc else str(entry["msg"]))
            else:
                parts.append(entry if isinstance(entry, str) else json.dumps(entry, default=str))
        return "; ".join(parts)
    return json.dumps(detail, default=str)


def error_detail(response: httpx.Response) -> str:
    """Extract the error text of a NeMo response (``{"detail": ...}``), falling back to the raw body."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:DETAIL_LIMIT] if text else (response.reason_phrase or f"HTTP {response.status_code}")
    if isinstance(body, Mapping):
        for key in ("detail", "message", "error"):
            if body.get(key) is not None:
                return format_detail(body[key])[:DETAIL_LIMIT]
    return json.dumps(body, default=str)[:DETAIL_LIMIT]


def query_params(prefix: str, value: Any) -> list[tuple[str, str]]:
    """Encode nested filters the way the service expects: ``filter[created_at][gt]=...``, lists comma-joined."""
    if isinstance(value, Mapping):
        out: list[tuple[str, str]] = []
        for key, sub in value.items():
            out.extend(query_params(f"{prefix}[{key}]", sub))
        return out
    if isinstance(value, (list, tuple)):
        return [(prefix, ",".join(str(v) for v in value))]
    if isinstance(value, bool):
        return [(prefix, "true" if value else "false")]
    return [(prefix, str(value))]


class NemoTransport:
    """Base URLs, auth, errors, retries and paging for the three services (see the module docstring)."""

    def __init__(
        self,
        evaluator_url: str | None = None,
        datastore_url: str | None = None,
        entity_store_url: str | None = None,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        evaluator = _base(evaluator_url or settings.get(ENV_EVALUATOR), "/v1")
        if evaluator is None:
            raise ConfigError(
                "nemo.evaluator_url", f"no NeMo Evaluator URL: pass evaluator_url or set {ENV_EVALUATOR}"
            )
        self.evaluator_url = evaluator
        self.entity_store_url = _base(entity_store_url or settings.get(ENV_ENTITY_STORE), "/v1") or evaluator
        self.datastore_url = _base(datastore_url or settings.get(ENV_DATASTORE), "/v1/hf", "/v1") or evaluator
        self._token = token if token is not None else (settings.get(ENV_TOKEN) or None)
        self._headers = {"Accept": "application/json", "User-Agent": "mlflow-nemo-judge"}
        if self._token:
            self._headers["Authorization"] = f"Bearer {self._token}"
        self._headers.update(headers or {})
        self.max_retries = max(0, int(max_retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._own_http = http is None
        self.http = http or httpx.Client(timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)))

    def __repr__(self) -> str:  # no token, no headers: reprs end up in logs
        return f"{type(self).__name__}(evaluator_url={self.evaluator_url!r})"

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def hf_endpoint(self) -> str:
        """The Data Store's Hugging Face compatible API root."""
        return f"{self.datastore_url}/v1/hf"

    # ------------------------------------------------------------------------------------------ transport

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        # The shared policy (http/retry.py): the server's Retry-After (seconds, HTTP-date or
        # retry-after-ms) wins, else jittered exponential backoff, both capped at max_backoff.
        after = retry_after_seconds(response.headers) if response is not None else None
        return backoff_delay(attempt, base=self.backoff, cap=self.max_backoff, retry_after=after)

    def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: Mapping[str, str] | None = None,
        params: list[tuple[str, str]] | None = None,
        accept: str | None = None,
        allow: frozenset[int] = frozenset(),
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one call with retries; non-2xx statuses not in ``allow`` raise ``NemoServiceError``."""
        headers = dict(self._headers)
        if accept:
            headers["Accept"] = accept
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        attempt = 0
        while True:
            try:
                # A tuple, not the list: httpx's parameter type is an invariant list of wider tuples.
                response = self.http.request(
                    method,
                    url,
                    json=json_body,
                    data=data,
                    params=tuple(params) if params is not None else None,
                    headers=headers,
                    **extra,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # The request never reached the server, so even a POST is safe to repeat.
                if attempt >= self.max_retries:
                    raise NemoServiceError(url, None, f"cannot connect: {exc}") from exc
                delay = self._delay(attempt, None)
            except httpx.TransportError as exc:
                # Sent but no answer (read timeout, dropped connection): repeating a POST could create a
                # second job, so only reads are retried.
                if method.upper() != "GET" or attempt >= self.max_retries:
                    raise NemoServiceError(url, None, f"{type(exc).__name__}: {exc}") from exc
                delay = self._delay(attempt, None)
            else:
                status = response.status_code
                if status < 300 or status in allow:
                    return response
                if status not in _RETRY_STATUSES or attempt >= self.max_retries:
                    raise NemoServiceError(url, status, error_detail(response))
                delay = self._delay(attempt, response)
                response.close()
            attempt += 1
            log.debug(
                "retrying %s %s in %.2fs (attempt %d of %d)", method, url, delay, attempt, self.max_retries
            )
            self._sleep(delay)

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        response = self.request(method, url, **kw)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise NemoServiceError(
                url, response.status_code, f"expected JSON, got: {response.text[:200]!r}"
            ) from exc

    def _ev(self, path: str) -> str:
        return f"{self.evaluator_url}/v1/evaluation{path}"

    def _es(self, path: str) -> str:
        return f"{self.entity_store_url}/v1{path}"

    def _pages(
        self,
        url: str,
        *,
        filter: Mapping[str, Any] | None = None,
        search: Mapping[str, Any] | None = None,
        sort: str | None = None,
        page_size: int = 100,
        max_pages: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Walk the page envelope (``data`` + ``pagination``) until a page is empty or the last one is read."""
        page = 1
        while max_pages is None or page <= max_pages:
            params = [("page", str(page)), ("page_size", str(page_size))]
            if sort:
                params.append(("sort", sort))
            if filter:
                params += query_params("filter", filter)
            if search:
                params += query_params("search", search)
            body = self._json("GET", url, params=params) or {}
            data = body.get("data") or []
            yield from data
            total_pages = (body.get("pagination") or {}).get("total_pages")
            if not data or (isinstance(total_pages, int) and page >= total_pages):
                return
            page += 1
