"""Reading configs and targets: YAML/JSON files or dicts → typed models, errors and warnings with paths.

A pydantic error becomes one :class:`ConfigError` whose ``path`` is the dotted config path at fault
(``tasks.QA.metrics.accuracy.params.scores.s.parser.pattern``). pydantic puts the tag of every union
branch it entered into an error's location; :func:`config_path` removes exactly those parts by walking
the model types alongside the location (every union in ``models`` is tagged), so a task called
``QA`` or a score called ``json`` is never mistaken for a branch name.

An unknown key that is a near-miss of a known key at its level (``dataset.limt``) is kept and passed
through like any unknown key, but emits one :class:`ConfigWarning` naming the key it probably meant.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
import types
import typing
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

from pydantic import BaseModel, Tag, ValidationError

from mlflow_nemo_judge.config import reading, references
from mlflow_nemo_judge.config.models import EvalConfig, ModelSpec, Open, Target
from mlflow_nemo_judge.errors import ConfigError, ConfigWarning

M = TypeVar("M", bound=BaseModel)


# ------------------------------------------------------------------------------------- error paths


@functools.cache
def _hints(cls: type[BaseModel]) -> dict[str, Any]:
    # include_extras keeps the Annotated wrappers that carry the union tags.
    return typing.get_type_hints(cls, include_extras=True)


def _tags(tp: Any) -> dict[str, Any] | None:
    """``{tag: branch type}`` if ``tp`` is a tagged union, else None."""
    if typing.get_origin(tp) not in (Union, types.UnionType):
        return None
    branches: dict[str, Any] = {}
    for arg in typing.get_args(tp):
        meta = getattr(arg, "__metadata__", ())
        tag = next((m.tag for m in meta if isinstance(m, Tag)), None)
        if tag is None:
            return None
        branches[tag] = typing.get_args(arg)[0]
    return branches


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` wrappers that add no location part."""
    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if typing.get_origin(tp) in (Union, types.UnionType) and _tags(tp) is None:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _step(tp: Any, part: str | int) -> tuple[Any, bool]:
    """The type one location part leads to, and whether the part is a config key (not a union tag)."""
    tp = _unwrap(tp)
    branches = _tags(tp)
    if branches is not None:
        return branches.get(str(part), Any), False
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _hints(tp).get(str(part), Any), True
    if origin in (dict, Mapping):
        return typing.get_args(tp)[1], True
    if origin is list:
        return typing.get_args(tp)[0], True
    return Any, True


def config_path(root: type[BaseModel], loc: tuple[str | int, ...], prefix: str = "") -> tuple[str, Any]:
    """The dotted config path of a pydantic error location, and the type expected there."""
    parts: list[str] = [prefix] if prefix else []
    tp: Any = root
    for part in loc:
        tp, is_key = _step(tp, part)
        if not is_key:
            continue
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]" if parts else f"[{part}]"]
        else:
            parts.append(str(part))
    return ".".join(parts), _unwrap(tp)


def _to_config_error(exc: ValidationError, root: type[BaseModel], prefix: str) -> ConfigError:
    errs = exc.errors()
    first = errs[0]
    path, expected = config_path(root, tuple(first.get("loc", ())), prefix)
    kind = first.get("type")
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "missing":
        msg = "required field is missing"
    elif kind in ("model_type", "dict_type"):  # pydantic would name our class; the user wrote a mapping
        msg = f"must be a mapping, got {type(first.get('input')).__name__}"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        # Only the parser union is strict on its tag (an unknown metric type loads as OtherMetric).
        tags = ", ".join(repr(t) for t in (_tags(expected) or {}))
        what = path.rsplit(".", 1)[-1]
        if kind == "union_tag_invalid":
            path, msg = f"{path}.type", f"unknown {what} type {first['ctx']['tag']!r} (supported: {tags})"
        elif isinstance(first.get("input"), Mapping):
            path, msg = f"{path}.type", f"required field is missing (one of {tags})"
        else:
            msg = f"must be a mapping with a 'type' (one of {tags}), got {first.get('input')!r}"
    more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
    return ConfigError(path, msg + more)


def validate_model(model: type[M], data: Any, prefix: str = "") -> M:
    """``model.model_validate(data)`` with a pydantic error turned into a ``ConfigError`` with its path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _to_config_error(exc, model, prefix) from None


# ------------------------------------------------------------------------------------- misspellings

# An unknown key at least this similar (difflib ratio) to a known one is reported as a likely misspelling.
NEAR_MISS_CUTOFF = 0.8


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def near_misses(obj: BaseModel, path: str = "") -> Iterator[tuple[str, str, str]]:
    """``(path, unknown key, the known key it likely misspells)`` for every near-miss in ``obj``.

    Only unknown keys of typed models are compared (free-form dicts such as an unknown metric's params
    have no known keys), each against the fields of its own level.
    """
    if isinstance(obj, Open):
        known = list(type(obj).model_fields)
        for key in obj.model_extra or {}:
            if key in type(obj).passthrough:
                continue
            match = difflib.get_close_matches(str(key).lower(), known, n=1, cutoff=NEAR_MISS_CUTOFF)
            if match:
                yield _join(path, key), str(key), match[0]
    for name in type(obj).model_fields:
        if name in obj.model_fields_set:
            yield from _near_misses_below(getattr(obj, name), _join(path, name))


def _near_misses_below(value: Any, path: str) -> Iterator[tuple[str, str, str]]:
    if isinstance(value, BaseModel):
        yield from near_misses(value, path)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _near_misses_below(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _near_misses_below(v, f"{path}[{i}]")


# ------------------------------------------------------------------------------------------ reading


def _read_mapping(
    source: str | os.PathLike[str] | Mapping[str, Any], what: str, prefix: str = ""
) -> tuple[dict[str, Any], Path | None]:
    if isinstance(source, Mapping):
        reading.check_values(source, prefix)
        return copy.deepcopy(dict(source)), None
    path = Path(source)
    text = reading.read_text(path, what)
    try:
        data = reading.parse(text, path.suffix.lower() == ".json")
    except Exception as exc:  # any parse failure is one line naming the file, never a traceback
        raise ConfigError("", f"{path}: cannot parse {what}: {reading.parse_error(exc, text)}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: a {what} must be a mapping, got {type(data).__name__}")
    try:
        reading.check_values(data, prefix)
    except ConfigError as err:
        raise _with_source(err, path) from None
    return data, path


def _with_source(err: ConfigError, path: Path | None) -> ConfigError:
    if path is None:
        return err
    new = ConfigError(err.path, err.message)
    new.args = (f"{path}: {err}",)
    return new


def _warn_near_misses(obj: BaseModel, prefix: str, path: Path | None) -> None:
    where = f"{path}: " if path else ""
    for key_path, key, known in near_misses(obj, prefix):
        warnings.warn(
            ConfigWarning(
                f"{where}{key_path}: unknown key {key!r}, did you mean {known!r}? "
                "(kept and passed through as written)"
            ),
            stacklevel=4,  # _warn_near_misses → load_config/load_target → the caller
        )


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | EvalConfig,
    *,
    nemo: references.Resolver | Mapping[str, Any] | None = None,
) -> EvalConfig:
    """Load and structurally validate a config from a YAML/JSON file, a dict, or a NeMo reference.

    A ``namespace/name`` that is no file is read from the NeMo Evaluator (``nemo``: a resolver or the
    nemo backend's URL options, else the ``NEMO_*`` settings); see :mod:`.references`.

    Semantic checks that need the dataset or are specific to the local backend (template variables,
    regex capture groups, supported types) happen when the run is planned (``plan.build_plan``), still
    before any model call.
    """
    if isinstance(source, EvalConfig):
        return source
    found = references.stored("config", source, nemo)
    data, path = _read_mapping(source, "config") if found is None else (found[0], None)
    if "tasks" not in data:
        raise _with_source(
            ConfigError("tasks", "required field is missing: a config needs at least one task"), path
        )
    try:
        cfg = validate_model(EvalConfig, data)
    except ConfigError as err:
        raise _with_source(err, path) from None
    _warn_near_misses(cfg, "", path)
    cfg._source = path
    if found is not None:
        references.remember(cfg, {"config": found[1]})
    return cfg


def load_target(
    source: str | os.PathLike[str] | Mapping[str, Any] | Target,
    *,
    nemo: references.Resolver | Mapping[str, Any] | None = None,
) -> Target:
    """Load and validate a target from a YAML/JSON file, a dict, or a NeMo reference (as ``load_config``)."""
    if isinstance(source, Target):
        return source
    found = references.stored("target", source, nemo)
    data, path = _read_mapping(source, "target", "target") if found is None else (found[0], None)
    try:
        target = validate_model(Target, data, "target")
    except ConfigError as err:
        raise _with_source(err, path) from None
    if target.type == "model" and target.model is None:
        raise _with_source(ConfigError("target.model", "a 'model' target needs model.api_endpoint"), path)
    if isinstance(target.model, ModelSpec) and target.type == "model" and target.model.api_endpoint is None:
        raise _with_source(ConfigError("target.model.api_endpoint", "required field is missing"), path)
    _warn_near_misses(target, "target", path)
    target._source = path
    if found is not None:
        references.remember(target, {"target": found[1]})
    return target
