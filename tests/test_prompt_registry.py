"""The target and judge templates in MLflow's Prompt Registry: registered as versioned prompts under
valid names, linked to the run ("Registered prompts"), content-addressed (a rerun reuses the version,
an edited template adds one), and never holding a secret."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from mlflow_nemo_judge.config import load_config
from mlflow_nemo_judge.pipeline import evaluate
from mlflow_nemo_judge.tracking import names, prompts

pytestmark = pytest.mark.usefixtures("judge_cache")

TASK = "consult_summary_eval"
CONFIG = "doctor_consult_summary_eval"
NAMES = {
    f"{CONFIG}__{TASK}__target",
    f"{CONFIG}__{TASK}__completeness",
    f"{CONFIG}__{TASK}__correctness",
}


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _linked(cl: Any, run_id: str) -> dict[str, str]:
    tag = cl.get_run(run_id).data.tags.get("mlflow.linkedPrompts")
    return {e["name"]: str(e["version"]) for e in json.loads(tag)} if tag else {}


def _run(seed_eval: dict[str, Any], uri: str, cfg: dict[str, Any], **kw: Any) -> str:
    ev = evaluate(cfg, seed_eval["faithful"], experiment="prompts", tracking_uri=uri, limit=2, **kw)
    return ev.run_ids[0]


@pytest.mark.timeout(120)
def test_prompts_are_registered_linked_and_reused(seed_eval: dict[str, Any], mlflow_uri: str) -> None:
    cfg = seed_eval["config"]
    cl = _client(mlflow_uri)
    first = _run(seed_eval, mlflow_uri, cfg, progress_bar=False)
    assert _linked(cl, first) == {n: "1" for n in NAMES}
    tags = cl.get_run(first).data.tags
    assert sorted(tags["nemo_judge.prompts"].split(",")) == sorted(f"prompts:/{n}/1" for n in NAMES)

    # The registered content is the template as written (chat messages), tagged with its hash.
    judge = cl.get_prompt_version(f"{CONFIG}__{TASK}__completeness", 1)
    written = cfg["tasks"][TASK]["metrics"]["completeness"]["params"]["template"]["messages"]
    assert judge.template == [{"role": m["role"], "content": m["content"]} for m in written]
    assert judge.tags["nemo_judge.role"] == "judge" and judge.tags["nemo_judge.judge_model"] == "mock/judge"
    assert len(judge.tags[names.TAG_PROMPT_SHA]) == 64
    target = cl.get_prompt_version(f"{CONFIG}__{TASK}__target", 1)
    assert "{{ item.content }}" in json.dumps(target.template)

    # A rerun with the same templates (a new run: --force) reuses every version.
    second = _run(seed_eval, mlflow_uri, cfg, progress_bar=False, force=True)
    assert second != first and _linked(cl, second) == {n: "1" for n in NAMES}

    # An edited judge template becomes version 2 of that prompt only.
    edited = copy.deepcopy(cfg)
    msgs = edited["tasks"][TASK]["metrics"]["correctness"]["params"]["template"]["messages"]
    msgs[0]["content"] += "\nBe strict."
    third = _run(seed_eval, mlflow_uri, edited, progress_bar=False)
    linked = _linked(cl, third)
    assert linked[f"{CONFIG}__{TASK}__correctness"] == "2"
    assert {k: v for k, v in linked.items() if "correctness" not in k} == {
        f"{CONFIG}__{TASK}__target": "1",
        f"{CONFIG}__{TASK}__completeness": "1",
    }
    assert "Be strict." in json.dumps(cl.get_prompt_version(f"{CONFIG}__{TASK}__correctness", 2).template)


def test_the_parent_run_lists_the_prompts_too(seed_eval: dict[str, Any], mlflow_uri: str) -> None:
    ev = evaluate(
        seed_eval["config"],
        [seed_eval["faithful"], seed_eval["poor"]],
        experiment="prompts-parent",
        tracking_uri=mlflow_uri,
        limit=2,
        progress_bar=False,
    )
    cl = _client(mlflow_uri)
    for run_id in [ev.parent_run_id, *ev.run_ids]:
        assert set(_linked(cl, run_id)) == NAMES


def test_no_secret_reaches_a_prompt(seed_eval: dict[str, Any]) -> None:
    secret = "sk-live-made-up-key-0042"
    cfg = copy.deepcopy(seed_eval["config"])
    metric = cfg["tasks"][TASK]["metrics"]["completeness"]["params"]
    metric["model"]["api_endpoint"]["api_key"] = secret
    # A template that quotes the key (a careless copy-paste) is masked too.
    metric["template"]["messages"][0]["content"] += f" (key {secret})"
    specs = prompts.prompt_specs(load_config(cfg), [secret])
    assert {s.name for s in specs} == NAMES
    assert all(secret not in json.dumps(s.template) for s in specs)


def test_judge_system_prompt_is_part_of_the_registered_prompt(seed_eval: dict[str, Any]) -> None:
    cfg = copy.deepcopy(seed_eval["config"])
    model = cfg["tasks"][TASK]["metrics"]["completeness"]["params"]["model"]
    model["prompt"] = {"system_prompt": "You judge medical summaries."}
    (spec,) = [s for s in prompts.prompt_specs(load_config(cfg)) if s.name.endswith("__completeness")]
    assert isinstance(spec.template, list)
    assert spec.template[0] == {"role": "system", "content": "You judge medical summaries."}


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("doctor consults", "summary/eval", "pass@1"), "doctor_consults__summary_eval__pass_1"),
        (("cfg", "t", "m.v2"), "cfg__t__m.v2"),
        (("", "", ""), "prompt"),
    ],
)
def test_prompt_names_are_valid_registry_names(parts: tuple[str, ...], expected: str) -> None:
    assert names.prompt_name(*parts) == expected


def test_long_prompt_names_stay_unique_and_short() -> None:
    a, b = names.prompt_name("c" * 300, "t", "x"), names.prompt_name("c" * 300, "t", "y")
    assert a != b and len(a) <= names.MAX_PROMPT_NAME and len(b) <= names.MAX_PROMPT_NAME


def test_a_registry_that_refuses_prompts_does_not_fail_the_run(
    seed_eval: dict[str, Any], mlflow_uri: str, monkeypatch: Any, caplog: Any
) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    def refuse(self: Any, *a: Any, **k: Any) -> Any:
        raise MlflowException("Prompt registry is not supported by this store")

    monkeypatch.setattr(MlflowClient, "register_prompt", refuse)
    run_id = _run(seed_eval, mlflow_uri, seed_eval["config"], progress_bar=False)
    run = _client(mlflow_uri).get_run(run_id)
    assert run.info.status == "FINISHED" and "nemo_judge.prompts" not in run.data.tags
    assert "could not register the prompts" in caplog.text
