"""Per-row metric functions of the FAKE NeMo service's own scorer (see ``scorer``).

Written from NeMo's documented semantics (reference §8), not from this package's ``scoring`` code, so a
test comparing a nemo run with a local one compares two implementations. Every function returns plain
floats; NaN means "could not be scored" and is left to the aggregation (§8.2) to exclude and count.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "NAN",
    "TOOL_SCORES",
    "bleu_corpus",
    "bleu_sentence",
    "exact_match",
    "f1",
    "judge_score",
    "number_check",
    "rouge",
    "string_check",
    "strip_reasoning",
    "tool_calling",
]

NAN = float("nan")
TOOL_SCORES = ("function_name_accuracy", "function_name_and_args_accuracy")
ROUGE_SCORES = {"rouge1": "rouge_1_score", "rouge2": "rouge_2_score", "rouge3": "rouge_3_score"}
ROUGE_SCORES["rougeL"] = "rouge_L_score"

# --------------------------------------------------------------------------------------- string-check

_STRING_OPS: dict[str, Callable[[str, str], bool]] = {
    "equals": lambda a, b: a == b,
    "==": lambda a, b: a == b,
    "not equals": lambda a, b: a != b,
    "!=": lambda a, b: a != b,
    "<>": lambda a, b: a != b,
    "contains": lambda a, b: b in a,
    "not contains": lambda a, b: b not in a,
    "startswith": lambda a, b: a.startswith(b),
    "endswith": lambda a, b: a.endswith(b),
}


def string_check(left: Any, op: Any, right: Any) -> float:
    fn = _STRING_OPS.get(str(op).strip().lower())
    if fn is None:
        return NAN
    return 1.0 if fn(str(left), str(right)) else 0.0


# --------------------------------------------------------------------------------------- number-check

_NUMBER_OPS: dict[str, Callable[[float, float], bool]] = {
    "equals": lambda a, b: a == b,
    "==": lambda a, b: a == b,
    "not equals": lambda a, b: a != b,
    "!=": lambda a, b: a != b,
    "<>": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    "gte": lambda a, b: a >= b,
    "greater than or equal": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "gt": lambda a, b: a > b,
    "greater than": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "lte": lambda a, b: a <= b,
    "less than or equal": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "lt": lambda a, b: a < b,
    "less than": lambda a, b: a < b,
}


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        return float(raw)
    m = re.search(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", str(raw).replace(",", ""))
    return float(m.group(0)) if m else None


def number_check(check: Sequence[Any]) -> float:
    """``[left, op, right]`` or ``["absolute difference", left, right, "epsilon", eps]``."""
    parts = list(check)
    if parts and str(parts[0]).strip().lower() == "absolute difference":
        if len(parts) < 3:
            return NAN
        a, b = _number(parts[1]), _number(parts[2])
        eps = _number(parts[4]) if len(parts) >= 5 else 0.0
        if a is None or b is None or eps is None:
            return NAN
        return 1.0 if abs(a - b) <= eps else 0.0
    if len(parts) != 3:
        return NAN
    fn = _NUMBER_OPS.get(str(parts[1]).strip().lower())
    a, b = _number(parts[0]), _number(parts[2])
    if fn is None or a is None or b is None:
        return NAN
    return 1.0 if fn(a, b) else 0.0


# ---------------------------------------------------------------------------------------- em and f1


def _normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in str(text).lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(candidate: str, reference: str) -> float:
    return 1.0 if _normalize(candidate) == _normalize(reference) else 0.0


def f1(candidate: str, reference: str) -> float:
    cand, ref = _normalize(candidate).split(), _normalize(reference).split()
    if not cand or not ref:
        return 1.0 if cand == ref else 0.0
    common = sum((Counter(cand) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


# ------------------------------------------------------------------------------ bleu and rouge (libs)


def bleu_sentence(candidate: str, references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(candidate, list(references)).score)


def bleu_corpus(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU; sacrebleu wants one stream per reference position, rows of unequal length padded."""
    import sacrebleu

    if not candidates:
        return NAN
    width = max(len(r) for r in references)
    streams = [[r[i] if i < len(r) else "" for r in references] for i in range(width)]
    return float(sacrebleu.corpus_bleu(list(candidates), streams).score)


def rouge(candidate: str, reference: str) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scores = rouge_scorer.RougeScorer(list(ROUGE_SCORES), use_stemmer=True).score(reference, candidate)
    return {name: float(scores[kind].fmeasure) for kind, name in ROUGE_SCORES.items()}


# -------------------------------------------------------------------------------------- tool-calling


def _calls(raw: Any) -> list[tuple[str, Any]] | None:
    """``[(name, arguments)]`` from OpenAI ``tool_calls`` or the dataset's ground truth; None if unreadable.

    Arguments come as a JSON string in responses and as an object in datasets: both are decoded, so
    ``'{"a": 1}'`` and ``{"a": 1}`` are the same arguments.
    """
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else []
        except ValueError:
            return None
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list):
        return None
    out: list[tuple[str, Any]] = []
    for call in raw:
        if not isinstance(call, Mapping):
            return None
        fn = call.get("function", call)
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            return None
        args = fn.get("arguments", fn.get("parameters", {}))
        if isinstance(args, str):
            # arguments that are not JSON stay text: they can only equal the same text
            with contextlib.suppress(ValueError):
                args = json.loads(args) if args.strip() else {}
        out.append((fn["name"], args))
    return out


def tool_calling(predicted: Any, ground_truth: Any) -> dict[str, float]:
    """NeMo's two tool-calling scores for one row: 1.0 when the calls match, else 0.0.

    Documented semantics: the order of the calls is ignored (parallel calls), names compare
    case-sensitively, and the second score also needs equal arguments. Both are multiset comparisons,
    so a call made twice must be expected twice.
    """
    pred, truth = _calls(predicted), _calls(ground_truth)
    if truth is None:
        return dict.fromkeys(TOOL_SCORES, NAN)
    if pred is None:
        return dict.fromkeys(TOOL_SCORES, 0.0)

    def canon(args: Any) -> str:
        return json.dumps(args, sort_keys=True, ensure_ascii=False)

    names = Counter(n for n, _ in pred) == Counter(n for n, _ in truth)
    full = Counter((n, canon(a)) for n, a in pred) == Counter((n, canon(a)) for n, a in truth)
    return {TOOL_SCORES[0]: float(names), TOOL_SCORES[1]: float(full)}


# ------------------------------------------------------------------------------------ judge parsing


def strip_reasoning(text: str, reasoning: Mapping[str, Any] | None) -> str | None:
    """The judge's answer after ``reasoning_params.end_token``; None when reasoning never finished.

    Without an ``end_token`` the text is used as it is: v1 only strips what it was told to strip.
    """
    end = (reasoning or {}).get("end_token")
    if not end:
        return text
    if end in text:
        return text.rsplit(end, 1)[1]
    return text if (reasoning or {}).get("include_if_not_finished") else None


def _convert(raw: Any, score_type: str) -> float:
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, (int, float)):
        return float(raw) if math.isfinite(float(raw)) else NAN
    text = str(raw).strip().strip("'\"").strip()
    if score_type in ("bool", "boolean"):
        low = text.lower()
        if low in ("true", "yes", "1"):
            return 1.0
        if low in ("false", "no", "0"):
            return 0.0
        return NAN
    try:
        return float(text)
    except ValueError:
        return NAN


def _json_doc(text: str) -> Any:
    body = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", body, re.DOTALL)
    if fence:
        body = fence.group(1).strip()
    try:
        return json.loads(body)
    except ValueError:
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(body[start : end + 1])
            except ValueError:
                return None
    return None


def judge_score(text: str, score: Mapping[str, Any]) -> float:
    """One score from a judge reply: ``regex`` (first group, else the match) or ``json`` (``json_path``)."""
    parser = score.get("parser") or {}
    score_type = str(score.get("type") or "float").lower()
    kind = parser.get("type", "regex")
    if kind == "regex":
        try:
            m = re.search(str(parser.get("pattern", "")), text)
        except re.error:
            return NAN
        if m is None:
            return NAN
        return _convert(m.group(1) if m.groups() else m.group(0), score_type)
    if kind == "json":
        value: Any = _json_doc(text)
        for key in str(parser.get("json_path", "")).split("."):
            if not isinstance(value, Mapping) or key not in value:
                return NAN
            value = value[key]
        if isinstance(value, (Mapping, list)) or value is None:
            return NAN
        return _convert(value, score_type)
    return NAN
