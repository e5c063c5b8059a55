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
