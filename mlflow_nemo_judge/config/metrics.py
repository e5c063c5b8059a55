"""Typed metrics: ``llm-judge`` (judge model, template, scores with a regex/json parser) and the simple
metrics (string-check, number-check, bleu, rouge, em, f1, tool-calling).

:data:`Metric` picks the model from ``type``. A type without a model here (NeMo has more, e.g.
``agentic`` metrics) still loads, as :class:`OtherMetric` with its params kept as a plain dict; the local
plan is what refuses it. Structure is checked at load; ``check_local`` checks what the *local* scorers
need on top (a config NeMo accepts may still lack it, e.g. an ``em`` without a ``reference``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Tag, field_validator

from mlflow_nemo_judge.config.common import ModelRef, Open, RequestTemplate
from mlflow_nemo_judge.errors import ConfigError

# ---------------------------------------------------------------------------------------- llm-judge


class RegexParser(Open):
    """The first capture group of ``re.search(pattern, judge_output)`` is the score."""

    type: Literal["regex"]
    pattern: str


class JsonParser(Open):
    """The value at ``json_path`` of the JSON object in the judge output is the score."""

    type: Literal["json"]
    json_path: str


def _type_tag(v: Any) -> Any:
    return v.get("type") if isinstance(v, dict) else getattr(v, "type", None)


Parser = Annotated[
    Annotated[RegexParser, Tag("regex")] | Annotated[JsonParser, Tag("json")], Discriminator(_type_tag)
]


class Score(Open):
    type: str | None = None  # "int" in NVIDIA's examples; the local plan checks it is one it converts
    parser: Parser


class JudgeParams(Open):
    """``llm-judge`` params: the judge model, its request template, and the scores parsed from its reply."""

    model: ModelRef
    template: RequestTemplate
    scores: dict[str, Score]
    extra: dict[str, Any] | None = None

    @field_validator("scores")
    @classmethod
    def _some_scores(cls, v: dict[str, Score]) -> dict[str, Score]:
        if not v:
            raise ValueError("at least one score with a type and a parser is required")
        return v


class CheckParams(Open):
    """``string-check`` ``[left, op, right]`` / ``number-check`` (``[op, left, right, "epsilon", eps]`` …)."""

    check: list[Any] | None = None


class BleuParams(Open):
    references: list[str] | None = None
    candidate: str | None = None  # default: sample.output_text


class ToolCallingParams(Open):
    """``tool-calling``: the ground-truth calls template (``"{{ item.tool_calls | tojson }}"``); the
    data-flywheel blueprint also passes a judge ``model``, which NeMo's docs give no use (kept as written)."""

    tool_calls_ground_truth: Any = None
    model: Any = None


class ReferenceParams(Open):
    """``rouge``/``em``/``f1``: one reference template (NeMo's similarity metrics may omit it)."""

    reference: str | None = None
    candidate: str | None = None  # default: sample.output_text


# ------------------------------------------------------------------------------------------- metrics


class MetricConfig(Open):
    """Base of the metric models."""

    type: str
    params: Any = None

    def params_dict(self) -> dict[str, Any]:
        """The params as written, as a plain dict (templates are rendered from this)."""
        p = self.params
        return p.to_dict() if isinstance(p, Open) else dict(p or {})

    def check_local(self, path: str) -> None:
        """Raise ``ConfigError`` (at ``path`` = the metric's config path) if the local scorers cannot
        compute this metric as configured. Templates are checked by the plan against the data."""


class JudgeMetric(MetricConfig):
    type: Literal["llm-judge"]
    params: JudgeParams

    def check_local(self, path: str) -> None:
        from mlflow_nemo_judge.scoring.parsing import compile_regex, parse_json_path, validate_score_type

        for sname, s in self.params.scores.items():
            spath = f"{path}.params.scores.{sname}"
            try:
                validate_score_type(s.type or "float")
            except ValueError as exc:
                raise ConfigError(f"{spath}.type", str(exc)) from None
            try:
                if isinstance(s.parser, RegexParser):
                    compile_regex(s.parser.pattern)
                else:
                    parse_json_path(s.parser.json_path)
            except ValueError as exc:
                key = "pattern" if isinstance(s.parser, RegexParser) else "json_path"
                raise ConfigError(f"{spath}.parser.{key}", str(exc)) from None


class CheckMetric(MetricConfig):
    type: Literal["string-check", "number-check"]
    params: CheckParams | None = None

    def check_local(self, path: str) -> None:
        from mlflow_nemo_judge.scoring import builtin

        check = self.params.check if self.params else None
        if check is None:
            raise ConfigError(
                f"{path}.params.check",
                "required: a list such as ['{{sample.output_text}}', 'equals', '{{item.expected}}']",
            )
        validate = (
            builtin.validate_string_check if self.type == "string-check" else builtin.validate_number_check
        )
        try:
            validate(check)
        except ValueError as exc:
            raise ConfigError(f"{path}.params.check", str(exc)) from None


class BleuMetric(MetricConfig):
    type: Literal["bleu"]
    params: BleuParams | None = None

    def check_local(self, path: str) -> None:
        from mlflow_nemo_judge.scoring import builtin

        if not (self.params and self.params.references):
            raise ConfigError(
                f"{path}.params.references",
                "required: a list of reference templates, e.g. ['{{ item.reference }}']",
            )
        builtin.require_optional("bleu")


class ReferenceMetric(MetricConfig):
    type: Literal["rouge", "em", "f1"]
    params: ReferenceParams | None = None

    def check_local(self, path: str) -> None:
        from mlflow_nemo_judge.scoring import builtin

        if not (self.params and self.params.reference is not None):
            # similarity_metrics-style configs name no reference; we need one to compare against.
            raise ConfigError(
                f"{path}.params.reference",
                "required: a reference template, e.g. '{{ item.reference_answer }}'",
            )
        if self.type == "rouge":
            builtin.require_optional("rouge")


class ToolCallingMetric(MetricConfig):
    type: Literal["tool-calling"]
    params: ToolCallingParams | None = None

    def check_local(self, path: str) -> None:
        gt = self.params.tool_calls_ground_truth if self.params else None
        if not isinstance(gt, (str, list)) or not gt:
            raise ConfigError(
                f"{path}.params.tool_calls_ground_truth",
                "required: a template rendering to the expected tool calls as JSON, "
                "e.g. '{{ item.tool_calls | tojson }}'",
            )


class OtherMetric(MetricConfig):
    """A metric type without a typed model here (NeMo has more): params stay a plain dict."""

    params: dict[str, Any] | None = None


_METRIC_TAGS = {
    "llm-judge": "judge",
    "string-check": "check",
    "number-check": "check",
    "bleu": "bleu",
    "rouge": "reference",
    "em": "reference",
    "f1": "reference",
    "tool-calling": "tool-calling",
}


def _metric_tag(v: Any) -> str:
    return _METRIC_TAGS.get(str(_type_tag(v)), "other")


Metric = Annotated[
    Annotated[JudgeMetric, Tag("judge")]
    | Annotated[CheckMetric, Tag("check")]
    | Annotated[BleuMetric, Tag("bleu")]
    | Annotated[ReferenceMetric, Tag("reference")]
    | Annotated[ToolCallingMetric, Tag("tool-calling")]
    | Annotated[OtherMetric, Tag("other")],
    Discriminator(_metric_tag),
]
