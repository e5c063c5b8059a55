"""What the nemo backend submits for a config or target loaded from a NeMo reference: the reference.

NeMo resolves ``"namespace/name"`` itself, so a job made from a stored config or target names it
rather than inlining a copy (the job record then points at the stored entity, as in NVIDIA's
tutorials). The copy is inlined only when this package had to change what it submits — a ``--limit``
cap, a staged local dataset, a key resolved from ``api_key_env`` — because NeMo would otherwise run the
stored entity as it is, not what this run measures; that is logged, naming the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mlflow_nemo_judge.config.references import references_of

__all__ = ["by_reference"]

log = logging.getLogger(__name__)


def by_reference(
    obj: object, kind: str, as_loaded: Mapping[str, Any], body: dict[str, Any]
) -> dict[str, Any] | str:
    """``body`` (what would be inlined), or the reference ``obj`` was loaded from when ``body`` is
    still exactly the stored content ``as_loaded``."""
    ref = references_of(obj).get(kind)
    if ref is None:
        return body
    if body == dict(as_loaded):
        log.info("submitting the %s as the NeMo reference %s", kind, ref)
        return ref
    log.warning(
        "the %s %s is submitted inline, not by reference: this run changes it (a --limit, a staged "
        "local dataset or a key from api_key_env), which the stored %s does not have",
        kind,
        ref,
        kind,
    )
    return body
