"""Sandboxed Jinja2 rendering with NeMo Evaluator's template variables.

Variables (NeMo semantics, reference §9): ``item`` is the dataset row with keys normalised
(lower-case, non-alphanumerics → ``_``, collisions suffixed ``_1``, ``_2``…); the row's fields are also
at top level; ``sample`` is the target output (``sample.output_text``, ``sample.response``).

Only config strings are templates. Dataset values are inserted as data and never rendered, so a row
containing ``{{ ... }}`` cannot execute anything. The environment is sandboxed and strict: a missing
variable is an error that names the variable and the fields the row does have.

A rendered value is text unless the template itself asks for a structure (``render_value``): data never
changes type because its text happens to look like JSON.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from mlflow_nemo_judge.errors import TemplateError

T = TypeVar("T")

_NON_ALNUM = re.compile(r"[^0-9a-zA-Z]")
# Values under these keys are always text, even when the template yields a structure: a message's
# content is what the model reads, so "{{ item.messages | tojson }}" there means the JSON text.
_TEXT_KEYS = frozenset({"content", "role", "text", "prompt", "name"})


def normalize_key(key: str) -> str:
    return _NON_ALNUM.sub("_", str(key)).lower()


def normalize_keys(row: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys normalised as NeMo does; collisions get ``_1``, ``_2`` … in row order."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        base = normalize_key(key)
        name, n = base, 0
        while name in out:
            n += 1
            name = f"{base}_{n}"
        out[name] = value
    return out


class _Undefined(StrictUndefined):
    """StrictUndefined whose message lists what *is* available, so a typo is a one-line fix."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        obj, name = self._undefined_obj, self._undefined_name
        if isinstance(obj, Mapping) and name is not None:
            avail = ", ".join(sorted(str(k) for k in obj)) or "(none)"
            return f"'{name}' is not defined here; available: {avail}"
        return str(super()._undefined_message)


# Bounds on template arithmetic: the sandbox stops attribute access, not work. ``{{ 9**9**9 }}`` or
# ``{{ 'a' * 10**9 }}`` would otherwise hang or exhaust memory on the first row.
MAX_POWER_BITS = 10_000  # ints beyond ~3000 digits cannot even be printed (Python's int-str limit)
MAX_REPEAT_LEN = 1_000_000  # elements (characters) a ``str``/``list * n`` may produce
# A %-format width or precision above this (``'%0999999999d' % 1``) would allocate that many characters.
MAX_FORMAT_WIDTH = 10_000
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d*)(?:\.(\d*))?")


class _Env(SandboxedEnvironment):
    """The sandbox, plus bounds on the binary operators that can do unbounded work."""

    intercepted_binops = frozenset({"**", "*", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        elif operator == "%" and isinstance(left, str):
            for width, precision in _PERCENT_SPEC.findall(left):
                if max(int(width or 0), int(precision or 0)) > MAX_FORMAT_WIDTH:
                    raise SecurityError(f"'%' format width above {MAX_FORMAT_WIDTH} refused")
        return super().call_binop(context, operator, left, right)


def _check_power(base: Any, exp: Any) -> None:
    # bit_length(base ** exp) ≈ exp * bit_length(base): decided without computing it.
    ints = isinstance(base, int) and isinstance(exp, int)
    if ints and exp > 0 and exp * (abs(base).bit_length() - 1) > MAX_POWER_BITS:
        raise SecurityError(f"'**' result beyond {MAX_POWER_BITS} bits refused")


def _check_repeat(seq: Any, times: Any) -> None:
    if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_REPEAT_LEN:
        raise SecurityError(f"'*' repetition beyond {MAX_REPEAT_LEN} elements refused")


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    env = _Env(undefined=_Undefined, autoescape=False, keep_trailing_newline=True)
    return env


@lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    return environment().from_string(source)


def compile_template(source: str, path: str) -> Any:
    """Compile once (cached); a syntax error names the config path and line."""
    try:
        return _compile(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(path, f"Jinja syntax error on line {exc.lineno}: {exc.message}") from None


def check_syntax(obj: Any, path: str) -> None:
    """Compile every string leaf of ``obj`` so syntax errors surface before any model call."""
    if isinstance(obj, str):
        if "{{" in obj or "{%" in obj or "{#" in obj:
            compile_template(obj, path)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            check_syntax(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_syntax(v, f"{path}[{i}]")


def build_context(row: Mapping[str, Any], sample: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Template context: normalised row at top level and as ``item``, plus ``sample``."""
    item = normalize_keys(row)
    ctx: dict[str, Any] = dict(item)
    ctx["item"] = item
    ctx["sample"] = dict(sample) if sample is not None else {}
    return ctx


def placeholder_sample(kind: str) -> dict[str, Any]:
    """A stand-in ``sample`` for checking templates before any model call: the full shape of an
    OpenAI response of ``kind`` ("chat" or "completions"), so a judge reading
    ``sample.response.choices[0].message.tool_calls`` (the data-flywheel blueprint's) or
    ``…usage.total_tokens`` validates as it will render. Values are empty, and the chat message
    carries one tool call, so ``tool_calls[0].function.name`` validates too; what depends on the real
    reply (a template indexing a call the model did not make) fails at run time as that row's error."""
    choice: dict[str, Any]
    if kind == "completions":
        choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}
        obj = "text_completion"
    else:
        call = {"id": "call_0", "type": "function", "function": {"name": "", "arguments": "{}"}}
        message = {"role": "assistant", "content": "", "tool_calls": [call]}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        obj = "chat.completion"
    response = {
        "id": "placeholder",
        "object": obj,
        "created": 0,
        "model": "",
        "choices": [choice],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    return {"output_text": "", "response": response}


def _guarded(path: str, evaluate: Callable[[], T]) -> T:
    """Run one template evaluation; any failure becomes a ``TemplateError`` naming the config path."""
    try:
        return evaluate()
    except UndefinedError as exc:
        raise TemplateError(path, f"template variable error: {exc.message}") from None
    except TemplateError:
        raise
    except Exception as exc:  # sandbox violations, filter errors, type errors inside expressions
        raise TemplateError(path, f"template rendering failed: {type(exc).__name__}: {exc}") from None


def render_string(source: str, ctx: Mapping[str, Any], path: str) -> str:
    if "{" not in source:  # fast path: plain text needs no Jinja
        return source
    tmpl = compile_template(source, path)
    return _guarded(path, lambda: str(tmpl.render(ctx)))


@dataclass(frozen=True)
class _SingleExpression:
    """A template that is one ``{{ … }}`` expression and nothing else but whitespace."""

    evaluate: Callable[..., Any]  # the expression compiled on its own: returns its native value
    tojson: bool  # the expression's last step is the ``tojson`` filter: the template asks for JSON


# The lexer's token types that start a tag other than an expression (blocks, comments, raw, line statements).
_OTHER_TAGS = frozenset(
    {"block_begin", "comment_begin", "raw_begin", "linestatement_begin", "linecomment_begin"}
)


@lru_cache(maxsize=4096)
def _single_expression(source: str) -> _SingleExpression | None:
    """The expression of ``source`` if the whole string is exactly one ``{{ … }}``, else None.

    Decided on Jinja's own tokens (not a regex), so ``"{{ a }}{{ b }}"`` or ``"{{ '}}' }}"`` are read as
    Jinja reads them; the raw tokens between the delimiters are the expression's exact source.
    """
    env = environment()
    try:
        tokens = list(env.lex(source))
        body = env.parse(source).body
    except TemplateSyntaxError:
        return None  # compile_template reports it with the config path
    begins = [i for i, (_, kind, _) in enumerate(tokens) if kind == "variable_begin"]
    if len(begins) != 1 or any(kind in _OTHER_TAGS for _, kind, _ in tokens):
        return None
    start = begins[0]
    end = next(i for i in range(start, len(tokens)) if tokens[i][1] == "variable_end")
    if any(value.strip() for _, kind, value in tokens[:start] + tokens[end + 1 :] if kind == "data"):
        return None
    expr_source = "".join(value for _, _, value in tokens[start + 1 : end])
    # One variable tag and only whitespace data parse to one Output node holding one expression.
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None
    exprs = [n for n in body[0].nodes if not isinstance(n, nodes.TemplateData)]
    if len(exprs) != 1:
        return None
    expr = exprs[0]
    tojson = isinstance(expr, nodes.Filter) and expr.name == "tojson"
    # undefined_to_none=False: a missing variable stays a StrictUndefined, so it raises the usual
    # "not defined here; available: …" error when rendered instead of silently becoming None.
    return _SingleExpression(env.compile_expression(expr_source, undefined_to_none=False), tojson)


def _render_single(source: str, ctx: Mapping[str, Any], path: str) -> Any:
    """A structure when the template asks for one, else the rendered text (see ``render_value``)."""
    single = _single_expression(source)
    if single is None:
        return render_string(source, ctx, path)
    if single.tojson:
        text = render_string(source, ctx, path)
        try:
            value = json.loads(text)  # tojson writes valid JSON (its HTML-safe escapes are JSON escapes)
        except ValueError:
            return text
        return value if isinstance(value, (list, dict)) else text
    value = _guarded(path, lambda: single.evaluate(dict(ctx)))
    if isinstance(value, (list, Mapping)):
        # A copy, so a request body never aliases the dataset row (or another body) it was built from.
        return copy.deepcopy(value if isinstance(value, list) else dict(value))
    return render_string(source, ctx, path)


def render_value(obj: Any, ctx: Mapping[str, Any], path: str, key: str | None = None) -> Any:
    """Render every string leaf of a template structure (messages, request params, check lists).

    A leaf becomes a structure only when its template asks for one: it is a single ``{{ … }}``
    expression whose value is a list/dict (``"{{ item.tools }}"``) or that ends with ``| tojson``
    (``"{{ item.messages | tojson }}"``, as NeMo configs splice a message list). Everything else is
    text, however JSON-like the data inside it looks, and so is everything under a text key such as
    ``content``.
    """
    if isinstance(obj, str):
        if key not in _TEXT_KEYS and "{{" in obj:
            return _render_single(obj, ctx, path)
        return render_string(obj, ctx, path)
    if isinstance(obj, Mapping):
        return {k: render_value(v, ctx, f"{path}.{k}", str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [render_value(v, ctx, f"{path}[{i}]", key) for i, v in enumerate(obj)]
    return obj
