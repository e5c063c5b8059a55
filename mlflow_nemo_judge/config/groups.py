"""Config groups: which tasks each group (and nested group) pools, checked against the config.

NeMo's ``GroupConfig`` has ``tasks`` (task names), ``metrics`` ("the metrics that should be computed for
the group") and ``groups`` ("subgroups for the current group", typed ``Dict[str, object]``); its
``GroupResult`` nests the same way (``metrics`` plus ``groups``). NeMo documents no arithmetic for either,
so this package fixes its own and says so:

- **Membership is recursive.** A group's member tasks are its own ``tasks`` plus every member task of its
  subgroups, each task counted once however many paths reach it (first-seen order).
- **A subgroup is inline or a reference.** ``groups: {inner: {tasks: [...]}}`` defines ``inner`` in place
  (the SDK's shape); ``groups: {inner: null}`` (or ``{}``) names the config's top-level group ``inner``.
  A reference to a group the config does not define, a reference cycle (``a`` → ``b`` → ``a``), a task
  the config does not define and a group without any member are refused with the config path.
- **Group scores pool samples.** A group's score is computed over the per-sample values of all its
  member tasks' same-named ``(metric, score)`` — every sample weighs the same, so a task with more rows
  weighs more (not a mean of task means). See :mod:`mlflow_nemo_judge.engine_aggregate`.
- **Group-level ``metrics`` are NeMo's business.** NeMo documents no group-level semantics for any metric
  type, so the local backend refuses them (:func:`refuse_group_metrics`) rather than guess; the ``nemo``
  backend submits them and maps whatever the service reports.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.config.models import EvalConfig, GroupConfig

__all__ = ["GroupSpec", "check_groups", "group_specs", "is_reference", "refuse_group_metrics"]

GroupPath = tuple[str, ...]


@dataclass(frozen=True)
class GroupSpec:
    """One group of the results tree: its path (``("outer", "inner")``), the config path it was written
    at (the top-level group's for a reference), and its member tasks, recursively, each once."""

    path: GroupPath
    where: str
    tasks: tuple[str, ...] = field(default_factory=tuple)


def is_reference(node: GroupConfig | Mapping[str, Any] | None) -> bool:
    """A subgroup written as ``null`` or ``{}`` stands for the top-level group of the same name."""
    if node is None:
        return True
    if isinstance(node, Mapping):
        return not node
    return not node.to_dict()


def _members(node: Any) -> tuple[list[Any], dict[str, Any]]:
    """``(tasks, subgroups)`` of a typed group or of the raw mapping a NeMo job echoes back."""
    if isinstance(node, Mapping):
        tasks, groups = node.get("tasks"), node.get("groups")
    else:
        tasks, groups = node.tasks, node.groups
    return list(tasks or []), dict(groups) if isinstance(groups, Mapping) else {}


def _walk(
    top: Mapping[str, Any],
    name: str,
    node: Any,
    path: GroupPath,
    where: str,
    stack: tuple[str, ...],
    known_tasks: set[str] | None,
    out: list[GroupSpec],
) -> list[str]:
    """Append the spec of ``node`` and of everything under it to ``out`` (parents first); return its
    member tasks. ``stack`` holds the top-level groups being expanded, to catch reference cycles."""
    if is_reference(node) and len(path) > 1:
        if name not in top:
            known = ", ".join(repr(g) for g in top) or "none"
            raise ConfigError(where, f"names no group of this config (its top-level groups: {known})")
        if name in stack:
            cycle = " -> ".join([*stack[stack.index(name) :], name])
            raise ConfigError(where, f"group cycle: {cycle}")
        node, where, stack = top[name], f"groups.{name}", (*stack, name)
    tasks, subgroups = _members(node)
    if not tasks and not subgroups:
        raise ConfigError(where, "a group needs member 'tasks' or 'groups'")
    index = len(out)
    out.append(GroupSpec(path, where))  # a placeholder keeps parents before children
    seen: dict[str, None] = {}
    for i, tname in enumerate(tasks):
        if not isinstance(tname, str) or (known_tasks is not None and tname not in known_tasks):
            known = ", ".join(sorted(known_tasks or ())) or "none"
            raise ConfigError(f"{where}.tasks[{i}]", f"{tname!r} is not a task of this config ({known})")
        seen.setdefault(tname)
    for sub, subnode in subgroups.items():
        for tname in _walk(top, sub, subnode, (*path, sub), f"{where}.groups.{sub}", stack, known_tasks, out):
            seen.setdefault(tname)
    out[index] = GroupSpec(path, where, tuple(seen))
    return list(seen)


def _specs(groups: Mapping[str, Any], known_tasks: set[str] | None) -> list[GroupSpec]:
    out: list[GroupSpec] = []
    for name, node in groups.items():
        if node is None:
            raise ConfigError(f"groups.{name}", "a group needs member 'tasks' or 'groups'")
        _walk(groups, name, node, (name,), f"groups.{name}", (name,), known_tasks, out)
    return out


def check_groups(config: EvalConfig) -> None:
    """Refuse unknown tasks, unknown or cyclic group references and empty groups (``ConfigError``)."""
    if config.groups:
        _specs(config.groups, set(config.tasks) if config.tasks is not None else None)


def group_specs(groups: Mapping[str, Any] | None, tasks: Any = None) -> list[GroupSpec]:
    """Every group of the results tree (top level and nested, parents first) with its member tasks.

    ``groups`` is a typed config's or the raw mapping a NeMo job echoes back; ``tasks`` (the config's
    task names) is checked when given."""
    return _specs(groups or {}, set(tasks) if tasks is not None else None)


def _written(groups: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    """Every group node as written (references excluded: their node is written at the top level)."""
    for name, node in groups.items():
        if node is None or is_reference(node):
            continue
        where = f"{prefix}.{name}"
        yield where, node
        yield from _written(_members(node)[1], f"{where}.groups")


def refuse_group_metrics(config: EvalConfig) -> None:
    """The local backend computes no group-level ``metrics``: NeMo documents what they compute for no
    metric type, so a run would have to guess. Refused with the metric's config path."""
    for where, node in _written(config.groups or {}, "groups"):
        for mname, metric in (node.metrics or {}).items():
            mtype = metric.get("type") if isinstance(metric, Mapping) else None
            raise ConfigError(
                f"{where}.metrics.{mname}",
                f"group-level metrics (type {mtype!r}) run only on NeMo (--backend nemo): NeMo documents "
                "no group-level semantics for any metric type, and the local backend will not guess. "
                "Locally a group reports the pooled scores of its tasks' own metrics: define the metric "
                "on the tasks instead",
            )


def member_tasks(groups: Mapping[str, Any] | None) -> dict[GroupPath, list[str]]:
    """Group path → its member tasks (recursively), for a config a NeMo job echoes back. Never raises:
    the job already ran, so a group this package would refuse falls back to its own ``tasks`` list."""
    try:
        return {s.path: list(s.tasks) for s in group_specs(groups)}
    except ConfigError:
        return {
            (g,): list(_members(v)[0]) if isinstance(v, Mapping) else [] for g, v in (groups or {}).items()
        }


def top_level_members(groups: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """Top-level group → its member tasks, nested groups' tasks included (``build_result``'s
    ``group_tasks``)."""
    return {path[0]: tasks for path, tasks in member_tasks(groups).items() if len(path) == 1}
