"""Everything MLflow: run lifecycle, params, tags, artifacts, metrics, tables, inputs, LoggedModels.

This is the only module that imports mlflow, and only inside functions: the import costs ~1.5 s, which
``mlflow-nemo-judge --help`` and ``--no-tracking`` runs should not pay. Everything here goes through
``MlflowClient`` with batched calls (``log_batch`` auto-chunks to MLflow's 100 params/tags and 1000
metrics per request), because one call per value costs ~55 ms over HTTP (reference §10).

Conventions (DESIGN.md): metric keys ``<task>/<metric>/<score>`` (the mean) and
``<task>/<metric>/<score>/<stat>``; run-level figures under ``usage/…`` and ``progress``; artifacts under
``nemo_judge/``; identity tags ``nemo_judge.*``; never a secret in a param, tag, metric or artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.config import MASK, SECRET_KEYS, EvalConfig, Target, sha256_json
from mlflow_nemo_judge.errors import TrackingError
from mlflow_nemo_judge.results import EvalResult, SampleRecord, Usage

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger(__name__)

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

ART_DIR = "nemo_judge"
ART_CONFIG = f"{ART_DIR}/config.json"
ART_TARGET = f"{ART_DIR}/target.json"
ART_TARGETS = f"{ART_DIR}/targets.json"
ART_RESULTS = f"{ART_DIR}/results.json"
ART_TABLE = f"{ART_DIR}/samples.json"
ART_SAMPLES = f"{ART_DIR}/samples.jsonl"
ART_TRACEBACK = f"{ART_DIR}/error.txt"
ART_COMPARISON = f"{ART_DIR}/comparison.json"

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


# ----------------------------------------------------------------------------------------- secrets


def collect_secrets(*objs: EvalConfig | Target | Mapping[str, Any]) -> list[str]:
    """Every secret value a config/target can send: literal keys, header values, and the current
    values of the env vars named by ``api_key_env`` (longest first, so overlapping secrets mask whole)."""
    found: set[str] = set()

    def walk(o: Any) -> None:
        if isinstance(o, Mapping):
            for k, v in o.items():
                lk = str(k).lower()
                if lk in SECRET_KEYS and isinstance(v, str) and v and v != MASK:
                    found.add(v)
                elif lk == "headers" and isinstance(v, Mapping):
                    found.update(str(x) for x in v.values() if x)
                elif lk == "api_key_env" and isinstance(v, str) and os.environ.get(v):
                    found.add(os.environ[v])
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    for obj in objs:
        walk(obj.to_dict() if isinstance(obj, (EvalConfig, Target)) else obj)
    # Very short values (e.g. "x") would mangle unrelated text; real keys are long.
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def redact_text(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


# ------------------------------------------------------------------------------------------ params


def _scalar(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)


def _flatten(prefix: str, obj: Any, out: dict[str, str]) -> None:
    """Flatten nested settings into ``prefix/key`` params; secrets and header values never pass."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            lk = str(k).lower()
            if lk in SECRET_KEYS or lk == "headers":
                continue
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif obj is None or obj == MASK:
        return
    else:
        out[prefix] = _scalar(obj)


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


def build_params(config: EvalConfig, target: Target, *, backend: str, limit: int | None,
                 parallelism: int | None, datasets: Sequence[DatasetInfo] = ()) -> dict[str, str]:
    """The flattened, secret-free settings of one evaluation, keyed by sanitised param names.

    Built from the redacted dumps, so a secret cannot reach a param even through an unknown field;
    templates are not params (they are artifacts) but their sha256 are, so runs can be filtered by
    prompt version.
    """
    cfg = config.redacted()
    p: dict[str, str] = {"config_sha256": config.sha256(), "target_sha256": target.sha256(), "backend": backend,
                         "config/name": config.display_name, "config/type": config.type,
                         "target/type": target.type, "run/limit": str(limit) if limit else "none",
                         "run/parallelism": str(parallelism) if parallelism else "config"}
    known = {"type", "name", "tasks", "groups", "params"}
    for k, v in cfg.items():
        if k not in known:
            _flatten(f"config/{k}", v, p)
    _flatten("params", cfg.get("params"), p)
    tgt = target.redacted()
    for k, v in tgt.items():
        if k in ("type", "model", "rows"):
            continue
        _flatten(f"target/{k}", v, p)
    ep = target.endpoint
    if ep is not None:
        p["target/model_id"] = ep.model_id
        p["target/url"] = ep.url
        for k in ("format", "api_key_env"):
            if getattr(ep, k):
                p[f"target/{k}"] = str(getattr(ep, k))
        model = tgt.get("model")
        if isinstance(model, Mapping) and model.get("prompt"):
            _flatten("target/prompt", model["prompt"], p)
    elif isinstance(target.model, str):
        p["target/model"] = target.model
    if target.rows is not None:
        p["target/rows"] = str(len(target.rows))
    for tname, task in (cfg.get("tasks") or {}).items():
        tp = f"task/{tname}"
        p[f"{tp}/type"] = str(task.get("type"))
        ds = task.get("dataset")
        if isinstance(ds, Mapping):
            _flatten(f"{tp}/dataset", ds, p)
        elif isinstance(ds, str):
            p[f"{tp}/dataset"] = ds
        tparams = dict(task.get("params") or {})
        template = tparams.pop("template", None)
        if isinstance(template, Mapping):
            p[f"{tp}/template_sha256"] = sha256_json(template)
            for k, v in template.items():
                if k not in ("messages", "prompt"):
                    _flatten(f"{tp}/inference/{k}", v, p)
        _flatten(f"{tp}/params", tparams, p)
        for k, v in task.items():
            if k not in ("type", "dataset", "params", "metrics"):
                _flatten(f"{tp}/{k}", v, p)
        for mname, metric in (task.get("metrics") or {}).items():
            mp = f"{tp}/metric/{mname}"
            p[f"{mp}/type"] = str(metric.get("type"))
            mparams = dict(metric.get("params") or {})
            model = mparams.pop("model", None)
            if isinstance(model, Mapping):
                jep = model.get("api_endpoint") or {}
                for k, v in jep.items():
                    _flatten(f"{mp}/judge/{k}", v, p)
                for k, v in model.items():
                    if k != "api_endpoint":
                        _flatten(f"{mp}/judge/{k}", v, p)
            elif isinstance(model, str):
                p[f"{mp}/judge/model"] = model
            jt = mparams.pop("template", None)
            if jt is not None:
                p[f"{mp}/template_sha256"] = sha256_json(jt)
            scores = mparams.pop("scores", None)
            if isinstance(scores, Mapping):
                for sname, s in scores.items():
                    _flatten(f"{mp}/score/{sname}", s, p)
            _flatten(f"{mp}/params", mparams, p)
    _flatten("groups", cfg.get("groups"), p)
    for d in datasets:
        p[f"task/{d.task}/dataset/digest"] = d.digest
        if d.num_rows is not None:
            p[f"task/{d.task}/dataset/num_rows"] = str(d.num_rows)
    return {sanitize_key(k): v for k, v in p.items()}


def split_long_params(params: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Params longer than MLflow's 6000 chars go to ``nemo_judge/params/<key>.txt``; the param then
    names that artifact (MLflow would otherwise truncate them silently)."""
    short: dict[str, str] = {}
    files: dict[str, str] = {}
    for k, v in params.items():
        if len(v) > MAX_PARAM_VALUE:
            rel = f"params/{k}.txt"
            files[rel] = v
            short[k] = f"see artifact {ART_DIR}/{rel} ({len(v)} chars, sha256 " \
                       f"{hashlib.sha256(v.encode('utf-8')).hexdigest()[:12]})"
        else:
            short[k] = v
    return short, files


# ----------------------------------------------------------------------------------------- prompts


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _template_markdown(template: Any) -> list[str]:
    lines: list[str] = []
    if isinstance(template, Mapping):
        for i, msg in enumerate(template.get("messages") or []):
            role = msg.get("role", "?") if isinstance(msg, Mapping) else "?"
            content = msg.get("content", "") if isinstance(msg, Mapping) else msg
            text = content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False)
            f = _fence(text)
            lines += [f"### message {i + 1}: {role}", "", f"{f}jinja", text, f, ""]
        if "prompt" in template:
            text = _scalar(template["prompt"])
            f = _fence(text)
            lines += ["### prompt", "", f"{f}jinja", text, f, ""]
        rest = {k: v for k, v in template.items() if k not in ("messages", "prompt")}
        if rest:
            lines += ["### request settings", "", "| key | value |", "|---|---|"]
            lines += [f"| `{k}` | `{_scalar(v)}` |" for k, v in rest.items()]
            lines.append("")
    else:
        text = _scalar(template)
        f = _fence(text)
        lines += [f"{f}jinja", text, f, ""]
    return lines


def prompt_documents(config: EvalConfig) -> dict[str, str]:
    """Each prompt template as readable markdown, keyed by path under ``nemo_judge/`` (from the redacted
    config, so nothing secret can appear)."""
    docs: dict[str, str] = {}
    cfg = config.redacted()
    for tname, task in (cfg.get("tasks") or {}).items():
        template = (task.get("params") or {}).get("template")
        base = f"prompts/{_safe_name(tname)}"
        if template is not None:
            lines = [f"# Target prompt — task `{tname}`", "",
                     f"sha256 `{sha256_json(template)}`; rendered with Jinja2 per dataset row (`item.<field>`).", ""]
            docs[f"{base}/target.md"] = "\n".join(lines + _template_markdown(template))
        for mname, metric in (task.get("metrics") or {}).items():
            mparams = metric.get("params") or {}
            jt = mparams.get("template")
            if jt is None:
                continue
            lines = [f"# Judge prompt — metric `{mname}` of task `{tname}`", "",
                     f"sha256 `{sha256_json(jt)}`; metric type `{metric.get('type')}`.", ""]
            model = mparams.get("model")
            if isinstance(model, Mapping):
                jep = model.get("api_endpoint") or {}
                lines += [f"Judge model `{jep.get('model_id')}` at `{jep.get('url')}`.", ""]
                prompt = model.get("prompt") or {}
                if prompt.get("system_prompt"):
                    sp = str(prompt["system_prompt"])
                    f = _fence(sp)
                    lines += ["### prompt.system_prompt (sent first)", "", f"{f}text", sp, f, ""]
            lines += _template_markdown(jt)
            scores = mparams.get("scores")
            if isinstance(scores, Mapping) and scores:
                lines += ["### scores", "", "| score | type | parser |", "|---|---|---|"]
                for sname, s in scores.items():
                    s = s if isinstance(s, Mapping) else {}
                    parser = s.get("parser") or {}
                    lines.append(f"| `{sname}` | {s.get('type', '')} | `{_scalar(parser)}` |")
                lines.append("")
            docs[f"{base}/{_safe_name(mname)}.md"] = "\n".join(lines)
    return docs


def describe_run(config: EvalConfig, target: Target, datasets: Sequence[DatasetInfo], backend: str) -> str:
    """The run's markdown description: what was evaluated, with which judges, on which data."""
    cfg = config.redacted()
    ep = target.endpoint
    if ep is not None:
        what = f"the model `{ep.model_id}` served at `{ep.url}`"
    elif isinstance(target.model, str):
        what = f"the model `{target.model}`"
    else:
        what = f"the outputs in the `{target.type}` target `{target.display_name}`"
    lines = [f"Evaluation of {what} with the NeMo Evaluator config **{config.display_name}** "
             f"(sha256 `{config.sha256()[:12]}`) on the `{backend}` backend, by mlflow-nemo-judge.", "",
             "| task | type | data | rows | metrics (judge) |", "|---|---|---|---|---|"]
    by_task = {d.task: d for d in datasets}
    for tname, task in (cfg.get("tasks") or {}).items():
        d = by_task.get(tname)
        data = f"`{d.files_url}`" if d and d.files_url else (d.name if d else "")
        rows = str(d.num_rows) if d and d.num_rows is not None else (f"≤{d.limit}" if d and d.limit else "")
        mets = []
        for mname, metric in (task.get("metrics") or {}).items():
            model = (metric.get("params") or {}).get("model")
            judge = ""
            if isinstance(model, Mapping):
                judge = f" by `{(model.get('api_endpoint') or {}).get('model_id')}`"
            elif isinstance(model, str):
                judge = f" by `{model}`"
            mets.append(f"{mname} ({metric.get('type')}{judge})")
        lines.append(f"| {tname} | {task.get('type')} | {data} | {rows} | {', '.join(mets)} |")
    lines += ["", f"Artifacts: `{ART_CONFIG}`, `{ART_TARGET}` (secrets redacted), `{ART_DIR}/prompts/`, "
                  f"`{ART_RESULTS}` (NeMo results shape), per-sample table `{ART_TABLE}`, plots."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- metrics


@dataclass
class ScoreMetric:
    key: str
    value: float
    task: str | None  # None for group scores
    headline: bool


def score_metrics(result: EvalResult) -> list[ScoreMetric]:
    """``<task>/<metric>/<score>`` = mean (NaN when every sample was NaN) plus the stats keys; group
    scores go under ``groups/<group>/…`` so they cannot collide with a task of the same name."""
    out: list[ScoreMetric] = []

    def emit(prefix: str, tree: Mapping[str, Any], is_task: bool) -> None:
        for name, metrics in tree.items():
            for metric, scores in metrics.items():
                for sname, sc in scores.items():
                    key = sanitize_key(f"{prefix}{name}/{metric}/{sname}")
                    out.append(ScoreMetric(key, float("nan") if sc.value is None else float(sc.value),
                                           name if is_task else None, True))
                    if sc.stats is None:
                        continue
                    for stat in STATS:
                        v = getattr(sc.stats, stat)
                        if v is not None:
                            out.append(ScoreMetric(f"{key}/{stat}", float(v), name if is_task else None, False))

    emit("", result.tasks, True)
    emit("groups/", result.groups, False)
    return out


def usage_metrics(usage: Usage) -> dict[str, float]:
    return {f"usage/{k}": float(v) for k, v in usage.to_dict().items()}


# ------------------------------------------------------------------------------------ sample table


def template_fields(config: EvalConfig) -> dict[str, set[str] | None]:
    """Per task, the (normalised) row fields its templates read, so the table shows the inputs the
    prompts used rather than every column of the dataset; None when templates could not be parsed."""
    from jinja2 import nodes

    from mlflow_nemo_judge.templating import environment

    env = environment()
    out: dict[str, set[str] | None] = {}

    def strings(o: Any) -> Iterator[str]:
        if isinstance(o, str):
            yield o
        elif isinstance(o, Mapping):
            for k, v in o.items():
                if str(k) != "model":
                    yield from strings(v)
        elif isinstance(o, list):
            for v in o:
                yield from strings(v)

    for tname, task in (config.tasks or {}).items():
        used: set[str] = set()
        ok = True
        sources = [task.params or {}] + [m.params or {} for m in (task.metrics or {}).values()]
        for src in sources:
            for s in strings(src):
                if "{" not in s:
                    continue
                try:
                    ast = env.parse(s)
                except Exception:
                    ok = False
                    continue
                for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
                    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) \
                            and node.node.name == "item":
                        used.add(node.attr)
                    elif isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) \
                            and node.node.name == "item" and isinstance(node.arg, nodes.Const):
                        used.add(str(node.arg.value))
                    elif isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in ("item", "sample"):
                        used.add(node.name)
        out[tname] = used if ok and used else None
    return out


def table_row(rec: SampleRecord, fields: set[str] | None) -> dict[str, Any]:
    """One row of the per-sample table: ids, the inputs the templates used, the target output, and per
    metric its parsed score(s) (None where unparseable), the raw judge text and the error."""
    from mlflow_nemo_judge.templating import normalize_key

    row: dict[str, Any] = {"task": rec.task, "index": rec.index, "item_id": rec.item_id}
    for k, v in rec.item.items():
        if fields is None or normalize_key(str(k)) in fields or str(k) in fields:
            # Nested values as JSON text: a table column must have one type for the UI and pandas.
            row[f"item.{k}"] = v if v is None or isinstance(v, (str, int, float, bool)) else \
                json.dumps(v, ensure_ascii=False, default=str)
    row["output_text"] = rec.output_text
    row["target_error"] = rec.target_error
    for mname, outcome in rec.metrics.items():
        for sname, value in outcome.scores.items():
            row[f"{mname}/{sname}"] = None if value is None or math.isnan(value) else value
        row[f"{mname}/raw_judge_output"] = outcome.raw
        row[f"{mname}/error"] = outcome.error
    return row


# ---------------------------------------------------------------------------------------- sessions


@contextlib.contextmanager
def tracking_scope(uri: str | None) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the duration and restore what was there before.

    The run itself goes through ``MlflowClient(uri)``, but LoggedModel creation and model registration
    only exist as fluent functions, which read the process-wide URI. Without ``uri``, MLflow's own
    resolution applies (``MLFLOW_TRACKING_URI``, else its default local store).
    """
    if uri is None:
        yield
        return
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # Restore exactly: the process-wide value (None when never set) and the env var, which
    # set_tracking_uri also writes. Restoring "whatever get_tracking_uri() said" would pin the env's
    # value process-wide and shadow later changes of MLFLOW_TRACKING_URI.
    previous = getattr(tracking_utils, "_tracking_uri", None)
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it (see its source)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def current_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI runs go to: ``uri`` if given, else MLflow's own resolution (for messages)."""
    if uri:
        return uri
    import mlflow

    return str(mlflow.get_tracking_uri())


def client(uri: str | None = None) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def resolve_experiment(cl: Any, experiment: str | None) -> str:
    """The experiment id for ``experiment`` (created if missing); without a name, MLflow's own choice:
    ``MLFLOW_EXPERIMENT_ID`` / ``MLFLOW_EXPERIMENT_NAME``, else the Default experiment ("0")."""
    from mlflow.exceptions import MlflowException

    if experiment is None:
        env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if env_id:
            return env_id
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if not experiment:
            return "0"
    exp = cl.get_experiment_by_name(experiment)
    if exp is None:
        try:
            return str(cl.create_experiment(experiment))
        except MlflowException:
            exp = cl.get_experiment_by_name(experiment)  # created concurrently by another process
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow experiment {experiment!r} is deleted; restore it (mlflow experiments restore) "
                            "or choose another --experiment")
    return str(exp.experiment_id)


def _quote(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_runs(cl: Any, experiment_id: str, tags: Mapping[str, str], *, status: str | None = "FINISHED",
              max_results: int = 50) -> list[Any]:
    """Runs of the experiment carrying all ``tags`` (newest first), e.g. an earlier identical evaluation."""
    clauses = [f"tags.`{k}` = {_quote(v)}" for k, v in tags.items()]
    if status:
        clauses.append(f"attributes.status = '{status}'")
    return list(cl.search_runs([experiment_id], " AND ".join(clauses), max_results=max_results,
                               order_by=["attributes.start_time DESC"]))


def get_run(cl: Any, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return cl.get_run(run_id)
    except MlflowException as exc:
        raise TrackingError(f"MLflow run {run_id} not found at {cl.tracking_uri}: {exc.message}") from None


def download_json(cl: Any, run_id: str, path: str) -> Any:
    """An artifact parsed as JSON, or None if the run does not have it."""
    with tempfile.TemporaryDirectory() as tmp:
        local = _download(cl, run_id, path, tmp)
        if local is None:
            return None
        return json.loads(Path(local).read_text(encoding="utf-8"))


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a tqdm bar per download; for our small, frequent reads it is noise on the CLI's stderr.
    A value the user set explicitly is respected."""
    var = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if var in os.environ:
        yield
        return
    os.environ[var] = "false"
    try:
        yield
    finally:
        os.environ.pop(var, None)


def _download(cl: Any, run_id: str, path: str, dst: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        with _no_progress_bars():
            return str(cl.download_artifacts(run_id, path, dst))
    except (MlflowException, OSError):
        return None


def load_result(cl: Any, run: Any) -> EvalResult:
    """Rebuild the ``EvalResult`` of a finished run: the aggregate tree from ``results.json``, usage from
    the ``usage/…`` metrics, and the per-sample records from ``samples.jsonl`` (downloaded once)."""
    run_id = run.info.run_id
    doc = download_json(cl, run_id, ART_RESULTS)
    if doc is None:
        raise TrackingError(f"MLflow run {run_id} has no {ART_RESULTS}; it was not finished by mlflow-nemo-judge")
    m = run.data.metrics
    usage = Usage()
    for name in vars(usage):
        key = f"usage/{name}"
        if key in m:
            cur = getattr(usage, name)
            setattr(usage, name, type(cur)(m[key]))
    samples_dir = Path(tempfile.mkdtemp(prefix="nemo-judge-run-"))
    local = _download(cl, run_id, ART_SAMPLES, str(samples_dir))
    res = EvalResult.from_nemo_dict(doc, usage=usage, samples_path=Path(local) if local else None,
                                    backend=run.data.tags.get(TAG_BACKEND, "local"))
    res.run_ids = [run_id]
    return res


def load_samples_frame(run_id: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The per-sample rows of a run: the logged table, or the JSONL file for runs too big for a table."""
    import pandas as pd

    cl = client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = _download(cl, run_id, ART_TABLE, tmp)
        if local is not None:
            return pd.read_json(local, orient="split", dtype=False)
        local = _download(cl, run_id, ART_SAMPLES, tmp)
        if local is None:
            raise TrackingError(f"MLflow run {run_id} has no per-sample table ({ART_TABLE} or {ART_SAMPLES})")
        rows = []
        with open(local, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rows.append(table_row(SampleRecord.from_dict(json.loads(line)), set()))
        return pd.DataFrame(rows)


def load_results_tree(run_id: str, tracking_uri: str | None = None) -> EvalResult:
    doc = download_json(client(tracking_uri), run_id, ART_RESULTS)
    if doc is None:
        raise TrackingError(f"MLflow run {run_id} has no {ART_RESULTS}")
    return EvalResult.from_nemo_dict(doc)


@dataclass
class RunSummary:
    """A run as compare needs it: identity, status, tags and latest metric values."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int
    tags: dict[str, str]
    metrics: dict[str, float]


def fetch_runs(experiment: str | None = None, run_ids: Sequence[str] | None = None,
               tracking_uri: str | None = None) -> list[RunSummary]:
    """The mlflow-nemo-judge runs of an experiment (or the given runs), newest first."""
    cl = client(tracking_uri)
    runs: list[Any] = []
    if run_ids:
        runs = [get_run(cl, r) for r in run_ids]
    else:
        exp = cl.get_experiment_by_name(experiment) if experiment else None
        if experiment and exp is None:
            raise TrackingError(f"MLflow experiment {experiment!r} not found at {cl.tracking_uri}")
        exp_id = exp.experiment_id if exp is not None else resolve_experiment(cl, None)
        token = None
        while True:
            page = cl.search_runs([exp_id], f"tags.`{TAG_CONFIG_SHA}` != ''", max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    return [RunSummary(run_id=r.info.run_id, run_name=r.info.run_name or "", experiment_id=r.info.experiment_id,
                       status=r.info.status, start_time=int(r.info.start_time or 0), tags=dict(r.data.tags),
                       metrics=dict(r.data.metrics)) for r in runs]


# -------------------------------------------------------------------------------------- datasets


def _dataset_source(info: DatasetInfo) -> Any:
    """A DatasetSource MLflow can store: the resolved local path or URL; ``hf://datasets/ns/name`` (a
    NeMo Data Store or the Hub) as a Hugging Face source; anything else as a code source naming it."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

    url = info.source or info.files_url
    if not url:
        return CodeDatasetSource(tags={"mlflow.source.name": info.name})
    if url.startswith(("http://", "https://")):
        return HTTPDatasetSource(url)
    if url.startswith("hf://"):
        parts = url[len("hf://"):].split("/")
        if parts and parts[0] == "datasets":
            parts = parts[1:]
        repo = "/".join(parts[:2])
        rest = "/".join(p for p in parts[2:] if p)
        return HuggingFaceDatasetSource(path=repo or url, data_files=rest or None)
    try:
        with warnings.catch_warnings():
            # A local path matches both the "" and "file" scheme sources MLflow registers; same class.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            return resolve_dataset_source(url)
    except Exception:
        return CodeDatasetSource(tags={"mlflow.source.name": url})


def _mlflow_dataset(info: DatasetInfo) -> Any:
    from mlflow.data.meta_dataset import MetaDataset

    source = _dataset_source(info)
    if info.rows:
        import pandas as pd
        from mlflow.data.pandas_dataset import from_pandas

        df = pd.DataFrame([{k: v if v is None or isinstance(v, (str, int, float, bool)) else
                            json.dumps(v, ensure_ascii=False, default=str) for k, v in r.items()}
                           for r in info.rows])
        try:
            return from_pandas(df, source=source, name=info.name, digest=info.digest)
        except Exception as exc:  # schema inference on odd columns must not fail the run
            logger.debug("from_pandas failed (%s); logging dataset metadata only", exc)
    return MetaDataset(source=source, name=info.name, digest=info.digest)  # type: ignore[abstract]


# --------------------------------------------------------------------------------------- the run


@dataclass
class ModelSpec:
    """The model under test as an external LoggedModel (one per target per experiment)."""

    name: str
    target_sha256: str
    params: dict[str, str]
    model_type: str = "llm"


def model_spec(target: Target) -> ModelSpec:
    ep = target.endpoint
    params: dict[str, str] = {"target_type": target.type}
    if ep is not None:
        params.update({"endpoint_url": ep.url, "model_id": ep.model_id})
        if ep.format:
            params["format"] = ep.format
        model_type = "llm"
    else:
        if isinstance(target.model, str):
            params["model"] = target.model
        for k in ("dataset", "cached_outputs"):
            ref = getattr(target, k)
            if ref is not None:
                params["files_url"] = ref if isinstance(ref, str) else ref.files_url
        if target.rows is not None:
            params["rows"] = str(len(target.rows))
        model_type = "llm" if isinstance(target.model, str) else "outputs"
    return ModelSpec(name=logged_model_name(target.display_name), target_sha256=target.sha256(),
                     params={k: v[:MAX_PARAM_VALUE] for k, v in params.items()}, model_type=model_type)


class _ProgressLogger:
    """Logs ``progress`` (0-100) from a background thread at most once per ``interval``.

    The engine calls back from its event loop for every finished sample; a synchronous MLflow call there
    (5-50 ms) would stall every in-flight request, so the callback only records numbers and this thread
    does the I/O. A failed progress write is logged and ignored: progress must never fail a run.
    """

    def __init__(self, cl: Any, run_id: str, n_tasks: int, step0: int, interval: float = PROGRESS_INTERVAL) -> None:
        self.cl, self.run_id, self.n_tasks = cl, run_id, max(1, n_tasks)
        self.step = step0
        self.interval = interval
        self._state: dict[str, tuple[int, int | None]] = {}
        self._lock = threading.Lock()
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, task: str, done: int, total: int | None) -> None:
        with self._lock:
            self._state[task] = (done, total)
            self._dirty = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="nemo-judge-progress", daemon=True)
            self._thread.start()

    def percent(self) -> float:
        with self._lock:
            fractions = [min(1.0, d / t) if t else 0.0 for d, t in self._state.values()]
        return 100.0 * sum(fractions) / max(self.n_tasks, len(fractions))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
        from mlflow.entities import Metric

        try:
            self.cl.log_batch(self.run_id, metrics=[Metric("progress", self.percent(), _now_ms(), self.step)])
            self.step += 1
        except Exception as exc:
            logger.warning("could not log progress to MLflow run %s: %s", self.run_id, exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RunTracker:
    """One MLflow run's lifecycle: created RUNNING before the first model call, ended FINISHED, FAILED
    (with a redacted traceback artifact) or KILLED."""

    cl: Any
    run_id: str
    experiment_id: str
    secrets: list[str] = field(default_factory=list)
    n_tasks: int = 1
    model_id: str | None = None
    _progress: _ProgressLogger | None = None

    # -- creation ------------------------------------------------------------------------------

    @classmethod
    def create(cls, cl: Any, experiment_id: str, *, run_name: str, description: str, tags: Mapping[str, str],
               parent_run_id: str | None = None, secrets: Sequence[str] = (), n_tasks: int = 1) -> RunTracker:
        all_tags = {**_context_tags(), **tags, TAG_STATE: "running", "mlflow.note.content": description}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        all_tags = {k: redact_text(v, secrets) for k, v in all_tags.items()}
        run = cl.create_run(experiment_id, run_name=run_name, tags=all_tags)
        return cls(cl, run.info.run_id, experiment_id, list(secrets), n_tasks)

    @classmethod
    def reopen(cls, cl: Any, run: Any, *, secrets: Sequence[str] = (), n_tasks: int = 1) -> RunTracker:
        """Continue an interrupted run in place (MLflow allows RUNNING again on any run)."""
        tags = run.data.tags
        tr = cls(cl, run.info.run_id, run.info.experiment_id, list(secrets), n_tasks, tags.get(TAG_MODEL_ID))
        cl.update_run(tr.run_id, status="RUNNING")
        tr.set_tags({TAG_STATE: "running", TAG_RESUMES: str(int(tags.get(TAG_RESUMES, "0")) + 1)})
        tr.set_tags({TAG_ERROR: ""} if tags.get(TAG_ERROR) else {})
        return tr

    # -- small writes ----------------------------------------------------------------------------

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if not tags:
            return
        from mlflow.entities import RunTag

        self.cl.log_batch(self.run_id, tags=[RunTag(k, redact_text(str(v), self.secrets)[:MAX_TAG_VALUE])
                                             for k, v in tags.items()])

    def log_files(self, files: Mapping[str, str | bytes | Path]) -> None:
        """Stage ``{relative path: content}`` in a temp dir and upload it under ``nemo_judge/`` in one go."""
        if not files:
            return
        with tempfile.TemporaryDirectory(prefix="nemo-judge-art-") as tmp:
            for rel, content in files.items():
                dst = Path(tmp) / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, Path):
                    shutil.copyfile(content, dst)
                elif isinstance(content, bytes):
                    dst.write_bytes(content)
                else:
                    dst.write_text(redact_text(content, self.secrets), encoding="utf-8")
            self.cl.log_artifacts(self.run_id, tmp, ART_DIR)

    def log_params(self, params: Mapping[str, str], existing: Mapping[str, str] | None = None) -> list[str]:
        """Log ``params``; with ``existing`` (a resumed run) only the missing ones, since MLflow refuses to
        change a param. Returns the keys skipped because their recorded value differs."""
        from mlflow.entities import Param

        existing = existing or {}
        todo = {k: v for k, v in params.items() if k not in existing}
        differing = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
        if todo:
            self.cl.log_batch(self.run_id, params=[Param(k, redact_text(v, self.secrets)) for k, v in todo.items()])
        return differing

    # -- setup (before the first model call) ------------------------------------------------------

    def log_setup(self, *, config: EvalConfig, target: Target, params: Mapping[str, str],
                  datasets: Sequence[DatasetInfo], model: ModelSpec | None,
                  existing_params: Mapping[str, str] | None = None, setup_done: bool = False) -> None:
        """Config, target, prompts, params, dataset inputs and the LoggedModel, before any model call.

        On a resumed run whose setup completed, only params missing from ``existing_params`` are logged:
        the artifacts are already there and inputs logged twice would show twice in the UI.
        """
        short, long_files = split_long_params(params)
        if not setup_done:
            files: dict[str, str | bytes | Path] = {
                "config.json": json.dumps(config.redacted(), indent=2, ensure_ascii=False),
                "target.json": json.dumps(target.redacted(), indent=2, ensure_ascii=False),
                **prompt_documents(config), **long_files}
            self.log_files(files)
        skipped = self.log_params(short, existing_params)
        if skipped:
            logger.warning("MLflow run %s: %d param(s) differ from the recorded values and were kept as recorded: "
                           "%s", self.run_id, len(skipped), ", ".join(skipped[:10]))
            self.set_tags({TAG_SKIPPED_PARAMS: ",".join(skipped)[:MAX_TAG_VALUE]})
        if setup_done:
            return
        if model is not None and self.model_id is None:
            self.model_id = self._logged_model(model)
        self._log_inputs(datasets)
        tags = {TAG_SETUP: "true"}
        if self.model_id:
            tags[TAG_MODEL_ID] = self.model_id
        self.set_tags(tags)

    def _logged_model(self, spec: ModelSpec) -> str:
        """One external LoggedModel per target per experiment, so repeated evaluations of the same model
        accumulate their scores on it (the UI's Models tab compares them)."""
        import mlflow

        found = self.cl.search_logged_models(
            experiment_ids=[self.experiment_id],
            filter_string=f"tags.`{TAG_TARGET_SHA}` = {_quote(spec.target_sha256)}", max_results=1)
        if found:
            return str(found[0].model_id)
        m = mlflow.create_external_model(name=spec.name, source_run_id=self.run_id,
                                         tags={TAG_TARGET_SHA: spec.target_sha256},
                                         params=spec.params, model_type=spec.model_type,
                                         experiment_id=self.experiment_id)
        return str(m.model_id)

    def _log_inputs(self, datasets: Sequence[DatasetInfo]) -> None:
        from mlflow.entities import DatasetInput, InputTag, LoggedModelInput

        inputs = []
        seen: set[tuple[str, str]] = set()
        for d in datasets:
            if (d.name, d.digest) in seen:
                continue
            seen.add((d.name, d.digest))
            tags = [InputTag("mlflow.data.context", "evaluation"), InputTag("task", d.task[:500])]
            if d.files_url and len(d.files_url) <= 500:
                tags.append(InputTag("files_url", d.files_url))
            inputs.append(DatasetInput(_mlflow_dataset(d)._to_mlflow_entity(), tags=tags))
        models = [LoggedModelInput(self.model_id)] if self.model_id else []
        if inputs or models:
            self.cl.log_inputs(self.run_id, datasets=inputs, models=models)

    # -- while running ----------------------------------------------------------------------------

    def progress_callback(self) -> _ProgressLogger:
        if self._progress is None:
            step0 = len(self.cl.get_metric_history(self.run_id, "progress"))
            self._progress = _ProgressLogger(self.cl, self.run_id, self.n_tasks, step0)
        return self._progress

    def on_job(self, job: Mapping[str, Any]) -> None:
        """Called by the nemo backend once its remote job exists, so the id is on the run before waiting."""
        jid = job.get("id") if isinstance(job, Mapping) else None
        if jid:
            self.set_tags({TAG_JOB_ID: str(jid)})
        self.log_files({"job.json": json.dumps(_redact_obj(job), indent=2, default=str)})

    def _stop_progress(self) -> int:
        if self._progress is None:
            return len(self.cl.get_metric_history(self.run_id, "progress"))
        self._progress.close()
        return self._progress.step

    # -- endings ------------------------------------------------------------------------------------

    def finish(self, result: EvalResult, *, config: EvalConfig, datasets: Sequence[DatasetInfo],
               table_max_rows: int = DEFAULT_TABLE_MAX_ROWS, plots: bool = True,
               trace_samples: int = DEFAULT_TRACE_SAMPLES, judge_models: Mapping[tuple[str, str], str] | None = None
               ) -> None:
        from mlflow.entities import Metric

        step = self._stop_progress()
        ts = _now_ms()
        by_task = {d.task: d for d in datasets}
        metrics = []
        for sm in score_metrics(result):
            d = by_task.get(sm.task) if sm.task else None
            link = sm.headline and self.model_id is not None
            metrics.append(Metric(sm.key, sm.value, ts, 0, model_id=self.model_id if link else None,
                                  dataset_name=d.name if link and d else None,
                                  dataset_digest=d.digest if link and d else None))
        metrics += [Metric(k, v, ts, 0) for k, v in usage_metrics(result.usage).items()]
        metrics.append(Metric("progress", 100.0, ts, step))
        self.cl.log_batch(self.run_id, metrics=metrics)

        files: dict[str, str | bytes | Path] = {
            "results.json": json.dumps(result.to_nemo_dict(), indent=2, ensure_ascii=False)}
        if result.job:
            files["job.json"] = json.dumps(_redact_obj(result.job), indent=2, default=str)
        fields = template_fields(config)
        rows: list[dict[str, Any]] | None = []
        values: dict[tuple[str, str], dict[str, list[float | None]]] = {}
        n = 0
        for rec in result.iter_samples():
            n += 1
            for mname, outcome in rec.metrics.items():
                per = values.setdefault((rec.task, mname), {})
                for sname, v in outcome.scores.items():
                    per.setdefault(sname, []).append(v)
            if rows is not None:
                row = table_row(rec, fields.get(rec.task))
                if self.secrets:  # an error message may quote a key back
                    row = {k: redact_text(v, self.secrets) if isinstance(v, str) else v for k, v in row.items()}
                rows.append(row)
                if len(rows) > table_max_rows:
                    rows = None  # too big for a UI table: the JSONL file is the per-sample record
        with tempfile.TemporaryDirectory(prefix="nemo-judge-plots-") as tmp:
            if result.samples_path is not None and Path(result.samples_path).exists():
                files["samples.jsonl"] = self._redacted_copy(Path(result.samples_path), Path(tmp) / "samples.jsonl")
            if plots and values:
                from mlflow_nemo_judge import plots as plt

                for (task, mname), per in values.items():
                    rel = f"plots/{_safe_name(task)}/{_safe_name(mname)}.png"
                    files[rel] = plt.score_distribution(f"{task} / {mname}", per, Path(tmp) / rel)
            self.log_files(files)
        samples_kind = "none"
        if rows:
            import pandas as pd

            df = pd.DataFrame(rows)
            self._log_table(df, ART_TABLE)
            samples_kind = "table"
        elif n:
            samples_kind = "jsonl"
        tags = {TAG_SAMPLES: samples_kind}
        if trace_samples > 0 and n:
            tags[TAG_TRACES] = str(self._log_traces(result, trace_samples, judge_models or {}))
        tags[TAG_STATE] = "finished"
        self.set_tags(tags)
        self._terminate("FINISHED")

    def _terminate(self, status: str) -> None:
        """End the run. Against a server, MLflow prints "View run … at …" to stdout here, which would
        corrupt the CLI's ``--output json``; the run id is reported by our callers instead."""
        var = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
        if var in os.environ:
            self.cl.set_terminated(self.run_id, status)
            return
        os.environ[var] = "true"
        try:
            self.cl.set_terminated(self.run_id, status)
        finally:
            os.environ.pop(var, None)

    def _redacted_copy(self, src: Path, dst: Path) -> Path:
        """The samples file as uploaded: a failed call's error text could quote a key back; mask it."""
        if not self.secrets:
            return src
        with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
            for line in fin:
                fout.write(redact_text(line, self.secrets))
        return dst

    def _log_table(self, df: pd.DataFrame, path: str) -> None:
        """``log_table`` appends when the file exists (a resume after a crash during finish); the table
        must be replaced instead, so then the file is overwritten in the same format."""
        existing = {f.path for f in self.cl.list_artifacts(self.run_id, ART_DIR)}
        if path not in existing:
            self.cl.log_table(self.run_id, df, path)
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            df.to_json(local, orient="split", index=False, date_format="iso")
            self.cl.log_artifact(self.run_id, str(local), str(Path(path).parent))

    def log_parent_setup(self, config: EvalConfig, targets: Sequence[Target], params: Mapping[str, str]) -> None:
        """A parent run records the shared config (params without the per-target ones) and the list of
        targets, which is what resuming the parent needs to find or re-create its children."""
        short, long_files = split_long_params({k: v for k, v in params.items()
                                               if not k.startswith(("target/", "target_sha256"))})
        short["targets"] = ", ".join(t.display_name for t in targets)[:MAX_PARAM_VALUE]
        self.log_files({"config.json": json.dumps(config.redacted(), indent=2, ensure_ascii=False),
                        "targets.json": json.dumps([t.redacted() for t in targets], indent=2, ensure_ascii=False),
                        **prompt_documents(config), **long_files})
        self.log_params(short)

    def mark_finished(self) -> None:
        self._stop_progress()
        self.set_tags({TAG_STATE: "finished"})
        self._terminate("FINISHED")

    def log_comparison(self, df: pd.DataFrame, chart: Path | None) -> None:
        """On a parent run: the cross-target leaderboard as a table and its chart."""
        self._log_table(df, ART_COMPARISON)
        if chart is not None:
            self.log_files({"plots/comparison.png": chart})

    def _log_traces(self, result: EvalResult, limit: int, judge_models: Mapping[tuple[str, str], str]) -> int:
        """One trace per sample (up to ``limit``) for MLflow 3's Traces / evaluation views: the inputs, the
        target call and each judge call as spans, and one Feedback per score (the judge's raw text as
        rationale; an unparseable score is a Feedback carrying the error, not a value), linked to the run
        and the LoggedModel through the trace metadata.

        Traces are a view, not the record (the table and JSONL are): a failure here is logged and ignored.
        """
        samples: list[_TraceSample] = []
        for rec in result.iter_samples():
            if len(samples) >= limit:
                break
            samples.append(_trace_sample(rec, judge_models, self.secrets))
        if not samples:
            return 0
        try:
            writer = _BatchTraceWriter(self.cl.tracking_uri, self.experiment_id)
        except Exception as exc:  # internals moved in another MLflow version: use the public span API
            logger.debug("batched trace writer unavailable (%s); using the span API", exc)
            writer = None
        try:
            if writer is not None:
                return writer.write(samples, self.run_id, self.model_id)
            return _write_traces_with_spans(samples, self.experiment_id, self.run_id, self.model_id)
        except Exception as exc:
            logger.warning("could not log per-sample traces to MLflow run %s: %s", self.run_id, exc)
            return 0

    def fail(self, exc: BaseException) -> None:
        """FAILED, with the redacted traceback as an artifact and the message as a tag. Never raises:
        the original error is what the caller must see."""
        try:
            self._stop_progress()
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.cl.log_text(self.run_id, redact_text(text, self.secrets), ART_TRACEBACK)
            msg = redact_text(f"{type(exc).__name__}: {exc}", self.secrets)
            if len(msg) > MAX_TAG_VALUE - 200:
                msg = msg[: MAX_TAG_VALUE - 200] + f" … (truncated; full text in {ART_TRACEBACK})"
            self.set_tags({TAG_STATE: "failed", TAG_ERROR: msg})
            self._terminate("FAILED")
        except Exception as log_exc:
            logger.warning("could not record the failure on MLflow run %s: %s", self.run_id, log_exc)

    def kill(self) -> None:
        """KILLED on Ctrl-C (MLflow itself would record FAILED)."""
        try:
            self._stop_progress()
            self.set_tags({TAG_STATE: "killed"})
            self._terminate("KILLED")
        except Exception as log_exc:
            logger.warning("could not mark MLflow run %s as KILLED: %s", self.run_id, log_exc)


# ------------------------------------------------------------------------------------------ traces


@dataclass
class _TraceSpan:
    name: str
    span_type: str
    inputs: Any
    outputs: Any
    error: str | None = None


@dataclass
class _TraceFeedback:
    name: str
    value: float | None
    error: str | None
    rationale: str | None
    judge: str | None  # the judge model id (LLM_JUDGE source); None for code metrics
    metadata: dict[str, str]
    span: int  # index of the span (in _TraceSample.spans) the score came from


@dataclass
class _TraceSample:
    name: str
    inputs: dict[str, Any]
    outputs: Any
    spans: list[_TraceSpan]
    feedbacks: list[_TraceFeedback]
    tags: dict[str, str]


def _trace_sample(rec: SampleRecord, judge_models: Mapping[tuple[str, str], str], secrets: Sequence[str]
                  ) -> _TraceSample:
    """What one sample's trace shows, independent of how it is written (and already redacted)."""
    spans: list[_TraceSpan] = []
    feedbacks: list[_TraceFeedback] = []
    if rec.request is not None or rec.output_text is not None or rec.target_error:
        spans.append(_TraceSpan("target", "CHAT_MODEL", _redact_strings(rec.request or {}, secrets),
                                _redact_strings(rec.output_text, secrets),
                                redact_text(rec.target_error, secrets) if rec.target_error else None))
    for mname, outcome in rec.metrics.items():
        judge = judge_models.get((rec.task, mname))
        spans.append(_TraceSpan(
            f"judge/{mname}" if judge else f"metric/{mname}", "LLM" if judge else "EVALUATOR",
            {"metric": mname, **({"judge_model": judge} if judge else {})},
            _redact_strings({"raw": outcome.raw, "scores": {k: None if math.isnan(v) else v
                                                            for k, v in outcome.scores.items()}}, secrets),
            redact_text(outcome.error, secrets) if outcome.error else None))
        rationale = redact_text(outcome.raw, secrets) if outcome.raw else None
        for sname, value in outcome.scores.items():
            nan = math.isnan(value)
            feedbacks.append(_TraceFeedback(
                name=mname if sname == mname else f"{mname}/{sname}", value=None if nan else value,
                error=redact_text(outcome.error or "no score", secrets) if nan else None, rationale=rationale,
                judge=judge, metadata={"task": rec.task, "metric": mname, "score": sname}, span=len(spans) - 1))
    return _TraceSample(name=f"{rec.task}/{rec.item_id}",
                        inputs=_redact_strings({"task": rec.task, "item_id": rec.item_id, "item": rec.item}, secrets),
                        outputs=_redact_strings(rec.output_text, secrets), spans=spans, feedbacks=feedbacks,
                        tags={"nemo_judge.task": rec.task[:250], "nemo_judge.item_id": rec.item_id[:250]})


def _feedback(fb: _TraceFeedback, trace_id: str | None, span_id: str | None) -> Any:
    from mlflow.entities import AssessmentSource, AssessmentSourceType, Feedback

    source = AssessmentSource(source_type=AssessmentSourceType.LLM_JUDGE, source_id=fb.judge) if fb.judge \
        else AssessmentSource(source_type=AssessmentSourceType.CODE, source_id="mlflow-nemo-judge")
    if fb.value is None:
        return Feedback(name=fb.name, error=fb.error, rationale=fb.rationale, source=source, trace_id=trace_id,
                        metadata=fb.metadata, span_id=span_id)
    return Feedback(name=fb.name, value=fb.value, rationale=fb.rationale, source=source, trace_id=trace_id,
                    metadata=fb.metadata, span_id=span_id)


def _preview(obj: Any, limit: int = 1000) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


class _BatchTraceWriter:
    """Writes finished traces in bulk: one ``start_trace`` per trace (its info, metadata and Feedbacks in
    one write) and one ``log_spans`` for the spans of many traces.

    MLflow's span API exports every span as it ends and then merges the trace info into the trace those
    spans created (~170 ms per 4-span trace on sqlite, measured); writing the info first and the spans
    in bulk costs ~25 ms per trace. It builds spans with an OpenTelemetry tracer that has no exporter and
    uses MLflow's tracing client, which are not public API; when they are missing, the constructor
    raises and the caller uses the span API instead.
    """

    SPAN_CHUNK = 500

    def __init__(self, tracking_uri: str, experiment_id: str) -> None:
        from mlflow.entities import TraceInfo, TraceLocation, TraceState
        from mlflow.entities.span import LiveSpan
        from mlflow.tracing.client import TracingClient
        from mlflow.tracing.constant import TRACE_REQUEST_ID_PREFIX
        from mlflow.tracing.utils import encode_trace_id
        from opentelemetry import trace as otel_trace
        from opentelemetry.sdk.trace import TracerProvider

        self._live, self._info, self._location, self._state = LiveSpan, TraceInfo, TraceLocation, TraceState
        self._otel = otel_trace
        self._trace_id = lambda otel_id: TRACE_REQUEST_ID_PREFIX + encode_trace_id(otel_id)
        self._tracer = TracerProvider().get_tracer("mlflow-nemo-judge")  # no processor: nothing auto-exported
        self._client = TracingClient(tracking_uri)
        self.experiment_id = experiment_id
        self.remote = tracking_uri.startswith(("http://", "https://"))

    def _span(self, name: str, span_type: str, trace_id: str, parent: Any, inputs: Any) -> tuple[Any, Any]:
        otel = self._tracer.start_span(name, context=self._otel.set_span_in_context(parent))
        live = self._live(otel, trace_id, span_type)
        live.set_inputs(inputs)
        return otel, live

    def write(self, samples: Sequence[_TraceSample], run_id: str, model_id: str | None) -> int:
        metadata = {"mlflow.sourceRun": run_id, "mlflow.trace_schema.version": "3"}
        if model_id:
            metadata["mlflow.modelId"] = model_id
        infos: list[Any] = []
        spans: list[Any] = []
        for sample in samples:
            start = time.time_ns()
            root = self._tracer.start_span(sample.name)
            trace_id = self._trace_id(root.get_span_context().trace_id)
            live_root = self._live(root, trace_id, "EVALUATOR")
            live_root.set_inputs(sample.inputs)
            span_ids: list[str] = []
            for sp in sample.spans:
                otel, live = self._span(sp.name, sp.span_type, trace_id, root, sp.inputs)
                live.set_outputs(sp.outputs)
                if sp.error:
                    live.set_attribute("error", sp.error)
                    live.set_status("ERROR")
                otel.end()
                span_ids.append(live.span_id)
                spans.append(live.to_immutable_span())
            live_root.set_outputs(sample.outputs)
            root.end()
            spans.append(live_root.to_immutable_span())
            infos.append(self._info(
                trace_id=trace_id, trace_location=self._location.from_experiment_id(self.experiment_id),
                request_time=start // 1_000_000, state=self._state.OK,
                execution_duration=max(0, (time.time_ns() - start) // 1_000_000),
                request_preview=_preview(sample.inputs), response_preview=_preview(sample.outputs),
                trace_metadata=dict(metadata), tags={"mlflow.traceName": sample.name[:250], **sample.tags},
                assessments=[_feedback(fb, trace_id, span_ids[fb.span]) for fb in sample.feedbacks]))
        # Trace infos first: then the spans attach to existing traces, MLflow's cheap path. A server
        # takes them concurrently (one round trip each, ~50 ms); a sqlite file serialises writes anyway.
        if self.remote and len(infos) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="nemo-judge-traces") as pool:
                list(pool.map(self._client.start_trace, infos))
        else:
            for info in infos:
                self._client.start_trace(info)
        for i in range(0, len(spans), self.SPAN_CHUNK):
            self._client.log_spans(self.experiment_id, spans[i:i + self.SPAN_CHUNK])
        return len(infos)


def _write_traces_with_spans(samples: Sequence[_TraceSample], experiment_id: str, run_id: str,
                             model_id: str | None) -> int:
    """The same traces through MLflow's public span API (slower; used when the batch writer is not)."""
    import mlflow

    metadata = {"mlflow.sourceRun": run_id, **({"mlflow.modelId": model_id} if model_id else {})}
    written: list[tuple[str, list[Any]]] = []
    for sample in samples:
        root = mlflow.start_span_no_context(name=sample.name, span_type="EVALUATOR", inputs=sample.inputs,
                                            experiment_id=experiment_id, metadata=metadata, tags=sample.tags)
        span_ids = []
        for sp in sample.spans:
            span = mlflow.start_span_no_context(name=sp.name, span_type=sp.span_type, parent_span=root,
                                                inputs=sp.inputs)
            if sp.error:
                span.set_attribute("error", sp.error)
                span.set_status("ERROR")
            span.end(outputs=sp.outputs)
            span_ids.append(span.span_id)
        root.end(outputs=sample.outputs)
        written.append((root.trace_id, [_feedback(fb, None, span_ids[fb.span]) for fb in sample.feedbacks]))
    mlflow.flush_trace_async_logging()
    for trace_id, feedbacks in written:
        for fb in feedbacks:
            mlflow.log_assessment(trace_id, fb)
    return len(written)


def _redact_strings(obj: Any, secrets: Sequence[str]) -> Any:
    """``obj`` with every string passed through ``redact_text`` (span inputs/outputs are free-form)."""
    if not secrets:
        return obj
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    if isinstance(obj, Mapping):
        return {k: _redact_strings(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact_strings(v, secrets) for v in obj]
    return obj


def _redact_obj(obj: Any) -> Any:
    from mlflow_nemo_judge.config import redact

    return redact(obj)


def _context_tags() -> dict[str, str]:
    """The user/source/git tags ``mlflow.start_run`` would add (``create_run`` adds none)."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        return {k: str(v) for k, v in resolve_tags().items()}
    except Exception:  # a broken third-party context provider must not stop the evaluation
        return {}


def register(model_id: str, name: str, *, tags: Mapping[str, str]) -> str:
    """Register the LoggedModel as a new version of ``name`` with the headline scores as version tags."""
    import mlflow

    mv = mlflow.register_model(f"models:/{model_id}", name, tags={k: str(v) for k, v in tags.items()})
    return str(mv.version)


def registered_version(model_id: str, name: str) -> str | None:
    """The version of ``name`` this LoggedModel is already registered as (MLflow records it on the
    model's ``mlflow.modelVersions`` tag), so a rerun does not add a duplicate version."""
    import mlflow

    try:
        tag = mlflow.get_logged_model(model_id).tags.get("mlflow.modelVersions")
        for entry in json.loads(tag) if tag else []:
            if entry.get("name") == name:
                return str(entry.get("version"))
    except Exception as exc:
        logger.debug("could not read registrations of %s: %s", model_id, exc)
    return None


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, version)


def set_run_tag(cl: Any, run_id: str, key: str, value: str) -> None:
    cl.set_tag(run_id, key, value)


def describe_parent(config: EvalConfig, names: Sequence[str], datasets: Sequence[DatasetInfo], backend: str) -> str:
    targets = ", ".join(f"`{n}`" for n in names)
    data = ", ".join(sorted({f"`{d.files_url}`" for d in datasets if d.files_url})) or "the targets' own rows"
    return (f"Comparison of {len(names)} targets ({targets}) under the NeMo Evaluator config "
            f"**{config.display_name}** (sha256 `{config.sha256()[:12]}`) on {data}, `{backend}` backend. "
            f"One child run per target (same config, same data); the leaderboard is `{ART_COMPARISON}` and "
            f"`{ART_DIR}/plots/comparison.png` (mean with 95% CI per score per target).")
