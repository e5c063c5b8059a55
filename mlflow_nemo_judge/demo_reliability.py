"""The demo's second part (``demo --no-reliability`` skips it): is the (MOCK) judge reliable? Offline.

Two evaluations on the loopback mock models, after the demo's comparison:

1. the dataset's reference summaries (a ``data`` task: nothing generated) judged for completeness 3
   times at temperature 0.7 by a panel of three MOCK judges: ``mock/judge`` (deterministic),
   ``mock/judge-noisy`` (its score moved ±1 at random per seed: NOISY ON PURPOSE) and
   ``mock/judge-lenient`` (one point higher: BIASED ON PURPOSE), against the dataset's
   ``human_completeness`` column, which is SYNTHETIC (``demo_data/README.md`` gives the rule), not rated
   by people. Figures: flip rate and ICC of the repeats, Krippendorff's α and pairwise κ of the panel,
   judge–human κ.
2. the two mock summarisers compared pairwise by ``mock/judge-pairwise-biased``, which answers "A" in
   30 % of prompts whatever the candidates (POSITION-BIASED ON PURPOSE); each item is judged in both
   orders, so the bias shows as position inconsistency. Figures: win rate with its CI, position
   inconsistency, the Bradley–Terry ranking.

Both run on the local backend: repeats, panels and pairwise judging are local-only features.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

from mlflow_nemo_judge.demo import (
    _COMPLETENESS,
    DEMO_EXPERIMENT,
    JUDGE_MODEL,
    demo_config,
    demo_dataset,
    demo_targets,
)

__all__ = ["PAIRWISE_JUDGE", "PANEL", "pairwise_config", "reliability_config", "run_reliability_demo"]

TASK = "consult_summary_eval"
PANEL = (JUDGE_MODEL, "mock/judge-noisy", "mock/judge-lenient")
PAIRWISE_JUDGE = "mock/judge-pairwise-biased"
HUMAN_COLUMN = "human_completeness"
REPEATS = 3

_PAIRWISE_SYSTEM = "Which summary of the consult is better? Answer WINNER: A, WINNER: B or WINNER: TIE."
_PAIRWISE_USER = "Consult: {{ item.content }}\n\nA: {{ output_a }}\n\nB: {{ output_b }}"


def _endpoint(url: str, model_id: str) -> dict[str, Any]:
    return {"api_endpoint": {"url": url, "model_id": model_id}}


def reliability_config(judge_url: str, limit: int | None = None) -> dict[str, Any]:
    """The reference summaries judged for completeness by the repeated three-judge MOCK panel."""
    dataset_config = demo_config(judge_url, str(demo_dataset()), limit)
    metric = copy.deepcopy(dataset_config["tasks"][TASK]["metrics"]["completeness"])
    metric["params"]["template"]["messages"] = [
        {"role": "system", "content": _COMPLETENESS},
        {"role": "user", "content": "\nFull Consult: {{ item.content }}\nSummary: {{ item.summary }}\n"},
    ]
    return {
        "type": "custom",
        "name": "doctor_consult_judge_reliability",
        "tasks": {TASK: {"type": "data", "metrics": {"completeness": metric}}},
        "mlflow_nemo_judge": {
            "reliability": {
                "repeats": REPEATS,
                "reducer": "mean",
                "temperature": 0.7,
                "seed": 0,
                "metrics": {
                    f"{TASK}/completeness": {
                        "panel": [_endpoint(judge_url, m) for m in PANEL],
                        "human_labels": {"completeness": HUMAN_COLUMN},
                        "levels": {"completeness": "ordinal"},
                    }
                },
            }
        },
    }


def reference_target(limit: int | None = None) -> dict[str, Any]:
    """The dataset's own ``summary`` column as the thing judged (no target model call)."""
    dataset: dict[str, Any] = {"files_url": str(demo_dataset())}
    if limit:
        dataset["limit"] = limit
    return {"type": "dataset", "name": "reference-summaries", "dataset": dataset}


def pairwise_config(judge_url: str, files_url: str, limit: int | None = None) -> dict[str, Any]:
    """The demo's comparison (completeness only) plus a position-swapped pairwise judge."""
    config = demo_config(judge_url, files_url, limit)
    task = config["tasks"][TASK]
    task["metrics"] = {"completeness": task["metrics"]["completeness"]}
    config["name"] = "doctor_consult_pairwise"
    config["mlflow_nemo_judge"] = {
        "pairwise": {
            TASK: {
                "model": _endpoint(judge_url, PAIRWISE_JUDGE),
                "template": {
                    "messages": [
                        {"role": "system", "content": _PAIRWISE_SYSTEM},
                        {"role": "user", "content": _PAIRWISE_USER},
                    ]
                },
                "parser": {"type": "regex", "pattern": r"WINNER:\s*(A|B|TIE)"},
            }
        }
    }
    return config


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _ci(metrics: Mapping[str, float], key: str) -> str:
    lo, hi = metrics.get(f"{key}/ci95_low"), metrics.get(f"{key}/ci95_high")
    return f"  95% CI [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None else ""


def _score_rows(s: str, metrics: Mapping[str, float]) -> list[tuple[str, str, str]]:
    """(figure, value with CI, meaning) for one score's ``reliability/<S>`` keys that are present."""
    rows: list[tuple[str, str, str]] = []

    def add(label: str, key: str, meaning: str, ci: bool = False) -> None:
        if key in metrics:
            rows.append((label, _fmt(metrics[key]) + (_ci(metrics, key) if ci else ""), meaning))

    add("repeats", f"{s}/repeats", "judgments of each item per judge")
    add("flip rate", f"{s}/flip_rate", "share of items whose score changed across repeats")
    add("repeat spread", f"{s}/repeat_spread", "mean within-item standard deviation")
    add("ICC(1,1)", f"{s}/icc", "how much of the score variance is between items, not repeats", True)
    add("Krippendorff α", f"{s}/alpha", "agreement of the panel (ordinal), 1 = perfect", True)
    # Dict order, not sorted: the report lists judges in panel order.
    for key in [k for k in metrics if k.startswith(f"{s}/kappa/") and k.count("/") == s.count("/") + 2]:
        pair = key.rsplit("/", 1)[1].replace("__", " vs ")
        add(f"κ {pair}", key, "quadratic-weighted κ between two judges", True)
    for key in [k for k in metrics if k.startswith(f"{s}/judge/") and k.endswith("/mean")]:
        judge = key[len(f"{s}/judge/") : -len("/mean")]
        add(f"mean {judge}", key, "this judge's mean score")
        add(f"flip rate {judge}", f"{s}/judge/{judge}/flip_rate", "this judge alone")
    add("human κ (headline)", f"{s}/human/kappa", "judge–human quadratic-weighted κ", True)
    add("human Spearman ρ", f"{s}/human/spearman", "rank correlation with the humans")
    add("human exact", f"{s}/human/exact", "share of items with the human's exact label")
    add("human within ±1", f"{s}/human/within1", "share within one point of the human")
    for key in [k for k in metrics if k.startswith(f"{s}/human/judge/") and k.endswith("/kappa")]:
        add(f"human κ {key[len(f'{s}/human/judge/') : -len('/kappa')]}", key, "this judge against the humans")
    return rows


_SCORE_MARKERS = ("/repeats", "/judges", "/human/n")  # one of them is logged for every analysed score


def reliability_lines(metrics: Mapping[str, float]) -> list[str]:
    """One line per figure of a reliability report's metrics, with what it means."""
    lines: list[str] = []
    prefixes = {k[: -len(m)] for k in metrics for m in _SCORE_MARKERS if k.endswith(m) and "/judge/" not in k}
    for s in sorted(prefixes):
        rows = _score_rows(s, metrics)
        width = max((len(r[0]) for r in rows), default=0)
        vwidth = max((len(r[1]) for r in rows), default=0)
        lines.append(f"{s[len('reliability/') :]}:")
        lines += [f"  {a:<{width}}  {b:<{vwidth}}  {c}" for a, b, c in rows]
    return lines


def pairwise_lines(metrics: Mapping[str, float]) -> list[str]:
    """One line per pairwise figure (win rate, position inconsistency, Bradley–Terry strength and rank)."""
    lines: list[str] = []
    for key in sorted(k for k in metrics if k.endswith("/win_rate")):
        base = key[: -len("/win_rate")]
        counts = "/".join(str(int(metrics.get(f"{base}/{n}", 0))) for n in ("wins", "ties", "losses"))
        lines.append(f"{base[len('pairwise/') :]}:")
        lines.append(
            f"  win rate                {_fmt(metrics[key])}{_ci(metrics, key)}  (wins/ties/losses {counts})"
        )
        if f"{base}/position_inconsistency" in metrics:
            value = _fmt(metrics[f"{base}/position_inconsistency"])
            lines.append(f"  position inconsistency  {value}  share of items whose two orders disagree")
    ranks = sorted((v, k) for k, v in metrics.items() if "/rank/" in k)
    for rank, key in ranks:
        label = key.rsplit("/", 1)[1]
        strength = key.replace("/rank/", "/strength/")
        value = _fmt(metrics.get(strength)) + _ci(metrics, strength)
        lines.append(f"  Bradley–Terry rank {int(rank)}: {label}  strength {value}")
    return lines


def run_reliability_demo(
    *,
    backend: str = "local",
    limit: int | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    tracking: bool = True,
    say: Callable[[str], None] = print,
) -> tuple[dict[str, float], dict[str, float]]:
    """Run both evaluations, print their figures (stdout) and return (reliability, pairwise) metrics."""
    from mlflow_nemo_judge.pipeline import evaluate
    from mlflow_nemo_judge.testing.mock_llm import MockLLMServer

    if backend != "local":
        say("reliability demo: repeats, judge panels and pairwise judging run on the local backend only")
    say("")
    say("Is the judge reliable? — MOCK judges, two of them unreliable ON PURPOSE:")
    say("  mock/judge          deterministic word-overlap judge (the demo's judge)")
    say("  mock/judge-noisy    NOISY on purpose: its score moves ±1 at random with the request's seed")
    say("  mock/judge-lenient  BIASED on purpose: one point higher than mock/judge (capped at 5)")
    say(f"  {PAIRWISE_JUDGE}  POSITION-BIASED on purpose: answers A in 30% of prompts regardless")
    say(f"The '{HUMAN_COLUMN}' labels are SYNTHETIC (a documented rule from mock/judge), not human ratings.")
    exp = experiment or DEMO_EXPERIMENT
    with MockLLMServer() as srv:
        url = f"{srv.base_url}/chat/completions"
        say(f"judging the reference summaries {REPEATS}x by the panel {', '.join(PANEL)} (temperature 0.7)")
        ev = evaluate(
            reliability_config(url, limit),
            reference_target(limit),
            experiment=exp,
            tracking_uri=tracking_uri,
            tracking=tracking,
        )
        report = ev.reliability[0] if ev.reliability else None
        rel = report.metrics() if report is not None else {}
        say(f"comparing {' and '.join(demo_targets(url)[i]['name'] for i in (0, 1))} pairwise, both orders")
        ev2 = evaluate(
            pairwise_config(url, str(demo_dataset()), limit),
            demo_targets(url),
            experiment=exp,
            tracking_uri=tracking_uri,
            tracking=tracking,
        )
        pw = ev2.pairwise.metrics() if ev2.pairwise is not None else {}
    print(
        "Judge reliability (MOCK judges: mock/judge-noisy is noisy and mock/judge-lenient biased ON PURPOSE; "
        f"the {HUMAN_COLUMN} labels are SYNTHETIC):"
    )
    print("\n".join(reliability_lines(rel)) or "  (no reliability figures)")
    print()
    print(f"Pairwise judging by {PAIRWISE_JUDGE} (MOCK, position-biased on purpose):")
    print("\n".join(pairwise_lines(pw)) or "  (no pairwise figures)")
    print()
    if tracking:
        say(f"Both evaluations are in MLflow experiment '{exp}': reliability/… metrics and ")
        say("nemo_judge/reliability/report.md on the reference-summaries run, pairwise/… on the parent run.")
    return rel, pw
