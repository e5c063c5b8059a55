"""The building blocks of configs and targets: the open base model, tagged unions, endpoints, models,
datasets, run params and request templates.

Compatibility rules, kept by :class:`Open` for every model of the package's config:

- unknown fields are kept (``extra="allow"``) so they pass through to the ``nemo`` backend, and the
  order the keys were written in is remembered, so ``to_dict()`` (an ``exclude_unset`` dump) returns the
  dict that was read, byte for byte under ``json.dumps``;
- numbers keep their type as written (``10`` stays an int, ``1e-05`` a float);
- every union is *tagged* (a pydantic discriminated union with our own tags), so a validation error
  follows exactly one branch and ``load.config_path`` can drop the tag from the error location by
  walking these types, instead of guessing which location parts are branch names.

Secrets: an endpoint may carry ``api_key`` literally or ``api_key_env: NAME`` (our extension, resolved
from the environment only when a call is about to be made).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    Tag,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from mlflow_nemo_judge.config.keys import resolve_key
from mlflow_nemo_judge.config.secrets import MASK, redact_url


def sha256_json(obj: Any) -> str:
    """Content hash of a JSON-like value, independent of key order."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


class Open(BaseModel):
    """Base of every config model: keep unknown fields and the key order as written; dump what was set."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    # Fields NeMo defines that we do not model: kept like any unknown key, but never reported as a
    # misspelling of a field we do model (e.g. ``max_new_tokens`` is not a typo of ``max_tokens``).
    passthrough: ClassVar[frozenset[str]] = frozenset()
    # The file this object was loaded from (relative dataset paths resolve against its folder).
    _source: Path | None = PrivateAttr(default=None)
    # ``{config path: "namespace/name"}`` of the NeMo references this object was resolved from
    # (``config.references``): recorded in the run's params and tags, submitted as such to NeMo.
    _references: dict[str, str] = PrivateAttr(default_factory=dict)
    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        obj = handler(data)
        if isinstance(data, dict) and isinstance(obj, Open):
            obj._order = tuple(data)
        return obj

    @model_serializer(mode="wrap")
    def _dump_in_order(self, handler: SerializerFunctionWrapHandler) -> Any:
        # pydantic dumps declared fields first, then extras; a config is written in the user's order.
        out = handler(self)
        if not isinstance(out, dict) or not self._order:
            return out
        pos = {k: i for i, k in enumerate(self._order)}
        return dict(sorted(out.items(), key=lambda kv: pos.get(kv[0], len(pos))))

    def to_dict(self) -> dict[str, Any]:
        """This object as written (unset fields omitted); may contain secrets — never log it."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


# ------------------------------------------------------------------------------------- tagged unions


def _number_tag(v: Any) -> str:
    return "int" if isinstance(v, int) and not isinstance(v, bool) else "float"


def _str_tag(v: Any) -> str:
    """``str`` for a string (a ``namespace/name`` reference, a single value, a JSON template), else ``obj``."""
    return "str" if isinstance(v, str) else "obj"


Number = Annotated[Annotated[int, Tag("int")] | Annotated[float, Tag("float")], Discriminator(_number_tag)]
StrOrList = Annotated[Annotated[str, Tag("str")] | Annotated[list[str], Tag("obj")], Discriminator(_str_tag)]


def _positive(v: Any) -> Any:
    if v is not None and v <= 0:
        raise ValueError(f"must be a positive number, got {v!r}")
    return v


def _not_negative(v: Any) -> Any:
    if v is not None and v < 0:
        raise ValueError(f"must be >= 0, got {v!r}")
    return v


# RFC 9110 §5.6.2: a header name is a token.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than tab: CR/LF would split the request (header injection), NUL truncates it.
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Whitespace and control characters have no place in an endpoint URL (a pasted newline, a stray space).
_URL_BAD = re.compile(r"[\x00-\x20\x7f]")


def _shown_url(url: str) -> str:
    """The URL as an error message may quote it: userinfo masked whole (also when the URL does not even
    parse, where ``redact_url`` cannot find the password), credentials in the query masked, shortened."""
    shown = redact_url(re.sub(r"(?<=//)[^/?#]*@", f"{MASK}@", url))
    return repr(shown if len(shown) <= 80 else shown[:79] + "…")


def check_endpoint_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host and a valid port, else ValueError (credentials masked)."""
    if _URL_BAD.search(url):
        raise ValueError(
            f"must be an http(s) URL without whitespace or control characters, got {_shown_url(url)}"
        )
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number in 0-65535
    except ValueError:
        raise ValueError(
            f"must be an http(s) URL with a valid host and port (1-65535), got {_shown_url(url)}"
        ) from None
    if "://" not in url or parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL, got {_shown_url(url)}")
    if not parts.hostname:
        raise ValueError(f"has no host name, got {_shown_url(url)}")
    if port == 0:
        raise ValueError(f"port must be in 1-65535, got {_shown_url(url)}")
    return url


class APIEndpoint(Open):
    """NeMo ``APIEndpointData`` plus ``api_key_env`` and ``headers`` for gateways, and
    ``max_concurrency`` (the local engine's in-flight maximum for this model; see ``http.limits``).

    Checked when loaded (so ``validate`` catches it): the URL is http(s) with a host and a valid port,
    ``model_id`` is not blank, header names are tokens and values have no control characters. Errors
    never quote a header value or a URL's credentials.
    """

    url: str
    model_id: str
    api_key: str | None = None
    api_key_env: str | None = None
    format: str | None = None
    headers: dict[str, str] | None = None
    # Per model, beside the URL and model id it limits: the rate limit belongs to that provider's
    # model, and the same setting then serves the target and every judge alike. Package-only: the nemo
    # backend warns about it (backends/nemo/divergence.py). Default: the run's parallelism.
    max_concurrency: int | None = None

    _url_ok = field_validator("url")(check_endpoint_url)
    _max_concurrency_ok = field_validator("max_concurrency")(_positive)

    @field_validator("model_id")
    @classmethod
    def _model_id_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a non-empty model name")
        return v

    @field_validator("api_key")
    @classmethod
    def _key_sendable(cls, v: str | None) -> str | None:
        if v is not None and _HEADER_VALUE_BAD.search(v):  # it travels in the Authorization header
            raise ValueError("contains a control character (CR, LF, NUL, …); the key is not shown")
        return v

    @field_validator("headers")
    @classmethod
    def _headers_legal(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for name, value in (v or {}).items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(
                    f"header name {name[:80]!r} is not a valid HTTP header name (RFC 9110 token)"
                )
            if _HEADER_VALUE_BAD.search(value):
                raise ValueError(
                    f"header {name!r}: its value contains a control character (CR, LF, NUL, …); "
                    "the value is not shown"
                )
        return v

    @model_validator(mode="after")
    def _one_authorization(self) -> APIEndpoint:
        # A key is sent as "Authorization: Bearer", URL userinfo as "Authorization: Basic": a request has
        # one Authorization header, so the two cannot be combined (aiohttp would refuse it mid-run).
        if (self.api_key or self.api_key_env) and re.match(r"[^:/?#]+://[^/?#]*@", self.url):
            raise ValueError(
                "url carries user:password (sent as Basic authorization) and api_key/api_key_env is set "
                "(sent as Bearer authorization); a request has one Authorization header: use one of them"
            )
        return self

    def resolve_api_key(self, path: str = "api_endpoint") -> str | None:
        """The key to send: ``api_key`` if given, else the env var named by ``api_key_env``."""
        return resolve_key(self.api_key, self.api_key_env, self.url, path)


class InferenceParams(Open):
    """NeMo ``InferenceParams``; ``max_retries`` and ``request_timeout`` are call settings, not body fields."""

    passthrough = frozenset({"max_new_tokens"})
    max_tokens: int | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: int | None = None
    stop: StrOrList | None = None
    max_retries: int | None = None
    request_timeout: Number | None = None

    _timeout_positive = field_validator("request_timeout")(_positive)
    _retries_not_negative = field_validator("max_retries")(_not_negative)


class ReasoningParams(Open):
    """How a reasoning model's thinking is delimited (``end_token``, e.g. ``</think>``) or budgeted."""

    effort: str | None = None
    end_token: str | None = None
    include_if_not_finished: bool | None = None


class PromptSpec(Open):
    """NeMo ``PromptData``: settings applied to every request sent to a model."""

    system_prompt: str | None = None
    system_prompt_template: str | None = None
    icl_few_shot_examples: Any = None
    inference_params: InferenceParams | None = None
    reasoning_params: ReasoningParams | None = None


class ModelSpec(Open):
    """A model: an API endpoint plus optional prompt settings (judge inference/reasoning params)."""

    passthrough = frozenset({"artifact", "base_model", "peft", "spec", "guardrails", "model_providers"})
    api_endpoint: APIEndpoint | None = None
    prompt: PromptSpec | None = None


# A model given inline, or a ``namespace/name`` reference to an Entity Store model (``nemo`` backend).
ModelRef = Annotated[Annotated[ModelSpec, Tag("obj")] | Annotated[str, Tag("str")], Discriminator(_str_tag)]


class DatasetRef(Open):
    files_url: str
    limit: int | None = None
    format: str | None = None
    split: str | None = None
    hf_endpoint: str | None = None

    _limit_positive = field_validator("limit")(_positive)


# A dataset given inline, or a ``namespace/name`` reference to an Entity Store dataset (``nemo`` backend).
DatasetLike = Annotated[
    Annotated[DatasetRef, Tag("obj")] | Annotated[str, Tag("str")], Discriminator(_str_tag)
]


class RunParams(Open):
    parallelism: int | None = None
    request_timeout: Number | None = None
    max_retries: int | None = None
    limit_samples: int | None = None
    max_tokens: int | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    stop: StrOrList | None = None
    extra: dict[str, Any] | None = None

    _positive_settings = field_validator("parallelism", "request_timeout", "limit_samples")(_positive)
    _retries_not_negative = field_validator("max_retries")(_not_negative)


class Message(Open):
    """One chat message of a request template; ``content`` is a Jinja template (or a list of parts)."""

    role: str
    content: Any = None


# Messages as a list, or one template string rendering to the JSON list (``{{ item.messages | tojson }}``).
Messages = Annotated[
    Annotated[list[Message], Tag("obj")] | Annotated[str, Tag("str")], Discriminator(_str_tag)
]


class RequestTemplate(Open):
    """An OpenAI request body template: ``messages`` (chat) or ``prompt`` (completions) plus body fields
    (``max_tokens``, ``tools``, …) kept as unknown keys and sent as written."""

    messages: Messages | None = None
    prompt: str | None = None

    @property
    def has_prompt(self) -> bool:
        return self.messages is not None or self.prompt is not None


class TaskParams(Open):
    template: RequestTemplate | None = None
