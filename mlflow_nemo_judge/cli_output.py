"""What the CLI commands print: results on stdout, everything else on stderr.

``run``, ``resume`` and ``attach`` print an evaluation (a results table per target, its judge
reliability and the pairwise figures when measured, or one JSON document with ``--output json``);
``compare`` prints the leaderboard, the paired test and the judge figures the same two ways. The MLflow
link and notes go to stderr (silenced by ``--quiet``), so stdout stays the result a script can parse.
Heavy modules are imported inside the functions, as in :mod:`mlflow_nemo_judge.cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def info(args: argparse.Namespace, msg: str) -> None:
    """A note on stderr, unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


def print_evaluation(args: argparse.Namespace, ev: Any, labels: Sequence[str]) -> None:
    """The results of an evaluation (``pipeline.Evaluation``), one section per target (``labels``)."""
    from mlflow_nemo_judge.compare.figures import figures_frame, format_pairwise, format_reliability
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
                    # the judge's reliability/… figures (repeats, panel, human labels), when measured
                    "reliability": rel.metrics() if rel is not None else None,
                }
                for label, rid, reused, res, rel in zip(
                    labels,
                    ev.run_ids or [None] * len(ev.results),
                    ev.reused or [False] * len(ev.results),
                    ev.results,
                    ev.reliability or [None] * len(ev.results),
                    strict=False,
                )
            ],
            "parent_run_id": ev.parent_run_id,
            "experiment_id": ev.experiment_id,
            "pairwise": ev.pairwise.metrics() if ev.pairwise is not None else None,
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
        rel = ev.reliability[i] if i < len(ev.reliability) else None
        if rel is not None:
            print()
            print(format_reliability(figures_frame([(label, rid or "-", "", rel.metrics())], "reliability/")))
        if not args.quiet:
            print(usage_line(res))
        print()
    if ev.pairwise is not None:
        print(
            "== pairwise judging with position swap"
            + (f"  (MLflow run {ev.parent_run_id})" if ev.parent_run_id else "")
        )
        print(
            format_pairwise(
                figures_frame([("", ev.parent_run_id or "-", "", ev.pairwise.metrics())], "pairwise/")
            )
        )
        print()


def print_link(args: argparse.Namespace, ev: Any) -> None:
    """Where to look at the result in MLflow (stderr: stdout stays the result, e.g. ``--output json``):
    the parent run of a multi-target evaluation, else the run."""
    if not ev.run_ids:
        return
    from mlflow_nemo_judge.tracking import current_tracking_uri
    from mlflow_nemo_judge.tracking.links import view_hint

    run_id = ev.parent_run_id or (ev.run_ids[0] if len(ev.run_ids) == 1 else None)
    info(args, view_hint(current_tracking_uri(args.tracking_uri), ev.experiment_id, run_id))


def print_compare(args: argparse.Namespace, df: Any, paired_df: Any | None, rel_df: Any, pw_df: Any) -> None:
    """The ``compare`` report: the leaderboard, the paired test (two runs), the judge figures."""
    from mlflow_nemo_judge import compare as cmp

    if args.output == "json":
        out: dict[str, Any] = {"leaderboard": json.loads(df.to_json(orient="records"))}
        if paired_df is not None:
            out["paired"] = json.loads(paired_df.to_json(orient="records"))
        if len(rel_df):
            out["reliability"] = json.loads(rel_df.to_json(orient="records"))
        if len(pw_df):
            out["pairwise"] = json.loads(pw_df.to_json(orient="records"))
        print(json.dumps(out, indent=2))
    else:
        print(cmp.format_table(df))
        if paired_df is not None and len(paired_df):
            print()
            print(cmp.format_table(paired_df))
        if len(rel_df):
            print()
            print("judge reliability (the reliability/… metrics of each run)")
            print(cmp.format_reliability(rel_df))
        if len(pw_df):
            print()
            print("pairwise judging with position swap (the pairwise/… metrics of the parent run)")
            print(cmp.format_pairwise(pw_df))


def print_compare_link(args: argparse.Namespace, df: Any) -> None:
    """The MLflow view of what was compared: the experiment's runs (its compare view lists them)."""
    if not len(df):
        return
    from mlflow_nemo_judge.tracking import current_tracking_uri, get_run
    from mlflow_nemo_judge.tracking.links import view_hint
    from mlflow_nemo_judge.tracking.store import client

    uri = current_tracking_uri(args.tracking_uri)
    exp_id = get_run(client(uri), str(df.iloc[0]["run_id"])).info.experiment_id
    run_id = str(df.iloc[0]["run_id"]) if len(df) == 1 else None
    info(args, view_hint(uri, exp_id, run_id))
