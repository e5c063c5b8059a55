"""The comparison where people look: on the parent run of a multi-target evaluation, the leaderboard and
the paired comparison of the targets as metrics (so the parent's Model metrics / Chart views show them,
and ``search_runs`` can filter on them), as tables and as charts.

Metric keys explain themselves:

- ``<target>/<task>/<metric>/<score>`` the mean, with ``/ci95_low``, ``/ci95_high``, ``/count``,
  ``/nan_count`` (``<target>`` is the model without its vendor prefix);
- ``paired/<target>_vs_<first>/<task>/<metric>/<score>/mean_diff`` (``target − first`` on the items both
  judged), with ``/ci95_low``, ``/ci95_high``, ``/p_value``, ``/n``; the test's name is in the
  ``nemo_judge.paired_test`` tag and the ``paired.json`` artifact.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.tracking.names import (
    ART_PAIRED_TABLE,
    MAX_TAG_VALUE,
    sanitize_key,
    short_model,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlflow_nemo_judge.tracking.runs import RunTracker

TAG_PAIRED_TEST = "nemo_judge.paired_test"
LEADERBOARD_STATS = ("ci95_low", "ci95_high", "count", "nan_count")
PAIRED_STATS = ("ci95_low", "ci95_high", "p_value", "n")


@dataclass
class Child:
    """One target of the parent: its name, the label its metric keys use, its run and its result."""

    name: str
    label: str
    run_id: str
    run_name: str
    result: EvalResult


def labels(names: Sequence[str]) -> list[str]:
    """Metric-key labels for the targets: the short model name, the full name where two would collide,
    and a ``-2``… suffix if even those do (the same model twice with different settings)."""
    short = [short_model(n) for n in names]
    out = [s if short.count(s) == 1 else n for s, n in zip(short, names, strict=True)]
    seen: dict[str, int] = {}
    unique = []
    for lab in out:
        seen[lab] = seen.get(lab, 0) + 1
        unique.append(lab if seen[lab] == 1 else f"{lab}-{seen[lab]}")
    return [sanitize_key(u).replace("/", "_") for u in unique]


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def leaderboard_metrics(
    board: pd.DataFrame, score_keys: Sequence[str], label_of: dict[str, str]
) -> dict[str, float]:
    """``<label>/<key>`` = mean (NaN when no sample scored, as on the child) and its stats (omitted when
    unknown) for every row of the leaderboard; ``label_of`` maps its run ids to the labels."""
    out: dict[str, float] = {}
    for _, r in board.iterrows():
        label = label_of.get(str(r["run_id"]), str(r["target"]))
        for k in score_keys:
            base = sanitize_key(f"{label}/{k}")
            mean = _finite(r.get(k))
            out[base] = float("nan") if mean is None else mean
            for stat in LEADERBOARD_STATS:
                v = _finite(r.get(f"{k}/{stat}"))
                if v is not None:
                    out[sanitize_key(f"{base}/{stat}")] = v
    return out


def paired_frame(children: Sequence[Child]) -> pd.DataFrame:
    """Each target against the first one (the baseline), per score, on shared items."""
    import pandas as pd

    from mlflow_nemo_judge.compare import PAIRED_COLUMNS, paired_results

    frames = []
    base = children[0]
    for other in children[1:]:
        df = paired_results(base.result, other.result)
        df.insert(0, "b", other.label)
        df.insert(0, "a", base.label)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["a", "b", *PAIRED_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def paired_metrics(pairs: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, r in pairs.iterrows():
        base = sanitize_key(f"paired/{r['b']}_vs_{r['a']}/{r['metric']}")
        diff = _finite(r.get("mean_diff"))
        if diff is None:
            continue  # no shared scored item: nothing to show
        out[sanitize_key(f"{base}/mean_diff")] = diff
        for stat in PAIRED_STATS:
            v = _finite(r.get(stat))
            if v is not None:
                out[sanitize_key(f"{base}/{stat}")] = v
    return out


def log_comparison(parent: RunTracker, children: Sequence[Child], config_name: str) -> None:
    """Leaderboard and paired comparison on the parent run: metrics, the ``comparison.json`` and
    ``paired_table.json`` tables, ``paired.json`` and the charts ``plots/comparison.png`` and
    ``plots/paired.png``."""
    from mlflow.entities import Metric

    from mlflow_nemo_judge import compare
    from mlflow_nemo_judge.tracking.progress import _now_ms

    entries = compare.entries_from_results(
        [(c.name, c.run_id, c.result) for c in children],
        run_names=[c.run_name for c in children],
        config=config_name,
    )
    board = compare.frame(entries)
    pairs = paired_frame(children)
    label_of = {c.run_id: c.label for c in children}
    values = {**leaderboard_metrics(board, compare.score_keys(board), label_of), **paired_metrics(pairs)}
    ts = _now_ms()
    parent.cl.log_batch(parent.run_id, metrics=[Metric(k, v, ts, 0) for k, v in values.items()])
    with tempfile.TemporaryDirectory(prefix="nemo-judge-cmp-") as tmp:
        chart = compare.write_chart(
            board, Path(tmp) / "comparison.png", title=f"{config_name}: mean with 95% CI per target"
        )
        parent.log_comparison(board, chart)
        files: dict[str, str | bytes | Path] = {
            "paired.json": json.dumps(
                {
                    "baseline": children[0].label,
                    "difference": "target − baseline, on the items both judged",
                    "rows": json.loads(pairs.to_json(orient="records")),
                },
                indent=2,
                ensure_ascii=False,
            )
        }
        if len(pairs):
            files["plots/paired.png"] = compare.write_chart(
                pairs,
                Path(tmp) / "paired.png",
                title=f"{config_name}: paired difference to {children[0].label}",
            )
            parent._log_table(pairs, ART_PAIRED_TABLE)
        parent.log_files(files)
    tests = sorted({str(t) for t in pairs["test"]}) if len(pairs) else []
    if tests:
        parent.set_tags({TAG_PAIRED_TEST: ", ".join(tests)[:MAX_TAG_VALUE]})
