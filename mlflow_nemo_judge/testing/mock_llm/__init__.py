"""A MOCK OpenAI-compatible LLM server on loopback: a test double, not a model.

It exists so the test suite, the offline demo and the benchmarks can exercise every network path of
the package (target calls, judge calls, retries, timeouts, unparseable judge output) without an API
key or the internet. Nothing it says is produced by a language model: the "models" are small
deterministic text functions (``models``), and every response says so (``system_fingerprint: "mock"``,
``owned_by: "mlflow-nemo-judge-mock"`` in ``/v1/models``, a ``Server`` header and the startup line).

Mock model ids:

* ``mock/faithful-summarizer`` copies the most informative sentences of the document verbatim.
* ``mock/poor-summarizer`` answers with a short, generic and partly wrong summary.
* ``mock/echo`` returns the last user message unchanged.
* ``mock/tool-caller`` answers a request with ``tools`` by ``tool_calls`` (tools named in the message,
  else the best word match; arguments written ``name=value`` in it), for the tool-calling metric
  (``tools`` says exactly how); without tools it answers ``No tool to call: <message>``.
* ``mock/judge`` rates a labelled candidate (``Summary:``/``Answer:``...) against a labelled source
  (``Full Consult:``/``Document:``...) by word overlap, in the answer format and scale the prompt asks
  for (``RATING: <number>``, ``{"score": <n>}``, ``1 to 5``, ``0-10``...).
* ``mock/judge-think`` is the judge with its reasoning wrapped in ``<think>...</think>``.
* ``mock/judge-malformed`` never emits a score marker, to exercise unparseable judge output.
* ``mock/judge-noisy``, ``mock/judge-lenient``, ``mock/judge-pairwise`` and ``mock/judge-pairwise-biased``
  are the judge made unreliable ON PURPOSE, for the reliability figures (``judges`` says exactly how):
  the score moved by a seeded random step of -1/0/+1 (none at temperature 0), one point higher (capped),
  a ``WINNER: A|B|TIE`` pairwise verdict on candidates labelled ``A:`` and ``B:``, and that verdict with
  a position bias (answers A in 30 % of prompts regardless).

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (both also with ``stream``),
``GET /v1/models[/{id}]``, ``GET /health``; admin: ``GET|DELETE /mock/requests`` (the request log),
``GET|POST /mock/config`` (``{"latency": s, "faults": {...}, "rate_limits": {"models": {id: rps}}}``). Token counts are whitespace words.

The server is pure-stdlib asyncio HTTP/1.1 with keep-alive, run on its own event loop in a daemon
thread (``MockLLMServer``) or as a process (``python -m mlflow_nemo_judge.testing.mock_llm``,
``start_subprocess``); the process keeps the server off the caller's GIL for benchmarks.
``FaultConfig`` injects seeded, per-request transient faults; ``RateLimitConfig`` caps each listed model's
requests per second like a provider (a 429 with ``Retry-After`` above it) and counts its requests in
flight.

Modules: ``server`` (HTTP/1.1 and lifecycle), ``routes`` (endpoints, request log, admin), ``shapes``
(OpenAI request/response shapes), ``faults``, ``rate_limits``, ``models`` (the text models), ``judges`` (the judge
variants), ``tools`` (the tool-calling model), ``process`` (subprocess mode).
"""

from __future__ import annotations

from mlflow_nemo_judge.testing.mock_llm.faults import FaultConfig
from mlflow_nemo_judge.testing.mock_llm.models import MOCK_MODELS
from mlflow_nemo_judge.testing.mock_llm.process import main, start_subprocess
from mlflow_nemo_judge.testing.mock_llm.rate_limits import RateLimitConfig
from mlflow_nemo_judge.testing.mock_llm.routes import RequestLogEntry
from mlflow_nemo_judge.testing.mock_llm.server import STARTUP_LINE, MockLLMServer
from mlflow_nemo_judge.testing.mock_llm.shapes import OWNED_BY, SYSTEM_FINGERPRINT

__all__ = [
    "MOCK_MODELS",
    "OWNED_BY",
    "STARTUP_LINE",
    "SYSTEM_FINGERPRINT",
    "FaultConfig",
    "MockLLMServer",
    "RateLimitConfig",
    "RequestLogEntry",
    "main",
    "start_subprocess",
]
