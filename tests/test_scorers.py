"""Non-judge metrics: string-check, number-check, em, f1, bleu, rouge."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest

from mlflow_nemo_judge.errors import MissingDependencyError
from mlflow_nemo_judge.scoring.builtin import (
    NUMBER_CHECK_OPS,
    ROUGE_SCORE_NAMES,
    STRING_CHECK_OPS,
    bleu_corpus,
    bleu_sentence,
    exact_match,
    normalize_answer,
    number_check,
    require_optional,
    rouge_scores,
    string_check,
    token_f1,
    validate_number_check,
    validate_string_check,
)

# --- string-check ---------------------------------------------------------------------------------

STRING_CASES: list[tuple[str, str, str, float]] = [
    ("Paris", "equals", "Paris", 1.0),
    ("Paris", "equals", "paris", 0.0),
    ("Paris", "==", "Paris", 1.0),
    ("Paris", "==", "Rome", 0.0),
    ("Paris", "not equals", "Rome", 1.0),
    ("Paris", "not equals", "Paris", 0.0),
    ("Paris", "!=", "Rome", 1.0),
    ("Paris", "!=", "Paris", 0.0),
    ("Paris", "<>", "Rome", 1.0),
    ("Paris", "<>", "Paris", 0.0),
    ("The capital is Paris.", "contains", "Paris", 1.0),
    ("The capital is Rome.", "contains", "Paris", 0.0),
    ("The capital is Rome.", "not contains", "Paris", 1.0),
    ("The capital is Paris.", "not contains", "Paris", 0.0),
    ("Paris, France", "startswith", "Paris", 1.0),
    ("France: Paris", "startswith", "Paris", 0.0),
    ("France: Paris", "endswith", "Paris", 1.0),
    ("Paris, France", "endswith", "Paris", 0.0),
]


@pytest.mark.parametrize(("left", "op", "right", "expected"), STRING_CASES)
def test_string_check(left: str, op: str, right: str, expected: float) -> None:
    assert string_check(left, op, right) == expected


def test_string_check_covers_every_operator() -> None:
    assert {op for _, op, _, _ in STRING_CASES} == STRING_CHECK_OPS


def test_string_check_does_not_trim() -> None:
    # NeMo compares rendered strings as-is; users add `| trim` in the template.
    assert string_check("Paris\n", "equals", "Paris") == 0.0
    assert string_check("Paris", "endswith", "Paris ") == 0.0


def test_string_check_stringifies_and_forgives_op_case() -> None:
    assert string_check(4, "equals", "4") == 1.0  # type: ignore[arg-type]
    assert string_check("a", "Not  Equals", "b") == 1.0


def test_string_check_unknown_op() -> None:
    with pytest.raises(ValueError, match="unknown string-check operator"):
        string_check("a", "matches", "a")


def test_validate_string_check() -> None:
    validate_string_check(["{{ sample.output_text | trim }}", "equals", "{{ item.answer }}"])
    with pytest.raises(ValueError, match=r"\[left, op, right\]"):
        validate_string_check(["a", "equals"])
    with pytest.raises(ValueError, match="unknown string-check operator"):
        validate_string_check(["a", "is", "b"])


# --- number-check ---------------------------------------------------------------------------------

NUMBER_CASES: list[tuple[str, str, str, float]] = [
    ("3", "equals", "3.0", 1.0),
    ("3", "equals", "4", 0.0),
    ("3", "==", "3", 1.0),
    ("3", "!=", "4", 1.0),
    ("3", "!=", "3", 0.0),
    ("3", "<>", "4", 1.0),
    ("3", "not equals", "3", 0.0),
    ("4", ">=", "4", 1.0),
    ("3", ">=", "4", 0.0),
    ("5", "gte", "4", 1.0),
    ("4", "greater than or equal", "4", 1.0),
    ("5", ">", "4", 1.0),
    ("4", ">", "4", 0.0),
    ("5", "gt", "4", 1.0),
    ("3", "greater than", "4", 0.0),
    ("4", "<=", "4", 1.0),
    ("5", "<=", "4", 0.0),
    ("3", "lte", "4", 1.0),
    ("4", "less than or equal", "4", 1.0),
    ("3", "<", "4", 1.0),
    ("4", "<", "4", 0.0),
    ("3", "lt", "4", 1.0),
    ("5", "less than", "4", 0.0),
]


@pytest.mark.parametrize(("left", "op", "right", "expected"), NUMBER_CASES)
def test_number_check_comparisons(left: str, op: str, right: str, expected: float) -> None:
    assert number_check([left, op, right]) == (expected, None)


def test_number_check_covers_every_operator() -> None:
    assert {op for _, op, _, _ in NUMBER_CASES} | {"absolute difference"} == NUMBER_CHECK_OPS


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (["absolute difference", "4", "5", "epsilon", 1], 1.0),
        (["absolute difference", " 4 ", "5.5", "epsilon", 1], 0.0),
        (["absolute difference", "4", "4", "epsilon", 0], 1.0),
        (["absolute difference", "4", "4.1", "epsilon", 0], 0.0),
        (["4", "absolute difference", "4.25", "epsilon", 0.5], 1.0),
        (["absolute difference", 10, "7", "epsilon", "2.5"], 0.0),
    ],
)
def test_number_check_absolute_difference(check: list[Any], expected: float) -> None:
    assert number_check(check) == (expected, None)


@pytest.mark.parametrize(
    ("check", "reason"),
    [
        (["four", "equals", "4"], "left operand 'four' is not a number"),
        (["4", ">", "n/a"], "right operand 'n/a' is not a number"),
        (["", "<", "1"], "left operand '' is not a number"),
        (["absolute difference", "4", "x", "epsilon", 1], "right operand 'x'"),
        (["inf", "==", "1"], "not a finite number"),
        ([True, "==", "1"], "left operand True"),
    ],
)
def test_number_check_non_numeric_is_nan(check: list[Any], reason: str) -> None:
    value, error = number_check(check)
    assert math.isnan(value)
    assert error is not None and reason in error


def test_number_check_both_operands_bad_reports_both() -> None:
    _, error = number_check(["a", "==", "b"])
    assert error is not None and "left" in error and "right" in error


def test_validate_number_check_accepts_forms() -> None:
    validate_number_check(["{{ item.x | trim }}", "gte", "{{ y }}"])
    validate_number_check(["absolute difference", "{{ a }}", "{{ b }}", "epsilon", 1])
    validate_number_check(["{{ a }}", "absolute difference", "{{ b }}", "epsilon", 0])


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (["a", "approx", "b"], "unknown number-check operator"),
        (["a", "absolute difference", "b"], "needs an epsilon"),
        (["absolute difference", "a", "b", "tolerance", 1], "'epsilon' as 4th item"),
        (["absolute difference", "a", "b", "epsilon", -1], "epsilon must be a number >= 0"),
        (["absolute difference", "a", "b", "epsilon", "lots"], "epsilon must be a number >= 0"),
        (["absolute difference", "a", "b", "epsilon", True], "epsilon must be a number >= 0"),
        (["a", ">", "b", "epsilon", 1], "absolute difference"),
        (["a", ">"], "got 2 items"),
        ("a > b", "must be"),
    ],
)
def test_validate_number_check_errors(check: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        validate_number_check(check)
    # Every error spells out the accepted forms so the user can fix the config without the docs.
    assert "['absolute difference', left, right, 'epsilon', eps]" in str(info.value)
    with pytest.raises(ValueError):
        number_check(check)


# --- em / f1 --------------------------------------------------------------------------------------


def test_normalize_answer() -> None:
    assert normalize_answer("  The  Eiffel-Tower, in   Paris! ") == "eiffeltower in paris"
    assert normalize_answer("An apple a day") == "apple day"


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("The Cat!", "cat", 1.0),
        ("Barack Obama", "Obama", 0.0),
        ("  a  Denver Broncos.", "Denver Broncos", 1.0),
        ("", "", 1.0),
        ("the", "", 1.0),  # both normalise to empty
    ],
)
def test_exact_match(prediction: str, reference: str, expected: float) -> None:
    assert exact_match(prediction, reference) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # "big red dog" vs "red dog barked": 2 common, P = R = 2/3 → F1 = 2/3.
        ("the big red dog", "a red dog barked", 2 / 3),
        # "in paris france" vs "paris": 1 common, P = 1/3, R = 1 → F1 = 2·(1/3)·1/(4/3) = 1/2.
        ("in Paris, France", "Paris", 0.5),
        # repeated tokens count with multiplicity: "dog dog" vs "dog": 1 common, P = 1/2, R = 1 → 2/3.
        ("dog dog", "dog", 2 / 3),
        ("The Cat!", "cat", 1.0),
        ("blue", "red", 0.0),
        ("", "red", 0.0),
        ("", "the", 1.0),
    ],
)
def test_token_f1(prediction: str, reference: str, expected: float) -> None:
    assert token_f1(prediction, reference) == pytest.approx(expected)


# --- bleu -----------------------------------------------------------------------------------------


def test_bleu_sentence_identical_and_disjoint() -> None:
    assert bleu_sentence("the quick brown fox jumps", ["the quick brown fox jumps"]) == pytest.approx(100.0)
    assert bleu_sentence("the quick brown fox jumps", ["lorem ipsum dolor sit amet"]) == pytest.approx(
        0.0, abs=1e-6
    )


def test_bleu_sentence_multiple_references_and_bare_string() -> None:
    assert bleu_sentence("a b c d", ["w x y z", "a b c d"]) == pytest.approx(100.0)
    # A bare string is one reference, not a list of characters.
    assert bleu_sentence("a b c d", "a b c d") == pytest.approx(100.0)
    with pytest.raises(ValueError, match="at least one reference"):
        bleu_sentence("a", [])


def test_bleu_corpus() -> None:
    cands = ["the cat sat on the mat", "a dog barked loudly"]
    refs = [["the cat sat on the mat"], ["a dog barked loudly"]]
    assert bleu_corpus(cands, refs) == pytest.approx(100.0)
    partial = bleu_corpus(cands, [["the cat sat on a mat"], ["the dog barked"]])
    assert 0.0 <= partial < 100.0


def test_bleu_corpus_ragged_references() -> None:
    cands = ["a b c d", "w x y z"]
    assert bleu_corpus(cands, [["a b c d"], ["q r s t", "w x y z"]]) == pytest.approx(100.0)


def test_bleu_corpus_edge_cases() -> None:
    assert math.isnan(bleu_corpus([], []))
    with pytest.raises(ValueError, match="2 candidates but 1"):
        bleu_corpus(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="rows without any"):
        bleu_corpus(["a", "b"], [["a"], []])


# --- rouge ----------------------------------------------------------------------------------------


def test_rouge_identical() -> None:
    scores = rouge_scores("The cat sat on the mat.", "The cat sat on the mat.")
    assert (
        set(scores)
        == set(ROUGE_SCORE_NAMES)
        == {
            "rouge_1_score",
            "rouge_2_score",
            "rouge_3_score",
            "rouge_L_score",
        }
    )
    assert all(v == pytest.approx(1.0) for v in scores.values())


def test_rouge_partial_overlap() -> None:
    # Tokens: "the cat sat on the mat" vs "the cat lay on a mat" (6 each). Clipped unigram overlap:
    # the(1) cat(1) on(1) mat(1) = 4 → P = R = 4/6 → F1 = 2/3.
    # Bigrams: 5 each, only "the cat" shared → F1 = 1/5.
    scores = rouge_scores("the cat sat on the mat", "the cat lay on a mat")
    assert scores["rouge_1_score"] == pytest.approx(2 / 3)
    assert scores["rouge_2_score"] == pytest.approx(1 / 5)
    assert 0.0 < scores["rouge_L_score"] < 1.0


def test_rouge_uses_stemmer() -> None:
    assert rouge_scores("cats running", "cat runs")["rouge_1_score"] == pytest.approx(1.0)


# --- optional dependencies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric_type", "module", "dist"),
    [("bleu", "sacrebleu", "sacrebleu"), ("rouge", "rouge_score", "rouge-score")],
)
def test_require_optional_missing(
    monkeypatch: pytest.MonkeyPatch, metric_type: str, module: str, dist: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependencyError, match=rf"{metric_type}' needs {dist}") as info:
        require_optional(metric_type)
    assert "pip install 'mlflow-nemo-judge[metrics]'" in str(info.value)
    assert info.value.exit_code == 2


def test_metric_functions_raise_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    with pytest.raises(MissingDependencyError, match="mlflow-nemo-judge\\[metrics\\]"):
        bleu_sentence("a", ["a"])
    with pytest.raises(MissingDependencyError):
        bleu_corpus(["a"], [["a"]])
    with pytest.raises(MissingDependencyError):
        rouge_scores("a", "a")


def test_require_optional_present_and_unrelated() -> None:
    require_optional("bleu")
    require_optional("rouge")
    for metric_type in ("string-check", "number-check", "em", "f1", "llm-judge"):
        require_optional(metric_type)
