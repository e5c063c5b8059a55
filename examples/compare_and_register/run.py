"""Evaluate two summarisers on the doctor-consult config in one call, compare them, register them.

By default both targets and the judge are MOCK models: deterministic test doubles served on loopback by
the package's mock LLM server, started by this script. No keys, no network; the scores only show that
the pipeline works. With --real, Llama 3.1 70B and 8B (build.nvidia.com) are judged by gpt-4.1:

    export NVIDIA_API_KEY=nvapi-...   OPENAI_API_KEY=sk-...
    python run.py --real

MLflow logs go wherever MLFLOW_TRACKING_URI points (MLflow's default otherwise).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlflow_nemo_judge import EvalConfig, Target, evaluate, load_config, load_target
from mlflow_nemo_judge.compare import format_table, leaderboard
from mlflow_nemo_judge.config import JudgeMetric, ModelSpec
from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

EXAMPLE = Path(__file__).resolve().parent.parent / "doctor_consults"
MOCK_BASE = "http://127.0.0.1:8765/v1"  # where the example's mock files expect the mock server


def point_at(server_base: str, config: EvalConfig, targets: list[Target]) -> None:
    """Rewrite the mock URLs of the judge (config) and the targets to the port our server got."""
    for task in (config.tasks or {}).values():
        for metric in (task.metrics or {}).values():
            model = metric.params.model if isinstance(metric, JudgeMetric) else None
            if isinstance(model, ModelSpec) and model.api_endpoint is not None:
                model.api_endpoint.url = model.api_endpoint.url.replace(MOCK_BASE, server_base)
    for target in targets:
        if target.endpoint:
            target.endpoint.url = target.endpoint.url.replace(MOCK_BASE, server_base)


def start_mock_server() -> MockLLMServer:
    try:  # the port the example files name, so reruns keep the same config identity ...
        return MockLLMServer(port=8765).start()
    except OSError:  # ... unless it is taken (e.g. by a mock server you started yourself)
        return MockLLMServer().start()


def compare_and_register(config: EvalConfig, targets: list[Target], experiment: str) -> None:
    # One call: both targets are run and judged, each as an MLflow run under one parent run. Each
    # target's model becomes a version of "consult-summarizer"; "champion" points at the best one.
    ev = evaluate(
        config, targets, experiment=experiment, register_model="consult-summarizer", alias="champion"
    )
    for target, run_id, result in zip(targets, ev.run_ids, ev.results, strict=True):
        scores = result.tasks["consult_summary_eval"]
        means = {m: scores[m][m].value for m in ("completeness", "correctness")}  # None if all were NaN
        print(
            f"{target.display_name:28s} run {run_id}  "
            + "  ".join(f"{m} {'n/a' if v is None else f'{v:.2f}'}" for m, v in means.items())
        )
    print(f"parent run: {ev.parent_run_id}\n")
    print(format_table(leaderboard(experiment)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real", action="store_true", help="real endpoints instead of the mock models")
    parser.add_argument("--experiment", default="doctor-consults", help="MLflow experiment name")
    args = parser.parse_args()

    if args.real:
        config = load_config(EXAMPLE / "config.yaml")
        targets = [load_target(EXAMPLE / "targets" / f) for f in ("llama-3.1-70b.yaml", "llama-3.1-8b.yaml")]
        compare_and_register(config, targets, args.experiment)
        return

    config = load_config(EXAMPLE / "config.mock.yaml")
    targets = [load_target(EXAMPLE / "targets" / f) for f in ("mock-faithful.yaml", "mock-poor.yaml")]
    with start_mock_server() as server:
        point_at(server.base_url, config, targets)
        print(
            f"Using MOCK models (test doubles, not LLMs) served on {server.base_url}: "
            "targets mock/faithful-summarizer and mock/poor-summarizer, judge mock/judge."
        )
        compare_and_register(config, targets, args.experiment)


if __name__ == "__main__":
    main()
