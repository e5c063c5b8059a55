"""The names mlflow-nemo-judge gives things in MLflow: identity tags, artifact paths, MLflow's limits,
and the hygiene that maps task/metric/model names onto keys MLflow accepts.

Pure constants and string functions (no mlflow import); every other tracking module takes its names
from here, so a tag or artifact path is spelled once.
"""

from __future__ import annotations

import hashlib
import re

# ------------------------------------------------------------------------------------------ names

TAG_BACKEND = "nemo_judge.backend"
TAG_STATE = "nemo_judge.state"
TAG_CONFIG_SHA = "nemo_judge.config_sha256"
TAG_CONFIG_NAME = "nemo_judge.config_name"
TAG_TARGET = "nemo_judge.target"
TAG_TARGET_SHA = "nemo_judge.target_sha256"
TAG_TARGETS_SHA = "nemo_judge.targets_sha256"
TAG_JOB_ID = "nemo_judge.job_id"
TAG_DATASET_DIGEST = "nemo_judge.dataset_digest"
TAG_LIMIT = "nemo_judge.limit"
TAG_PARALLELISM = "nemo_judge.parallelism"
TAG_CONFIG_PATH = "nemo_judge.config_path"
TAG_TARGET_PATH = "nemo_judge.target_path"
TAG_ROLE = "nemo_judge.role"  # single | parent | child
TAG_SAMPLES = "nemo_judge.samples"  # where the per-sample rows are: "table" or "jsonl"
TAG_ERROR = "nemo_judge.error"
TAG_MODEL_ID = "nemo_judge.logged_model_id"
TAG_SETUP = "nemo_judge.setup_logged"
TAG_RESUMES = "nemo_judge.resume_count"
TAG_TRACES = "nemo_judge.traces"
TAG_SKIPPED_PARAMS = "nemo_judge.skipped_params"
TAG_CACHE_DIR = "nemo_judge.cache_dir"
TAG_REGISTERED = "nemo_judge.registered_model"
TAG_PROMPTS = "nemo_judge.prompts"  # the registered prompt URIs of the run, comma-separated
TAG_PROMPT_SHA = "nemo_judge.prompt_sha256"  # on a prompt version: the content it was registered for
TAG_PARTIAL_TRACKING = "nemo_judge.allow_partial_tracking"
# The NeMo references a config/target was resolved from: "path=ns/name" pairs, comma-separated.
TAG_REFERENCES = "nemo_judge.references"
# nemo runs: the metric keys whose NeMo value differs from the recomputation from its per-sample data
# (comma-separated; "none" when they all agree; absent without per-sample data). See recomputed.py.
TAG_RECOMPUTED_DIFFERS = "nemo_judge.recomputed_differs"

ART_DIR = "nemo_judge"
ART_CONFIG = f"{ART_DIR}/config.json"
ART_TARGET = f"{ART_DIR}/target.json"
ART_TARGETS = f"{ART_DIR}/targets.json"
# The targets' identity hashes, in the same order: the stored targets are redacted, so their hashes
# cannot be recomputed from them (a routing header counts in the identity but is masked in the file).
ART_TARGET_SHAS = f"{ART_DIR}/targets_sha256.json"
ART_RESULTS = f"{ART_DIR}/results.json"
ART_TABLE = f"{ART_DIR}/samples.json"
ART_SAMPLES = f"{ART_DIR}/samples.jsonl"
ART_TRACEBACK = f"{ART_DIR}/error.txt"
ART_COMPARISON = f"{ART_DIR}/comparison.json"
ART_PAIRED = f"{ART_DIR}/paired.json"
ART_SOURCES = f"{ART_DIR}/sources.json"  # absolute source paths, for resume (the tags hold portable ones)
ART_PAIRED_TABLE = f"{ART_DIR}/paired_table.json"
ART_RECOMPUTED = f"{ART_DIR}/recomputed.json"
# The recomputation's metrics: recomputed/<task>/<metric>/<score>[/<stat>], never read as scores.
RECOMPUTED_PREFIX = "recomputed/"

STATS = ("count", "nan_count", "stddev", "stderr", "ci95_low", "ci95_high", "min", "max")
MAX_PARAM_VALUE = 6000  # MLflow's MAX_PARAM_VAL_LENGTH
MAX_KEY = 250  # MLflow's MAX_ENTITY_KEY_LENGTH
MAX_TAG_VALUE = 8000
DEFAULT_TABLE_MAX_ROWS = 20_000
# Traces are a browsing view (the table and JSONL hold every sample); each costs ~35 ms of store work
# (batched, sqlite, 2 vCPU), so only the first samples become traces.
DEFAULT_TRACE_SAMPLES = 200
PROGRESS_INTERVAL = 1.0

# ------------------------------------------------------------------------------------- key hygiene

_KEY_BAD = re.compile(r"[^/\w.\- ]")


def sanitize_key(key: str) -> str:
    """Map ``key`` into MLflow's key charset (``[/\\w.\\- ]``, path-normal, ≤250 chars).

    ``@`` becomes ``_at_`` (as NeMo's own exporter does), any other invalid character ``_``; colons are
    replaced too although POSIX servers accept them, because a Windows server rejects them. Keys that
    are still too long keep a readable head and end in a hash of the original, so they stay unique.
    """
    k = _KEY_BAD.sub("_", key.replace("@", "_at_"))
    parts = [p.strip() or "_" for p in k.split("/") if p != ""]
    parts = ["_" * len(p) if set(p) == {"."} else p for p in parts]
    k = "/".join(parts) or "_"
    if len(k) > MAX_KEY:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        k = k[: MAX_KEY - 17].rstrip("/") + "_" + digest
    return k


def _safe_name(name: str) -> str:
    """A file-name-safe rendering of a task/metric name for artifact paths."""
    return re.sub(r"[^\w.\-]", "_", name).strip(".") or "_"


def logged_model_name(name: str) -> str:
    """LoggedModel names may not contain ``/ : . % " '``; model ids such as ``meta/llama-3.1-70b`` do."""
    return re.sub(r"[/:.%\"']", "-", name).strip("-") or "model"


def quote(v: str) -> str:
    """``v`` as a quoted string literal of MLflow's search-filter syntax (runs, LoggedModels)."""
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ------------------------------------------------------------------------------- UI-facing names

# MLflow's table viewer reads a dot in a column name as a nested path (``item.content`` renders blank),
# so columns join their parts with "/" (shown as is) and never contain a dot.
ITEM_PREFIX = "item_"


def column(*parts: str) -> str:
    """A per-sample table column: parts joined by ``/``, dots replaced (see above)."""
    return "/".join(str(p).replace(".", "_") for p in parts)


def short_model(display_name: str) -> str:
    """The model without its vendor prefix (``meta/llama-3.1-8b-instruct`` → ``llama-3.1-8b-instruct``):
    run lists truncate names from the right, so the part that tells runs apart comes first."""
    tail = display_name.rstrip("/").rsplit("/", 1)[-1]
    return tail or display_name or "model"


def run_name(model: str, subject: str, limit: int = 250) -> str:
    """``<model> · <subject>`` (the data or config name) within MLflow's run-name column limit."""
    name = f"{model} · {subject}" if subject else model
    return name if len(name) <= limit else name[: limit - 1] + "…"


_PROMPT_BAD = re.compile(r"[^A-Za-z0-9_.\-]+")
MAX_PROMPT_NAME = 200  # the registry's name column is varchar(256); leave room for MLflow's own use


def prompt_name(*parts: str) -> str:
    """A Prompt Registry name (alphanumerics, ``-``, ``_``, ``.`` only) from config, task and metric
    names; an over-long one keeps its head and ends in a hash, so it stays unique."""
    raw = "__".join(p for p in parts if p)
    name = _PROMPT_BAD.sub("_", raw).strip("._-") or "prompt"
    if len(name) > MAX_PROMPT_NAME:
        digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:12]
        name = name[: MAX_PROMPT_NAME - 13].rstrip("._-") + "_" + digest
    return name
