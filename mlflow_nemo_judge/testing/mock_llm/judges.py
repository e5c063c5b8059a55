"""MOCK judge variants that are wrong on purpose, so the reliability figures have something to find.

They are built on the mock judge's word-overlap rating (``models.rate``) and, like it, are pure
functions of the request: the same request body always gets the same answer (the response cache and
the per-request fault draws rely on that), while repeats that send different seeds can differ.

* ``mock/judge-noisy``: the mock judge's score moved by a random step of -1, 0 or +1, drawn from the
  request's (``seed``, ``temperature``, prompt). At temperature ``t`` the score moves with probability
  ``min(t, 1) / 2`` (up or down equally likely), then is clamped to the scale; temperature 0 never moves
  it, and a request without ``temperature`` counts as temperature 1 (the OpenAI default).
* ``mock/judge-lenient``: the mock judge's score plus one point, capped at the top of the scale.
* ``mock/judge-pairwise``: a pairwise judge. The user message holds a labelled source (``Consult:``,
  ``Full Consult:``, ``Document:``... as for the mock judge) and two candidates labelled at the start of
  a line ``A:`` and ``B:`` (or ``Summary A:`` / ``Response A:`` / ``Answer A:`` / ``Output A:`` /
  ``Candidate A:``); each candidate gets the mock judge's 0..1 overlap quality against the source, and
  the answer ends ``WINNER: A``, ``WINNER: B`` or ``WINNER: TIE`` (the two qualities equal to two
  decimals). A prompt without both candidates gets an answer with no ``WINNER:`` line (unparseable).
* ``mock/judge-pairwise-biased``: the same, except that in ``BIASED_SHARE`` (30 %) of prompts, chosen by a
  hash of the prompt, it answers ``WINNER: A`` whatever the candidates: a position bias that
  position-swapped judging should expose as inconsistency between the two orders.
"""

from __future__ import annotations

import hashlib
import json
import re

from mlflow_nemo_judge.testing.mock_llm.models import (
    _CANDIDATE_LABELS,
    _SOURCE_LABELS,
    _judge_ratio,
    judge_answer,
    rate,
)

__all__ = ["BIASED_SHARE", "SAMPLED_MODELS", "pairwise_verdict", "variant_answer"]

#: Models whose answer depends on the request's seed and temperature, not only on the prompt.
SAMPLED_MODELS: frozenset[str] = frozenset({"mock/judge-noisy"})
#: The share of prompts in which ``mock/judge-pairwise-biased`` answers A regardless.
BIASED_SHARE = 0.3

_PAIR_LABEL_RE = re.compile(
    r"^[ \t]*(?:(?P<source>"
    + "|".join(_SOURCE_LABELS)
    + r")|(?:(?:"
    + "|".join(_CANDIDATE_LABELS)
    + r")[ \t]+)?(?P<side>(?-i:A|B)))[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)


def _unit(*parts: object) -> float:
    """A uniform draw in [0, 1) that is a pure function of ``parts`` (stable across processes)."""
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _noisy_step(system: str, user: str, seed: int | None, temperature: float | None) -> int:
    t = 1.0 if temperature is None else max(0.0, float(temperature))
    draw = _unit("noisy", seed, t, system, user)
    moved = min(t, 1.0) / 2
    if draw >= moved:
        return 0
    return -1 if draw < moved / 2 else 1


def pairwise_verdict(system: str, user: str, *, biased: bool = False) -> tuple[str, str] | None:
    """(``A`` | ``B`` | ``TIE``, the reasoning) for a two-candidate prompt; None without both candidates."""
    segments: dict[str, list[str]] = {"source": [], "A": [], "B": []}
    matches = list(_PAIR_LABEL_RE.finditer(user))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(user)
        segments["source" if match.group("source") else match.group("side")].append(user[match.end() : end])
    if not segments["A"] or not segments["B"]:
        return None
    instructions = "\n".join([system, user[: matches[0].start()]])
    source = "\n".join(segments["source"])
    quality = {side: _judge_ratio(instructions, source, "\n".join(segments[side]))[0] for side in "AB"}
    a, b = round(quality["A"], 2), round(quality["B"], 2)
    reason = f"Overlap with the source: A {a:.2f}, B {b:.2f}."
    if biased and _unit("biased", system, user) < BIASED_SHARE:
        return "A", reason + " (MOCK position bias: this answer prefers A regardless.)"
    return ("A" if a > b else "B" if b > a else "TIE"), reason


def variant_answer(model: str, system: str, user: str, seed: int | None, temperature: float | None) -> str:
    """The answer of one of the judge variants above (``models.JUDGE_VARIANTS``)."""
    if model in ("mock/judge-pairwise", "mock/judge-pairwise-biased"):
        verdict = pairwise_verdict(system, user, biased=model == "mock/judge-pairwise-biased")
        if verdict is None:
            return "I cannot find two labelled candidates (lines starting 'A:' and 'B:') to compare."
        winner, reason = verdict
        return f"{reason}\nWINNER: {winner}"
    rating = rate(system, user)
    if model == "mock/judge-lenient":
        return judge_answer(model, system, rating, min(rating.high, rating.score + 1), " (MOCK: lenient, +1)")
    step = _noisy_step(system, user, seed, temperature)
    score = min(rating.high, max(rating.low, rating.score + step))
    return judge_answer(model, system, rating, score, f" (MOCK noise: {step:+d})")
