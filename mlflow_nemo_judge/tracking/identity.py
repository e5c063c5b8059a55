"""Run identity: the tags that make two evaluations "the same", and finding a finished one to reuse.

An evaluation is identified by its config, target, data content (digest), row limit and backend; a
rerun of the same evaluation finds its FINISHED run by these tags instead of making a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_nemo_judge.config import EvalConfig, Target, sha256_json, source_path
from mlflow_nemo_judge.config.references import references_of
from mlflow_nemo_judge.data.scan import DatasetInfo, combined_digest
from mlflow_nemo_judge.errors import TrackingError
from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.tracking import names as n
from mlflow_nemo_judge.tracking.store import find_runs, load_result


@dataclass
class Outcome:
    """One target's tracked evaluation: its result and run, and whether an earlier run was reused."""

    result: EvalResult
    run_id: str
    reused: bool
    model_id: str | None


def identity(
    config: EvalConfig, target: Target, datasets: Sequence[DatasetInfo], backend: str, limit: int | None
) -> dict[str, str]:
    """The tags that make two single-target evaluations the same."""
    return {
        n.TAG_CONFIG_SHA: config.sha256(),
        n.TAG_TARGET_SHA: target.sha256(),
        n.TAG_DATASET_DIGEST: combined_digest(datasets),
        n.TAG_LIMIT: str(limit) if limit else "none",
        n.TAG_BACKEND: backend,
    }


def parent_identity(
    config: EvalConfig,
    targets: Sequence[Target],
    datasets: Sequence[DatasetInfo],
    backend: str,
    limit: int | None,
) -> dict[str, str]:
    """The tags that make two multi-target evaluations the same (the parent run's)."""
    return {
        n.TAG_CONFIG_SHA: config.sha256(),
        n.TAG_ROLE: "parent",
        n.TAG_TARGETS_SHA: sha256_json([t.sha256() for t in targets]),
        n.TAG_DATASET_DIGEST: combined_digest(datasets),
        n.TAG_LIMIT: str(limit) if limit else "none",
        n.TAG_BACKEND: backend,
    }


def resume_tags(
    config: EvalConfig, target: Target | None, parallelism: int | None, cache_dir: Path | None
) -> dict[str, str]:
    """What ``resume`` needs besides the artifacts: where relative dataset paths resolve, and options.

    ``parallelism`` is the effective value (None: the nemo service decides). Paths are portable, not
    this machine's: the config's relative to the working folder, the target's and the cache folder
    relative to the config's folder (``~/…`` outside it), so a teammate reading the run sees the paths
    as the repository has them; ``resume`` resolves them back the same way.
    """
    tags = {
        n.TAG_CONFIG_NAME: config.display_name,
        n.TAG_PARALLELISM: str(parallelism) if parallelism else "service",
    }
    cfg_src = source_path(config)
    cfg_dir = Path(cfg_src).resolve().parent if cfg_src is not None else Path.cwd()
    if cfg_src is not None:
        tags[n.TAG_CONFIG_PATH] = portable_path(Path(cfg_src), Path.cwd())
    tgt_src = source_path(target) if target is not None else None
    if tgt_src is not None:
        tags[n.TAG_TARGET_PATH] = portable_path(Path(tgt_src), cfg_dir)
    if cache_dir is not None:
        tags[n.TAG_CACHE_DIR] = portable_path(Path(cache_dir), cfg_dir)
    refs = {**references_of(config), **(references_of(target) if target is not None else {})}
    if refs:
        tags[n.TAG_REFERENCES] = ",".join(f"{path}={ref}" for path, ref in refs.items())
    return tags


def source_paths(config: EvalConfig, target: Target | None, cache_dir: Path | None) -> dict[str, str]:
    """The absolute locations behind the portable tags, for the ``nemo_judge/sources.json`` artifact:
    a resume started from another folder still finds the config's folder (where relative dataset paths
    resolve) without the tags showing this machine's paths."""
    out: dict[str, str] = {}
    for key, obj in (("config_path", config), ("target_path", target)):
        src = source_path(obj) if obj is not None else None
        if src is not None:
            out[key] = str(Path(src).resolve())
    if cache_dir is not None:
        out["cache_dir"] = str(Path(cache_dir).expanduser().resolve())
    return out


def portable_path(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when inside it, else ``~/…`` inside the home folder, else absolute
    (with ``/`` separators, so a run reads the same from any OS)."""
    p = path.expanduser().resolve()
    for root, prefix in ((base.resolve(), ""), (Path.home().resolve(), "~/")):
        try:
            rel = p.relative_to(root)
        except ValueError:
            continue
        return (prefix + rel.as_posix()) if str(rel) != "." else (prefix.rstrip("/") or ".")
    return p.as_posix()


def resolve_portable(text: str, base: Path) -> Path:
    """The inverse of :func:`portable_path` (absolute paths of older runs pass unchanged)."""
    p = Path(text).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def reuse(cl: Any, run: Any) -> Outcome | None:
    """The outcome of a FINISHED run, or None when it lacks our results (edited by hand: not reusable)."""
    try:
        res = load_result(cl, run)
    except TrackingError:
        return None
    return Outcome(res, run.info.run_id, True, run.data.tags.get(n.TAG_MODEL_ID))


def find_finished(cl: Any, experiment_id: str, tags: Mapping[str, str]) -> Outcome | None:
    """A reusable FINISHED run with these identity tags (the newest first)."""
    for run in find_runs(cl, experiment_id, tags, max_results=5):
        found = reuse(cl, run)
        if found is not None:
            return found
    return None


def children(cl: Any, experiment_id: str, parent_id: str, status: str | None = "FINISHED") -> dict[str, Any]:
    """The parent's child runs by target sha (the newest per target)."""
    out: dict[str, Any] = {}
    for run in find_runs(
        cl, experiment_id, {"mlflow.parentRunId": parent_id}, status=status, max_results=1000
    ):
        out.setdefault(run.data.tags.get(n.TAG_TARGET_SHA, ""), run)
    return out


def find_finished_parent(
    cl: Any, experiment_id: str, tags: Mapping[str, str], targets: Sequence[Target]
) -> tuple[list[Outcome], str] | None:
    """A FINISHED parent run with these tags whose every target has a reusable FINISHED child."""
    for prun in find_runs(cl, experiment_id, tags, max_results=5):
        kids = children(cl, experiment_id, prun.info.run_id)
        found = [reuse(cl, kids[t.sha256()]) if t.sha256() in kids else None for t in targets]
        if all(f is not None for f in found):
            return [f for f in found if f is not None], prun.info.run_id
    return None
