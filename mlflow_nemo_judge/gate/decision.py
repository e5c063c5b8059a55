"""The verdict: champion vs challenger, pair by pair on shared item ids, under a resolved policy.

Pure functions (no MLflow). Every effect is oriented so that **positive means the challenger is
better** in the score's direction (``higher``: challenger − champion; ``lower``: champion − challenger).

Tests, chosen per score from the values of both sides by ``scoring.paired_tests.paired_test`` (the
same function ``compare`` uses, with its seed 0 and on the pairs in the champion's record order, as
``compare`` pairs run a with run b, so the two report the same test, effect and interval on the same two
runs; the seeded bootstrap makes a decision reproducible):

* **binary** scores (every value on both sides is 0 or 1, e.g. string-check): the exact McNemar test
  (a two-sided binomial test on the discordant pairs) for the p-value, and the Agresti–Min interval
  (Wald on the 2×2 table with 0.5 added to each cell; Stat. Med. 2005) for the difference of
  proportions, which keeps its coverage where plain Wald fails (few discordant pairs).
* **ordinal** scores (integers, at most 11 distinct values: judge ratings 1–5): Wilcoxon signed-rank
  (Pratt) for the p-value and a paired BCa bootstrap interval of the mean difference (a t interval
  assumes an interval scale the ratings do not have).
* **continuous** scores (BLEU, …): the paired t interval and test when n ≥ 30; below that a sign-flip
  permutation test with a bootstrap interval of the mean difference.
* When every difference is equal no test statistic is defined: the interval is the observed
  difference itself and the p-value comes from the exact sign test (``2·0.5ⁿ``, or 1 when the
  difference is 0), never 0.

Rules (``d`` the effect, ``[lo, hi]`` its interval at the policy's confidence):

* fewer shared items than ``min_items`` → INCONCLUSIVE (no figures are trusted);
* a score's NaN share over its budget: in the challenger → NO-GO (it ships unjudgeable output), only
  in the champion → INCONCLUSIVE (the baseline cannot be measured); fewer judged pairs than
  ``min_items`` → INCONCLUSIVE;
* primary (superiority by ``min_effect``): ``lo > 0 and d ≥ min_effect`` passes; ``hi < min_effect``
  (confidently smaller than what matters, including any clear loss) → NO-GO; otherwise INCONCLUSIVE;
* guard rail (non-inferiority by ``margin``): ``lo > −margin`` passes; ``hi < −margin`` (confidently
  worse than allowed) → NO-GO; otherwise INCONCLUSIVE.

The verdict is NO-GO if any rule says NO-GO, else INCONCLUSIVE if any says so, else GO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mlflow_nemo_judge.gate.policy import Resolved, Rule
from mlflow_nemo_judge.scoring.paired_tests import binom_two_sided as binom_two_sided  # re-exported
from mlflow_nemo_judge.scoring.paired_tests import paired_test

Verdict = Literal["GO", "NO-GO", "INCONCLUSIVE"]
ItemKey = tuple[str, str, int]  # (task, item id, occurrence: a dataset may repeat an id)
Values = Mapping[str, Mapping[ItemKey, float]]  # score key -> item -> value (NaN when unjudged)

EXIT_CODES: dict[str, int] = {"GO": 0, "NO-GO": 1, "INCONCLUSIVE": 3}


# ------------------------------------------------------------------------------------- statistics


@dataclass
class Paired:
    """One score's paired comparison, the effect oriented towards "challenger better"."""

    n: int
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str


def paired_effect(
    champion: Sequence[float],
    challenger: Sequence[float],
    confidence: float,
    direction: str = "higher",
) -> Paired:
    """The effect (challenger better > 0) of aligned ``champion``/``challenger`` values (no NaN, at
    least 2 pairs) with its interval at ``confidence`` and p-value, from ``paired_test`` (kind
    inferred from the values of both sides)."""
    # paired_test compares b − a: challenger − champion for "higher", champion − challenger for "lower"
    a, b = (champion, challenger) if direction == "higher" else (challenger, champion)
    pt = paired_test(a, b, confidence=confidence)
    if pt.mean_diff is None or pt.ci95_low is None or pt.ci95_high is None or pt.p_value is None:
        raise ValueError(f"a paired effect needs at least 2 pairs, got {pt.n}")
    return Paired(pt.n, pt.mean_diff, pt.ci95_low, pt.ci95_high, pt.p_value, pt.test)


# ---------------------------------------------------------------------------------------- verdict


@dataclass
class ScoreFigures:
    """What one policy rule saw and concluded."""

    key: str
    role: str
    direction: str
    threshold: float
    nan_budget: float
    shared_items: int
    nan_share_champion: float | None
    nan_share_challenger: float
    mean_champion: float | None = None
    mean_challenger: float | None = None
    n: int = 0
    effect: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    test: str = ""
    outcome: Verdict = "INCONCLUSIVE"
    reason: str = ""


@dataclass
class Decision:
    """The verdict with its reasons and every score's figures (no MLflow state)."""

    verdict: Verdict
    reasons: list[str]
    scores: list[ScoreFigures]
    shared_items: int
    confidence: float
    min_items: int
    champion: bool = True  # False: there was no champion, the challenger was judged alone
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _isnan(v: float) -> bool:
    return v != v


def _mean(xs: Sequence[float]) -> float | None:
    return math.fsum(xs) / len(xs) if xs else None


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _judge_rule(rule: Rule, f: ScoreFigures, lo: float, hi: float) -> tuple[Verdict, str]:
    d, t = f.effect or 0.0, rule.threshold
    ci = f"effect {_fmt(d)}, CI [{_fmt(lo)}, {_fmt(hi)}]"
    if rule.role == "primary":
        if lo > 0 and d >= t:
            return "GO", f"{rule.key}: better ({ci}, min_effect {_fmt(t)})"
        if hi < t:
            return "NO-GO", f"{rule.key}: not better by min_effect {_fmt(t)} ({ci})"
        return "INCONCLUSIVE", f"{rule.key}: improvement not shown ({ci}, min_effect {_fmt(t)})"
    if lo > -t:
        return "GO", f"{rule.key}: not worse than margin {_fmt(t)} ({ci})"
    if hi < -t:
        return "NO-GO", f"{rule.key}: guard rail regressed beyond margin {_fmt(t)} ({ci})"
    return "INCONCLUSIVE", f"{rule.key}: non-inferiority not shown (margin {_fmt(t)}, {ci})"


def _score(
    rule: Rule,
    champ: Mapping[ItemKey, float] | None,
    chall: Mapping[ItemKey, float],
    shared: Sequence[ItemKey],
    policy: Resolved,
) -> ScoreFigures:
    nan = float("nan")
    ch = [chall.get(k, nan) for k in shared]
    cp = [champ.get(k, nan) for k in shared] if champ is not None else None
    share = sum(map(_isnan, ch)) / len(shared) if shared else 0.0
    cshare = (sum(map(_isnan, cp)) / len(shared) if shared else 0.0) if cp is not None else None
    f = ScoreFigures(
        rule.key,
        rule.role,
        rule.direction,
        rule.threshold,
        rule.nan_budget,
        len(shared),
        cshare,
        share,
        mean_challenger=_mean([x for x in ch if not _isnan(x)]),
    )
    if cp is not None:
        f.mean_champion = _mean([x for x in cp if not _isnan(x)])
    if share > rule.nan_budget:
        f.outcome, f.reason = (
            "NO-GO",
            (f"{rule.key}: challenger NaN share {share:.1%} over the budget {rule.nan_budget:.1%}"),
        )
        return f
    if cp is None or champ is None:
        f.outcome, f.reason = "GO", f"{rule.key}: no champion to compare with"
        return f
    if cshare is not None and cshare > rule.nan_budget:
        f.outcome, f.reason = (
            "INCONCLUSIVE",
            (f"{rule.key}: champion NaN share {cshare:.1%} over the budget {rule.nan_budget:.1%}"),
        )
        return f
    # Pairs in the champion's record order (its mapping's order), as ``compare`` pairs run a with run b:
    # the seeded bootstrap resamples by position, so the same pairs in another order give another CI.
    in_shared = set(shared)
    both = ((champ[k], chall.get(k, nan)) for k in champ if k in in_shared)
    pairs = [(a, b) for a, b in both if not (_isnan(a) or _isnan(b))]
    f.n = len(pairs)
    if f.n < policy.policy.min_items:
        f.outcome, f.reason = (
            "INCONCLUSIVE",
            (f"{rule.key}: only {f.n} judged pairs, the policy needs {policy.policy.min_items}"),
        )
        return f
    pe = paired_effect([a for a, _ in pairs], [b for _, b in pairs], policy.policy.confidence, rule.direction)
    f.effect, f.ci_low, f.ci_high, f.p_value, f.test = pe.effect, pe.ci_low, pe.ci_high, pe.p_value, pe.test
    f.outcome, f.reason = _judge_rule(rule, f, pe.ci_low, pe.ci_high)
    return f


def decide(policy: Resolved, champion: Values | None, challenger: Values) -> Decision:
    """The verdict of ``challenger`` against ``champion`` (None: no champion yet) under ``policy``."""
    items = {k for v in challenger.values() for k in v}
    if champion is not None:
        items &= {k for v in champion.values() for k in v}
    shared = sorted(items)
    p = policy.policy
    if len(shared) < p.min_items:
        reason = f"only {len(shared)} shared items, the policy needs min_items {p.min_items}"
        return Decision(
            "INCONCLUSIVE", [reason], [], len(shared), p.confidence, p.min_items, champion is not None
        )
    figures = [
        _score(
            r,
            None if champion is None else champion.get(r.key, {}),
            challenger.get(r.key, {}),
            shared,
            policy,
        )
        for r in policy.rules
    ]
    verdict: Verdict = "GO"
    for f in figures:
        if f.outcome == "NO-GO" or (f.outcome == "INCONCLUSIVE" and verdict == "GO"):
            verdict = f.outcome
    reasons = [f.reason for f in figures if f.outcome == verdict] or [f.reason for f in figures]
    if champion is None and verdict == "GO":
        reasons = ["no version holds the alias: judged alone (NaN budget, min_items), it becomes the first"]
    return Decision(verdict, reasons, figures, len(shared), p.confidence, p.min_items, champion is not None)


def render(d: Decision, title: str) -> str:
    """The readable report the CLI prints."""
    lines = [title, f"verdict: {d.verdict}  ({d.shared_items} shared items, {d.confidence:.0%} intervals)"]
    lines += [f"  - {r}" for r in d.reasons]
    if d.scores:
        w = min(60, max(len(f.key) for f in d.scores))
        head = f"{'score':{w}s} {'role':9s} {'champion':>9s} {'challenger':>10s} {'effect':>8s} "
        lines += ["", head + f"{'CI':>20s} {'p':>8s} {'n':>4s} {'NaN':>11s}  outcome"]
        for f in d.scores:

            def num(v: float | None) -> str:
                return "-" if v is None else f"{v:.3f}"

            ci = "-" if f.ci_low is None or f.ci_high is None else f"[{f.ci_low:.3f}, {f.ci_high:.3f}]"
            nan = f"{(f.nan_share_champion or 0):.0%}/{f.nan_share_challenger:.0%}"
            pv = "-" if f.p_value is None else f"{f.p_value:.2g}"
            lines.append(
                f"{f.key[:w]:{w}s} {f.role:9s} {num(f.mean_champion):>9s} {num(f.mean_challenger):>10s} "
                f"{num(f.effect):>8s} {ci:>20s} {pv:>8s} {f.n:>4d} {nan:>11s}  {f.outcome}"
            )
        lines.append(
            "effect > 0: the challenger is better in the score's direction; NaN: champion/challenger"
        )
    return "\n".join(lines)
