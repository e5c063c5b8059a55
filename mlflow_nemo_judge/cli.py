"""``mlflow-nemo-judge``: a thin command line over the Python API.

Exit codes: 0 success, 1 the evaluation failed (endpoint, job or tracking failure), 2 bad input (config,
target, dataset, options). Heavy modules (mlflow, pandas, httpx) are imported inside the commands so
``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from mlflow_nemo_judge import __version__

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

_EPILOG_RUN = """examples:
  mlflow-nemo-judge run config.yaml --target target.yaml
  mlflow-nemo-judge run config.yaml --target a.yaml --target b.yaml --experiment summaries
  mlflow-nemo-judge run config.yaml --target t.yaml --limit 10 --no-tracking --output json
"""
_EPILOG_VALIDATE = """examples:
  mlflow-nemo-judge validate config.yaml
  mlflow-nemo-judge validate config.yaml --target target.yaml
"""
_EPILOG_COMPARE = """examples:
  mlflow-nemo-judge compare --experiment summaries
  mlflow-nemo-judge compare --experiment summaries --metric consult_summary_eval/completeness/completeness
  mlflow-nemo-judge compare --run RUN_A --run RUN_B --csv scores.csv --chart scores.png
"""
_EPILOG_DEMO = """examples:
  mlflow-nemo-judge demo                 # two mock summarisers judged by a mock judge, logged to MLflow
  mlflow-nemo-judge demo --backend nemo  # the same through the loopback NeMo-compatible fake service
"""


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


def _nemo_options(args: argparse.Namespace) -> dict[str, Any] | None:
    opts = {
        "evaluator_url": getattr(args, "nemo_url", None),
        "datastore_url": getattr(args, "nemo_datastore_url", None),
        "entity_store_url": getattr(args, "nemo_entity_store_url", None),
        "namespace": getattr(args, "nemo_namespace", None),
    }
    opts = {k: v for k, v in opts.items() if v}
    return opts or None


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
        description="Full validation: types, parsers, regexes, templates against the "
        "first dataset row, API-key env vars. No model is called.",
        epilog=_EPILOG_VALIDATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="config file (YAML or JSON)")
    p.add_argument("--target", action="append", default=[], help="target file (repeatable)")
    p.add_argument("--backend", default="local", choices=["local", "nemo"])
    p.add_argument("--no-secrets", action="store_true", help="do not require API-key env vars to be set")
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
    p.add_argument("config", help="config file (YAML or JSON)")
    p.add_argument("--target", action="append", required=True, help="target file (repeatable)")
    _add_run_options(p)
    _add_nemo(p)
    _add_tracking(p)
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow; just print results")
    p.add_argument(
        "--force", action="store_true", help="make a new run even if an identical finished run exists"
    )
    p.add_argument(
        "--register-model", metavar="NAME", help="register the evaluated model in the Model Registry"
    )
    p.add_argument("--alias", help="alias for the registered model version (with --register-model)")
    p.add_argument("--run-name", help="MLflow run name (default: '<model> · <config name>')")
    p.add_argument("--output", choices=["table", "json"], default="table", help="result format on stdout")
    p.add_argument(
        "--mock-server",
        type=int,
        nargs="?",
        const=8765,
        metavar="PORT",
        help="serve the package's loopback MOCK models on 127.0.0.1:PORT (default 8765) during the "
        "run, for the examples' config.mock.yaml files (test doubles, not LLMs)",
    )
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
        "exactly two runs over the same items, also a paired comparison.",
        epilog=_EPILOG_COMPARE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--experiment", help="experiment name")
    p.add_argument("--run", action="append", default=[], help="run id (repeatable)")
    p.add_argument("--metric", action="append", default=[], help="metric key to show (repeatable)")
    p.add_argument("--tracking-uri")
    p.add_argument("--csv", help="also write the table as CSV")
    p.add_argument("--chart", help="also write a PNG chart")
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
    _add_common(p)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = (
        logging.DEBUG
        if getattr(args, "verbose", False)
        else (logging.ERROR if getattr(args, "quiet", False) else logging.WARNING)
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "verbose", False):
        # httpx logs every request at INFO; keep the terminal for progress and results.
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _info(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


def _cmd_validate(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge.backends import get_backend
    from mlflow_nemo_judge.config import load_config, load_target
    from mlflow_nemo_judge.plan import build_plan

    cfg = load_config(args.config)
    targets = [load_target(t) for t in args.target]
    if args.backend == "local":
        if targets:
            for t in targets:
                plan = build_plan(cfg, t, resolve_secrets=not args.no_secrets)
        else:
            # Without a target, check everything that does not depend on it using a placeholder endpoint.
            from mlflow_nemo_judge.config import Target

            placeholder = Target.model_validate(
                {
                    "type": "model",
                    "model": {
                        "api_endpoint": {
                            "url": "http://127.0.0.1/v1/chat/completions",
                            "model_id": "placeholder",
                        }
                    },
                }
            )
            plan = build_plan(cfg, placeholder, resolve_secrets=not args.no_secrets)
        ntasks = len(plan.tasks)
        nmetrics = sum(len(t.metrics) for t in plan.tasks)
        print(
            f"OK: {args.config}: {ntasks} task(s), {nmetrics} metric(s)"
            + (f", {len(targets)} target(s)" if targets else "")
            + "; no model was called"
        )
    else:
        backend = get_backend(args.backend, **(_nemo_options(args) or {}))
        for t in targets:
            backend.prepare(cfg, t)
        print(f"OK: {args.config} is valid for the {args.backend} backend; no model was called")
    return EXIT_OK


def _run_options(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from mlflow_nemo_judge.engine import RunOptions

    return RunOptions(
        cache=not args.no_cache,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        limit=args.limit,
        parallelism=args.parallelism,
        progress_bar=False if (args.no_progress or args.quiet) else None,
    )


def _print_evaluation(args: argparse.Namespace, ev: Any, labels: Sequence[str]) -> None:
    from mlflow_nemo_judge.compare.render import results_table, usage_line

    if args.output == "json":
        payload = {
            "runs": [
                {
                    "target": label,
                    "run_id": rid,
                    "reused": reused,
                    "results": res.to_nemo_dict(),
                    "usage": res.usage.to_dict(),
                }
                for label, rid, reused, res in zip(
                    labels,
                    ev.run_ids or [None] * len(ev.results),
                    ev.reused or [False] * len(ev.results),
                    ev.results,
                    strict=False,
                )
            ],
            "parent_run_id": ev.parent_run_id,
            "experiment_id": ev.experiment_id,
        }
        print(json.dumps(payload, indent=2))
        return
    for i, res in enumerate(ev.results):
        label = labels[i] if i < len(labels) else f"target {i + 1}"
        rid = ev.run_ids[i] if i < len(ev.run_ids) else None
        head = f"== {label}" + (
            f"  (MLflow run {rid}"
            + (", already finished: reused" if ev.reused and ev.reused[i] else "")
            + ")"
            if rid
            else ""
        )
        print(head)
        print(results_table(res))
        if not args.quiet:
            print(usage_line(res))
        print()


def _cmd_run(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge.config import load_config, load_target
    from mlflow_nemo_judge.pipeline import evaluate

    cfg = load_config(args.config)
    targets = [load_target(t) for t in args.target]
    if args.alias and not args.register_model:
        from mlflow_nemo_judge.errors import ConfigError

        raise ConfigError("--alias", "needs --register-model NAME")
    import contextlib

    mock: Any = contextlib.nullcontext()
    if args.mock_server is not None:
        from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

        try:
            mock = MockLLMServer(port=args.mock_server).start()
        except OSError as exc:
            from mlflow_nemo_judge.errors import ConfigError

            raise ConfigError(
                "--mock-server", f"cannot listen on 127.0.0.1:{args.mock_server}: {exc}"
            ) from None
        _info(
            args,
            f"MOCK models (loopback test doubles, not LLMs) served on http://127.0.0.1:{args.mock_server}/v1",
        )
    with mock:
        ev = evaluate(
            cfg,
            targets,
            backend=args.backend,
            experiment=args.experiment,
            tracking_uri=args.tracking_uri,
            tracking=not args.no_tracking,
            force=args.force,
            register_model=args.register_model,
            alias=args.alias,
            run_name=args.run_name,
            options=_run_options(args),
            backend_options=_nemo_options(args) if args.backend == "nemo" else None,
        )
    _print_evaluation(args, ev, [t.display_name for t in targets])
    return EXIT_OK


def _cmd_resume(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge.pipeline import resume

    ev = resume(
        args.run_id,
        tracking_uri=args.tracking_uri,
        config=args.config,
        target=args.target,
        backend_options=_nemo_options(args),
    )
    _print_evaluation(args, ev, [args.run_id])
    return EXIT_OK


def _cmd_attach(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge.pipeline import attach

    ev = attach(args.job_id, tracking_uri=args.tracking_uri, backend_options=_nemo_options(args))
    if not ev.run_ids:
        _info(args, f"no MLflow run recorded job {args.job_id}; results are printed, not logged")
    _print_evaluation(args, ev, [args.job_id])
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge import compare as cmp

    if not args.experiment and not args.run:
        from mlflow_nemo_judge.errors import ConfigError

        raise ConfigError("--experiment", "give --experiment NAME or at least one --run RUN_ID")
    df = cmp.leaderboard(
        args.experiment, run_ids=args.run or None, metrics=args.metric or None, tracking_uri=args.tracking_uri
    )
    paired_df = None
    if len(df) == 2:
        paired_df = cmp.paired(
            str(df.iloc[0]["run_id"]),
            str(df.iloc[1]["run_id"]),
            metrics=args.metric or None,
            tracking_uri=args.tracking_uri,
        )
    if args.output == "json":
        out: dict[str, Any] = {"leaderboard": json.loads(df.to_json(orient="records"))}
        if paired_df is not None:
            out["paired"] = json.loads(paired_df.to_json(orient="records"))
        print(json.dumps(out, indent=2))
    else:
        print(cmp.format_table(df))
        if paired_df is not None and len(paired_df):
            print()
            print(cmp.format_table(paired_df))
    if args.csv:
        df.to_csv(args.csv, index=False)
        _info(args, f"wrote {args.csv}")
    if args.chart:
        cmp.write_chart(df, args.chart)
        _info(args, f"wrote {args.chart}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge.demo import run_demo

    return run_demo(
        backend=args.backend,
        limit=args.limit,
        experiment=args.experiment,
        tracking_uri=args.tracking_uri,
        tracking=not args.no_tracking,
        output=args.output,
        quiet=args.quiet,
    )


_COMMANDS = {
    "validate": _cmd_validate,
    "run": _cmd_run,
    "resume": _cmd_resume,
    "attach": _cmd_attach,
    "compare": _cmd_compare,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_BAD_INPUT
    _setup_logging(args)
    from mlflow_nemo_judge.errors import NemoJudgeError

    try:
        return _COMMANDS[args.command](args)
    except NemoJudgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
