"""``mlflow-nemo-judge``: a thin command line over the Python API.

Exit codes: 0 success, 1 the evaluation failed (endpoint, job or tracking failure), 2 bad input (config,
target, dataset, options); ``gate`` also answers 1 NO-GO and 3 INCONCLUSIVE; a signal 128 + its number. Heavy modules (mlflow, pandas, httpx) are imported inside the commands so
``--help`` stays fast. The parser is :mod:`mlflow_nemo_judge.cli_args`; what the commands print,
:mod:`mlflow_nemo_judge.cli_output`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from mlflow_nemo_judge.cli_args import build_parser
from mlflow_nemo_judge.cli_output import info, print_compare, print_compare_link, print_evaluation, print_link

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _nemo_options(args: argparse.Namespace) -> dict[str, Any] | None:
    opts = {
        "evaluator_url": getattr(args, "nemo_url", None),
        "datastore_url": getattr(args, "nemo_datastore_url", None),
        "entity_store_url": getattr(args, "nemo_entity_store_url", None),
        "namespace": getattr(args, "nemo_namespace", None),
        "api": getattr(args, "nemo_api", None),
        "live": getattr(args, "nemo_live", False),
    }
    opts = {k: v for k, v in opts.items() if v}
    return opts or None


def _setup_logging(args: argparse.Namespace) -> None:
    level = (
        logging.DEBUG
        if getattr(args, "verbose", False)
        else (logging.ERROR if getattr(args, "quiet", False) else logging.WARNING)
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from mlflow_nemo_judge import logsafe

    # Every record at every level (httpx's, mlflow's, huggingface_hub's), warnings and uncaught
    # tracebacks pass the secret scrubber: --verbose must not print a key, a userinfo or a query value.
    logsafe.install()
    if not getattr(args, "verbose", False):
        # httpx logs every request at INFO, and MLflow (through its own handler) each step of creating a
        # new store: keep the terminal for progress, results and the one error line.
        for name in ("httpx", "mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # mlflow sets its logger's level when it is imported (later, lazily): tell it through its own
        # variable, unless the user set one.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def _cmd_validate(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge.backends import get_backend
    from mlflow_nemo_judge.config import load_config, load_target
    from mlflow_nemo_judge.plan import build_plan

    nemo = _nemo_options(args)
    cfg = load_config(args.config, nemo=nemo)
    targets = [load_target(t, nemo=nemo) for t in args.target]
    if args.backend == "local":
        from mlflow_nemo_judge.config.references import inline_entities

        # Stored datasets and models are read now, as `run` reads them (NeMo resolves its own).
        cfg = inline_entities(cfg, nemo)
        targets = [inline_entities(t, nemo) for t in targets]
        # build_plan makes the one data pass that `run` makes in prepare(): every row used is checked.
        rows = 0
        if targets:
            for t in targets:
                plan = build_plan(cfg, t, resolve_secrets=not args.no_secrets)
                rows += sum(d.num_rows or 0 for d in plan.datasets or [])
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
            rows = sum(d.num_rows or 0 for d in plan.datasets or [])
        ntasks = len(plan.tasks)
        nmetrics = sum(len(t.metrics) for t in plan.tasks)
        print(
            f"OK: {args.config}: {ntasks} task(s), {nmetrics} metric(s)"
            + (f", {len(targets)} target(s)" if targets else "")
            + f", {rows} row(s) checked; no model was called"
        )
    elif getattr(args, "live", False):
        return _validate_live(args, cfg, targets)
    else:
        backend = get_backend(args.backend, **(_nemo_options(args) or {}))
        for t in targets:
            backend.prepare(cfg, t)
        print(f"OK: {args.config} is valid for the {args.backend} backend; no model was called")
    return EXIT_OK


def _validate_live(args: argparse.Namespace, cfg: Any, targets: list[Any]) -> int:
    """``validate --backend nemo --live``: the service itself evaluates the first rows (a real dry run)."""
    from mlflow_nemo_judge.backends.nemo import NemoBackend
    from mlflow_nemo_judge.backends.nemo.live import LIVE_MAX_ROWS, score_lines
    from mlflow_nemo_judge.errors import ConfigError

    if args.backend != "nemo":
        raise ConfigError("--live", "a live dry run needs --backend nemo (the service evaluates the rows)")
    if not targets:
        raise ConfigError("--live", "a live dry run needs --target (a rows or dataset target)")
    opts = {k: v for k, v in (_nemo_options(args) or {}).items() if k != "live"}
    backend = NemoBackend(**opts)
    try:
        for t in targets:
            answer = backend.live_check(cfg, t)
            print(
                f"OK: {args.config} with {t.display_name}: NeMo evaluated the first "
                f"{LIVE_MAX_ROWS} row(s) at most, live:"
            )
            for line in score_lines(answer["result"]):
                print(f"  {line}")
    finally:
        backend.close()
    return EXIT_OK


def _run_options(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from mlflow_nemo_judge.engine import RunOptions
    from mlflow_nemo_judge.plan_reliability import check_judge_repeats

    check_judge_repeats(args.judge_repeats)  # bad input: one line, exit 2, before anything runs

    return RunOptions(
        cache=not args.no_cache,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        limit=args.limit,
        parallelism=args.parallelism,
        progress_bar=False if (args.no_progress or args.quiet) else None,
        judge_repeats=args.judge_repeats,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge.config import load_config, load_target
    from mlflow_nemo_judge.pipeline import evaluate

    nemo = _nemo_options(args)
    cfg = load_config(args.config, nemo=nemo)
    targets = [load_target(t, nemo=nemo) for t in args.target]
    if args.alias and not args.register_model:
        from mlflow_nemo_judge.errors import ConfigError

        raise ConfigError("--alias", "needs --register-model NAME")
    mock = mock_models(args)
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
            policy=args.policy,
            run_name=args.run_name,
            options=_run_options(args),
            backend_options=nemo if args.backend == "nemo" else None,
            allow_partial_tracking=args.allow_partial_tracking,
            nemo=nemo,
        )
    print_evaluation(args, ev, [t.display_name for t in targets])
    print_link(args, ev)
    return EXIT_OK


def mock_models(args: argparse.Namespace) -> Any:
    """The ``--mock-server`` context: the package's loopback MOCK models served for the command, said
    plainly on stderr; a port in use is bad input (one line). A no-op context without the flag."""
    import contextlib

    if getattr(args, "mock_server", None) is None:
        return contextlib.nullcontext()
    from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

    try:
        server = MockLLMServer(port=args.mock_server).start()
    except OSError as exc:
        from mlflow_nemo_judge.errors import ConfigError

        raise ConfigError("--mock-server", f"cannot listen on 127.0.0.1:{args.mock_server}: {exc}") from None
    info(
        args,
        f"MOCK models (loopback test doubles, not LLMs) served on http://127.0.0.1:{args.mock_server}/v1",
    )
    return server


def _cmd_resume(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge.pipeline import resume

    ev = resume(
        args.run_id,
        tracking_uri=args.tracking_uri,
        config=args.config,
        target=args.target,
        backend_options=_nemo_options(args),
        retry_errors=args.retry_errors,
        allow_partial_tracking=args.allow_partial_tracking,
    )
    print_evaluation(args, ev, [args.run_id])
    print_link(args, ev)
    return EXIT_OK


def _cmd_attach(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge.pipeline import attach

    ev = attach(args.job_id, tracking_uri=args.tracking_uri, backend_options=_nemo_options(args))
    if not ev.run_ids:
        info(args, f"no MLflow run recorded job {args.job_id}; results are printed, not logged")
    print_evaluation(args, ev, [args.job_id])
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge import compare as cmp

    if not args.experiment and not args.run:
        from mlflow_nemo_judge.errors import ConfigError

        raise ConfigError("--experiment", "give --experiment NAME or at least one --run RUN_ID")
    df = cmp.leaderboard(
        args.experiment, run_ids=args.run or None, metrics=args.metric or None, tracking_uri=args.tracking_uri
    )
    if args.min_effect is not None and not (args.min_effect > 0 and args.min_effect != float("inf")):
        from mlflow_nemo_judge.errors import ConfigError

        raise ConfigError("--min-effect", f"must be a positive number, got {args.min_effect}")
    paired_df = None
    if len(df) == 2:
        paired_df = cmp.paired(
            str(df.iloc[0]["run_id"]),
            str(df.iloc[1]["run_id"]),
            metrics=args.metric or None,
            tracking_uri=args.tracking_uri,
            min_effect=args.min_effect,
        )
    rel_df, pw_df = _judge_figures(args, df)
    print_compare(args, df, paired_df, rel_df, pw_df)
    if args.csv:
        df.to_csv(args.csv, index=False)
        info(args, f"wrote {args.csv}")
    if args.chart:
        cmp.write_chart(df, args.chart)
        info(args, f"wrote {args.chart}")
    print_compare_link(args, df)
    return EXIT_OK


def _judge_figures(args: argparse.Namespace, df: Any) -> tuple[Any, Any]:
    """The reliability figures of the compared runs and the pairwise figures of their parent runs
    (and of the runs given with --run that are parents)."""
    from mlflow_nemo_judge.compare.figures import judge_figures

    ids = [str(r) for r in df["run_id"]] if len(df) else []
    return judge_figures([*args.run, *ids], args.tracking_uri)


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
        reliability=not args.no_reliability,
    )


def _cmd_gate(args: argparse.Namespace) -> int:
    from mlflow_nemo_judge.gate.cli import command

    return command(args)


_COMMANDS = {
    "validate": _cmd_validate,
    "run": _cmd_run,
    "resume": _cmd_resume,
    "attach": _cmd_attach,
    "compare": _cmd_compare,
    "demo": _cmd_demo,
    "gate": _cmd_gate,
}


def entry() -> None:
    """The console script: ``main``, then exit without the interpreter's teardown collections.

    With MLflow, pandas, SQLAlchemy and matplotlib loaded, the garbage collector's passes over every
    module's objects at interpreter exit took ~1.1 s after the command had finished (issue 15,
    measured). ``gc.freeze()`` moves them out of the collector's sight; the atexit handlers still run
    and nothing is left unflushed. Only here, never in ``main``: a caller (a test, a notebook) keeps its
    collector."""
    import gc

    code = main()
    gc.freeze()
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_BAD_INPUT
    _setup_logging(args)
    from mlflow_nemo_judge.errors import NemoJudgeError

    received = _install_signal_handlers()
    try:
        return _COMMANDS[args.command](args)
    except NemoJudgeError as exc:
        from mlflow_nemo_judge.logsafe import scrub  # a provider may echo a header or key back

        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if received:
            import signal

            name = signal.Signals(received[0]).name
            print(f"terminated by {name}: the MLflow run (if any) was marked KILLED", file=sys.stderr)
            return 128 + received[0]
        print("interrupted", file=sys.stderr)
        return 130


def _install_signal_handlers() -> list[int]:
    """SIGTERM (docker stop, Kubernetes) and SIGHUP (a closed terminal) take Ctrl-C's path: each is turned
    into a SIGINT, which ``asyncio.run`` turns into cancellation of the evaluation, so the run ends
    KILLED and a remote NeMo job is cancelled. Only the CLI does this: a library caller (a notebook)
    keeps its own handlers. Returns the list the handler appends received signal numbers to."""
    import signal
    import threading

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        return received

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        signal.raise_signal(signal.SIGINT)

    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)  # SIGHUP does not exist on Windows
        if sig is not None:
            signal.signal(sig, forward)
    return received


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
