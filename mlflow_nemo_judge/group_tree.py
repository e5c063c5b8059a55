"""Nested group results: NeMo's ``GroupResult`` tree ⇄ the flat, path-keyed form a result keeps.

A result keeps its top-level groups in ``EvalResult.groups`` (name → metric → score → Score, as
before) and its nested groups in ``EvalResult.subgroups``, keyed by path (``("outer", "inner")``), so
code that reads only top-level groups is unchanged. NeMo's document nests them:
``groups.<outer>.groups.<inner>.metrics…`` (``SDK:types/group_result.py``: ``metrics`` + ``groups``).
The functions here convert between the two without knowing what a score is (``render``/``parse``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

__all__ = ["GroupPath", "nest", "unnest", "walk"]

GroupPath = tuple[str, ...]
T = TypeVar("T")


def walk(top: Mapping[str, T], sub: Mapping[GroupPath, T]) -> Iterator[tuple[GroupPath, T]]:
    """Every group with its path: each top-level group, then its nested ones (depth first, parents first)."""
    children: dict[GroupPath, list[GroupPath]] = {}
    for path in sub:
        children.setdefault(path[:-1], []).append(path)

    def below(path: GroupPath) -> Iterator[tuple[GroupPath, T]]:
        for child in children.get(path, []):
            yield child, sub[child]
            yield from below(child)

    for name, metrics in top.items():
        yield (name,), metrics
        yield from below((name,))


def nest(
    top: Mapping[str, T], sub: Mapping[GroupPath, T], render: Callable[[T], dict[str, Any]]
) -> dict[str, Any]:
    """NeMo's nested ``groups`` document; a node has ``groups`` only when it has subgroups (so a config
    without nesting serialises exactly as before)."""
    out: dict[str, Any] = {}
    nodes: dict[GroupPath, dict[str, Any]] = {}
    for path, metrics in walk(top, sub):
        node: dict[str, Any] = {"metrics": render(metrics)}
        nodes[path] = node
        if len(path) == 1:
            out[path[0]] = node
        else:
            parent = nodes[path[:-1]]
            parent.setdefault("groups", {})[path[-1]] = node
    return out


def unnest(
    doc: Any, parse: Callable[[Any], T], _prefix: GroupPath = ()
) -> tuple[dict[str, T], dict[GroupPath, T]]:
    """``(top-level groups, nested groups by path)`` from NeMo's ``groups`` document (``None``, a group
    without ``groups`` and ``groups: null`` all mean no subgroups)."""
    top: dict[str, T] = {}
    sub: dict[GroupPath, T] = {}
    for name, node in (doc or {}).items() if isinstance(doc, Mapping) else ():
        node = node if isinstance(node, Mapping) else {}
        path = (*_prefix, name)
        value = parse(node.get("metrics"))
        if _prefix:
            sub[path] = value
        else:
            top[name] = value
        _, deeper = unnest(node.get("groups"), parse, path)
        sub.update(deeper)
    return top, sub
