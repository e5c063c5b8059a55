"""Wire shapes the FAKE NeMo service's route groups share: requests, replies, errors, pages, ids.

NeMo answers errors as ``{"detail": ...}`` (FastAPI style), the Hub as ``{"error": ...}`` plus
``X-Error-Code``; lists come in NeMo's page envelope; ids are ``<prefix>-base58(uuid4)``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Reply",
    "Request",
    "RouteSpec",
    "ServiceError",
    "blob_oid",
    "deleted",
    "json_reply",
    "new_id",
    "now",
    "page",
    "required",
]

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@dataclass
class Reply:
    """One HTTP answer before framing."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


#: (method, path regex, handler): a route group's entry; path groups become handler keyword arguments.
RouteSpec = tuple[str, str, Callable[..., Reply]]


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers=headers or {})


class ServiceError(Exception):
    """An error answer: NeMo's ``{"detail": ...}``, or the Hub's ``{"error": ...}`` + ``X-Error-Code``."""

    def __init__(self, status: int, detail: Any, hub_code: str | None = None) -> None:
        super().__init__(str(detail))
        self.status, self.detail, self.hub_code = status, detail, hub_code

    def reply(self) -> Reply:
        if self.hub_code is not None:
            return json_reply(
                self.status,
                {"error": self.detail},
                {"X-Error-Code": self.hub_code, "X-Error-Message": str(self.detail)},
            )
        return json_reply(self.status, {"detail": self.detail})


@dataclass
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise ServiceError(
                422, [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
            ) from None

    def param(self, name: str, default: str | None = None) -> str | None:
        return next((v for k, v in self.query if k == name), default)


def new_id(prefix: str) -> str:
    """``<prefix>-base58(uuid4)``, NeMo's id scheme."""
    n = uuid.uuid4().int
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return f"{prefix}-{out}"


def now() -> str:
    """NeMo's timestamp: naive ISO 8601 in UTC."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat()


def blob_oid(data: bytes) -> str:
    """Git's blob id, which the Hub reports as a file's ``oid``/``ETag``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's own object id


_OPS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "start": lambda a, b: a >= b,  # search[created_at][start]
    "end": lambda a, b: a <= b,
}
_KEY = re.compile(r"^(filter|search)((?:\[[^\[\]]*\])+)$")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def _matches(item: Any, path: list[str], wanted: str, substring: bool) -> bool:
    """One ``filter[a][b]=v`` (exact) or ``search[a]=v`` (case-insensitive substring) on one item.

    An entity-valued field (a job's ``config``/``target``) also matches its ``"namespace/name"``
    reference; a trailing ``[gt]``/``[lte]``/... compares the field (timestamps compare as ISO text).
    """
    value = item
    for i, key in enumerate(path):
        if key in _OPS and i == len(path) - 1 and not isinstance(value, dict):
            return _OPS[key](_scalar(value), wanted)
        if not isinstance(value, dict):
            return False
        value = value.get(key)
    if isinstance(value, dict):
        ref = f"{value.get('namespace')}/{value.get('name')}"
        return ref == wanted if not substring else wanted.lower() in ref.lower()
    if substring:
        return wanted.lower() in _scalar(value).lower()
    return _scalar(value) == wanted


def _echo(pairs: list[tuple[list[str], str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, v in pairs:
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def page(req: Request, items: list[dict[str, Any]]) -> Reply:
    """``items`` filtered, searched, sorted and paged in NeMo's list envelope (reference §4.4).

    ``filter[field]=`` (nested: ``filter[config][name]=``, ``filter[created_at][gt]=``) must all match;
    ``search[field]=`` are substrings of which one must match.
    """
    filters: list[tuple[list[str], str]] = []
    searches: list[tuple[list[str], str]] = []
    for k, v in req.query:
        m = _KEY.match(k)
        if m:
            path = re.findall(r"\[([^\[\]]*)\]", m.group(2))
            (filters if m.group(1) == "filter" else searches).append((path, v))
    items = [
        i
        for i in items
        if all(_matches(i, p, v, False) for p, v in filters)
        and (not searches or any(_matches(i, p, v, True) for p, v in searches))
    ]
    sort = req.param("sort") or "created_at"
    items.sort(key=lambda i: str(i.get(sort.lstrip("-")) or ""), reverse=sort.startswith("-"))
    try:
        number, size = max(1, int(req.param("page") or 1)), max(1, int(req.param("page_size") or 10))
    except ValueError:
        raise ServiceError(
            422,
            [{"loc": ["query", "page"], "msg": "Input should be a valid integer", "type": "int_parsing"}],
        ) from None
    chunk = items[(number - 1) * size : number * size]
    return json_reply(
        200,
        {
            "object": "list",
            "data": chunk,
            "pagination": {
                "page": number,
                "page_size": size,
                "current_page_size": len(chunk),
                "total_pages": max(1, -(-len(items) // size)),
                "total_results": len(items),
            },
            "sort": sort,
            "filter": _echo(filters),
            "search": _echo(searches),
        },
    )


def required(body: Any, *names: str, where: tuple[str, ...] = ("body",)) -> dict[str, Any]:
    """``body`` as a dict with ``names`` present, else FastAPI's 422 listing what is missing."""
    if not isinstance(body, dict):
        raise ServiceError(
            422, [{"loc": list(where), "msg": "Input should be a valid dictionary", "type": "dict_type"}]
        )
    missing = [
        {"loc": [*where, n], "msg": "Field required", "type": "missing"} for n in names if n not in body
    ]
    if missing:
        raise ServiceError(422, missing)
    return body


def deleted(eid: str) -> Reply:
    """NeMo's answer to a DELETE."""
    return json_reply(200, {"id": eid, "deleted_at": now(), "message": "Resource deleted successfully."})
