"""Secrets: the one walker and the one mask, for every place a key could leak or must be resolved.

A config or target can carry a secret in five forms: a literal value under a secret-named key
(``api_key``, ``token``, ``password``, …), a header value (``api_endpoint.headers``), an environment
variable named by ``api_key_env`` (our extension), a URL's userinfo (user and password), and a URL's
query (``?api-key=…``). :func:`walk` visits each of them once, with its config path; everything else
here is built on it:

- :func:`redact` — a dump safe for logs, params and artifacts (every secret replaced by :data:`MASK`);
- :func:`collect` — the secret values themselves, to mask out of free text (:func:`redact_text`): a
  provider's error message, a traceback, a table cell, a trace span; it also :func:`register` s them
  for the process-wide log filter (:mod:`mlflow_nemo_judge.logsafe`);
- :func:`masked_paths` — where a stored (redacted) dump lost a secret, so ``resume`` can say which key
  it needs;
- :func:`fingerprint` — the dump a run identity is hashed from (only credentials masked).

Resolving keys (``api_key_env`` → the value sent) is :mod:`mlflow_nemo_judge.config.keys`.

The rule, structurally (:func:`redact`, :func:`redact_url`): every header value, the userinfo (user and
password) of every URL and **every** query (and fragment) value of every URL are masked, whatever the
parameter is called — a gateway may call its credential anything (``?subscription-key=``,
``?x-token=``, ``?sig=``). The cost: harmless values are masked too (``api-version=2024-02-01`` reads
``api-version=******`` in params and artifacts, and the config hash no longer tells two configs apart
that differ only in a query value).

In free text (:func:`collect` → :func:`redact_text`, applied to model outputs, error texts and tables)
a value is replaced wherever it occurs, so a short or common value would mangle ordinary text. There
two tiers apply:

- *certain* secrets — a secret-named key, an ``api_key_env`` value, a URL password, and a header or
  query value whose name looks like a credential (contains ``key``, ``token``, ``auth``, ``secret``,
  ``pass``, ``sig``, ``credential``, ``session``, ``cookie``, or is in :data:`SECRET_QUERY`) — are
  masked when at least :data:`MIN_SECRET_LENGTH` (4) characters long;
- *incidental* values — any other header or query value and a URL's user name — only when at least
  :data:`MIN_INCIDENTAL_LENGTH` (8) characters long and not obviously public: not a number, date,
  time or version (``2024-02-01``, ``1.2.3``), not a single lower-case word or MIME type
  (``production``, ``keep-alive``, ``application/json``).

Free-text forms also cover what a secret becomes on the wire: its URL-encoded forms, the token of a
``Bearer``/``Basic`` header value, and the ``Basic`` credential a URL's userinfo turns into.

``MASK`` is NeMo's own mask (``******``), so a redacted dump reads like one NeMo returns.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

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
# Query parameters known to carry credentials (e.g. Azure's ``api-key``). Every query value is masked
# structurally; these names (and credential-looking ones) make a value a *certain* secret in free text.
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
# Name fragments that make a header or query parameter a credential.
_CREDENTIAL_WORDS = ("key", "token", "auth", "secret", "pass", "sig", "credential", "session", "cookie")
# Shorter values would mangle unrelated text when masked out of it; real keys are long.
MIN_SECRET_LENGTH = 4
# Values not known to be secrets (any header, any query value, a URL's user) must be longer still.
MIN_INCIDENTAL_LENGTH = 8
# Values that are public whatever they sit under: numbers, dates, times, versions; one lower-case word
# or a MIME type. Masked structurally, never hunted in free text.
_PUBLIC = re.compile(r"[\d\s.,:;/+\-_TZ]+|[a-z]+(?:-[a-z]+)*(?:/[a-z0-9.+\-]+)?")
_AUTH_SCHEME = re.compile(r"(?i)(?:bearer|basic|token|digest)\s+(\S+)")

Kind = Literal["key", "header", "env", "url"]


@dataclass(frozen=True)
class Secret:
    """One secret found by :func:`walk`: where (config path), in which form, and its value.

    ``certain`` is False for values that are masked only because of where they sit (a header or query
    value under an ordinary name, a URL's user name): free text is masked of them only when they are
    long and not obviously public (see the module docstring)."""

    path: str
    kind: Kind
    value: str
    certain: bool = True


def is_credential_name(name: str) -> bool:
    """Whether a header or query parameter name looks like it carries a credential."""
    low = name.strip().lower()
    return low in SECRET_QUERY or low in SECRET_KEYS or any(w in low for w in _CREDENTIAL_WORDS)


def looks_like_url(text: str) -> bool:
    """``scheme://…`` with no whitespace: a value to mask structurally (prose is only masked of values)."""
    head, sep, rest = text.partition("://")
    return (
        bool(sep)
        and bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", head))
        and not any(c.isspace() for c in rest)
    )


def _url_parts(url: str) -> list[tuple[str, bool]]:
    """``(value, certain)`` for the userinfo and every query/fragment value of ``url``, decoded."""
    if "://" not in url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: the structural masker still handles the text
        return []
    found: list[tuple[str, bool]] = []
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        user, _, password = userinfo.partition(":")
        found += [(unquote(user), False), (user, False)] if user else []
        found += [(unquote(password), True), (password, True)] if password else []
    for section in (parts.query, parts.fragment):
        for k, v in parse_qsl(section, keep_blank_values=False):
            found.append((v, is_credential_name(k)))
        # The raw (still percent-encoded) form is what a log line or an echoed URL shows.
        for item in section.split("&"):
            k, eq, v = item.partition("=")
            if eq and v:
                found.append((v, is_credential_name(k)))
    return [(v, c) for v, c in found if v and v != MASK]


def url_secrets(url: str) -> list[str]:
    """Every value embedded in a URL that :func:`redact_url` masks: the userinfo (user and password) and
    every query value, decoded and as written."""
    return list(dict.fromkeys(v for v, _ in _url_parts(url)))


def _mask_pairs(section: str, bare: bool = True) -> str:
    # A bare query item (``?sometoken``) may be the credential itself; a bare fragment is an anchor
    # (``#usage``), kept unless ``bare``. An empty value stays empty.
    out = []
    for item in section.split("&"):
        k, eq, v = item.partition("=")
        keep = eq or not k or not bare
        out.append(f"{k}={MASK}" if eq and v else (k if keep else MASK) + ("=" if eq else ""))
    return "&".join(out)


def redact_url(url: str) -> str:
    """``url`` with its userinfo and every query and fragment value masked, so it can be logged and
    recorded. Purely textual, so an unparseable URL (bad port, no scheme) is masked as well."""
    if not url or not any(c in url for c in "@?#"):
        return url
    head, hsep, frag = url.partition("#")
    head, qsep, query = head.partition("?")
    scheme = head.find("://")
    start = scheme + 3 if scheme >= 0 else 0
    slash = head.find("/", start)
    end = len(head) if slash < 0 else slash
    authority = head[start:end]
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
        masked = MASK + (f":{MASK}" if ":" in userinfo else "")
        head = f"{head[:start]}{masked}@{hostport}{head[end:]}"
    return (
        head
        + qsep
        + (_mask_pairs(query) if qsep else "")
        + hsep
        + (_mask_pairs(frag, bare=False) if hsep else "")
    )


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _url_walk(path: str, url: str) -> Iterator[Secret]:
    yield from (Secret(path, "url", v, c) for v, c in _url_parts(url))
    try:
        parts = urlsplit(url)
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
    except ValueError:
        return
    if user or password:  # what the userinfo becomes in an ``Authorization: Basic`` header on the wire
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        yield Secret(path, "url", basic, bool(password))


def walk(obj: Any, path: str = "") -> Iterator[Secret]:
    """Every secret in a plain (JSON-like) config or target dump, with its path, in document order."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            p, lk = _join(path, k), str(k).lower()
            if lk in SECRET_KEYS and isinstance(v, str) and v:
                yield Secret(p, "key", v)
            elif lk == "headers" and isinstance(v, Mapping):
                for hk, hv in v.items():
                    if hv not in (None, ""):
                        yield Secret(_join(p, hk), "header", str(hv), is_credential_name(str(hk)))
            elif lk == "api_key_env" and isinstance(v, str) and v:
                value = os.environ.get(v)
                if value:
                    yield Secret(p, "env", value)
            elif isinstance(v, str) and looks_like_url(v):
                yield from _url_walk(p, v)
            else:
                yield from walk(v, p)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk(v, f"{path}[{i}]")
    elif isinstance(obj, str) and looks_like_url(obj):
        yield from _url_walk(path, obj)


def _plain(obj: Any) -> Any:
    to_dict = getattr(obj, "to_dict", None)
    return to_dict() if callable(to_dict) else obj


def _maskable(value: str, certain: bool) -> bool:
    """Whether free text should be masked of ``value`` (the tiers of the module docstring)."""
    if value == MASK or (MASK in value and len(value.replace(MASK, "")) < MIN_SECRET_LENGTH):
        return False
    if certain:
        return len(value) >= MIN_SECRET_LENGTH
    return len(value) >= MIN_INCIDENTAL_LENGTH and not _PUBLIC.fullmatch(value)


def _variants(value: str) -> Iterator[str]:
    """``value`` and the forms it takes in transit: URL-encoded, JSON-escaped, a header's bare token."""
    yield value
    yield quote(value, safe="")
    yield quote_plus(value)
    yield json.dumps(value, ensure_ascii=False)[1:-1]
    m = _AUTH_SCHEME.fullmatch(value.strip())
    if m:
        yield from _variants(m.group(1))


def collect(*objs: Any) -> list[str]:
    """Every secret value the configs/targets can send, longest first (so overlapping ones mask whole).

    Accepts config/target models (anything with ``to_dict()``) and plain dumps. The mask itself is not
    a secret: a dump already redacted contributes nothing. What it returns is also registered for the
    process-wide log filter (:func:`register`).
    """
    found: set[str] = set()
    for obj in objs:
        for s in walk(_plain(obj)):
            if _maskable(s.value, s.certain):
                found.update(v for v in _variants(s.value) if _maskable(v, s.certain))
    out = sorted(found, key=len, reverse=True)
    register(out)
    return out


# ------------------------------------------------------------------------------ process-wide registry

_lock = threading.Lock()
# An immutable snapshot, swapped whole under the lock: readers (every log record) take no lock.
_registered: tuple[str, ...] = ()


def register(values: Iterable[str]) -> None:
    """Add secret values to the process-wide set the log filter and the CLI's error line mask.

    Values shorter than :data:`MIN_SECRET_LENGTH` and the mask itself are ignored (see the docstring)."""
    global _registered
    new = {v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH and v != MASK}
    if not new or new.issubset(_registered):
        return
    with _lock:
        _registered = tuple(sorted(new.union(_registered), key=len, reverse=True))


def registered() -> tuple[str, ...]:
    """The registered secret values, longest first."""
    return _registered


def clear_registry() -> None:
    """Forget every registered value (tests)."""
    global _registered
    with _lock:
        _registered = ()


def _masked(obj: Any, header: Callable[[str, Any], Any], url: Callable[[str], str]) -> Any:
    """A deep copy of a dump with secret-named keys masked, each header value passed through
    ``header(name, value)`` and each URL through ``url``: the one walk under both policies below."""
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            lk = str(k).lower()
            if lk in SECRET_KEYS and v not in (None, ""):
                out[k] = MASK
            elif lk == "headers" and isinstance(v, Mapping):
                out[k] = {hk: header(str(hk), hv) for hk, hv in v.items()}
            else:
                out[k] = _masked(v, header, url)
        return out
    if isinstance(obj, list):
        return [_masked(v, header, url) for v in obj]
    if isinstance(obj, str) and looks_like_url(obj):
        return url(obj)
    return obj


def redact(obj: Any) -> Any:
    """A deep copy of a dump with every secret masked; ``api_key_env`` names are kept (they are not keys)."""
    return _masked(obj, lambda _name, _value: MASK, redact_url)


def fingerprint(obj: Any) -> Any:
    """The dump a run identity is hashed from (``config_sha256``, ``target_sha256``): only *credentials*
    masked — secret-named keys, URL passwords, header and query values under credential names — and
    every other value as written. Two deployments behind one gateway URL, told apart by a routing
    header or an ``api-version``, are then two evaluations (:func:`redact` would mask both to the same
    dump), while a rotated key is still the same one. Only a hash of this dump is ever recorded."""
    return _masked(
        obj, lambda name, value: MASK if is_credential_name(name) else value, _credentials_masked_url
    )


def _credentials_masked_url(url: str) -> str:
    """``url`` with its password and credential-named query values masked (for :func:`fingerprint`)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return redact_url(url)
    netloc = parts.netloc
    if password:
        netloc = f"{netloc.rpartition('@')[0].partition(':')[0]}:{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{k}={MASK}" if is_credential_name(k) else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return parts._replace(netloc=netloc, query=query).geturl()


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
    """Config paths at which a stored dump holds :data:`MASK` instead of a secret (a URL counts when a
    masked userinfo or query value left it unusable)."""
    if isinstance(obj, Mapping):
        return [p for k, v in obj.items() for p in masked_paths(v, _join(path, k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in masked_paths(v, f"{path}[{i}]")]
    if obj == MASK or (isinstance(obj, str) and MASK in obj and looks_like_url(obj)):
        return [path]
    return []
