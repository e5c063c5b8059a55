"""What resuming a run needs from MLflow: the config and target it started with, and its options.

A run records its redacted config and target as artifacts, and its limit, parallelism, cache folder and
source paths as tags. A resume reloads them (or checks the ones passed in against the run's sha256), so
it continues the same evaluation, never a different one under the same run.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from mlflow_nemo_judge.config import EvalConfig, Target, load_config, load_target, sha256_json
from mlflow_nemo_judge.config.secrets import masked_paths
from mlflow_nemo_judge.engine import RunOptions
from mlflow_nemo_judge.errors import TrackingError
from mlflow_nemo_judge.results import SampleRecord
from mlflow_nemo_judge.tracking import names as n
from mlflow_nemo_judge.tracking.identity import resolve_portable
from mlflow_nemo_judge.tracking.store import _download, download_json


def recorded_limit(tags: dict[str, str]) -> int | None:
    value = tags.get(n.TAG_LIMIT, "none")
    return None if value == "none" else int(value)


def reload(
    cl: Any, run: Any, what: Literal["config", "target"], given: Any, allow_masked: bool = False
) -> Any:
    """The config or target a run was started with: the one passed (must be the same, by sha256), or
    the redacted artifact, which works when every secret comes from ``api_key_env``."""
    run_id = run.info.run_id
    tags = run.data.tags
    sha_tag = n.TAG_CONFIG_SHA if what == "config" else n.TAG_TARGET_SHA
    loader = load_config if what == "config" else load_target
    if given is not None:
        obj: EvalConfig | Target = loader(given)
        if obj.sha256() != tags.get(sha_tag):
            raise TrackingError(
                f"the {what} passed is not the one MLflow run {run_id} was started with (sha256 "
                f"{obj.sha256()[:12]} vs {str(tags.get(sha_tag))[:12]}); resume with the original {what}, "
                "or start a new evaluation"
            )
        return obj
    art = n.ART_CONFIG if what == "config" else n.ART_TARGET
    doc = download_json(cl, run_id, art)
    if doc is None:
        raise TrackingError(f"MLflow run {run_id} has no {art}; pass {what}= (--{what}) to resume it")
    masked = [] if allow_masked else masked_paths(doc)
    if masked:
        raise TrackingError(
            f"MLflow run {run_id} was started with literal secrets in its {what} ({', '.join(masked)}), "
            f"which are redacted in {art}; pass the original {what} ({what}= in Python, --{what} on the "
            "command line) to resume it, or keep keys in environment variables (api_key_env)"
        )
    obj = loader(doc)
    src = tags.get(n.TAG_CONFIG_PATH if what == "config" else n.TAG_TARGET_PATH)
    if src:
        # Relative dataset paths resolve against the original file's folder; the tags hold portable
        # paths (the config's from the working folder, the target's from the config's folder).
        obj._source = source_of(cl, run, what)
    if obj.sha256() != tags.get(sha_tag):
        raise TrackingError(f"{art} of MLflow run {run_id} does not match its {sha_tag} tag; pass {what}=")
    return obj


def recorded_options(cl: Any, run: Any, options: RunOptions | None) -> RunOptions:
    """``options`` completed with what the run recorded; a different row limit is refused."""
    tags = run.data.tags
    limit = recorded_limit(tags)
    opts = options or RunOptions()
    if opts.limit is not None and opts.limit != limit:
        raise TrackingError(
            f"MLflow run {run.info.run_id} was started with limit {limit}; a resume must use the same limit "
            f"(got {opts.limit})"
        )
    par = tags.get(n.TAG_PARALLELISM, "config")
    cache = tags.get(n.TAG_CACHE_DIR)
    cache_path = resolve_portable(cache, _config_dir(tags)) if cache else None
    if cache_path is not None and not cache_path.is_dir():
        cache_path = Path(_sources(cl, run).get("cache_dir") or cache_path)
    return dataclasses.replace(
        opts,
        limit=limit,
        parallelism=opts.parallelism or (int(par) if par.isdigit() else None),
        cache_dir=opts.cache_dir or cache_path,
    )


def _config_dir(tags: dict[str, str]) -> Path:
    src = tags.get(n.TAG_CONFIG_PATH)
    return resolve_portable(src, Path.cwd()).parent if src else Path.cwd()


def _sources(cl: Any, run: Any) -> dict[str, str]:
    doc = download_json(cl, run.info.run_id, n.ART_SOURCES)
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def source_of(cl: Any, run: Any, what: Literal["config", "target"]) -> Path | None:
    """Where the run's config or target file was: its portable tag resolved from here (the config's
    from the working folder, the target's from the config's folder), else — a resume from another
    folder — the absolute path of ``sources.json``."""
    tags = run.data.tags
    if what == "config":
        src = tags.get(n.TAG_CONFIG_PATH)
        path = resolve_portable(src, Path.cwd()) if src else None
    else:
        src = tags.get(n.TAG_TARGET_PATH)
        path = resolve_portable(src, _config_dir(tags)) if src else None
    if path is None or path.is_file():
        return path
    recorded = _sources(cl, run).get(f"{what}_path")
    return Path(recorded) if recorded else path


PriorRecords = Callable[[str, int], SampleRecord | None]


def errored(rec: SampleRecord) -> bool:
    """A sample worth re-running: its target call or any metric's judge call/parse errored."""
    return rec.target_error is not None or any(m.error is not None for m in rec.metrics.values())


def kept_records(cl: Any, run: Any) -> tuple[PriorRecords, int, int] | None:
    """What ``resume --retry-errors`` keeps: a lookup (task, row index) → the stored record when it did
    not error, plus the counts (kept, errored). None when the run has no ``samples.jsonl`` (it failed
    before the end): then every sample is computed again, with the response cache answering the calls
    already made."""
    with tempfile.TemporaryDirectory(prefix="nemo-judge-retry-") as tmp:
        local = _download(cl, run.info.run_id, n.ART_SAMPLES, tmp)
        if local is None:
            return None
        good: dict[tuple[str, int], SampleRecord] = {}
        bad = 0
        with open(local, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rec = SampleRecord.from_dict(json.loads(line))
                if errored(rec):
                    bad += 1
                else:
                    good[(rec.task, rec.index)] = rec

    def lookup(task: str, index: int) -> SampleRecord | None:
        return good.get((task, index))

    return lookup, len(good), bad


def target_documents(cl: Any, parent: Any) -> list[dict[str, Any]]:
    """The (redacted) targets a parent run evaluated, in order."""
    docs = download_json(cl, parent.info.run_id, n.ART_TARGETS)
    if not isinstance(docs, list):
        raise TrackingError(
            f"MLflow run {parent.info.run_id} has no {n.ART_TARGETS}; cannot tell which targets it evaluated"
        )
    return docs


def target_shas(cl: Any, parent: Any, docs: list[dict[str, Any]]) -> list[str]:
    """The identity hashes of a parent's targets, in order: as recorded, or (a parent recorded before
    they were) the hash of each stored target, which is what its children's tags then hold."""
    shas = download_json(cl, parent.info.run_id, n.ART_TARGET_SHAS)
    if isinstance(shas, list) and len(shas) == len(docs) and all(isinstance(s, str) for s in shas):
        return shas
    return [sha256_json(d) for d in docs]
