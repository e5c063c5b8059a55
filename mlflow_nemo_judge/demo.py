"""``mlflow-nemo-judge demo``: the doctor-consult evaluation end to end with no keys and no network.

Two MOCK summarisers (a faithful extractive one and a deliberately poor one) are judged by a MOCK judge,
all served by the package's loopback test double on 127.0.0.1. The evaluation, the MLflow logging and
the comparison are the real thing; only the models are mocks, and every line of output says so.

Then (unless ``--no-reliability``) it asks whether the judge can be trusted: the reference summaries
judged 3 times by a panel of three MOCK judges, two of them unreliable on purpose (``mock/judge-noisy``,
``mock/judge-lenient``), against the dataset's SYNTHETIC "human" labels; and the two summarisers compared
pairwise, in both orders, by a MOCK pairwise judge with a deliberate position bias. That part adds about
half the first part's run time; ``--no-reliability`` skips it.
"""

from __future__ import annotations

import copy
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

DEMO_EXPERIMENT = "mlflow-nemo-judge-demo"
TARGET_MODELS = ("mock/faithful-summarizer", "mock/poor-summarizer")
JUDGE_MODEL = "mock/judge"

# The seed notebook's judge prompts, character for character (including its trailing spaces).
_COMPLETENESS = (
    "\nYou are a judge. Rate how complete the summary is \non a scale from 1 to 5:\n"
    "1 = missing critical information … 5 = fully complete\nPlease respond with RATING: <number>\n"
)
_CORRECTNESS = (
    "\nYou are a judge. Rate the summary's correctness \n(no false info) on a scale 1-5:\n"
    "1 = many inaccuracies … 5 = completely accurate\nPlease respond with RATING: <number>\n"
)
_USER = "\nFull Consult: {{ item.content }}\nSummary: {{ sample.output_text }}\n"


def demo_dataset() -> Path:
    """The project's own synthetic doctor-consult dataset, shipped inside the package."""
    return Path(str(resources.files("mlflow_nemo_judge") / "demo_data" / "doctor_consults.jsonl"))


def demo_config(judge_url: str, files_url: str, limit: int | None = None) -> dict[str, Any]:
    """The seed notebook's config, pointed at the mock judge and the demo dataset."""
    judge = {"api_endpoint": {"url": judge_url, "model_id": JUDGE_MODEL}}

    def metric(system: str, name: str) -> dict[str, Any]:
        return {
            "type": "llm-judge",
            "params": {
                "model": copy.deepcopy(judge),
                "template": {
                    "messages": [{"role": "system", "content": system}, {"role": "user", "content": _USER}]
                },
                "scores": {name: {"type": "int", "parser": {"type": "regex", "pattern": r"RATING:\s*(\d+)"}}},
            },
        }

    dataset: dict[str, Any] = {"files_url": files_url}
    if limit:
        dataset["limit"] = limit
    return {
        "type": "custom",
        "name": "doctor_consult_summary_eval",
        "tasks": {
            "consult_summary_eval": {
                "type": "chat-completion",
                "params": {
                    "template": {
                        "messages": [
                            {
                                "role": "system",
                                "content": "Given a full medical consultation, please provide a 50 word summary "
                                "of the consultation.",
                            },
                            {"role": "user", "content": "Full Consult: {{ item.content }}"},
                        ],
                        "max_tokens": 200,
                    }
                },
                "dataset": dataset,
                "metrics": {
                    "completeness": metric(_COMPLETENESS, "completeness"),
                    "correctness": metric(_CORRECTNESS, "correctness"),
                },
            }
        },
    }


def demo_targets(url: str) -> list[dict[str, Any]]:
    return [
        {"type": "model", "name": m.split("/")[1], "model": {"api_endpoint": {"url": url, "model_id": m}}}
        for m in TARGET_MODELS
    ]


def run_demo(
    *,
    backend: str = "local",
    limit: int | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    tracking: bool = True,
    output: str = "table",
    quiet: bool = False,
    reliability: bool = True,
) -> int:
    from mlflow_nemo_judge.compare.render import results_table
    from mlflow_nemo_judge.pipeline import evaluate
    from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

    def say(msg: str = "") -> None:
        if not quiet:
            print(msg, file=sys.stderr)

    experiment = experiment or DEMO_EXPERIMENT
    say("mlflow-nemo-judge demo — MOCK MODELS: the target and judge models are deterministic loopback test")
    say("doubles on 127.0.0.1 (no network, no API keys). The evaluation and MLflow logging are real.")
    with MockLLMServer() as srv:
        url = f"{srv.base_url}/chat/completions"
        config = demo_config(url, str(demo_dataset()), limit)
        targets = demo_targets(url)
        backend_options: dict[str, Any] = {}
        fake = None
        if backend == "nemo":
            from mlflow_nemo_judge.testing.fake_nemo import FakeNemoService

            fake = FakeNemoService().start()
            backend_options = {"evaluator_url": fake.base_url}
            say(f"backend nemo: jobs go to the loopback NeMo-compatible FAKE service at {fake.base_url}")
        try:
            ds = config["tasks"]["consult_summary_eval"]["dataset"]
            say(
                f"evaluating {len(targets)} mock targets on {ds['files_url']}"
                + (f" (first {ds['limit']} rows)" if "limit" in ds else "")
            )
            ev = evaluate(
                config,
                targets,
                backend=backend,
                experiment=experiment,
                tracking_uri=tracking_uri,
                tracking=tracking,
                backend_options=backend_options or None,
            )
        finally:
            if fake is not None:
                fake.stop()
    if output == "json":
        run_ids: list[str | None] = list(ev.run_ids) or [None] * len(TARGET_MODELS)
        print(
            json.dumps(
                {
                    "experiment": experiment,
                    "parent_run_id": ev.parent_run_id,
                    "runs": [
                        {"target": m, "run_id": rid, "results": r.to_nemo_dict()}
                        for m, rid, r in zip(TARGET_MODELS, run_ids, ev.results, strict=False)
                    ],
                },
                indent=2,
            )
        )
        if reliability:
            say("the judge-reliability part prints tables: skipped with --output json")
        return 0
    for model, res in zip(TARGET_MODELS, ev.results, strict=True):
        print(results_table(res, title=f"== {model} (MOCK)"))
        print()
    if tracking:
        from mlflow_nemo_judge.compare import format_table, leaderboard

        board = leaderboard(experiment, run_ids=ev.run_ids, tracking_uri=tracking_uri)
        print("Leaderboard (from MLflow):")
        print(format_table(board))
        print()
        from mlflow_nemo_judge.config.secrets import redact_url
        from mlflow_nemo_judge.tracking.links import view_hint

        uri = tracking_uri or _current_tracking_uri()
        say(
            f"Logged to MLflow experiment '{experiment}' (parent run {ev.parent_run_id}) at {redact_url(uri)}."
        )
        # On a tracking server the UI is already there: its run page, not an `mlflow ui` command
        # (which would try to serve the server's URI as a local store and crash).
        say(view_hint(uri, ev.experiment_id, ev.parent_run_id))
    if reliability:
        from mlflow_nemo_judge.demo_reliability import run_reliability_demo

        run_reliability_demo(
            backend=backend,
            limit=limit,
            experiment=experiment,
            tracking_uri=tracking_uri,
            tracking=tracking,
            say=say,
        )
    say("To evaluate real models instead of mocks, point a target at your endpoint, e.g.:")
    say(
        "  mlflow-nemo-judge run examples/doctor_consults/config.yaml "
        "--target examples/doctor_consults/targets/llama-3.1-70b.yaml   (needs OPENAI_API_KEY, NVIDIA_API_KEY)"
    )
    return 0


def _current_tracking_uri() -> str:
    from mlflow_nemo_judge.tracking import current_tracking_uri

    return current_tracking_uri()
