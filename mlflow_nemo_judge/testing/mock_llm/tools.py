"""``mock/tool-caller``: a deterministic stand-in for a function-calling chat model (not a model).

It answers a chat request that carries OpenAI ``tools`` with ``tool_calls`` (``content: null``,
``finish_reason: "tool_calls"``), chosen by plain rules from the last user message, so tests of the
``tool-calling`` metric know the right answer in advance:

* which tools: every tool whose name appears in the message (one call each, in the order the request
  lists the tools, which need not be the order the message names them: the metric ignores order);
  if none is named, the one tool whose name and description share the most words with the message
  (ties: the first listed);
* which arguments: each parameter of the tool's JSON schema written in the message as ``name=value``
  or ``name: value`` (a value in double quotes may hold spaces), converted to the schema's type
  (integer, number, boolean; else text); parameters the message does not give are left out.

Without ``tools`` (or with ``tool_choice: "none"``) it answers with text, ``No tool to call: <message>``.
Streaming replies carry that text only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

TOOL_CALLER = "mock/tool-caller"

_WORD_RE = re.compile(r"[a-z0-9]+")


def text_answer(user: str) -> str:
    """The reply when there is no tool to call."""
    return f"No tool to call: {user}"


def _functions(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tools = body.get("tools")
    if not isinstance(tools, list) or body.get("tool_choice") == "none":
        return []
    out = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str) and fn["name"]:
            out.append(fn)
    return out


def _words(text: str) -> set[str]:
    return set(_WORD_RE.findall(text.lower().replace("_", " ")))


def _chosen(functions: list[Mapping[str, Any]], user: str) -> list[Mapping[str, Any]]:
    named = [fn for fn in functions if re.search(rf"(?<![\w.]){re.escape(fn['name'])}(?![\w])", user)]
    if named:
        return named
    said = _words(user)

    def overlap(fn: Mapping[str, Any]) -> int:
        return len(said & _words(f"{fn['name']} {fn.get('description') or ''}"))

    best = max(functions, key=overlap)  # max keeps the first of equals: ties go to the first listed
    return [best]


def _typed(raw: str, schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
    except ValueError:
        return raw
    if kind == "boolean" and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return raw


def _arguments(fn: Mapping[str, Any], user: str) -> dict[str, Any]:
    params = fn.get("parameters")
    props = params.get("properties") if isinstance(params, Mapping) else None
    out: dict[str, Any] = {}
    for name, schema in (props or {}).items():
        pattern = rf"(?<![\w]){re.escape(str(name))}\s*[:=]\s*(?:\"([^\"]*)\"|([^\s,;]+))"
        m = re.search(pattern, user)
        if m is not None:
            raw = m.group(1) if m.group(1) is not None else m.group(2).rstrip(".!?")
            out[str(name)] = _typed(raw, schema)
    return out


def tool_calls(body: Mapping[str, Any], user: str, request_id: int) -> list[dict[str, Any]] | None:
    """The calls ``mock/tool-caller`` makes for this request, or None when it answers with text."""
    functions = _functions(body)
    if not functions:
        return None
    return [
        {
            "id": f"call_mock_{request_id}_{i}",
            "type": "function",
            "function": {"name": fn["name"], "arguments": json.dumps(_arguments(fn, user))},
        }
        for i, fn in enumerate(_chosen(functions, user))
    ]


def assistant_message(
    model: str, body: Mapping[str, Any], user: str, text: str | None, request_id: int
) -> tuple[dict[str, Any], str | None]:
    """(the chat ``message``, a finish_reason override) for one choice of ``model``'s reply."""
    calls = tool_calls(body, user, request_id) if model == TOOL_CALLER else None
    if calls is None:
        return {"role": "assistant", "content": text}, None
    return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
