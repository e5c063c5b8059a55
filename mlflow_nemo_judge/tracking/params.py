"""Pure builders of what a run records: params, score metrics, per-sample table rows, the model spec.

No mlflow import: these turn a config, target and ``EvalResult`` into plain dicts and dataclasses, which
``runs.py`` then writes (and tests check without a tracking store).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow_nemo_judge.config import EvalConfig, Target, sha256_json
from mlflow_nemo_judge.config.references import references_of
from mlflow_nemo_judge.config.secrets import MASK, SECRET_KEYS, redact_url
from mlflow_nemo_judge.data.scan import DatasetInfo
from mlflow_nemo_judge.results import EvalResult, SampleRecord, Usage
from mlflow_nemo_judge.tracking.names import (
    ART_DIR,
    ITEM_PREFIX,
    MAX_PARAM_VALUE,
    STATS,
    column,
    logged_model_name,
    sanitize_key,
)

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


def build_params(
    config: EvalConfig,
    target: Target,
    *,
    backend: str,
    limit: int | None,
    parallelism: int | None,
    datasets: Sequence[DatasetInfo] = (),
) -> dict[str, str]:
    """The flattened, secret-free settings of one evaluation, keyed by sanitised param names.

    Built from the redacted dumps, so a secret cannot reach a param even through an unknown field;
    templates are not params (they are artifacts) but their sha256 are, so runs can be filtered by
    prompt version.
    """
    cfg = config.redacted()
    p: dict[str, str] = {
        "config_sha256": config.sha256(),
        "target_sha256": target.sha256(),
        "backend": backend,
        "config/name": config.display_name,
        "config/type": config.type,
        "target/type": target.type,
        "run/limit": str(limit) if limit else "none",
        "run/parallelism": _effective_parallelism(config, parallelism),
    }
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
        p["target/url"] = redact_url(ep.url)
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
    # What was given as a NeMo "namespace/name" (the content above is what it resolved to).
    for path, ref in {**references_of(config), **references_of(target)}.items():
        p[f"reference/{path}"] = ref
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


def _effective_parallelism(config: EvalConfig, parallelism: int | None) -> str:
    """The value the run used, not how it was set: the resolved value (the option, else the config's,
    else the default: what the local plan computes); without one (the nemo backend) the config's value
    it submits, else "service" (NeMo's own default)."""
    if parallelism:
        return str(parallelism)
    params = config.params
    configured = getattr(params, "parallelism", None) if params is not None else None
    return str(configured) if configured else "service"


def split_long_params(params: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Params longer than MLflow's 6000 chars go to ``nemo_judge/params/<key>.txt``; the param then
    names that artifact (MLflow would otherwise truncate them silently)."""
    short: dict[str, str] = {}
    files: dict[str, str] = {}
    for k, v in params.items():
        if len(v) > MAX_PARAM_VALUE:
            rel = f"params/{k}.txt"
            files[rel] = v
            short[k] = (
                f"see artifact {ART_DIR}/{rel} ({len(v)} chars, sha256 "
                f"{hashlib.sha256(v.encode('utf-8')).hexdigest()[:12]})"
            )
        else:
            short[k] = v
    return short, files


# ----------------------------------------------------------------------------------------- metrics


@dataclass
class ScoreMetric:
    key: str
    value: float
    task: str | None  # None for group scores
    headline: bool


def score_metrics(result: EvalResult) -> list[ScoreMetric]:
    """``<task>/<metric>/<score>`` = mean (NaN when every sample was NaN) plus the stats keys; group
    scores go under ``groups/<group>/…`` so they cannot collide with a task of the same name, nested
    groups under ``groups/<outer>/groups/<inner>/…``."""
    out: list[ScoreMetric] = []

    def emit(prefix: str, tree: Mapping[str, Any], is_task: bool) -> None:
        for name, metrics in tree.items():
            for metric, scores in metrics.items():
                for sname, sc in scores.items():
                    key = sanitize_key(f"{prefix}{name}/{metric}/{sname}")
                    out.append(
                        ScoreMetric(
                            key,
                            float("nan") if sc.value is None else float(sc.value),
                            name if is_task else None,
                            True,
                        )
                    )
                    if sc.stats is None:
                        continue
                    for stat in STATS:
                        v = getattr(sc.stats, stat)
                        if v is not None:
                            out.append(
                                ScoreMetric(f"{key}/{stat}", float(v), name if is_task else None, False)
                            )

    emit("", result.tasks, True)
    from mlflow_nemo_judge.group_tree import walk

    # Nested groups repeat the segment: groups/<outer>/groups/<inner>/<metric>/<score>[/<stat>]. A
    # group's own keys have 2-3 segments after its name, a subgroup's at least 4, so none can collide.
    nested = {"/groups/".join(path): metrics for path, metrics in walk(result.groups, result.subgroups)}
    emit("groups/", nested, False)
    return out


def usage_metrics(usage: Usage) -> dict[str, float]:
    return {f"usage/{k}": float(v) for k, v in usage.to_dict().items()}


# ------------------------------------------------------------------------------------ sample table


def template_fields(config: EvalConfig) -> dict[str, set[str] | None]:
    """Per task, the (normalised) row fields its templates read, so the table shows the inputs the
    prompts used rather than every column of the dataset; None when templates could not be parsed."""
    from jinja2 import nodes

    from mlflow_nemo_judge.scoring.templating import environment

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
        sources = [task.params_dict()] + [m.params_dict() for m in (task.metrics or {}).values()]
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
                    if (
                        isinstance(node, nodes.Getattr)
                        and isinstance(node.node, nodes.Name)
                        and node.node.name == "item"
                    ):
                        used.add(node.attr)
                    elif (
                        isinstance(node, nodes.Getitem)
                        and isinstance(node.node, nodes.Name)
                        and node.node.name == "item"
                        and isinstance(node.arg, nodes.Const)
                    ):
                        used.add(str(node.arg.value))
                    elif (
                        isinstance(node, nodes.Name)
                        and node.ctx == "load"
                        and node.name not in ("item", "sample")
                    ):
                        used.add(node.name)
        out[tname] = used if ok and used else None
    return out


def table_row(rec: SampleRecord, fields: set[str] | None) -> dict[str, Any]:
    """One row of the per-sample table, in the order a reader scans it: the item id, the target output
    and every parsed score (None where unparseable) first; then the human labels
    (``<metric>/<score>/human``) and, with repeats or a panel, every judgment
    (``<metric>/<score>/<judge>/r<repeat>``, 1-based); then task, index, the inputs the templates
    used (``item_<field>``), the target error and per metric the raw judge text and the error.

    No column contains a dot (``names.column``): MLflow's table viewer would read it as a nested path.
    """
    from mlflow_nemo_judge.scoring.templating import normalize_key

    row: dict[str, Any] = {"item_id": rec.item_id, "output_text": rec.output_text}
    for mname, outcome in rec.metrics.items():
        for sname, value in outcome.scores.items():
            row[column(mname, sname)] = _cell(value)
    for mname, outcome in rec.metrics.items():
        for sname, value in outcome.human.items():
            row[column(mname, sname, "human")] = _cell(value)
        if len(outcome.judgments) > 1:  # repeats or a panel: every judgment beside the headline
            for j in outcome.judgments:
                for sname, value in j.scores.items():
                    row[column(mname, sname, j.judge, f"r{j.repeat + 1}")] = _cell(value)
    row["task"], row["index"] = rec.task, rec.index
    for k, v in rec.item.items():
        if fields is None or normalize_key(str(k)) in fields or str(k) in fields:
            # Nested values as JSON text: a table column must have one type for the UI and pandas.
            row[column(f"{ITEM_PREFIX}{k}")] = (
                v
                if v is None or isinstance(v, (str, int, float, bool))
                else json.dumps(v, ensure_ascii=False, default=str)
            )
    row["target_error"] = rec.target_error
    for mname, outcome in rec.metrics.items():
        row[column(mname, "raw_judge_output")] = outcome.raw
        row[column(mname, "error")] = outcome.error
    return row


def _cell(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


# -------------------------------------------------------------------------------------- model spec


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
        params.update({"endpoint_url": redact_url(ep.url), "model_id": ep.model_id})
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
    return ModelSpec(
        name=logged_model_name(target.display_name),
        target_sha256=target.sha256(),
        params={k: v[:MAX_PARAM_VALUE] for k, v in params.items()},
        model_type=model_type,
    )
