"""The deterministic text "models" behind the mock LLM server (``mock_llm``): not language models.

Pure functions of (model id, system text, user text): an extractive summarizer that copies the
document's most informative sentences, a generic and partly wrong one, an echo, and a judge that finds
the labelled source and candidate in its prompt, scores them by informative-word overlap and answers in
the format and scale the prompt asks for. ``mock_llm`` documents what each model id says; this module
knows nothing about HTTP, faults or the request log.
"""

from __future__ import annotations

import functools
import json
import math
import re
import zlib
from typing import NamedTuple

from mlflow_nemo_judge.testing.mock_llm.tools import TOOL_CALLER, text_answer

__all__ = [
    "JUDGE_VARIANTS",
    "MOCK_MODELS",
    "JudgeRating",
    "generate",
    "judge_answer",
    "rate",
    "truncate_words",
    "word_count",
]

MOCK_MODELS: tuple[str, ...] = (
    "mock/faithful-summarizer",
    "mock/poor-summarizer",
    "mock/echo",
    "mock/tool-caller",  # tools.py: answers with tool_calls from the request's tools
    "mock/judge",
    "mock/judge-think",
    "mock/judge-malformed",
    "mock/judge-noisy",
    "mock/judge-lenient",
    "mock/judge-pairwise",
    "mock/judge-pairwise-biased",
)
#: The judge variants of ``judges`` (noisy, lenient, pairwise): built on the mock judge's rating.
JUDGE_VARIANTS: frozenset[str] = frozenset(MOCK_MODELS[-4:])


# ------------------------------------------------------------------------------------ text utilities

_WORD_RE = re.compile(r"[^\W_]+")
_NONSPACE_RE = re.compile(r"\S+")
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+")
_LEADING_LABEL_RE = re.compile(r"^\s*[A-Za-z][A-Za-z /&()_-]{0,40}:[ \t]*")
_WORD_BUDGET_RE = re.compile(r"\b(\d{1,4})[\s-]*words?\b", re.IGNORECASE)
# Section weights: the reason for the visit leads any clinical summary, the assessment and plan follow.
_LEAD_LINE_RE = re.compile(r"^\s*(chief complaint|reason for (visit|consult)|presenting complaint)\b", re.I)
_PRIORITY_LINE_RE = re.compile(r"^\s*(assessment|impression|diagnosis|plan)\b", re.I)
_BACKGROUND_LINE_RE = re.compile(r"^\s*(date|family history|social history)\b", re.I)

# English function words say nothing about content, so neither the summarizers nor the judge count
# them. Tokens never hold apostrophes, hence "didn" rather than "didn't".
_STOPWORD_TEXT = """
    a about above after again against all also am an and any are aren as at be because been before
    being below between both but by can cannot could did didn do does doesn doing don down during
    each few for from further had has have having he her here hers herself him himself his how i if in
    into is isn it its itself just me more most my myself no nor not now of off on once only or other
    our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was wasn we were
    what when where which while who whom why will with would you your yours yourself yourselves per via
    mg within without upon onto may might must shall one two three four five six seven eight nine ten
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _tokens(text: str) -> list[str]:
    """Lower-case informative word tokens: the unit both the summarizers and the judge count in."""
    return [t for t in _WORD_RE.findall(text.lower()) if len(t) >= 3 and t not in _STOPWORDS]


def word_count(text: str) -> int:
    """The mock's token count: whitespace words (prompt and completion ``usage`` alike)."""
    return len(text.split())


def truncate_words(text: str, limit: int) -> str:
    """Keep the first ``limit`` whitespace words with their original spacing (newlines survive)."""
    if limit <= 0:
        return ""
    for index, match in enumerate(_NONSPACE_RE.finditer(text)):
        if index == limit - 1:
            return text[: match.end()]
    return text


def _strip_leading_label(text: str) -> str:
    """Drop a ``Full Consult:``-style prefix so the summary starts with the document itself."""
    match = _LEADING_LABEL_RE.match(text)
    return text[match.end() :] if match else text


# ------------------------------------------------------------------------------------- mock summarizers


def _faithful_summary(system: str, user: str) -> str:
    """Extractive summary: greedily pick the sentences adding the most new informative tokens per word.

    Copying sentences verbatim keeps it faithful by construction. Section weights put the chief
    complaint first and favour the assessment and plan, as a clinician's summary would. The word budget
    follows an "N word summary" request in the system prompt (with 20% slack, as models overshoot).
    """
    budget_match = _WORD_BUDGET_RE.search(system)
    budget = 60
    if budget_match and 5 <= int(budget_match.group(1)) <= 2000:
        budget = round(int(budget_match.group(1)) * 1.2)
    document = _strip_leading_label(user).strip()
    if not document:
        return ""
    units: list[tuple[int, str, int, frozenset[str], float]] = []  # line no, text, words, tokens, weight
    for line_no, line in enumerate(document.splitlines()):
        weight = 1.0
        if _LEAD_LINE_RE.match(line):
            weight = 10.0
        elif _PRIORITY_LINE_RE.match(line):
            weight = 1.5
        elif _BACKGROUND_LINE_RE.match(line):
            weight = 0.4
        for sentence in _SENTENCE_SPLIT_RE.split(line.strip()):
            if sentence:
                units.append((line_no, sentence, word_count(sentence), frozenset(_tokens(sentence)), weight))
    covered: set[str] = set()
    chosen: set[int] = set()
    remaining = budget
    while True:
        best, best_gain = -1, 1.0  # a sentence must add real content, not just a date, to be worth words
        for index, (_, _, words, toks, weight) in enumerate(units):
            if index in chosen or words > remaining:
                continue
            gain = len(toks - covered) * weight / math.sqrt(words or 1)
            if gain > best_gain:  # strict: ties keep the earlier sentence
                best, best_gain = index, gain
        if best < 0:
            break
        chosen.add(best)
        covered |= units[best][3]
        remaining -= units[best][2]
    if not chosen:  # no sentence fits (or none has content): the opening words are still verbatim
        return truncate_words(document, budget)
    lines: dict[int, list[str]] = {}
    for index in sorted(chosen):
        lines.setdefault(units[index][0], []).append(units[index][1])
    return "\n".join(" ".join(parts) for _, parts in sorted(lines.items()))


_POOR_OPENING = (
    "Patient seen today for a routine visit. Nothing remarkable noted. Return whenever convenient."
)
_POOR_WRONG_DETAILS = (
    "Likely seasonal allergies.",
    "Probably a minor ankle sprain.",
    "Suspected ear infection.",
    "Mild dehydration suspected.",
    "Probably just stress.",
)


def _poor_summary(user: str) -> str:
    """Generic filler plus one wrong detail chosen (deterministically) to be absent from the document."""
    document = _strip_leading_label(user)
    doc_tokens = set(_tokens(document))
    start = zlib.crc32(document.encode("utf-8"))
    for offset in range(len(_POOR_WRONG_DETAILS)):
        detail = _POOR_WRONG_DETAILS[(start + offset) % len(_POOR_WRONG_DETAILS)]
        if not doc_tokens.intersection(_tokens(detail)):
            return f"{_POOR_OPENING} {detail}"
    return _POOR_OPENING


# ------------------------------------------------------------------------------------------ mock judge

_SOURCE_LABELS = (
    "full consult",
    "consult",
    "content",
    "document",
    "source",
    "context",
    "reference",
    "question",
)
_CANDIDATE_LABELS = ("summary", "answer", "response", "output", "candidate")
_SEGMENT_LABEL_RE = re.compile(
    r"^[ \t]*(" + "|".join(_SOURCE_LABELS + _CANDIDATE_LABELS) + r")[ \t]*:", re.IGNORECASE | re.MULTILINE
)
_PLACEHOLDER = r"(?:number|num|n|int|integer|score|rating|value|digit|grade)"
_MARKER_RE = re.compile(
    r"\b([A-Za-z][A-Za-z_]*)[ \t]*:[ \t]*[<\[{(][ \t]*" + _PLACEHOLDER + r"[ \t]*[>\]})]", re.I
)
_JSON_WORD_RE = re.compile(r"\bjson\b", re.IGNORECASE)
_JSON_KEY_RE = re.compile(r'"([A-Za-z_][\w -]{0,40})"\s*:\s*([^,}\n]*)')
_NUMERIC_VALUE_RE = re.compile(r"^\s*(?:-?\d|<[^>\n]*>|\[[^\]\n]*\])")
_SCORE_KEY_RE = re.compile(r"score|rating|grade|rank|value", re.IGNORECASE)
_REASON_KEY_RE = re.compile(r"reason|explanation|rationale|justification|comment|feedback", re.I)
_SCALE_RE = re.compile(r"\b([01])\s*(?:to|-|–|—|through|and)\s*(\d{1,3})\b", re.IGNORECASE)
_INSTRUCTION_LINE_RE = re.compile(
    r"^\s*(?:please\s+)?(?:respond|rate|return|reply|give|provide|evaluate|format)\b|\bjson\b", re.I
)
_PRECISION_RE = re.compile(r"correct|accura|faithful|false info|hallucinat|factual|fabricat|precis", re.I)
_COVERAGE_RE = re.compile(
    r"\bcompleteness\b|\bcomplete\b|\bcoverage\b|\bcovers?\b|\bmissing\b|\bomit|\brecall\b", re.I
)
_THINKING_ON_RE = re.compile(r"detailed thinking on", re.IGNORECASE)

# A good ~50-word summary carries about this many distinct informative tokens; covering that many of
# the source's tokens is "complete" for the length the target was asked to write.
_EXPECTED_SUMMARY_TOKENS = 28
# Precision needs this many candidate tokens before it can reach the top: a two-word answer has too
# little in it to be called correct.
_MIN_CHECKABLE_TOKENS = 8


class _JudgeInput(NamedTuple):
    instructions: str
    source: str
    candidate: str


def _split_judge_prompt(system: str, user: str) -> _JudgeInput:
    """Cut the user message into labelled source/candidate segments; the rest counts as instructions."""
    matches = list(_SEGMENT_LABEL_RE.finditer(user))
    source_parts: list[str] = []
    candidate_parts: list[str] = []
    instruction_parts = [system, user[: matches[0].start()] if matches else user]
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(user)
        segment = user[match.end() : end]
        if index + 1 == len(matches) and not system.strip():
            # Without a system prompt the format instructions may follow the last segment; they must not
            # count as its text. Only a marker line, or an instruction after a blank line, ends it, so a
            # summary line such as "Return to clinic in 2 weeks." stays in the summary.
            lines = segment.splitlines(keepends=True)
            for line_no, line in enumerate(lines[1:], start=1):
                after_blank = not lines[line_no - 1].strip()
                if _MARKER_RE.search(line) or (after_blank and _INSTRUCTION_LINE_RE.search(line)):
                    instruction_parts.append("".join(lines[line_no:]))
                    segment = "".join(lines[:line_no])
                    break
        label = match.group(1).lower()
        (source_parts if label in _SOURCE_LABELS else candidate_parts).append(segment)
    return _JudgeInput("\n".join(instruction_parts), "\n".join(source_parts), "\n".join(candidate_parts))


def _judge_scale(instructions: str) -> tuple[int, int]:
    for match in _SCALE_RE.finditer(instructions):
        low, high = int(match.group(1)), int(match.group(2))
        if 2 <= high <= 100:
            return low, high
    return 1, 5


def _judge_ratio(instructions: str, source: str, candidate: str) -> tuple[float, str]:
    """The 0..1 quality the judge reports, and the reasoning text that explains it."""
    source_set = set(_tokens(source))
    candidate_set = set(_tokens(candidate))
    wants_precision = bool(_PRECISION_RE.search(instructions))
    wants_coverage = bool(_COVERAGE_RE.search(instructions)) or not wants_precision
    matched = len(source_set & candidate_set)
    ratios: list[float] = []
    reasons: list[str] = []
    if wants_coverage:
        expected = min(len(source_set), _EXPECTED_SUMMARY_TOKENS)
        ratios.append(min(1.0, matched / expected) if expected else 0.0)
        reasons.append(
            f"The summary covers {min(matched, expected)} of the {expected} key terms expected "
            f"from the source ({len(source_set)} informative terms in total)."
        )
    if wants_precision:
        if candidate_set:
            damping = min(1.0, len(candidate_set) / _MIN_CHECKABLE_TOKENS)
            ratios.append(matched / len(candidate_set) * damping)
        else:
            ratios.append(0.0)
        reasons.append(
            f"{matched} of the {len(candidate_set)} informative terms in the summary are supported by "
            f"the source; {len(candidate_set) - matched} are not."
        )
    return sum(ratios) / len(ratios), " ".join(reasons)


def _verdict(ratio: float) -> str:
    for threshold, words in ((0.8, "excellent"), (0.6, "good"), (0.4, "adequate"), (0.2, "poor")):
        if ratio >= threshold:
            return f"Overall the summary is {words}."
    return "Overall the summary is very poor."


def _judge_answer(score: int, reason: str, instructions: str) -> str:
    """Answer in the format the prompt asks for: a JSON object, or a ``MARKER: <n>`` line."""
    markers = _MARKER_RE.findall(instructions)
    keys = [(m.group(1), m.group(2)) for m in _JSON_KEY_RE.finditer(instructions)]
    # "JSON" alone is not enough when a RATING-style marker is asked for ("do not answer in JSON").
    if _JSON_WORD_RE.search(instructions) and (keys or not markers):
        score_key = next((k for k, _ in keys if _SCORE_KEY_RE.search(k)), None)
        if score_key is None:
            score_key = next(
                (k for k, v in keys if _NUMERIC_VALUE_RE.match(v)), keys[0][0] if keys else "score"
            )
        reason_key = next((k for k, _ in keys if k != score_key and _REASON_KEY_RE.search(k)), "reason")
        return json.dumps({score_key: score, reason_key: reason})
    marker = markers[-1] if markers else "RATING"  # the last one: format lines close a prompt
    return f"{reason}\n{marker}: {score}"


class JudgeRating(NamedTuple):
    """What the mock judge concludes about one prompt, before it is phrased as an answer."""

    score: int
    low: int
    high: int
    ratio: float
    reason: str
    instructions: str


def rate(system: str, user: str) -> JudgeRating:
    """The mock judge's rating of the labelled candidate in a prompt (the judge variants reuse it)."""
    split = _split_judge_prompt(system, user)
    low, high = _judge_scale(split.instructions)
    ratio, reason = _judge_ratio(split.instructions, split.source, split.candidate)
    score = math.floor(low + ratio * (high - low) + 0.5)  # round half up, as a reader would expect
    return JudgeRating(score, low, high, ratio, reason, split.instructions)


def judge_answer(model: str, system: str, rating: JudgeRating, score: int, note: str = "") -> str:
    """Phrase ``score`` (the rating's, or a variant's) the way the prompt asks, with its reasoning."""
    reason = f"{rating.reason} {_verdict(rating.ratio)}{note}"
    if model == "mock/judge-think" or _THINKING_ON_RE.search(system):
        # Reasoning judges put their analysis in a think block; the answer after it stays parseable.
        verdict = _verdict(rating.ratio) + note
        return f"<think>{reason}</think>\n{_judge_answer(score, verdict, rating.instructions)}"
    return _judge_answer(score, reason, rating.instructions)


def _judge(model: str, system: str, user: str) -> str:
    if model == "mock/judge-malformed":
        return "I think it is pretty good, but I would rather not put a number on it."
    rating = rate(system, user)
    return judge_answer(model, system, rating, rating.score)


def generate(
    model: str, system: str, user: str, seed: int | None = None, temperature: float | None = None
) -> str:
    """The deterministic mock "model" for one prompt.

    ``seed`` and ``temperature`` (the request's sampling parameters) matter only to the sampled judge
    variants (``judges.SAMPLED_MODELS``); every other model ignores them, so its cache entry is shared.
    """
    from mlflow_nemo_judge.testing.mock_llm.judges import SAMPLED_MODELS  # judges imports this module

    if model not in SAMPLED_MODELS:
        seed = temperature = None
    return _generate(model, system, user, seed, temperature)


@functools.lru_cache(maxsize=4096)
def _generate(model: str, system: str, user: str, seed: int | None, temperature: float | None) -> str:
    """Cached, since benchmarks replay the same prompts many times."""
    if model == "mock/echo":
        return user
    if model == TOOL_CALLER:  # its text reply, when the request has no tools (tools.py)
        return text_answer(user)
    if model == "mock/faithful-summarizer":
        return _faithful_summary(system, user)
    if model == "mock/poor-summarizer":
        return _poor_summary(user)
    if model in JUDGE_VARIANTS:
        from mlflow_nemo_judge.testing.mock_llm.judges import variant_answer

        return variant_answer(model, system, user, seed, temperature)
    return _judge(model, system, user)
