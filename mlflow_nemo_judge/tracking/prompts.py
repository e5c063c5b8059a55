"""Every target and judge template of a config as a versioned prompt in MLflow's Prompt Registry,
linked to the runs that used it (the run page's "Registered prompts").

Content-addressed: a version carries the sha256 of the template it holds (tag ``nemo_judge.prompt_sha256``),
and a rerun with the same template finds and reuses that version instead of adding a new one; an edited
template becomes the next version of the same prompt, so the registry shows the prompt's history.
Templates come from the redacted config, masked of the run's secrets again: never a key in a prompt.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow_nemo_judge.config import EvalConfig
from mlflow_nemo_judge.config.secrets import redact_text
from mlflow_nemo_judge.tracking.names import MAX_TAG_VALUE, TAG_PROMPT_SHA, TAG_PROMPTS, prompt_name

logger = logging.getLogger(__package__)

# Versions of one prompt scanned for a matching content hash; a prompt edited more often than this
# gets a new version for an old template instead of reusing it (harmless).
_MAX_VERSIONS = 1000


@dataclass
class PromptSpec:
    """One template as the registry will hold it."""

    name: str
    template: str | list[dict[str, str]]
    sha256: str
    tags: dict[str, str] = field(default_factory=dict)


def _as_registry_template(template: Any, system_prompt: str | None = None) -> str | list[dict[str, str]]:
    """Chat templates as MLflow chat prompts (``[{role, content}]``), which the UI renders message by
    message; anything else (a completion ``prompt``, structured content) as its text or JSON."""
    if isinstance(template, Mapping) and isinstance(template.get("messages"), list):
        msgs = template["messages"]
        if all(isinstance(m, Mapping) and isinstance(m.get("content"), str) for m in msgs):
            out = [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in msgs]
            if system_prompt:
                out.insert(0, {"role": "system", "content": system_prompt})
            return out
    if isinstance(template, Mapping) and isinstance(template.get("prompt"), str) and not system_prompt:
        return str(template["prompt"])
    body = {"system_prompt": system_prompt, "template": template} if system_prompt else template
    return body if isinstance(body, str) else json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True)


def _sha(template: str | list[dict[str, str]]) -> str:
    text = json.dumps(template, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _masked(template: str | list[dict[str, str]], secrets: Sequence[str]) -> str | list[dict[str, str]]:
    if not secrets:
        return template
    if isinstance(template, str):
        return redact_text(template, secrets)
    return [{k: redact_text(v, secrets) for k, v in m.items()} for m in template]


def prompt_specs(config: EvalConfig, secrets: Sequence[str] = ()) -> list[PromptSpec]:
    """The config's target and judge templates, named ``<config>__<task>__target`` and
    ``<config>__<task>__<metric>`` (sanitised to registry names), from the redacted config."""
    cfg = config.redacted()
    cname = config.display_name
    specs: list[PromptSpec] = []

    def add(name: str, template: str | list[dict[str, str]], tags: dict[str, str]) -> None:
        template = _masked(template, secrets)
        sha = _sha(template)
        specs.append(PromptSpec(name, template, sha, {**tags, "nemo_judge.config_name": cname[:500]}))

    for tname, task in (cfg.get("tasks") or {}).items():
        template = (task.get("params") or {}).get("template")
        if template is not None:
            add(
                prompt_name(cname, tname, "target"),
                _as_registry_template(template),
                {"nemo_judge.task": str(tname)[:500], "nemo_judge.role": "target"},
            )
        for mname, metric in (task.get("metrics") or {}).items():
            mparams = metric.get("params") or {}
            jt = mparams.get("template")
            if jt is None:
                continue
            model = mparams.get("model")
            tags = {
                "nemo_judge.task": str(tname)[:500],
                "nemo_judge.metric": str(mname)[:500],
                "nemo_judge.role": "judge",
            }
            system = None
            if isinstance(model, Mapping):
                judge_id = (model.get("api_endpoint") or {}).get("model_id")
                if judge_id:
                    tags["nemo_judge.judge_model"] = str(judge_id)[:500]
                sp = (model.get("prompt") or {}).get("system_prompt")
                system = str(sp) if sp else None
            add(prompt_name(cname, tname, mname), _as_registry_template(jt, system), tags)
    return specs


def _find_version(cl: Any, spec: PromptSpec) -> Any | None:
    """The version of ``spec.name`` registered for exactly this content, if any."""
    from mlflow.exceptions import MlflowException

    token = None
    seen = 0
    while seen < _MAX_VERSIONS:
        try:
            page = cl.search_prompt_versions(spec.name, max_results=100, page_token=token)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None  # a new prompt
            raise
        for pv in page:
            if (pv.tags or {}).get(TAG_PROMPT_SHA) == spec.sha256:
                return pv
        seen += len(page)
        token = getattr(page, "token", None)
        if not token or not len(page):
            return None
    return None


def register(cl: Any, spec: PromptSpec) -> Any:
    """The registry version holding ``spec``: found by its content hash, else registered."""
    found = _find_version(cl, spec)
    if found is not None:
        return found
    return cl.register_prompt(
        spec.name,
        spec.template,
        commit_message=f"registered by mlflow-nemo-judge (sha256 {spec.sha256[:12]})",
        tags={**spec.tags, TAG_PROMPT_SHA: spec.sha256},
    )


def register_and_link(cl: Any, run_id: str, config: EvalConfig, secrets: Sequence[str] = ()) -> list[str]:
    """Register (or reuse) every template of ``config`` and link each version to the run; returns the
    ``prompts:/name/version`` URIs, also recorded in the run's ``nemo_judge.prompts`` tag.

    The registry is a view of the prompts (the ``prompts/`` artifacts are the record): a store that
    refuses it (no registry, no permission) is reported once and the evaluation goes on. An
    unreachable server is not swallowed: the caller turns it into the one-line tracking error.
    """
    from mlflow_nemo_judge.tracking.health import _is_connectivity

    uris: list[str] = []
    try:
        for spec in prompt_specs(config, secrets):
            pv = register(cl, spec)
            cl.link_prompt_version_to_run(run_id, pv)
            uris.append(f"prompts:/{pv.name}/{pv.version}")
    except Exception as exc:
        if _is_connectivity(exc):
            raise
        text = str(exc).strip()
        msg = redact_text(text.splitlines()[0], secrets) if text else type(exc).__name__
        logger.warning(
            "could not register the prompts of MLflow run %s in the Prompt Registry: %s", run_id, msg
        )
        return uris
    if uris:
        cl.set_tag(run_id, TAG_PROMPTS, ",".join(uris)[:MAX_TAG_VALUE])
    return uris
