"""OpenAI wire shapes for the mock LLM server: reading requests, building replies and error bodies.

Pure functions over dicts and bytes; ``routes`` decides which reply a request gets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from mlflow_nemo_judge.testing.mock_llm.models import truncate_words, word_count

__all__ = [
    "OWNED_BY",
    "SYSTEM_FINGERPRINT",
    "BadRequest",
    "Reply",
    "apply_limits",
    "error_reply",
    "int_param",
    "json_reply",
    "read_prompts",
    "stream_reply",
    "unknown_model",
]

OWNED_BY = "mlflow-nemo-judge-mock"
SYSTEM_FINGERPRINT = "mock"

_PIECE_RE = re.compile(r"\s*\S+\s*")  # a streamed chunk: one word with its spacing
_JSON_SEPARATORS = (",", ":")


class Reply(NamedTuple):
    """One HTTP answer before framing."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class BadRequest(Exception):
    """A client error, answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def json_reply(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, json.dumps(payload, separators=_JSON_SEPARATORS).encode("utf-8"), headers=headers)


def error_reply(status: int, message: str, kind: str, code: str | None = None) -> Reply:
    return json_reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})


def unknown_model(model: str) -> Reply:
    return error_reply(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    )


def _content_text(content: Any) -> str:
    """Chat content is a string or a list of parts; only text parts mean anything to the mock."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    raise BadRequest(400, "message `content` must be a string or a list of content parts")


def apply_limits(text: str, stop: Sequence[str], max_tokens: int | None) -> tuple[str, str]:
    """Apply ``stop`` then ``max_tokens`` (in whitespace words, the mock's token) -> (text, finish_reason)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    if max_tokens is not None and word_count(text) > max_tokens:
        return truncate_words(text, max_tokens), "length"
    return text, "stop"


def int_param(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(400, f"`{name}` must be an integer in [{low}, {high}], got {value!r}")
    return value


def read_prompts(body: Mapping[str, Any], chat: bool) -> tuple[str, list[str], int]:
    """-> (system text, one prompt per choice group, prompt token count)."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest(400, "`messages` must be a non-empty list")
        system_parts: list[str] = []
        last_user = ""
        prompt_tokens = 0
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise BadRequest(400, "each message must be an object with a `role`")
            text = _content_text(message.get("content"))
            prompt_tokens += word_count(text)
            if message["role"] in ("system", "developer"):
                system_parts.append(text)
            elif message["role"] == "user":
                last_user = text
        return "\n".join(system_parts), [last_user], prompt_tokens
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return "", [prompt], word_count(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return "", list(prompt), sum(word_count(p) for p in prompt)
    raise BadRequest(
        400, "`prompt` must be a string or a non-empty list of strings (token ids are not supported)"
    )


def stream_reply(
    envelope: dict[str, Any], choices: list[dict[str, Any]], chat: bool, usage: dict[str, int] | None
) -> Reply:
    """Server-sent events, one chunk per word, in a single Content-Length body (clients parse it the same)."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    events: list[dict[str, Any]] = []
    for index, choice in enumerate(choices):
        pieces: Iterable[str] = _PIECE_RE.findall(choice["text"])
        if chat:
            events.append(
                {"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            )
            events.extend({"index": index, "delta": {"content": p}, "finish_reason": None} for p in pieces)
            events.append({"index": index, "delta": {}, "finish_reason": choice["finish_reason"]})
        else:
            events.extend({"index": index, "text": p, "finish_reason": None} for p in pieces)
            events.append({"index": index, "text": "", "finish_reason": choice["finish_reason"]})
    lines = [
        json.dumps({**envelope, "object": kind, "choices": [e]}, separators=_JSON_SEPARATORS) for e in events
    ]
    if usage is not None:
        lines.append(
            json.dumps(
                {**envelope, "object": kind, "choices": [], "usage": usage}, separators=_JSON_SEPARATORS
            )
        )
    lines.append("[DONE]")
    payload = "".join(f"data: {line}\n\n" for line in lines).encode("utf-8")
    return Reply(200, payload, content_type="text/event-stream")
