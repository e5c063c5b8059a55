"""Judge output → score parsing (NeMo llm-judge ``scores.<name>.parser``)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlflow_nemo_judge.scoring.parsing import (
    Parsed,
    compile_regex,
    convert_value,
    extract_json,
    parse_json_path,
    parse_score,
    strip_reasoning,
    strip_think,
    validate_parser,
)

RATING = {"type": "regex", "pattern": r"RATING:\s*(\d+)"}


def _json(path: str) -> dict[str, Any]:
    return {"type": "json", "json_path": path}


def assert_nan(result: Parsed, *reason_parts: str) -> None:
    # Unparseable output must be NaN with a reason, never a silent 0.
    assert math.isnan(result.value), result
    assert result.value != 0
    assert result.error is not None
    assert not result.ok
    for part in reason_parts:
        assert part in result.error, (part, result.error)


# --- strip_reasoning ------------------------------------------------------------------------------


def test_strip_reasoning_after_last_end_token() -> None:
    text = "<think>maybe RATING: 2 ... or </think> hmm</think>\n RATING: 5 "
    assert strip_reasoning(text, "</think>") == ("RATING: 5", None)


def test_strip_reasoning_custom_end_token_without_opening_tag() -> None:
    assert strip_reasoning("considering 2 [/THINK] RATING: 4", "[/THINK]") == ("RATING: 4", None)


def test_strip_reasoning_unfinished_with_end_token() -> None:
    # NeMo's include_if_not_finished: unset/true keeps the reply, false makes the row NaN.
    assert strip_reasoning("<think>RATING: 2 is tempting but", "</think>") == (
        "<think>RATING: 2 is tempting but",
        None,
    )
    text, err = strip_reasoning("<reasoning>RATING: 2", "</reasoning>", include_if_not_finished=False)
    assert text == ""
    assert err is not None and "'</reasoning>'" in err


def test_strip_reasoning_absent_end_token_and_no_opening_tag_is_unchanged() -> None:
    assert strip_reasoning("  RATING: 3  ", "</think>") == ("  RATING: 3  ", None)
    assert strip_reasoning("RATING: 3", None) == ("RATING: 3", None)


def test_strip_reasoning_without_end_token_leaves_think_alone() -> None:
    # As NeMo: reasoning is trimmed only with reasoning_params.end_token.
    text = "\n<think>I could give RATING: 1\nbut no.</think>\n\nRATING: 4"
    assert strip_reasoning(text, None) == (text, None)


def test_strip_think_heuristic_for_pairwise() -> None:
    text = "\n<think>I could give RATING: 1\nbut no.</think>\n\nRATING: 4"
    assert strip_think(text) == ("RATING: 4", None)
    body, err = strip_think("<think>RATING: 1 maybe")
    assert body == "" and err is not None and err.startswith("reasoning not finished")
    # R1-style templates put "<think>" in the prompt, so the reply carries only the closing tag.
    assert strip_think("RATING: 1 perhaps</think>RATING: 5") == ("RATING: 5", None)


def test_strip_reasoning_none_text() -> None:
    assert strip_reasoning(None, "</think>") == ("", None)


def test_think_stripping_prevents_matching_considered_rating() -> None:
    raw = "<think>RATING: 1? No, it is complete.</think>RATING: 5"
    text, err = strip_reasoning(raw, "</think>")
    assert err is None
    assert parse_score(text, RATING, "int") == Parsed(5.0, None)


# --- compile_regex --------------------------------------------------------------------------------


def test_compile_regex_ok_and_cached() -> None:
    assert compile_regex(r"RATING:\s*(\d+)") is compile_regex(r"RATING:\s*(\d+)")


def test_compile_regex_bad_pattern() -> None:
    with pytest.raises(ValueError, match="does not compile"):
        compile_regex(r"RATING:\s*(\d+")


def test_compile_regex_no_capture_group() -> None:
    with pytest.raises(ValueError, match="no capture group"):
        compile_regex(r"RATING:\s*\d+")
    with pytest.raises(ValueError, match="no capture group"):
        compile_regex(r"RATING:\s*(?:\d+)")


@pytest.mark.parametrize("bad", ["", None, ["(a)"]])
def test_compile_regex_non_string(bad: Any) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        compile_regex(bad)


# --- regex parser ---------------------------------------------------------------------------------


def test_regex_match() -> None:
    assert parse_score("Reasoning...\nRATING: 4", RATING, "int") == Parsed(4.0, None)


def test_regex_no_match() -> None:
    result = parse_score("I would give it a four.", RATING, "int")
    assert_nan(result, "no match for pattern", r"RATING:\s*(\d+)")


def test_regex_multiple_matches_takes_first() -> None:
    assert parse_score("RATING: 2\nRATING: 5", RATING, "int").value == 2.0


def test_regex_first_capture_group_is_used() -> None:
    parser = {"type": "regex", "pattern": r"(RATING):\s*(\d+)"}
    assert_nan(parse_score("RATING: 3", parser, "int"), "not a number")
    parser = {"type": "regex", "pattern": r"SCORE=(\d+)/(\d+)"}
    assert parse_score("SCORE=3/5", parser, "int").value == 3.0


def test_regex_group_not_participating() -> None:
    parser = {"type": "regex", "pattern": r"RATING:\s*(\d+)?"}
    assert_nan(parse_score("RATING: none", parser, "int"), "capture group")


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_empty_output(text: str | None) -> None:
    assert_nan(parse_score(text, RATING, "int"), "empty judge output")


@pytest.mark.parametrize(
    ("captured", "expected"),
    [("4", 4.0), ("4.", 4.0), ("**4**", 4.0), ("'4'", 4.0), ('"4"', 4.0), ("4.0", 4.0), ("(4),", 4.0)],
)
def test_regex_sloppy_numbers(captured: str, expected: float) -> None:
    parser = {"type": "regex", "pattern": r"RATING:\s*(\S+)"}
    assert parse_score(f"RATING: {captured}", parser, "int") == Parsed(expected, None)


def test_regex_int_rejects_fraction() -> None:
    parser = {"type": "regex", "pattern": r"RATING:\s*([\d.]+)"}
    assert_nan(parse_score("RATING: 4.5", parser, "int"), "not an integer", "4.5")
    assert parse_score("RATING: 4.5", parser, "float") == Parsed(4.5, None)


def test_regex_bool() -> None:
    parser = {"type": "regex", "pattern": r"CORRECT:\s*(\w+)"}
    assert parse_score("CORRECT: Yes", parser, "bool") == Parsed(1.0, None)
    assert parse_score("CORRECT: FALSE", parser, "boolean") == Parsed(0.0, None)
    assert_nan(parse_score("CORRECT: maybe", parser, "bool"), "not a boolean")


# --- json parser ----------------------------------------------------------------------------------


def test_json_whole_text() -> None:
    assert parse_score(' {"score": 3, "reason": "ok"} ', _json("score"), "int") == Parsed(3.0, None)


def test_json_fenced_block() -> None:
    text = 'Here is my verdict:\n```json\n{"score": 4, "why": "{braces}"}\n```\nThanks!'
    assert parse_score(text, _json("score"), "int") == Parsed(4.0, None)


def test_json_embedded_object_after_prose_with_braces() -> None:
    text = 'I use {curly} words. Result: {"verdict": {"score": 0.75}} done.'
    assert parse_score(text, _json("$.verdict.score"), "float") == Parsed(0.75, None)
    assert parse_score(text, _json("verdict.score"), "number") == Parsed(0.75, None)


def test_json_nested_list_path() -> None:
    text = '{"items": [{"score": 2}, {"score": 5}]}'
    assert parse_score(text, _json("items[1].score"), "int").value == 5.0
    assert parse_score(text, _json("$.items[0].score"), "int").value == 2.0
    assert_nan(parse_score(text, _json("items[7].score"), "int"), "out of range")
    assert_nan(parse_score(text, _json("items.score"), "int"), "not an object")
    assert_nan(parse_score(text, _json("items[0].score[0]"), "int"), "not a list")


def test_json_missing_key() -> None:
    assert_nan(parse_score('{"rating": 4}', _json("score"), "int"), "key 'score' not found", "rating")


def test_json_non_object_root() -> None:
    assert_nan(parse_score("[1, 2]", _json("score"), "int"), "not an object")


def test_json_no_json() -> None:
    assert_nan(parse_score("no json here {nope}", _json("score"), "int"), "no JSON object found")


def test_json_values() -> None:
    assert parse_score('{"ok": true}', _json("ok"), "bool") == Parsed(1.0, None)
    assert parse_score('{"ok": false}', _json("ok"), "bool") == Parsed(0.0, None)
    assert parse_score('{"ok": "no"}', _json("ok"), "bool") == Parsed(0.0, None)
    assert parse_score('{"s": "4"}', _json("s"), "int") == Parsed(4.0, None)
    assert parse_score('{"s": 4.0}', _json("s"), "int") == Parsed(4.0, None)
    assert_nan(parse_score('{"s": 4.5}', _json("s"), "int"), "not an integer")
    assert_nan(parse_score('{"s": null}', _json("s"), "int"), "null")
    assert_nan(parse_score('{"s": [4]}', _json("s"), "int"), "not a scalar")
    assert_nan(parse_score('{"s": "great"}', _json("s"), "float"), "not a number")
    assert_nan(parse_score('{"s": 2}', _json("s"), "bool"), "not a boolean")


def test_json_root_path() -> None:
    assert parse_score("4", _json("$"), "int") == Parsed(4.0, None)


def test_extract_json_prefers_whole_text_then_fence_then_embedded() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('x {"b": 1} ```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('x {"b": 1} y {"a": 1}') == {"b": 1}
    with pytest.raises(ValueError):
        extract_json("nothing")


def test_parse_json_path_forms() -> None:
    assert parse_json_path("score") == ("score",)
    assert parse_json_path("a.b") == ("a", "b")
    assert parse_json_path("$.a.b") == ("a", "b")
    assert parse_json_path("items[0].score") == ("items", 0, "score")
    assert parse_json_path("$['a.b'][-1]") == ("a.b", -1)
    assert parse_json_path("$") == ()


@pytest.mark.parametrize("bad", ["", "a..b", "a.", "items[0]score", "[x]", 3])
def test_parse_json_path_malformed(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_json_path(bad)


# --- conversion and validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "score_type", "expected"),
    [
        ("4", "int", 4.0),
        ("4", "integer", 4.0),
        (" -2 ", "int", -2.0),
        ("4.0", "int", 4.0),
        ("0.25", "float", 0.25),
        ("1e-1", "number", 0.1),
        (3, "float", 3.0),
        ("TRUE", "bool", 1.0),
        ("no", "bool", 0.0),
        ("1", "boolean", 1.0),
        ("0", "bool", 0.0),
        (True, "int", 1.0),
        (False, "bool", 0.0),
    ],
)
def test_convert_value_ok(raw: Any, score_type: str, expected: float) -> None:
    assert convert_value(raw, score_type) == Parsed(expected, None)


@pytest.mark.parametrize(
    ("raw", "score_type", "reason"),
    [
        ("4.5", "int", "not an integer"),
        ("four", "int", "not a number"),
        ("nan", "float", "not a number"),
        ("inf", "float", "not a number"),
        (float("inf"), "float", "not a finite number"),
        ("1,000", "int", "not a number"),
        ("", "int", "not a number"),
        ("maybe", "bool", "not a boolean"),
        (0.5, "bool", "not a boolean"),
    ],
)
def test_convert_value_nan(raw: Any, score_type: str, reason: str) -> None:
    assert_nan(convert_value(raw, score_type), reason)


def test_unknown_score_type_raises() -> None:
    with pytest.raises(ValueError, match="unknown score type"):
        parse_score("RATING: 4", RATING, "likert")


@pytest.mark.parametrize(
    ("parser", "message"),
    [
        ({"type": "xml"}, "unknown parser type"),
        ({}, "unknown parser type"),
        ({"type": "regex"}, "needs a 'pattern'"),
        ({"type": "regex", "pattern": r"\d+"}, "no capture group"),
        ({"type": "json"}, "needs a 'json_path'"),
        ({"type": "json", "json_path": "a..b"}, "malformed"),
    ],
)
def test_invalid_parser_raises(parser: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_parser(parser)
    with pytest.raises(ValueError, match=message):
        parse_score("RATING: 4", parser, "int")
