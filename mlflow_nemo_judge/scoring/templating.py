"""Sandboxed Jinja2 rendering with NeMo Evaluator's template variables.

Variables (NeMo semantics, reference §9): ``item`` is the dataset row with keys normalised
(lower-case, non-alphanumerics → ``_``, collisions suffixed ``_1``, ``_2``…); the row's fields are also
at top level; ``sample`` is the target output (``sample.output_text``, ``sample.response``).

Only config strings are templates. Dataset values are inserted as data and never rendered, so a row
containing ``{{ ... }}`` cannot execute anything. The environment is sandboxed and strict: a missing
variable is an error that names the variable and the fields the row does have.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from mlflow_nemo_judge.errors import TemplateError

_NON_ALNUM = re.compile(r"[^0-9a-zA-Z]")
# A template that is exactly one expression, e.g. "{{ item.messages | tojson }}": its rendered text may be
# JSON that stands for a structure (messages, tools), as in NeMo configs.
_SINGLE_EXPR = re.compile(r"^\s*\{\{.*\}\}\s*$", re.DOTALL)
# Rendered strings under these keys stay strings even if they look like JSON (a message's content is text).
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


class _Env(SandboxedEnvironment):
    pass


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


def render_string(source: str, ctx: Mapping[str, Any], path: str) -> str:
    if "{" not in source:  # fast path: plain text needs no Jinja
        return source
    tmpl = compile_template(source, path)
    try:
        return str(tmpl.render(ctx))
    except UndefinedError as exc:
        raise TemplateError(path, f"template variable error: {exc.message}") from None
    except TemplateError:
        raise
    except Exception as exc:  # sandbox violations, filter errors, type errors inside expressions
        raise TemplateError(path, f"template rendering failed: {type(exc).__name__}: {exc}") from None


def render_value(obj: Any, ctx: Mapping[str, Any], path: str, key: str | None = None) -> Any:
    """Render every string leaf of a template structure (messages, request params, check lists).

    A string that is a single ``{{ … }}`` expression and renders to a JSON array/object becomes that
    structure (``"{{ item.messages | tojson }}"``), except under text keys such as ``content``.
    """
    if isinstance(obj, str):
        text = render_string(obj, ctx, path)
        if key not in _TEXT_KEYS and "{" in obj and _SINGLE_EXPR.match(obj):
            stripped = text.strip()
            if stripped[:1] in ("[", "{"):
                try:
                    return json.loads(stripped)
                except ValueError:
                    return text
        return text
    if isinstance(obj, Mapping):
        return {k: render_value(v, ctx, f"{path}.{k}", str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [render_value(v, ctx, f"{path}[{i}]", key) for i, v in enumerate(obj)]
    return obj
