"""The command line's arguments: every subcommand, its options and its ``--help`` examples.

Split from :mod:`mlflow_nemo_judge.cli` (the commands themselves) so each stays one concern;
``tests/test_docs.py`` checks the README's CLI reference against :func:`build_parser`.
"""

from __future__ import annotations

import argparse

from mlflow_nemo_judge import __version__

_EPILOG_RUN = """examples:
  mlflow-nemo-judge run config.yaml --target target.yaml
  mlflow-nemo-judge run config.yaml --target a.yaml --target b.yaml --experiment summaries
  mlflow-nemo-judge run config.yaml --target t.yaml --limit 10 --no-tracking --output json
  mlflow-nemo-judge run config.yaml --target t.yaml --judge-repeats 3   # is the judge stable?
"""
_EPILOG_VALIDATE = """examples:
  mlflow-nemo-judge validate config.yaml
  mlflow-nemo-judge validate config.yaml --target target.yaml
"""
_EPILOG_COMPARE = """examples:
  mlflow-nemo-judge compare --experiment summaries
  mlflow-nemo-judge compare --experiment summaries --metric consult_summary_eval/completeness/completeness
  mlflow-nemo-judge compare --run RUN_A --run RUN_B --csv scores.csv --chart scores.png
  mlflow-nemo-judge compare --run RUN_A --run RUN_B --min-effect 0.25   # is n enough to see 0.25?
"""
_EPILOG_DEMO = """examples:
  mlflow-nemo-judge demo                 # two mock summarisers judged by a mock judge, logged to MLflow
  mlflow-nemo-judge demo --backend nemo  # the same through the loopback NeMo-compatible fake service
"""


# A path that exists is a file; otherwise a namespace/name is a stored NeMo entity (config.references).
_CONFIG_HELP = "config file (YAML or JSON), or a stored NeMo config namespace/name (needs --nemo-url)"
_TARGET_HELP = "target file, or a stored NeMo target namespace/name (needs --nemo-url; repeatable)"


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="print only errors and the final result")
    g.add_argument("-v", "--verbose", action="store_true", help="log debug details (never secrets)")


def _add_tracking(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--experiment",
        help="MLflow experiment name (default: MLFLOW_EXPERIMENT_NAME if set, else the config's name)",
    )
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or MLflow's default)"
    )


def _add_nemo(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("nemo backend (default: the NEMO_* environment variables)")
    g.add_argument("--nemo-url", help="NeMo Evaluator base URL (env NEMO_EVALUATOR_URL)")
    g.add_argument(
        "--nemo-datastore-url",
        help="NeMo Data Store base URL (env NEMO_DATASTORE_URL; default: the evaluator URL)",
    )
    g.add_argument(
        "--nemo-entity-store-url",
        help="NeMo Entity Store base URL (env NEMO_ENTITY_STORE_URL; default: the evaluator URL)",
    )
    g.add_argument(
        "--nemo-namespace",
        help="namespace for uploaded datasets and jobs (default: the config's namespace, else 'default')",
    )
    g.add_argument(
        "--nemo-api",
        choices=["v1", "v2"],
        default=None,
        help="Evaluator job API: v1 (/v1/evaluation/jobs, default) or v2 (/v2/evaluation/jobs, preview)",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default="local",
        choices=["local", "nemo"],
        help="where the evaluation runs (default: local)",
    )
    p.add_argument(
        "--limit", type=int, help="evaluate at most N rows per task (on top of the config's limits)"
    )
    p.add_argument(
        "--parallelism",
        type=int,
        help="max concurrent requests (default: the config's params.parallelism, else 8)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    p.add_argument(
        "--cache-dir",
        help="response cache folder (default: $NEMO_JUDGE_CACHE_DIR or ~/.cache/mlflow-nemo-judge)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--judge-repeats",
        type=int,
        metavar="K",
        help="judge every llm-judge metric's sample K times (1-100; overrides the config's "
        "mlflow_nemo_judge.reliability repeats): flip rate, spread and ICC per score, local backend only",
    )


def _add_partial(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-partial-tracking",
        action="store_true",
        help="finish the run even if MLflow refused some per-sample traces (the run then says which are "
        "missing, in a tag and its description); by default that fails the run (exit 1)",
    )


def _add_mock_server(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mock-server",
        type=int,
        nargs="?",
        const=8765,
        metavar="PORT",
        help="serve the package's loopback MOCK models on 127.0.0.1:PORT (default 8765) during the "
        "command, for the examples' config.mock.yaml files (test doubles, not LLMs)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlflow-nemo-judge",
        description="Run NeMo Evaluator custom LLM-as-a-judge configs (locally or on NeMo) as tracked, "
        "comparable MLflow runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with `mlflow-nemo-judge demo` (no API keys needed: it uses loopback mock models).",
    )
    parser.add_argument("--version", action="version", version=f"mlflow-nemo-judge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "validate",
        help="check a config (and target) without calling any model",
        description="Full validation, the same checks `run` makes before it creates anything: types, "
        "endpoints (http(s) URL, model id, headers), parsers, regexes, MLflow key lengths, API-key env "
        "vars, and one pass over every dataset row used (syntax, object rows, UTF-8, nesting, every "
        "template rendered against every row). No model is called, nothing is written to MLflow.",
        epilog=_EPILOG_VALIDATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help=_CONFIG_HELP)
    p.add_argument("--target", action="append", default=[], help=_TARGET_HELP)
    p.add_argument("--backend", default="local", choices=["local", "nemo"])
    p.add_argument("--no-secrets", action="store_true", help="do not require API-key env vars to be set")
    p.add_argument(
        "--live",
        action="store_true",
        help="with --backend nemo: a real dry run, the first 10 rows evaluated live by the service "
        "(POST /v1/evaluation/live; data-source targets only); its scores or its error are printed",
    )
    _add_nemo(p)
    _add_common(p)

    p = sub.add_parser(
        "run",
        help="run an evaluation and log it to MLflow",
        description="Run CONFIG against each --target. Each target becomes an MLflow run "
        "(several targets: a parent run with one child per target).",
        epilog=_EPILOG_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help=_CONFIG_HELP)
    p.add_argument("--target", action="append", required=True, help=_TARGET_HELP)
    _add_run_options(p)
    _add_nemo(p)
    p.add_argument(
        "--nemo-live",
        action="store_true",
        help="with --backend nemo: answer a small run (at most 10 rows, a rows target or a dataset "
        "target with --limit) with one live evaluation instead of a job",
    )
    _add_tracking(p)
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow; just print results")
    p.add_argument(
        "--force", action="store_true", help="make a new run even if an identical finished run exists"
    )
    p.add_argument(
        "--register-model", metavar="NAME", help="register the evaluated model in the Model Registry"
    )
    p.add_argument(
        "--alias",
        help="alias moved to a registered version only on evidence (with --register-model; see --policy)",
    )
    p.add_argument(
        "--policy",
        help="gate policy file deciding who gets --alias (default: the first score, higher is better)",
    )
    p.add_argument(
        "--run-name", help="MLflow run name (default: '<model without vendor prefix> · <dataset name>')"
    )
    _add_partial(p)
    p.add_argument("--output", choices=["table", "json"], default="table", help="result format on stdout")
    _add_mock_server(p)
    _add_common(p)

    p = sub.add_parser(
        "resume",
        help="continue an interrupted run into the same MLflow run",
        description="Re-run what an interrupted run left undone; completed calls come from "
        "the response cache, so nothing is paid twice. A nemo-backed run re-attaches "
        "to its job instead of submitting a new one.",
        epilog="examples:\n  mlflow-nemo-judge resume 3f2a9c0d1e7b4c55a0f1e2d3c4b5a697\n"
        "  mlflow-nemo-judge resume RUN_ID --config config.yaml --target target.yaml"
        "   # the originals held literal keys",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_id")
    p.add_argument("--config", help="config file, if the run's stored config had literal (redacted) keys")
    p.add_argument("--target", help="target file, if the run's stored target had a literal (redacted) key")
    p.add_argument(
        "--retry-errors",
        action="store_true",
        help="re-run only the samples that errored (target or judge error) of a FINISHED, FAILED or KILLED "
        "run, into the same run; its metrics, table and results are updated",
    )
    _add_partial(p)
    _add_tracking(p)
    _add_nemo(p)
    p.add_argument("--output", choices=["table", "json"], default="table")
    _add_common(p)

    p = sub.add_parser(
        "attach",
        help="re-attach to a NeMo Evaluator job and complete its MLflow run",
        description="Wait for a running (or finished) NeMo Evaluator job, e.g. after the "
        "submitting process died. The MLflow run that recorded the job is "
        "completed; without one, the results are printed only.",
        epilog="examples:\n  mlflow-nemo-judge attach eval-CjUYLQdriBtAA5X9KPDLAU --nemo-url http://nemo:7331",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job_id")
    _add_nemo(p)
    p.add_argument("--tracking-uri")
    p.add_argument("--output", choices=["table", "json"], default="table")
    _add_common(p)

    p = sub.add_parser(
        "compare",
        help="leaderboard and paired comparison of runs",
        description="One row per run: scores with 95% CIs, counts and NaN counts. With "
        "exactly two runs over the same items, also a paired comparison. Runs that measured their judge "
        "(repeats, a panel, human labels) also print its reliability figures, and a parent run with "
        "pairwise judging its win rates and ranking.",
        epilog=_EPILOG_COMPARE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--experiment", help="experiment name")
    p.add_argument("--run", action="append", default=[], help="run id (repeatable)")
    p.add_argument("--metric", action="append", default=[], help="metric key to show (repeatable)")
    p.add_argument("--tracking-uri")
    p.add_argument("--csv", help="also write the table as CSV")
    p.add_argument("--chart", help="also write a PNG chart")
    p.add_argument(
        "--min-effect",
        type=float,
        metavar="D",
        help="the smallest difference that matters: the paired comparison warns where its sample is too "
        "small to detect D with 80%% power at alpha 0.05",
    )
    p.add_argument("--output", choices=["table", "json"], default="table")
    _add_common(p)

    p = sub.add_parser(
        "demo",
        help="the doctor-consult example against loopback mock models (no keys)",
        description="Evaluates two MOCK summarisers with a MOCK judge (deterministic loopback "
        "test doubles, no network, no keys), logs both runs to MLflow and prints "
        "the comparison.",
        epilog=_EPILOG_DEMO,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backend", default="local", choices=["local", "nemo"])
    p.add_argument("--limit", type=int, help="rows to evaluate (default: all of the example dataset)")
    _add_tracking(p)
    p.add_argument("--no-tracking", action="store_true")
    p.add_argument("--output", choices=["table", "json"], default="table")
    p.add_argument(
        "--no-reliability",
        action="store_true",
        help="skip the second part, which asks whether the (MOCK) judge is reliable: repeats, a judge "
        "panel, synthetic human labels and position-swapped pairwise judging",
    )
    _add_common(p)

    from mlflow_nemo_judge.gate.cli import add_parser as add_gate_parser  # it reuses the helpers above

    add_gate_parser(sub)
    return parser
