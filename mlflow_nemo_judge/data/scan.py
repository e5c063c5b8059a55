"""Data lineage: what each task of a run evaluates on, read once per plan.

For the local backend one streamed pass over a task's rows gives their count (the progress total), a
content digest (so a dataset edited in place is not mistaken for the old one, and a resume can refuse
changed data) and, while they are few, the rows themselves (logged as an MLflow dataset input). The
nemo backend's data live in the NeMo Data Store, so its digest is of the location and limits.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.config import EvalConfig, Target, sha256_json, source_path
from mlflow_nemo_judge.errors import ConfigError, DatasetError
from mlflow_nemo_judge.scoring.templating import build_context, placeholder_sample, render_value

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.plan import Plan, TaskPlan

DIGEST_CHARS = 16


@dataclass
class DatasetInfo:
    """What a run evaluated on for one task: location, content digest and (when small) the rows."""

    task: str
    name: str
    files_url: str | None
    source: str | None  # a location MLflow can resolve (absolute local path or URL), else None
    digest: str
    num_rows: int | None
    limit: int | None
    rows: list[dict[str, Any]] | None = None


def _row_digest(h: Any, row: Mapping[str, Any]) -> None:
    h.update(
        json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode(
            "utf-8"
        )
    )
    h.update(b"\n")


def _local_source(files_url: str, base_dir: Path | None) -> str | None:
    """An absolute location for a local dataset (what MLflow records as the source), else the URL."""
    if "://" in files_url and not files_url.startswith("file://"):
        return files_url
    from mlflow_nemo_judge.data import DatasetSource, resolve_files

    try:
        files = resolve_files(DatasetSource(url=files_url, base_dir=base_dir))
    except Exception:
        return None
    if len(files) == 1:
        return str(files[0][1].resolve())
    return str(Path(os.path.commonpath([str(p.resolve()) for _, p in files]))) if files else None


def dataset_name(files_url: str | None, fallback: str) -> str:
    """A short dataset name for MLflow: the file's stem, else ``fallback``."""
    if not files_url:
        return fallback
    tail = [p for p in files_url.rstrip("/").split("/") if p]
    name = tail[-1] if tail else fallback
    for ext in (".jsonl", ".json", ".csv"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name[:500] or fallback


def scan_plan(plan: Plan, *, max_rows: int) -> list[DatasetInfo]:
    """One streamed pass over each task's rows (``limit`` applied); tasks sharing a dataset share it.

    Every row is checked on the way (``plan.row_checker``: the cached output, every template of every
    task reading it), so a bad row 17 fails before any model call or MLflow run. Rows are kept only while
    there are at most ``max_rows`` of them. The result is kept on the plan: ``build_plan`` makes this
    pass, and a later call with the same ``max_rows`` (``prepare``) reuses it instead of reading again.
    """
    if plan.datasets is not None and plan.scan_max_rows == max_rows:
        return list(plan.datasets)
    groups: dict[tuple[Any, ...], list[TaskPlan]] = {}
    for tp in plan.tasks:
        groups.setdefault(_data_key(tp), []).append(tp)
    scanned = {key: _scan(plan, tps, max_rows) for key, tps in groups.items()}
    infos = [replace(scanned[_data_key(tp)], task=tp.name) for tp in plan.tasks]
    plan.datasets, plan.scan_max_rows = infos, max_rows
    return list(infos)


def _data_key(tp: TaskPlan) -> tuple[Any, ...]:
    """Tasks with equal keys read the same rows (inline rows are never shared: each task checks its own)."""
    return (tp.data.files_url, tp.limit, tp.data.description) if tp.data.rows is None else (id(tp),)


RowCheck = Callable[[str, int, Mapping[str, Any]], None]


def row_checker(tp: TaskPlan) -> RowCheck:
    """A check of one row against everything the task needs from it: the cached output field, and every
    template the task renders (target request, each judge template, each simple metric's params),
    rendered as the engine will (``sample`` as a placeholder OpenAI response with empty values, see
    ``placeholder_sample``; a tool-calling ground truth must be a list of calls). Errors name the row and the
    template's config path. Templates are compiled once (cached); each row only renders them."""
    from mlflow_nemo_judge.plan import OUTPUT_FIELDS, cached_output_text

    # A model call gives the judges a real response (validated against its full OpenAI shape); cached
    # outputs have text and no response, exactly as the engine builds them; a data task has no sample.
    sample: dict[str, Any] | None = None
    if tp.calls_target:
        sample = placeholder_sample(tp.kind)
    elif tp.cached_output:
        sample = {"output_text": "", "response": {}}
    templates: list[tuple[str, Any]] = []
    if tp.calls_target and tp.template is not None:
        templates.append((f"{tp.path}.params.template", tp.template))
    ground_truths: list[str] = []  # tool-calling metrics' paths: their ground truth must be a call list
    for m in tp.metrics:
        if m.judge is not None:
            templates.append((f"{m.path}.params.template", m.judge.template))
        else:
            templates.append((f"{m.path}.params", m.params))
        if m.type == "tool-calling":
            ground_truths.append(f"{m.path}.params")

    def check(where: str, n: int, row: Mapping[str, Any]) -> None:
        if tp.cached_output and cached_output_text(row) is None:
            fields = ", ".join(sorted(str(k) for k in row)[:20]) or "(none)"
            note = " ('answer' is read as a reference, never as the output)" if "answer" in row else ""
            raise ConfigError(
                f"{tp.path}.dataset",
                f"{where} (row {n}): cached outputs need an output field in each row (one of "
                f"{', '.join(OUTPUT_FIELDS)}){note}; this row has: {fields}",
            )
        ctx = build_context(row, sample)
        for path, template in templates:
            try:
                rendered = render_value(template, ctx, path)
                if path in ground_truths:
                    _check_ground_truth(rendered, path)
            except ConfigError as exc:
                hint = ""
                if sample is None and ("output_text" in exc.message or "response" in exc.message):
                    hint = (
                        " (a 'data' task makes no model call, so there is no sample.*: judge a row "
                        "field such as item.<field> instead)"
                    )
                elif tp.cached_output and "'choices'" in exc.message:
                    hint = (
                        " (cached outputs are text: there is no sample.response without a model call; "
                        "read the row's own field, e.g. item.response, instead)"
                    )
                raise ConfigError(exc.path, f"{where} (row {n}): {exc.message}{hint}") from None

    return check


def _check_ground_truth(params: Any, path: str) -> None:
    """A tool-calling ground truth that is not a list of calls would make that row NaN: refuse it now."""
    from mlflow_nemo_judge.scoring.tool_calling import GROUND_TRUTH, ToolCallError, ground_truth_calls

    try:
        ground_truth_calls(params[GROUND_TRUTH])
    except ToolCallError as exc:
        raise ConfigError(f"{path}.{GROUND_TRUTH}", str(exc)) from None


def _scan(plan: Plan, tasks: list[TaskPlan], max_rows: int) -> DatasetInfo:
    tp = tasks[0]
    checks = [row_checker(t) for t in tasks]
    labels = _human_label_columns(tasks)  # column -> the config path that declared it
    h = hashlib.sha256()
    rows: list[dict[str, Any]] | None = []
    n = 0
    try:
        for where, row in tp.data.iter_located(tp.limit):
            n += 1
            for check in checks:
                check(where, n, row)
            if labels:
                for col in [c for c in labels if row.get(c) not in (None, "")]:
                    del labels[col]
            _row_digest(h, row)
            if rows is not None:
                rows.append(row)
                if len(rows) > max_rows:
                    rows = None
    except DatasetError as exc:  # unreadable, malformed or empty data: name the task's dataset too
        raise ConfigError(f"{tp.path}.dataset", str(exc)) from None
    url = tp.data.files_url
    for col, path in labels.items():
        # A misspelt column would give "judge-human agreement" over no labels at all: bad input.
        raise ConfigError(
            path, f"column {col!r} has no value in any of the {n} row(s) used of {url or 'the rows'}"
        )
    fallback = f"{plan.target.display_name}-rows" if url is None else tp.name
    return DatasetInfo(
        task=tp.name,
        name=dataset_name(url, fallback),
        files_url=url,
        source=_local_source(url, tp.data.base_dir) if url else None,
        digest=h.hexdigest()[:DIGEST_CHARS],
        num_rows=n,
        limit=tp.limit,
        rows=rows,
    )


def _human_label_columns(tasks: list[TaskPlan]) -> dict[str, str]:
    """The human-label columns the tasks' judge metrics declare, each with its config path."""
    out: dict[str, str] = {}
    for t in tasks:
        for m in t.metrics:
            rel = m.reliability
            if rel is not None:
                for score, col in rel.settings.human_labels.items():
                    out.setdefault(col, f"{rel.settings.path}.human_labels.{score}")
    return out


def describe_remote(config: EvalConfig, target: Target, *, limit: int | None) -> list[DatasetInfo]:
    """Lineage of a nemo run: each task's dataset location and limit (the rows live on the service)."""
    infos: list[DatasetInfo] = []
    for tname, task in (config.tasks or {}).items():
        ref: Any = task.dataset
        if ref is None:
            ref = target.dataset or target.cached_outputs
        url = ref if isinstance(ref, str) else getattr(ref, "files_url", None)
        ds_limit = getattr(ref, "limit", None)
        lims = [x for x in (ds_limit, limit) if x is not None]
        lim = min(lims) if lims else None
        base = source_path(config if task.dataset is not None else target)
        local = _content_digest(url, target.rows, base.parent if base else None, lim)
        num_rows: int | None
        if local is not None:
            digest, num_rows = local
        else:  # a remote location: its rows live on the service, so its identity is the location
            digest = sha256_json({"url": url, "limit": lim, "rows": target.rows})[:DIGEST_CHARS]
            num_rows = len(target.rows) if target.rows is not None else None
        infos.append(
            DatasetInfo(
                task=tname,
                name=dataset_name(url, tname),
                files_url=url,
                source=url if url and "://" in url else None,
                digest=digest,
                num_rows=num_rows,
                limit=lim,
            )
        )
    return infos


def _content_digest(
    url: str | None, rows: list[dict[str, Any]] | None, base_dir: Path | None, limit: int | None
) -> tuple[str, int] | None:
    """The digest (and row count) of data this machine holds — inline rows or a local file, which the
    nemo backend uploads — computed exactly as the local scan does, so one dataset has one digest on
    both backends and an edited file makes a new run; None for a remote location or unreadable data
    (staging reports the real error)."""
    h = hashlib.sha256()
    n = 0
    if url is None:
        if rows is None:
            return None
        for row in rows if limit is None else rows[:limit]:
            _row_digest(h, row)
            n += 1
        return h.hexdigest()[:DIGEST_CHARS], n
    if "://" in url and not url.startswith("file://"):
        return None
    from mlflow_nemo_judge.data import DatasetSource, iter_rows

    try:
        for row in iter_rows(DatasetSource(url=url, base_dir=base_dir), limit=limit):
            _row_digest(h, row)
            n += 1
    except (DatasetError, OSError):
        return None
    return h.hexdigest()[:DIGEST_CHARS], n


def combined_digest(datasets: Sequence[DatasetInfo]) -> str:
    """One digest over every task's data (a run's identity and resume check).

    When every task reads the same data (the usual case) this *is* that data's digest, so the run's tag,
    its params, its dataset input and its description all show one value for one dataset; only runs
    whose tasks read different data get a digest over the ``task=digest`` pairs.
    """
    distinct = {d.digest for d in datasets}
    if len(distinct) == 1:
        return distinct.pop()
    text = "|".join(f"{d.task}={d.digest}" for d in datasets)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]
