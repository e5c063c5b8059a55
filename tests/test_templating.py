import pytest

from mlflow_nemo_judge.errors import TemplateError
from mlflow_nemo_judge.scoring.templating import (
    build_context,
    check_syntax,
    normalize_keys,
    render_string,
    render_value,
)


def test_key_normalisation_and_collisions():
    assert normalize_keys({"ID": 1, "My Field!": 2, "my_field_": 3, "my-field-": 4}) == {
        "id": 1,
        "my_field_": 2,
        "my_field__1": 3,
        "my_field__2": 4,
    }


def test_row_fields_at_top_level_and_as_item():
    ctx = build_context({"Question": "q?"}, {"output_text": "a"})
    assert render_string("{{ question }}|{{ item.question }}|{{ sample.output_text }}", ctx, "p") == "q?|q?|a"


def test_trailing_newlines_are_kept_exactly():
    ctx = build_context({"content": "C"}, {"output_text": "S"})
    src = "\nFull Consult: {{ item.content }}\nSummary: {{ sample.output_text }}\n"
    assert render_string(src, ctx, "p") == "\nFull Consult: C\nSummary: S\n"


def test_json_strings_become_structures_but_content_stays_text():
    msgs = [{"role": "user", "content": "hi"}]
    ctx = build_context({"messages": msgs, "blob": '{"a": 1}'})
    out = render_value(
        {"messages": "{{ item.messages | tojson }}", "x": [{"role": "user", "content": "{{ item.blob }}"}]},
        ctx,
        "t",
    )
    assert out["messages"] == msgs
    assert out["x"][0]["content"] == '{"a": 1}'


def test_data_is_never_rendered_as_a_template():
    ctx = build_context({"content": "{{ 7 * 7 }} {% for x in range(3) %}x{% endfor %}"})
    assert render_string("{{ item.content }}", ctx, "p") == "{{ 7 * 7 }} {% for x in range(3) %}x{% endfor %}"


def test_sandbox_blocks_attribute_escapes():
    ctx = build_context({"a": "x"})
    with pytest.raises(TemplateError, match="rendering failed"):
        render_string("{{ item.a.__class__.__mro__[1].__subclasses__() }}", ctx, "tasks.t.params.template")


def test_missing_variable_names_field_and_available_ones():
    ctx = build_context({"content": "x", "ID": "1"})
    with pytest.raises(TemplateError) as ei:
        render_string("{{ item.summary }}", ctx, "tasks.t.metrics.m.params.template.messages[1].content")
    msg = str(ei.value)
    assert msg.startswith("tasks.t.metrics.m.params.template.messages[1].content:")
    assert "'summary'" in msg and "content, id" in msg


def test_syntax_errors_name_the_path():
    with pytest.raises(TemplateError) as ei:
        check_syntax({"messages": [{"role": "user", "content": "{{ item.x "}]}, "tasks.t.params.template")
    assert ei.value.path == "tasks.t.params.template.messages[0].content"
    assert "syntax error" in str(ei.value)


# --- Data never changes type because its text looks like JSON -------------------------------------------
# Only the template decides whether a value is a structure: the expression's own value is a list/dict, or
# the template asks for JSON with ``| tojson``. Rendered *text* that happens to look like JSON stays text.


def test_target_output_that_looks_like_json_stays_text_in_a_string_check():
    from mlflow_nemo_judge.scoring.builtin import string_check

    ctx = build_context({"answer": '{"answer": 4}'}, {"output_text": '{"answer": 4}'})
    left, op, right = render_value(
        ["{{ sample.output_text }}", "equals", "{{ item.answer }}"], ctx, "tasks.t.metrics.m.params.check"
    )
    assert left == '{"answer": 4}' and right == '{"answer": 4}'
    assert string_check(str(left), str(op), str(right)) == 1.0


def test_row_text_that_looks_like_a_list_stays_text_under_any_key():
    ctx = build_context({"ref": "[1, 2]", "obj": ' {"a": 1} '})
    out = render_value({"reference": "{{ item.ref }}", "x": ["{{ item.obj }}"], "y": "{{ ref }}"}, ctx, "p")
    assert out == {"reference": "[1, 2]", "x": [' {"a": 1} '], "y": "[1, 2]"}


def test_several_expressions_are_text_even_if_they_join_into_json():
    ctx = build_context({"a": "[1,", "b": "2]"})
    assert render_value({"x": "{{ a }}{{ b }}", "y": "{{ a }} {{ b }}"}, ctx, "p") == {
        "x": "[1,2]",
        "y": "[1, 2]",
    }


def test_native_list_or_dict_becomes_that_structure_as_a_copy():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    row = {"tools": tools, "meta": {"k": [1, 2]}}
    out = render_value(
        {"tools": "{{ item.tools }}", "meta": " {{ meta }}\n", "first": "{{ tools[0] }}"},
        build_context(row),
        "p",
    )
    assert out == {"tools": tools, "meta": {"k": [1, 2]}, "first": tools[0]}
    out["tools"].append("x")
    out["meta"]["k"].append(3)
    assert row == {"tools": [tools[0]], "meta": {"k": [1, 2]}}  # the dataset row is never aliased


def test_tojson_splices_a_structure_but_not_a_scalar():
    msgs = [{"role": "user", "content": "<b>&'x'</b>"}]
    ctx = build_context({"messages": msgs, "n": 5, "s": "[1, 2]"})
    out = render_value(
        {
            "messages": "{{- item.messages | tojson -}}",
            "n": "{{ item.n | tojson }}",
            "s": "{{ item.s | tojson }}",
        },
        ctx,
        "p",
    )
    assert out["messages"] == msgs  # tojson's HTML-safe escapes decode back to the original text
    assert out["n"] == "5"
    assert out["s"] == '"[1, 2]"'  # a string stays a (JSON-quoted) string: tojson asked for JSON text


def test_text_keys_keep_text_even_for_native_structures():
    ctx = build_context({"messages": [{"role": "user", "content": "hi"}]})
    out = render_value({"content": "{{ item.messages | tojson }}", "text": "{{ item.messages }}"}, ctx, "p")
    assert out["content"] == '[{"content": "hi", "role": "user"}]'
    assert isinstance(out["text"], str)


def test_plain_single_expressions_keep_their_text():
    ctx = build_context({"n": 3, "flag": True, "none": None, "s": "x"})
    out = render_value(
        {"a": "{{ n }}", "b": "{{ flag }}", "c": "{{ none }}", "d": "{{ s }}!", "e": "{{ n + 1 }}"}, ctx, "p"
    )
    assert out == {"a": "3", "b": "True", "c": "None", "d": "x!", "e": "4"}


def test_single_expression_errors_name_the_config_path():
    ctx = build_context({"content": "x", "ID": "1"})
    with pytest.raises(TemplateError) as ei:
        render_value({"check": ["{{ item.summary }}", "equals", "a"]}, ctx, "tasks.t.metrics.m.params")
    assert ei.value.path == "tasks.t.metrics.m.params.check[0]"
    assert "'summary'" in str(ei.value) and "content, id" in str(ei.value)
    with pytest.raises(TemplateError) as ei:
        render_value({"reference": "{{ item.summary.text }}"}, ctx, "tasks.t.metrics.m.params")
    assert ei.value.path == "tasks.t.metrics.m.params.reference"
    assert "'summary'" in str(ei.value)


def test_single_expressions_are_sandboxed():
    ctx = build_context({"a": "x"})
    with pytest.raises(TemplateError, match="rendering failed"):
        render_value({"x": "{{ item.a.__class__.__mro__[1].__subclasses__() }}"}, ctx, "p")
