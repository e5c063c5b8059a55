"""``report.md``: the reliability report a person reads — per score a short table of the figures, one
line each on what a figure means, the settings and counts behind it, and plain warnings."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.reliability.report import ReliabilityReport, ScoreReliability

KAPPA_NAME = {
    "kappa_quadratic": "quadratic-weighted κ",
    "kappa": "Cohen's κ",
    "alpha_interval": "α (interval)",
}

MEANS = {
    "flip": "share of items whose score changes when the same judge is asked again",
    "spread": "mean within-item standard deviation across repeats, in score units (0 = always the same)",
    "icc": "ICC(1,1): share of the score variance that lies between items rather than between repeats "
    "(1 = perfectly repeatable; ≥ 0.75 good, Koo & Li 2016)",
    "alpha": "Krippendorff's α: judge agreement beyond chance (1 = perfect, 0 = chance; ≥ 0.8 reliable, "
    "≥ 0.667 tentative)",
    "pair": "agreement of two judges beyond chance (1 = perfect, 0 = chance)",
    "mean": "that judge's mean over the items",
    "hkappa": "judge (headline score) vs human labels, beyond chance (≥ 0.8 reliable, ≥ 0.667 tentative)",
    "spearman": "rank correlation of judge and human scores (1 = same order)",
    "exact": "share of items where the judge gives exactly the human label",
    "within1": "share of items where the judge is within one point of the human label",
}


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def _ci(lo: float | None, hi: float | None) -> str:
    return "" if lo is None or hi is None else f"[{lo:.3g}, {hi:.3g}]"


def _row(name: str, value: float | None, ci: str, n: int | str, means: str) -> str:
    return f"| {name} | {_f(value)} | {ci} | {n} | {means} |"


def render(report: ReliabilityReport) -> str:
    lines = [
        "# Judge reliability",
        "",
        "Can this judge be trusted? Repeat stability (the same judge asked again), agreement between "
        "judges of a panel, and agreement with human labels, per score. Unparseable judgments (NaN) are "
        "left out of every figure and counted. Intervals are 95%.",
        "",
    ]
    if not report.scores:
        lines.append("No score had repeats, a panel or human labels.")
    for sr in report.scores:
        lines.extend(_score(sr))
    return "\n".join(lines).rstrip() + "\n"


def _score(sr: ScoreReliability) -> list[str]:
    judges = ", ".join(f"`{j}`" for j in sr.judges) or "—"
    out = [
        f"## `{sr.task}` / `{sr.metric}` / `{sr.score}`",
        "",
        f"Measurement level **{sr.level}** · reducer **{sr.reducer}** · judges {judges}"
        + (" (the first is the primary)" if sr.panel else "")
        + f" · repeats {sr.repeats}"
        + (f" (declared {sr.declared_repeats})" if sr.declared_repeats != sr.repeats else ""),
        "",
        f"Items: {sr.items} · judgments: {sr.judgments}, of which {sr.nan_judgments} unparseable (NaN, left out)",
        "",
        "| figure | value | 95% CI | n | what it means |",
        "| --- | --- | --- | --- | --- |",
    ]
    r = sr.repeat
    if r is not None and sr.repeats > 1:
        pooled = " (pooled over judges)" if sr.panel else ""
        out.append(_row(f"flip rate{pooled}", r.flip_rate, "", r.items, MEANS["flip"]))
        out.append(_row(f"repeat spread{pooled}", r.spread, "", r.items, MEANS["spread"]))
        out.append(_row(f"ICC{pooled}", r.icc, _ci(r.icc_low, r.icc_high), r.items, MEANS["icc"]))
    if sr.panel:
        out.append(
            _row(
                f"Krippendorff's α ({sr.level})",
                sr.alpha,
                _ci(sr.alpha_low, sr.alpha_high),
                sr.alpha_items,
                MEANS["alpha"],
            )
        )
        stat = KAPPA_NAME.get(sr.pairwise_stat, sr.pairwise_stat)
        for pair, value in sr.pairwise.items():
            a, _, b = pair.partition("__")
            out.append(_row(f"{stat} `{a}` vs `{b}`", value, "", "", MEANS["pair"]))
        for judge, mean in sr.judge_means.items():
            out.append(_row(f"mean of `{judge}`", mean, "", "", MEANS["mean"]))
    h = sr.human
    if h is not None and h.n > 0:
        kname = "quadratic-weighted κ" if sr.level == "ordinal" else "Cohen's κ"
        out.append(
            _row(f"{kname} with humans", h.kappa, _ci(h.kappa_low, h.kappa_high), h.n, MEANS["hkappa"])
        )
        out.append(_row("Spearman ρ with humans", h.spearman, "", h.n, MEANS["spearman"]))
        out.append(_row("exact agreement with humans", h.exact, "", h.n, MEANS["exact"]))
        out.append(_row("within ±1 of humans", h.within1, "", h.n, MEANS["within1"]))
    out.append("")
    if sr.panel and sr.repeats > 1 and sr.repeat_by_judge:
        out += [
            "Repeats per judge:",
            "",
            "| judge | flip rate | spread | ICC | 95% CI | items |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for judge, st in sr.repeat_by_judge.items():
            out.append(
                f"| `{judge}` | {_f(st.flip_rate)} | {_f(st.spread)} | {_f(st.icc)} | "
                f"{_ci(st.icc_low, st.icc_high)} | {st.items} |"
            )
        out.append("")
    if h is not None and h.n > 0 and sr.panel and h.judges:
        out += [
            "Each judge against the humans:",
            "",
            "| judge | κ | Spearman ρ | exact | n |",
            "| --- | --- | --- | --- | --- |",
        ]
        for judge, jh in h.judges.items():
            out.append(f"| `{judge}` | {_f(jh.kappa)} | {_f(jh.spearman)} | {_f(jh.exact)} | {jh.n} |")
        out.append("")
    if h is not None and h.n > 0 and h.labels:
        out += ["Confusion (rows: judge, columns: human):", "", "```", h.csv().rstrip(), "```", ""]
    warnings = sr.warnings()
    if warnings:
        out += ["**Warnings**", ""] + [f"- {w}" for w in warnings] + [""]
    return out
