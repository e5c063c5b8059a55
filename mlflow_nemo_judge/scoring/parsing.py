"""Turn an ``llm-judge`` reply into a score, the way NeMo Evaluator's ``scores.<name>.parser`` does.

NeMo semantics followed here (reference §8.1, §8.2):

* ``parser.type: "regex"``: ``re.search`` the judge text (with a time bound); the *first* capture group
  is converted.
* ``parser.type: "json"``: a JSON object is located in the reply and ``json_path`` picks the value.
* Anything that cannot be parsed becomes **NaN** with a reason, never 0: NaN rows are excluded from the
  aggregate and counted in ``nan_count``, whereas a 0 would silently drag the mean down.

Reasoning judges prepend a ``<think>...</think>`` block. :func:`strip_reasoning` removes it the way
NeMo's ``reasoning_params`` do: only when an ``end_token`` is configured (everything up to its last
occurrence), and a reply without the token is kept whole or dropped (NaN) by ``include_if_not_finished``
(default: kept, as NeMo's reasoning interceptor). Without an ``end_token`` the reply is parsed as is,
like NeMo, so ``RATING:\\s*(\\d+)`` can match a rating the model only considered: configure the token.
:func:`strip_think` is the older heuristic (a leading ``<think>`` block removed with no token configured),
kept for this package's own pairwise judge, which NeMo does not have.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import regex

__all__ = [
    "PARSER_TYPES",
    "SCORE_TYPES",
    "Parsed",
    "compile_regex",
    "convert_value",
    "extract_json",
    "parse_json_path",
    "parse_score",
    "strip_reasoning",
    "strip_think",
    "validate_parser",
    "validate_score_type",
]

#: Accepted ``scores.<name>.type`` values; NVIDIA examples use ``int``, a data-flywheel judge ``integer``.
SCORE_TYPES: frozenset[str] = frozenset({"int", "integer", "float", "number", "bool", "boolean"})
#: Accepted ``scores.<name>.parser.type`` values.
PARSER_TYPES: frozenset[str] = frozenset({"regex", "json"})

_INT_TYPES = frozenset({"int", "integer"})
_BOOL_TYPES = frozenset({"bool", "boolean"})

_TRUE_WORDS = frozenset({"true", "yes", "1"})
_FALSE_WORDS = frozenset({"false", "no", "0"})

# A plain decimal literal. ``float()`` alone would also accept "nan", "inf" and "1_000", none of which is a
# score a judge meant to give.
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Characters that judges (and markdown) wrap around a bare value: "**4**", "`4`", "'4'", "(4)", "[4]".
_WRAPPER_CHARS = " \t\r\n\"'`*_()[]"
# Sentence punctuation after a value ("RATING: 4." captured by a greedy pattern); a leading sign or
# decimal point must survive, so this is only ever stripped from the right.
_TRAILING_PUNCT = ".,;:!?"

# A complete reasoning block at the start of a reply. The block is matched up to its *first* closing tag:
# the answer after it is what the judge committed to.
_LEADING_THINK_RE = re.compile(r"\A\s*<think>.*?</think>", re.DOTALL)
_DEFAULT_OPEN_TAG = "<think>"
_DEFAULT_CLOSE_TAG = "</think>"

_FENCE_RE = re.compile(r"```[ \t]*(?i:json5?)?[ \t]*\r?\n(.*?)```", re.DOTALL)
_JSON_PATH_TOKEN_RE = re.compile(
    r"""\.?(?P<key>[^.\[\]]+)            # a bare key, optionally after a dot
      | \[(?P<index>-?\d+)\]            # a list index
      | \[(?P<q>["'])(?P<qkey>.*?)(?P=q)\]  # a quoted key, for keys containing dots or brackets
    """,
    re.VERBOSE,
)

_EXCERPT_CHARS = 80

#: Seconds one score regex may run on one judge reply. Score patterns run with the ``regex`` package's
#: time bound: a catastrophic pattern (``(a+)+$``) on a long reply would otherwise block the event loop
#: for minutes. A real pattern on a long reply takes microseconds; a timeout is a NaN with its reason.
REGEX_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Parsed:
    """One parsed score: ``value`` is NaN exactly when ``error`` says why."""

    value: float
    error: str | None

    @property
    def ok(self) -> bool:
        """True when a finite value was parsed."""
        return self.error is None

    @classmethod
    def nan(cls, error: str) -> Parsed:
        return cls(math.nan, error)


def _excerpt(text: str) -> str:
    """A short, single-line quote of ``text`` for error messages (judge replies can be pages long)."""
    flat = " ".join(text.split())
    if len(flat) > _EXCERPT_CHARS:
        flat = flat[: _EXCERPT_CHARS - 1] + "…"
    return repr(flat)


def strip_think(text: str) -> tuple[str, str | None]:
    """Remove ``<think>…</think>`` reasoning with no ``end_token`` configured (package-only heuristic).

    A complete leading block is removed; an unfinished leading ``<think>`` is an error (every number after
    it is one the judge only considered); a reply holding only a closing ``</think>`` (R1-style chat
    templates put the opening tag in the prompt) is cut after it; any other text is unchanged.
    """
    m = _LEADING_THINK_RE.match(text)
    if m:
        return text[m.end() :].strip(), None
    stripped = text.lstrip()
    if stripped.startswith(_DEFAULT_OPEN_TAG):
        return "", f"reasoning not finished: no '{_DEFAULT_CLOSE_TAG}' in judge output"
    if _DEFAULT_CLOSE_TAG in text and _DEFAULT_OPEN_TAG not in text:
        return text[text.rindex(_DEFAULT_CLOSE_TAG) + len(_DEFAULT_CLOSE_TAG) :].strip(), None
    return text, None


def strip_reasoning(
    text: str | None, end_token: str | None, *, include_if_not_finished: bool | None = None
) -> tuple[str, str | None]:
    """Return ``(answer_text, error)`` with the judge's reasoning removed, as NeMo's ``reasoning_params``.

    * No ``end_token``: the text unchanged (NeMo trims reasoning only with an end token).
    * ``end_token`` in the text: the text after its **last** occurrence, stripped (reasoning may mention
      the token itself; NeMo's interceptor also removes everything up to the last one).
    * ``end_token`` not in the text (the model has not finished reasoning, typically cut off by
      ``max_tokens``): ``include_if_not_finished`` true or unset (NeMo's default) keeps the whole text;
      false gives ``("", "reasoning not finished: …")``, so the row is NaN rather than a guess.
    """
    if text is None:
        return "", None
    if not end_token:
        return text, None
    idx = text.rfind(end_token)
    if idx >= 0:
        return text[idx + len(end_token) :].strip(), None
    if include_if_not_finished is False:
        return "", (
            f"reasoning not finished: no {end_token!r} in judge output "
            "(reasoning_params.include_if_not_finished is false)"
        )
    return text, None


def compile_regex(pattern: str) -> Any:
    """Compile a score ``parser.pattern``; raises ValueError if invalid or without a capture group."""
    # Checked before the cache lookup: an unhashable value from YAML (a list) would otherwise surface as
    # a TypeError from lru_cache instead of a config error.
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"regex parser pattern must be a non-empty string, got '{pattern}'")
    return _compile_regex_cached(pattern)


@functools.lru_cache(maxsize=256)
def _compile_regex_cached(pattern: str) -> Any:
    # Cached because the same pattern is applied to every row of a task. ``regex`` (its default V0 mode
    # follows ``re``'s syntax and semantics) instead of ``re`` for the ``timeout=`` of ``search``.
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"regex parser pattern '{pattern}' does not compile: {exc}") from exc
    if compiled.groups < 1:
        raise ValueError(
            f"regex parser pattern '{pattern}' has no capture group; the first group is the score, "
            r"e.g. 'RATING:\s*(\d+)'"
        )
    return compiled


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """Split a ``json_path`` into keys and indices: ``"$.items[0].score"`` → ``("items", 0, "score")``.

    Accepts ``"score"``, ``"a.b"``, ``"$.a.b"``, ``"$['a.b']"`` and ``"items[0].score"``; ``"$"`` alone is
    the whole JSON value. Raises ValueError on a malformed path.
    """
    if not isinstance(path, str):  # before the cache, which would raise TypeError on unhashable values
        raise ValueError(f"json parser json_path must be a string, got {path!r}")
    return _parse_json_path_cached(path)


@functools.lru_cache(maxsize=256)
def _parse_json_path_cached(path: str) -> tuple[str | int, ...]:
    rest = path.strip()
    if rest.startswith("$"):
        rest = rest[1:]
    elif not rest:
        raise ValueError("json parser json_path is empty; use '$' for the whole JSON value")
    parts: list[str | int] = []
    pos = 0
    while pos < len(rest):
        m = _JSON_PATH_TOKEN_RE.match(rest, pos)
        if m is None:
            raise ValueError(f"json parser json_path {path!r} is malformed near {rest[pos:]!r}")
        if m.group("key") is not None:
            # Keys after the first segment must be introduced by a dot ("items[0]score" is a typo, not
            # a key called "score").
            if pos > 0 and not rest.startswith(".", pos):
                raise ValueError(f"json parser json_path {path!r} is malformed near {rest[pos:]!r}")
            parts.append(m.group("key").strip())
        elif m.group("index") is not None:
            parts.append(int(m.group("index")))
        else:
            parts.append(m.group("qkey"))
        pos = m.end()
    return tuple(parts)


def validate_score_type(score_type: str) -> str:
    """Return the canonical lower-case score type; ValueError if unknown."""
    if not isinstance(score_type, str) or score_type.strip().lower() not in SCORE_TYPES:
        raise ValueError(f"unknown score type {score_type!r}; expected one of {sorted(SCORE_TYPES)}")
    return score_type.strip().lower()


def validate_parser(parser: Mapping[str, Any]) -> None:
    """Raise ValueError if a ``parser`` mapping could never parse anything (for early config checks)."""
    if not isinstance(parser, Mapping):
        raise ValueError(f"parser must be a mapping with a 'type', got {parser!r}")
    ptype = parser.get("type")
    if ptype == "regex":
        if "pattern" not in parser:
            raise ValueError("regex parser needs a 'pattern' with one capture group")
        compile_regex(parser["pattern"])
    elif ptype == "json":
        if "json_path" not in parser:
            raise ValueError("json parser needs a 'json_path', e.g. 'score' or '$.result.score'")
        parse_json_path(parser["json_path"])
    else:
        raise ValueError(f"unknown parser type {ptype!r}; expected one of {sorted(PARSER_TYPES)}")


def _clean_scalar_text(raw: str) -> str:
    """Peel markdown/quote wrappers and trailing sentence punctuation off a captured value."""
    s = raw
    while True:
        cleaned = s.strip(_WRAPPER_CHARS).rstrip(_TRAILING_PUNCT)
        if cleaned == s:
            return s
        s = cleaned


def _to_number(raw: str) -> float | None:
    s = _clean_scalar_text(raw)
    return float(s) if _NUMBER_RE.fullmatch(s) else None


def convert_value(raw: Any, score_type: str) -> Parsed:
    """Convert a captured string or a JSON value to a float according to ``score_type``.

    ``int``/``integer`` must be integral ("4" and "4.0" pass, "4.5" is NaN); ``float``/``number`` must be
    finite; ``bool``/``boolean`` maps true/yes/1 → 1.0 and false/no/0 → 0.0 (case-insensitive). JSON
    booleans count as 1/0 for every type. Raises ValueError for an unknown ``score_type``.
    """
    kind = validate_score_type(score_type)
    if raw is None:
        return Parsed.nan("value is null")
    if isinstance(raw, bool):
        return Parsed(1.0 if raw else 0.0, None)
    if isinstance(raw, (Mapping, list, tuple)):
        return Parsed.nan(f"value is not a scalar: {_excerpt(json.dumps(raw, default=str))}")

    if kind in _BOOL_TYPES:
        if isinstance(raw, (int, float)):
            number: float | None = float(raw)
        else:
            word = _clean_scalar_text(str(raw)).lower()
            if word in _TRUE_WORDS:
                return Parsed(1.0, None)
            if word in _FALSE_WORDS:
                return Parsed(0.0, None)
            number = _to_number(word)
        if number == 1.0:
            return Parsed(1.0, None)
        if number == 0.0:
            return Parsed(0.0, None)
        return Parsed.nan(f"not a boolean (true/false/yes/no/1/0): {_excerpt(str(raw))}")

    if isinstance(raw, (int, float)):
        number = float(raw)
    else:
        number = _to_number(str(raw))
        if number is None:
            return Parsed.nan(f"not a number: {_excerpt(str(raw))}")
    if not math.isfinite(number):
        return Parsed.nan(f"not a finite number: {_excerpt(str(raw))}")
    if kind in _INT_TYPES and not number.is_integer():
        return Parsed.nan(f"not an integer: {_excerpt(str(raw))}")
    return Parsed(number, None)


def extract_json(text: str) -> Any:
    """Find the JSON in a judge reply; raises ValueError if there is none.

    Tried in order: the whole reply, the first fenced ```json block that parses, then the first
    balanced ``{...}`` in the text (``raw_decode`` from each ``{`` so prose around the object and braces
    in the prose do not matter).
    """
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    for m in _FENCE_RE.finditer(text):
        try:
            return json.loads(m.group(1).strip())
        except ValueError:
            continue
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            pass
        else:
            if isinstance(obj, dict):
                return obj
        start = text.find("{", start + 1)
    raise ValueError("no JSON object found")


def _resolve_path(data: Any, path: tuple[str | int, ...], path_text: str) -> tuple[Any, str | None]:
    """Walk ``path`` through ``data``; returns ``(value, None)`` or ``(None, reason)``."""
    current = data
    walked = "$"
    for part in path:
        if isinstance(part, int):
            if not isinstance(current, list):
                return None, f"json_path {path_text!r}: {walked} is not a list"
            if not -len(current) <= part < len(current):
                return None, f"json_path {path_text!r}: index {part} out of range at {walked}"
            current = current[part]
            walked += f"[{part}]"
        else:
            if not isinstance(current, dict):
                return None, f"json_path {path_text!r}: {walked} is not an object"
            if part not in current:
                keys = ", ".join(map(str, list(current)[:10])) or "none"
                return None, f"json_path {path_text!r}: key {part!r} not found at {walked} (keys: {keys})"
            current = current[part]
            walked += f".{part}"
    return current, None


def parse_score(text: str | None, parser: Mapping[str, Any], score_type: str) -> Parsed:
    """Parse one score from judge text (already passed through :func:`strip_reasoning`).

    Returns a NaN :class:`Parsed` with a reason for anything unparseable. Raises ValueError only for
    configuration mistakes: an unknown ``score_type``, an unknown parser type, a bad regex or json_path.
    """
    validate_score_type(score_type)
    validate_parser(parser)
    if text is None or not text.strip():
        return Parsed.nan("empty judge output")

    if parser["type"] == "regex":
        pattern: str = parser["pattern"]
        try:
            m = compile_regex(pattern).search(text, timeout=REGEX_TIMEOUT_S)
        except TimeoutError:
            return Parsed.nan(
                f"regex timed out after {REGEX_TIMEOUT_S}s on a {len(text)}-character judge output"
            )
        if m is None:
            return Parsed.nan(f"no match for pattern '{pattern}' in judge output {_excerpt(text)}")
        group = m.group(1)
        if group is None:
            return Parsed.nan(
                f"pattern '{pattern}' matched but its first capture group did not take part in the match"
            )
        return convert_value(group, score_type)

    path_text: str = parser["json_path"]
    try:
        data = extract_json(text)
    except ValueError:
        return Parsed.nan(f"no JSON object found in judge output {_excerpt(text)}")
    value, reason = _resolve_path(data, parse_json_path(path_text), path_text)
    if reason is not None:
        return Parsed.nan(reason)
    return convert_value(value, score_type)
