"""Paired comparison of two evaluations on the items both judged: per score the mean difference
``b − a``, its 95% CI, the p-value of a test fit for the score type and an effect size
(``scoring.paired_tests.paired_test``: exact McNemar for 0/1 scores, Wilcoxon signed-rank for
ratings, paired t or a sign-flip permutation test otherwise). Far more sensitive than two independent
CIs when both runs judged the same items. ``min_effect`` adds a warning where the sample is too small
to detect that difference.

``paired`` reads two runs back from MLflow; ``paired_results`` compares results still in memory (the
parent run of a multi-target evaluation). Both align on (task, item id, occurrence).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlflow_nemo_judge import tracking
from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.tracking.names import column

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

PAIRED_COLUMNS = (
    "metric",
    "n",
    "mean_a",
    "mean_b",
    "mean_diff",
    "ci95_low",
    "ci95_high",
    "p_value",
    "test",
    "effect_size",
    "effect_size_name",
    "warning",
)


def _selected(key: str, patterns: Sequence[str] | None) -> bool:
    """``metrics`` entries are exact keys or shell patterns (``consult_summary_eval/*``)."""
    if not patterns:
        return True
    return any(key == p or fnmatch.fnmatchcase(key, p) for p in patterns)


def _aligned(df: pd.DataFrame, task: str, col: str) -> dict[tuple[str, int], float]:
    """``(item_id, occurrence) -> value`` for one task; the occurrence number keeps duplicate ids (a
    dataset may repeat an id) paired in order instead of silently collapsing them."""
    out: dict[tuple[str, int], float] = {}
    if col not in df.columns:
        return out
    sub = df[df["task"].astype(str) == task] if "task" in df.columns else df
    seen: dict[str, int] = {}
    for item_id, value in zip(sub["item_id"].astype(str), sub[col], strict=True):
        n = seen.get(item_id, 0)
        seen[item_id] = n + 1
        out[(item_id, n)] = (
            float("nan")
            if value is None or (isinstance(value, float) and math.isnan(value))
            else float(value)
        )
    return out


def _compare(
    tree_a: EvalResult,
    tree_b: EvalResult,
    fa: pd.DataFrame,
    fb: pd.DataFrame,
    metrics: Sequence[str] | None,
    min_effect: float | None = None,
) -> pd.DataFrame:
    import pandas as pd

    from mlflow_nemo_judge.scoring.paired_tests import paired_test

    in_b = {(t, m, s) for t, m, s, _ in tree_b.scores()}
    rows = []
    for t, m, s, _ in tree_a.scores():
        key = tracking.sanitize_key(f"{t}/{m}/{s}")
        if (t, m, s) not in in_b or not _selected(key, metrics):
            continue
        da, db = _aligned(fa, t, column(m, s)), _aligned(fb, t, column(m, s))
        shared = [k for k in da if k in db]
        pc = paired_test([da[k] for k in shared], [db[k] for k in shared], min_effect=min_effect)
        rows.append(
            {
                "metric": key,
                "n": pc.n,
                "mean_a": pc.mean_a,
                "mean_b": pc.mean_b,
                "mean_diff": pc.mean_diff,
                "ci95_low": pc.ci95_low,
                "ci95_high": pc.ci95_high,
                "p_value": pc.p_value,
                "test": pc.test,
                "effect_size": pc.effect_size,
                "effect_size_name": pc.effect_size_name,
                "warning": pc.warning,
            }
        )
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def paired(
    run_a: str,
    run_b: str,
    *,
    metrics: Sequence[str] | None = None,
    tracking_uri: str | None = None,
    min_effect: float | None = None,
) -> pd.DataFrame:
    """Per score: mean difference ``b − a`` over the items both runs judged, its 95% CI, the p-value of
    the paired test fit for the score type and its effect size (pairs where either side is NaN are
    dropped and not counted in ``n``); ``min_effect`` warns (column ``warning``) when ``n`` is too
    small to detect that difference with 80% power."""
    tree_a = tracking.load_results_tree(run_a, tracking_uri)
    tree_b = tracking.load_results_tree(run_b, tracking_uri)
    fa = tracking.load_samples_frame(run_a, tracking_uri)
    fb = tracking.load_samples_frame(run_b, tracking_uri)
    df = _compare(tree_a, tree_b, fa, fb, metrics, min_effect)
    df.attrs.update({"run_a": run_a, "run_b": run_b})
    return df


def _frame(res: EvalResult) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([tracking.table_row(rec, set()) for rec in res.iter_samples()])


def paired_results(
    res_a: EvalResult,
    res_b: EvalResult,
    *,
    metrics: Sequence[str] | None = None,
    min_effect: float | None = None,
) -> pd.DataFrame:
    """``paired`` for two results in memory (their per-sample spill files), no MLflow read."""
    return _compare(res_a, res_b, _frame(res_a), _frame(res_b), metrics, min_effect)
