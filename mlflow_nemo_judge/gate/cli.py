"""The ``gate`` subcommand: ``add_parser(subparsers)`` declares it, ``command(args)`` runs it.

Exit codes CI can branch on: 0 GO, 1 NO-GO, 3 INCONCLUSIVE; 2 stays bad input (config, target,
policy, options) and 1 also covers a failed evaluation (endpoint, tracking), as for every command.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.gate.run import GateDecision

_EPILOG = """examples:
  mlflow-nemo-judge gate config.yaml --model summarizer --challenger target.yaml --policy policy.yaml
  mlflow-nemo-judge gate --model summarizer --challenger RUN_ID --no-promote
  mlflow-nemo-judge gate config.yaml --model summarizer --challenger t.yaml --primary completeness \\
      --min-effect 0.25 --margin 0.25

exit codes: 0 GO (promoted unless --no-promote), 1 NO-GO, 3 INCONCLUSIVE, 2 bad input
"""
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``gate`` to the CLI's subparsers (``subparsers.add_parser``) and return its parser."""
    from mlflow_nemo_judge.cli_args import _add_common, _add_mock_server, _add_run_options, _add_tracking

    p: argparse.ArgumentParser = subparsers.add_parser(
        "gate",
        help="champion vs challenger on the same items: GO / NO-GO / INCONCLUSIVE, alias moved on GO",
        description="Compare a challenger (a target evaluated with CONFIG, or a finished run) with the "
        "version of --model under --champion-alias, pair by pair on shared item ids, under a policy. "
        "The decision is logged as an MLflow run; on GO the challenger is registered and the alias moved.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    p.add_argument("config", nargs="?", help="config file (needed when the challenger is a target file)")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--challenger", required=True, help="a target file, or the id of a FINISHED run")
    p.add_argument("--champion-alias", default="champion", help="the alias to defend (default: champion)")
    p.add_argument(
        "--champion-target", help="target file of the champion, if its stored target held a literal key"
    )
    p.add_argument("--no-promote", action="store_true", help="only decide: do not register or move the alias")
    g = p.add_argument_group("policy (flags override the --policy file)")
    g.add_argument("--policy", help="policy file (YAML/JSON): scores, directions, margins, NaN budget")
    g.add_argument("--primary", help="the score the challenger must win on (default: the config's first)")
    g.add_argument("--direction", choices=["higher", "lower"], help="the primary score's better direction")
    g.add_argument("--min-effect", type=float, help="smallest primary improvement that matters (default 0)")
    g.add_argument("--margin", type=float, help="non-inferiority margin of the guard rails (default 0)")
    g.add_argument("--confidence", type=float, help="confidence level of the intervals (default 0.95)")
    g.add_argument("--nan-budget", type=float, help="max NaN share per score (default 0.1)")
    g.add_argument("--min-items", type=int, help="fewer shared items -> INCONCLUSIVE (default 10)")
    p.add_argument("--output", choices=["text", "json"], default="text", help="report format")
    _add_tracking(p)
    _add_run_options(p)
    _add_mock_server(p)
    _add_common(p)
    return p


def command(args: argparse.Namespace) -> int:
    """Run the gate; the exit code is the verdict's (errors propagate to the CLI's one-line handler)."""
    from mlflow_nemo_judge.gate.policy import load_policy, policy_from_flags

    base, where = load_policy(args.policy)
    policy = policy_from_flags(
        base,
        primary=args.primary,
        direction=args.direction,
        min_effect=args.min_effect,
        margin=args.margin,
        confidence=args.confidence,
        nan_budget=args.nan_budget,
        min_items=args.min_items,
    )
    from mlflow_nemo_judge.cli import mock_models  # the CLI's --mock-server, shared with `run`

    is_run = not Path(args.challenger).exists() and _RUN_ID.fullmatch(args.challenger) is not None
    with mock_models(args):
        gd = _gate(args, policy, where, is_run)
    if args.output == "json":
        print(json.dumps(_payload(gd), indent=2, default=str))
    else:
        print(gd.report())
    return gd.exit_code


def _gate(args: argparse.Namespace, policy: Any, where: str, is_run: bool) -> GateDecision:
    from mlflow_nemo_judge.gate import gate

    return gate(
        args.config,
        None if is_run else args.challenger,
        challenger_run=args.challenger if is_run else None,
        model=args.model,
        alias=args.champion_alias,
        policy=policy,
        policy_source=where,
        champion_target=args.champion_target,
        experiment=args.experiment,
        tracking_uri=args.tracking_uri,
        backend=args.backend,
        promote=not args.no_promote,
        **_run_options(args),
    )


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cache": not args.no_cache,
        "cache_dir": Path(args.cache_dir) if args.cache_dir else None,
        "limit": args.limit,
        "parallelism": args.parallelism,
        "progress_bar": False if (args.no_progress or args.quiet) else None,
    }


def _payload(gd: Any) -> dict[str, Any]:
    return {
        "verdict": gd.verdict,
        "exit_code": gd.exit_code,
        "model": gd.model,
        "alias": gd.alias,
        "promoted": gd.promoted,
        "decision_run_id": gd.decision_run_id,
        "challenger": {"run_id": gd.challenger.run_id, "version": gd.challenger.version},
        "champion": None
        if gd.champion is None
        else {"run_id": gd.champion.run_id, "version": gd.champion.version},
        "decision": gd.decision.to_dict(),
    }
