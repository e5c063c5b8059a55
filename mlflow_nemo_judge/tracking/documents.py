"""The markdown a run carries for people: each prompt template as a document, and the descriptions of
single and parent runs (shown as the run's note in the MLflow UI). Built from the redacted config."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow_nemo_judge.config import EvalConfig, Target, sha256_json
from mlflow_nemo_judge.config.secrets import redact_url
from mlflow_nemo_judge.data.scan import DatasetInfo
from mlflow_nemo_judge.tracking.names import (
    ART_COMPARISON,
    ART_CONFIG,
    ART_DIR,
    ART_PAIRED_TABLE,
    ART_RESULTS,
    ART_TABLE,
    ART_TARGET,
    _safe_name,
)
from mlflow_nemo_judge.tracking.params import _scalar

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
            lines = [
                f"# Target prompt — task `{tname}`",
                "",
                f"sha256 `{sha256_json(template)}`; rendered with Jinja2 per dataset row (`item.<field>`).",
                "",
            ]
            docs[f"{base}/target.md"] = "\n".join(lines + _template_markdown(template))
        for mname, metric in (task.get("metrics") or {}).items():
            mparams = metric.get("params") or {}
            jt = mparams.get("template")
            if jt is None:
                continue
            lines = [
                f"# Judge prompt — metric `{mname}` of task `{tname}`",
                "",
                f"sha256 `{sha256_json(jt)}`; metric type `{metric.get('type')}`.",
                "",
            ]
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
        what = f"the model `{ep.model_id}` served at `{redact_url(ep.url)}`"
    elif isinstance(target.model, str):
        what = f"the model `{target.model}`"
    else:
        what = f"the outputs in the `{target.type}` target `{target.display_name}`"
    lines = [
        f"Evaluation of {what} with the NeMo Evaluator config **{config.display_name}** "
        f"(sha256 `{config.sha256()[:12]}`) on the `{backend}` backend, by mlflow-nemo-judge.",
        "",
        "| task | type | data | rows | digest | metrics (judge) |",
        "|---|---|---|---|---|---|",
    ]
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
        digest = f"`{d.digest}`" if d else ""
        lines.append(f"| {tname} | {task.get('type')} | {data} | {rows} | {digest} | {', '.join(mets)} |")
    lines += [
        "",
        f"Artifacts: `{ART_CONFIG}`, `{ART_TARGET}` (secrets redacted), `{ART_DIR}/prompts/`, "
        f"`{ART_RESULTS}` (NeMo results shape), per-sample table `{ART_TABLE}`, plots.",
    ]
    return "\n".join(lines)


def describe_parent(
    config: EvalConfig, names: Sequence[str], datasets: Sequence[DatasetInfo], backend: str
) -> str:
    targets = ", ".join(f"`{n}`" for n in names)
    data = (
        ", ".join(sorted({f"`{d.files_url}` (digest `{d.digest}`)" for d in datasets if d.files_url}))
        or "the targets' own rows"
    )
    return (
        f"Comparison of {len(names)} targets ({targets}) under the NeMo Evaluator config "
        f"**{config.display_name}** (sha256 `{config.sha256()[:12]}`) on {data}, `{backend}` backend. "
        f"One child run per target (same config, same data). This run's metrics are the leaderboard "
        f"(`<target>/<task>/<metric>/<score>` = mean, with `/ci95_low`, `/ci95_high`, `/count`, "
        f"`/nan_count`) and the paired comparison of each target with the first "
        f"(`paired/<target>_vs_<first>/<task>/<metric>/<score>/mean_diff`, `/ci95_low`, `/ci95_high`, "
        f"`/p_value`, `/n`); tables `{ART_COMPARISON}` and `{ART_PAIRED_TABLE}`, the chart "
        f"`{ART_DIR}/plots/comparison.png` (mean with 95% CI per score per target)."
    )
