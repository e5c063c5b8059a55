"""Non-judge metrics of NeMo ``custom`` tasks, as pure functions on already-rendered strings.

Score names follow what NeMo Evaluator reports (reference §7.2, §8): ``string-check`` → ``string-check``;
``number-check`` → ``number-check``; ``bleu`` → ``sentence`` (per-row, 0–100) and ``corpus`` (over all
rows, value only); ``rouge`` → ``rouge_1_score``, ``rouge_2_score``, ``rouge_3_score``, ``rouge_L_score``
(F-measure, 0–1); ``em`` → ``em``; ``f1`` → ``f1``.

BLEU and ROUGE use the reference implementations (sacrebleu, Google's rouge-score) rather than a
re-implementation, so numbers match other tools; both are optional (``pip install
'mlflow-nemo-judge[metrics]'``) and imported lazily so the rest of the package works without them.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from mlflow_nemo_judge.errors import MissingDependencyError

__all__ = [
    "BLEU_SCORE_NAMES",
    "NUMBER_CHECK_OPS",
    "OPTIONAL_DEPENDENCIES",
    "ROUGE_SCORE_NAMES",
    "STRING_CHECK_OPS",
    "bleu_corpus",
    "bleu_sentence",
    "exact_match",
    "normalize_answer",
    "number_check",
    "require_optional",
    "rouge_scores",
    "string_check",
    "token_f1",
    "validate_number_check",
    "validate_string_check",
]

_INSTALL_HINT = "pip install 'mlflow-nemo-judge[metrics]'"

#: metric type → (import name, distribution name) of the optional library it needs.
OPTIONAL_DEPENDENCIES: dict[str, tuple[str, str]] = {
    "bleu": ("sacrebleu", "sacrebleu"),
    "rouge": ("rouge_score", "rouge-score"),
}

#: NeMo's bleu score names: per-row sentence BLEU (aggregated as a mean) and corpus BLEU (value only).
BLEU_SCORE_NAMES: tuple[str, str] = ("sentence", "corpus")
# rouge-score's type names → the names NeMo's similarity metrics report.
_ROUGE_NAMES: dict[str, str] = {
    "rouge1": "rouge_1_score",
    "rouge2": "rouge_2_score",
    "rouge3": "rouge_3_score",
    "rougeL": "rouge_L_score",
}
ROUGE_SCORE_NAMES: tuple[str, ...] = tuple(_ROUGE_NAMES.values())

# ---------------------------------------------------------------------------------------------------
# string-check
# ---------------------------------------------------------------------------------------------------

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
#: Operators of ``string-check`` (``[left, op, right]``); ``contains`` means *left contains right*.
STRING_CHECK_OPS: frozenset[str] = frozenset(_STRING_OPS)


def _norm_op(op: Any) -> str:
    # Case and runs of spaces are forgiven ("Not  Equals"); the operator words themselves are not guessed.
    return " ".join(str(op).lower().split())


def validate_string_check(check: Sequence[Any]) -> None:
    """Raise ValueError unless ``check`` is ``[left, op, right]`` with an operator of STRING_CHECK_OPS."""
    if isinstance(check, str) or not isinstance(check, Sequence) or len(check) != 3:
        raise ValueError(
            f"string-check 'check' must be a list [left, op, right], got {check!r}; "
            f"op is one of {sorted(STRING_CHECK_OPS)}"
        )
    if _norm_op(check[1]) not in STRING_CHECK_OPS:
        raise ValueError(
            f"unknown string-check operator {check[1]!r}; expected one of {sorted(STRING_CHECK_OPS)}"
        )


def string_check(left: str, op: str, right: str) -> float:
    """1.0 if ``left <op> right`` holds, else 0.0.

    Operands are compared as rendered, after ``str()`` but **without trimming**: that is how NeMo compares
    them, and why its examples write ``{{ item.answer | trim }}``. Raises ValueError for an unknown op.
    """
    fn = _STRING_OPS.get(_norm_op(op))
    if fn is None:
        raise ValueError(f"unknown string-check operator {op!r}; expected one of {sorted(STRING_CHECK_OPS)}")
    return 1.0 if fn(str(left), str(right)) else 0.0


# ---------------------------------------------------------------------------------------------------
# number-check
# ---------------------------------------------------------------------------------------------------

_ABS_DIFF = "absolute difference"
_EPSILON = "epsilon"
_NUMBER_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "equals": lambda a, b: a == b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<>": lambda a, b: a != b,
    "not equals": lambda a, b: a != b,
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
#: Operators of ``number-check``; ``absolute difference`` additionally takes ``"epsilon", <eps>``.
NUMBER_CHECK_OPS: frozenset[str] = frozenset({*_NUMBER_COMPARE, _ABS_DIFF})

_NUMBER_CHECK_FORMS = (
    "number-check 'check' must be [left, op, right] with op one of "
    f"{sorted(_NUMBER_COMPARE)}, or ['absolute difference', left, right, 'epsilon', eps] "
    "(also [left, 'absolute difference', right, 'epsilon', eps]) with eps a number >= 0"
)


def _epsilon(raw: Any) -> float:
    if isinstance(raw, bool):  # bool is an int subclass, but True as a tolerance is surely a mistake
        raise ValueError(f"number-check epsilon must be a number >= 0, got {raw!r}; {_NUMBER_CHECK_FORMS}")
    try:
        eps = float(raw.strip()) if isinstance(raw, str) else float(raw)
    except (TypeError, ValueError):
        raise ValueError(
            f"number-check epsilon must be a number >= 0, got {raw!r}; {_NUMBER_CHECK_FORMS}"
        ) from None
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"number-check epsilon must be a number >= 0, got {raw!r}; {_NUMBER_CHECK_FORMS}")
    return eps


def _split_number_check(check: Sequence[Any]) -> tuple[str, Any, Any, float | None]:
    """Return ``(op, left, right, epsilon)`` from any accepted form; ValueError otherwise."""
    if isinstance(check, str) or not isinstance(check, Sequence):
        raise ValueError(f"{_NUMBER_CHECK_FORMS}; got {check!r}")
    items = list(check)
    if len(items) == 5:
        if _norm_op(items[0]) == _ABS_DIFF:
            left, right = items[1], items[2]
        elif _norm_op(items[1]) == _ABS_DIFF:
            left, right = items[0], items[2]
        else:
            raise ValueError(f"{_NUMBER_CHECK_FORMS}; got {check!r}")
        if _norm_op(items[3]) != _EPSILON:
            raise ValueError(f"{_NUMBER_CHECK_FORMS}; expected 'epsilon' as 4th item, got {items[3]!r}")
        return _ABS_DIFF, left, right, _epsilon(items[4])
    if len(items) == 3:
        op = _norm_op(items[1])
        if op == _ABS_DIFF:
            raise ValueError(f"number-check 'absolute difference' needs an epsilon; {_NUMBER_CHECK_FORMS}")
        if op not in _NUMBER_COMPARE:
            raise ValueError(f"unknown number-check operator {items[1]!r}; {_NUMBER_CHECK_FORMS}")
        return op, items[0], items[2], None
    raise ValueError(f"{_NUMBER_CHECK_FORMS}; got {len(items)} items: {check!r}")


def validate_number_check(check: Sequence[Any]) -> None:
    """Raise ValueError (describing the accepted forms) unless ``check`` is a valid number-check.

    Accepted: ``[left, op, right]`` for comparison operators, and
    ``["absolute difference", left, right, "epsilon", eps]`` or
    ``[left, "absolute difference", right, "epsilon", eps]`` with ``eps`` a number >= 0.
    ``left``/``right`` are not inspected (they are templates until rendered).
    """
    _split_number_check(check)


def _operand(raw: Any, side: str) -> tuple[float | None, str | None]:
    if isinstance(raw, bool):
        return None, f"{side} operand {raw!r} is not a number"
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        text = str(raw).strip()
        try:
            value = float(text)
        except ValueError:
            return None, f"{side} operand {text[:80]!r} is not a number"
    if not math.isfinite(value):
        return None, f"{side} operand {raw!r} is not a finite number"
    return value, None


def number_check(rendered: Sequence[Any]) -> tuple[float, str | None]:
    """Evaluate a rendered number-check: ``(1.0 or 0.0, None)``, or ``(NaN, reason)``.

    Operands are rendered strings (surrounding whitespace ignored, as ``float()`` does) or numbers; a
    non-numeric operand yields NaN rather than 0 because the row cannot be judged, not judged wrong.
    ``absolute difference`` scores 1.0 when ``|left - right| <= epsilon``. A malformed check (unknown
    operator, missing epsilon) raises ValueError: that is a config error, not a data one.
    """
    op, left_raw, right_raw, eps = _split_number_check(rendered)
    left, left_err = _operand(left_raw, "left")
    right, right_err = _operand(right_raw, "right")
    if left is None or right is None:
        return math.nan, "; ".join(e for e in (left_err, right_err) if e)
    if op == _ABS_DIFF:
        assert eps is not None  # _split_number_check always returns one for this operator
        return (1.0 if abs(left - right) <= eps else 0.0), None
    return (1.0 if _NUMBER_COMPARE[op](left, right) else 0.0), None


# ---------------------------------------------------------------------------------------------------
# em / f1 (SQuAD-style)
# ---------------------------------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation, drop articles a/an/the, collapse whitespace."""
    lowered = str(text).lower()
    no_punct = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    no_articles = _ARTICLES_RE.sub(" ", no_punct)
    return " ".join(no_articles.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the SQuAD-normalised prediction equals the normalised reference, else 0.0."""
    return 1.0 if normalize_answer(prediction) == normalize_answer(reference) else 0.0


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 (0–1) between normalised prediction and reference tokens.

    When either side normalises to no tokens, F1 is 1.0 only if both do (SQuAD 2.0's no-answer rule), so
    f1 agrees with em on empty answers instead of scoring an exact empty match as 0.
    """
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    if not pred_tokens or not ref_tokens:
        return 1.0 if pred_tokens == ref_tokens else 0.0
    common = Counter(pred_tokens) & Counter(ref_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------------------------------
# optional libraries: bleu (sacrebleu), rouge (rouge-score)
# ---------------------------------------------------------------------------------------------------


def _import_for(metric_type: str) -> ModuleType:
    module_name, dist = OPTIONAL_DEPENDENCIES[metric_type]
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise MissingDependencyError(
            f"metric type '{metric_type}' needs {dist}, which is not installed: {_INSTALL_HINT}"
        ) from exc


def require_optional(metric_type: str) -> None:
    """Raise MissingDependencyError (with the install hint) if ``metric_type`` needs a missing library.

    Metric types without optional dependencies pass silently, so callers can check every metric of a
    config up front, before any model is called.
    """
    if metric_type in OPTIONAL_DEPENDENCIES:
        _import_for(metric_type)


def _as_references(references: Sequence[str] | str) -> list[str]:
    # A bare string is a Sequence[str] too; iterating it would turn every character into a reference.
    if isinstance(references, str):
        return [references]
    return [str(r) for r in references]


def bleu_sentence(candidate: str, references: Sequence[str]) -> float:
    """sacrebleu sentence BLEU (0–100) of ``candidate`` against one or more references."""
    refs = _as_references(references)
    if not refs:
        raise ValueError("bleu needs at least one reference per row")
    sacrebleu = _import_for("bleu")
    return float(sacrebleu.sentence_bleu(str(candidate), refs).score)


def bleu_corpus(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """sacrebleu corpus BLEU (0–100) over all rows; ``references[i]`` are the references of row ``i``.

    Rows may have different numbers of references: sacrebleu takes reference *streams* (one per
    reference position), so shorter rows are padded with None, which it skips. NaN for no rows.
    """
    if isinstance(candidates, str):
        raise ValueError("bleu_corpus needs a sequence of candidates, not a single string")
    if len(candidates) != len(references):
        raise ValueError(
            f"bleu_corpus got {len(candidates)} candidates but {len(references)} reference lists"
        )
    if not candidates:
        return math.nan
    per_row = [_as_references(refs) for refs in references]
    empty_rows = [i for i, refs in enumerate(per_row) if not refs]
    if empty_rows:
        raise ValueError(f"bleu needs at least one reference per row; rows without any: {empty_rows[:10]}")
    width = max(len(refs) for refs in per_row)
    streams: list[list[str | None]] = [
        [refs[k] if k < len(refs) else None for refs in per_row] for k in range(width)
    ]
    sacrebleu = _import_for("bleu")
    return float(sacrebleu.corpus_bleu([str(c) for c in candidates], streams).score)


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    # Built once: constructing the scorer loads the Porter stemmer; scoring itself keeps no state.
    rouge_scorer = importlib.import_module("rouge_score.rouge_scorer")
    return rouge_scorer.RougeScorer(list(_ROUGE_NAMES), use_stemmer=True)


def rouge_scores(candidate: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/3/L F-measures (0–1) with Porter stemming, keyed by NeMo's score names."""
    _import_for("rouge")  # turn a missing library into MissingDependencyError before touching the cache
    scores = _rouge_scorer().score(str(reference), str(candidate))
    return {nemo_name: float(scores[rouge_type].fmeasure) for rouge_type, nemo_name in _ROUGE_NAMES.items()}
