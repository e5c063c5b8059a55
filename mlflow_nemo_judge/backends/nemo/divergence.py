"""Warn when a config sent to NeMo uses this package's extensions that NeMo Evaluator v1 does not document.

The local backend accepts a few fields beyond NeMo's v1 documentation (reference §8). The nemo backend
submits the config as written, since NeMo keeps unknown fields and a newer deployment may support them,
but the user should not believe they took effect there. So with ``--backend nemo`` each extension is
*warned about, never refused*: one WARNING line per use, naming its config path and what NeMo may do.

What is checked (anything else NeMo documents is not mentioned):

* ``api_endpoint.headers`` on any model: v1 ``APIEndpointData`` has ``url``, ``model_id``, ``api_key``
  and ``format`` only, so gateway headers are not sent by NeMo.
* ``api_endpoint.max_concurrency`` on any model: the local engine's per-model in-flight maximum
  (``http.limits``); NeMo paces its own calls, so it has no effect there.
* ``llm-judge`` ``scores.<s>.parser.type: json``: v1 documents the ``regex`` parser only.
* ``llm-judge`` ``scores.<s>.type: bool``: v1 examples use ``int``; booleans are a package extension.
* ``params.reference`` of ``rouge``/``em``/``f1`` and ``params.candidate`` of
  ``bleu``/``rouge``/``em``/``f1``: v1 documents only ``bleu``'s ``references``; these are the successor
  platform's fields.

The ``mlflow_nemo_judge:`` block is not checked here: the backend removes it before submission and warns
about it itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["divergences", "warn_divergences"]

log = logging.getLogger(__name__)

_REFERENCE_METRICS = frozenset({"rouge", "em", "f1"})
_CANDIDATE_METRICS = frozenset({"bleu", "rouge", "em", "f1"})
_BOOL_TYPES = frozenset({"bool", "boolean"})


def _endpoint_headers(obj: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every ``api_endpoint`` with ``headers``, anywhere in ``obj`` (judges, panels, targets)."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            sub = f"{path}.{key}" if path else str(key)
            if key == "api_endpoint" and isinstance(value, Mapping) and value.get("headers"):
                yield (
                    f"{sub}.headers",
                    "NeMo v1's api_endpoint has no headers field: the service calls this endpoint "
                    "without them (a gateway that needs them will refuse NeMo's calls)",
                )
            if key == "api_endpoint" and isinstance(value, Mapping) and "max_concurrency" in value:
                yield (
                    f"{sub}.max_concurrency",
                    "NeMo v1's api_endpoint has no max_concurrency field: the service decides its own "
                    "concurrency for this model (the limit applies to --backend local only)",
                )
            yield from _endpoint_headers(value, sub)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _endpoint_headers(value, f"{path}[{i}]")


def _metric(mpath: str, metric: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    mtype, params = metric.get("type"), metric.get("params")
    if not isinstance(params, Mapping):
        return
    if mtype == "llm-judge":
        scores = params.get("scores")
        for sname, score in (scores or {}).items() if isinstance(scores, Mapping) else ():
            if not isinstance(score, Mapping):
                continue
            spath = f"{mpath}.params.scores.{sname}"
            parser = score.get("parser")
            if isinstance(parser, Mapping) and parser.get("type") == "json":
                yield (
                    f"{spath}.parser.type",
                    "the json parser is a package extension (NeMo v1 documents regex): NeMo may refuse "
                    "the job or score this differently",
                )
            if score.get("type") in _BOOL_TYPES:
                yield (
                    f"{spath}.type",
                    f"score type {score.get('type')!r} is a package extension (NeMo v1 examples use int): "
                    "NeMo may refuse the job or convert the reply differently",
                )
    if mtype in _REFERENCE_METRICS and "reference" in params:
        yield (
            f"{mpath}.params.reference",
            f"NeMo v1 documents no params for {mtype!r} (reference is the successor platform's field): "
            "NeMo may ignore it and score against its own default",
        )
    if mtype in _CANDIDATE_METRICS and "candidate" in params:
        yield (
            f"{mpath}.params.candidate",
            f"NeMo v1 documents no candidate for {mtype!r}: NeMo may ignore it and score the target's "
            "output (sample.output_text) instead",
        )


def divergences(config: Mapping[str, Any], target: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """``(config path, what NeMo may do)`` for each package-only extension in the submitted bodies."""
    found: list[tuple[str, str]] = []
    for section in ("tasks", "groups"):
        entries = config.get(section)
        for name, entry in entries.items() if isinstance(entries, Mapping) else ():
            metrics = entry.get("metrics") if isinstance(entry, Mapping) else None
            for mname, metric in metrics.items() if isinstance(metrics, Mapping) else ():
                if isinstance(metric, Mapping):
                    found.extend(_metric(f"{section}.{name}.metrics.{mname}", metric))
    found.extend(_endpoint_headers(config, ""))
    if isinstance(target, Mapping):
        found.extend(_endpoint_headers(target, "target"))
    return found


def warn_divergences(config: Mapping[str, Any] | str, target: Mapping[str, Any] | str | None = None) -> int:
    """Log one WARNING per extension (see the module docstring); returns how many. References
    (``namespace/name`` strings) are the service's own entities: nothing to check."""
    cfg = config if isinstance(config, Mapping) else {}
    tgt = target if isinstance(target, Mapping) else None
    found = divergences(cfg, tgt)
    for path, what in found:
        log.warning("--backend nemo: %s is a local-only extension; %s", path, what)
    return len(found)
