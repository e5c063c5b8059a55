"""Stored NeMo entities given as ``namespace/name``: configs, targets, datasets and models.

NVIDIA's tutorials submit jobs by reference (``config: "ns/name"``, ``target: "ns/name"``, a task's
``dataset: "ns/name"``, a target's or judge's ``model: "ns/name"``). With NeMo URLs configured
(``--nemo-url`` / ``NEMO_EVALUATOR_URL``, ``--nemo-entity-store-url`` / ``NEMO_ENTITY_STORE_URL``) this
module reads them:

* a config or target from the Evaluator (``/v1/evaluation/configs/{ns}/{name}``, ``.../targets/...``),
  when loaded (:func:`stored`): the loaded object *is* the stored content, so the run identity hashes
  what was resolved (editing the stored config makes a new run), and the object remembers the reference
  (:func:`references_of`) for the run's params and tags, and for the nemo backend, which submits the
  reference itself;
* a dataset (``/v1/datasets/{ns}/{name}`` → its ``files_url``, an ``hf://`` URL read through the Data
  Store's HF API unless the entity names another ``hf_endpoint``) and a model (``/v1/models/{ns}/{name}``
  → its ``api_endpoint``) from the Entity Store, for the local backend only (:func:`inline_entities`):
  on NeMo the service resolves them.

A path that exists is always a file; a ``ns/name``-shaped argument that is no file is a reference when
NeMo URLs are set, else a :class:`ConfigError` naming both readings.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge import settings
from mlflow_nemo_judge.errors import ConfigError, NemoServiceError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.backends.nemo.client import NemoClient
    from mlflow_nemo_judge.config.models import EvalConfig, Target

__all__ = [
    "Resolver",
    "inline_entities",
    "is_reference",
    "references_of",
    "resolver",
    "stored",
]

log = logging.getLogger(__name__)

# Two plain name segments, as NeMo names its entities (no scheme, no leading "/" or ".", no extension).
_REF = re.compile(r"[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*")
_FILE_SUFFIXES = frozenset({".yaml", ".yml", ".json", ".jsonl", ".csv"})
# The entity envelope NeMo adds around stored objects: bookkeeping, not content. Left out so the run
# identity changes with the content, not with a timestamp, and the loaded object reads as written.
_ENVELOPE = frozenset(
    {"id", "schema_version", "type_prefix", "created_at", "updated_at", "version_id", "version_tags"}
)
_MASK = "******"
_NEEDS_URL = "set --nemo-url (or NEMO_EVALUATOR_URL / NEMO_ENTITY_STORE_URL) to read it from NeMo"


def is_reference(value: object) -> bool:
    """True for a ``namespace/name`` string that is not shaped like a file name."""
    if not isinstance(value, str) or not _REF.fullmatch(value):
        return False
    return Path(value).suffix.lower() not in _FILE_SUFFIXES


class Resolver:
    """Reads stored entities through one ``NemoClient`` (its Evaluator and Entity Store URLs)."""

    def __init__(self, client: NemoClient) -> None:
        self.client = client

    def _get(self, kind: str, ref: str, url: str, path: str) -> dict[str, Any]:
        try:
            response = self.client.request("GET", url)
            body = response.json()
        except NemoServiceError as exc:
            if exc.status == 404:
                raise ConfigError(path, f"{kind} {ref} not found at {exc.url}") from None
            raise NemoServiceError(url, exc.status, f"cannot read {kind} {ref}: {exc.detail}") from None
        except ValueError:
            raise NemoServiceError(url, None, f"cannot read {kind} {ref}: the answer is not JSON") from None
        if not isinstance(body, Mapping):
            raise NemoServiceError(url, None, f"cannot read {kind} {ref}: expected an object")
        return dict(body)

    def config(self, ref: str, path: str = "config") -> dict[str, Any]:
        url = f"{self.client.evaluator_url}/v1/evaluation/configs/{ref}"
        return _content(self._get("config", ref, url, path))

    def target(self, ref: str, path: str = "target") -> dict[str, Any]:
        url = f"{self.client.evaluator_url}/v1/evaluation/targets/{ref}"
        return _content(self._get("target", ref, url, path))

    def dataset(self, ref: str, path: str) -> dict[str, Any]:
        """The dataset as the local reader takes it: ``files_url`` (+ format, split, limit, hf_endpoint)."""
        url = f"{self.client.entity_store_url}/v1/datasets/{ref}"
        rec = self._get("dataset", ref, url, path)
        files_url = rec.get("files_url")
        if not isinstance(files_url, str) or not files_url:
            raise ConfigError(path, f"dataset {ref} at {url} has no files_url")
        out: dict[str, Any] = {"files_url": files_url}
        for key in ("format", "split", "limit", "hf_endpoint"):
            if rec.get(key) is not None:
                out[key] = rec[key]
        if files_url.startswith("hf://") and "hf_endpoint" not in out:
            # NeMo reads an entity's hf:// files from its own Data Store, not huggingface.co.
            out["hf_endpoint"] = self.client.hf_endpoint
        return out

    def model(self, ref: str, path: str) -> dict[str, Any]:
        """The model as an inline ``{api_endpoint: ...}`` (plus its ``prompt``, if stored)."""
        url = f"{self.client.entity_store_url}/v1/models/{ref}"
        rec = self._get("model", ref, url, path)
        ep = rec.get("api_endpoint")
        if not isinstance(ep, Mapping) or not ep.get("url"):
            raise ConfigError(
                path,
                f"model {ref} at {url} has no api_endpoint.url: the local backend can only call a model "
                "with an endpoint (NeMo resolves deployed models itself: --backend nemo)",
            )
        out: dict[str, Any] = {"api_endpoint": _drop_masked(_no_nulls(ep), f"{path}.api_endpoint", ref)}
        if isinstance(rec.get("prompt"), Mapping):
            out["prompt"] = _no_nulls(rec["prompt"])
        return out


def resolver(options: Mapping[str, Any] | None = None) -> Resolver | None:
    """A resolver for the NeMo URLs in ``options`` (the nemo backend's ``evaluator_url``,
    ``entity_store_url``, ``datastore_url``, ``token``), else the ``NEMO_*`` settings; None when no
    Evaluator or Entity Store URL is configured anywhere."""
    from mlflow_nemo_judge.backends.nemo.client import NemoClient
    from mlflow_nemo_judge.backends.nemo.transport import ENV_ENTITY_STORE, ENV_EVALUATOR

    opts = dict(options or {})
    if isinstance(opts.get("client"), NemoClient):  # the nemo backend's own client, when injected
        return Resolver(opts["client"])
    evaluator = opts.get("evaluator_url") or settings.get(ENV_EVALUATOR)
    entity = opts.get("entity_store_url") or settings.get(ENV_ENTITY_STORE)
    if not evaluator and not entity:
        return None
    client = NemoClient(
        evaluator or entity,
        opts.get("datastore_url"),
        entity,
        token=opts.get("token"),
        headers=opts.get("headers"),
        max_retries=int(opts.get("max_retries", 2)),
    )
    return Resolver(client)


# ------------------------------------------------------------------------------- configs and targets


def stored(
    kind: str, source: object, nemo: Resolver | Mapping[str, Any] | None
) -> tuple[dict[str, Any], str] | None:
    """``(stored content, reference)`` if ``source`` is a reference rather than a file, else None.

    ``kind`` is ``"config"`` or ``"target"``. A path that exists is a file; a ``ns/name`` that is no
    file needs NeMo URLs (``nemo``: a resolver or the backend's URL options; else the ``NEMO_*``
    settings), and without them is refused naming both readings.
    """
    if not isinstance(source, (str, os.PathLike)):
        return None
    text = os.fspath(source)
    if not is_reference(text) or Path(text).exists():
        return None
    res = nemo if isinstance(nemo, Resolver) else resolver(nemo)
    if res is None:
        raise ConfigError(
            kind,
            f"{text!r} is not a file, and as a NeMo {kind} reference (namespace/name) it needs NeMo URLs: "
            f"{_NEEDS_URL}",
        )
    data = res.config(text) if kind == "config" else res.target(text)
    return data, text


def references_of(obj: object) -> dict[str, str]:
    """``{config path: "ns/name"}`` of every reference ``obj`` (a config or target) was resolved from."""
    refs = getattr(obj, "_references", None)
    return dict(refs) if isinstance(refs, Mapping) else {}


def remember(obj: object, refs: Mapping[str, str]) -> None:
    """Add ``refs`` to what ``obj`` records it was resolved from."""
    current = references_of(obj)
    current.update(refs)
    obj._references = current  # type: ignore[attr-defined]  # a config model (Open)


def _content(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config/target as written: envelope and NeMo's ``null`` for unset fields left out."""
    out = {k: v for k, v in rec.items() if k not in _ENVELOPE and v is not None}
    if out.get("custom_fields") == {}:
        out.pop("custom_fields")
    tasks = out.get("tasks")
    if isinstance(tasks, Mapping):
        out["tasks"] = {
            name: (_task(task) if isinstance(task, Mapping) else task) for name, task in tasks.items()
        }
    for key in ("dataset", "cached_outputs"):
        if isinstance(out.get(key), Mapping):
            out[key] = _dataset(out[key])
    model = out.get("model")
    if isinstance(model, Mapping):
        out["model"] = {
            k: (_no_nulls(v) if isinstance(v, Mapping) else v)
            for k, v in model.items()
            if k not in _ENVELOPE and v is not None and k not in ("namespace", "name", "custom_fields")
        }
    return out


def _task(task: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in task.items() if v is not None}
    if isinstance(out.get("dataset"), Mapping):
        out["dataset"] = _dataset(out["dataset"])
    return out


def _dataset(ds: Mapping[str, Any]) -> dict[str, Any]:
    # An inline dataset is echoed inside an entity envelope of its own: keep what the reader uses.
    keep = ("files_url", "format", "split", "limit", "hf_endpoint")
    known = {k: ds[k] for k in keep if ds.get(k) is not None}
    extra = {
        k: v
        for k, v in ds.items()
        if k not in keep
        and k not in _ENVELOPE
        and v is not None
        and k not in ("namespace", "name", "description", "project", "custom_fields", "ownership")
    }
    return {**known, **extra}


def _no_nulls(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not None}


def _drop_masked(ep: dict[str, Any], path: str, ref: str) -> dict[str, Any]:
    # NeMo answers stored keys as "******"; sending the mask as a bearer token would fail every call
    # with a misleading 401, so it is dropped and the user told how to give the key locally.
    if ep.get("api_key") == _MASK:
        ep.pop("api_key")
        log.warning(
            "%s: the API key stored with %s is masked by NeMo and not used locally; set "
            "api_endpoint.api_key_env in a local copy if the endpoint needs a key",
            path,
            ref,
        )
    return ep


# ----------------------------------------------------------------------- datasets and models (local)


def inline_entities(obj: EvalConfig | Target, nemo: Resolver | Mapping[str, Any] | None = None) -> Any:
    """``obj`` (a config or a target) with every dataset and model reference replaced by its stored
    content, for the local backend: a new object that records the references, or ``obj`` itself when
    it has none, or when no NeMo URLs are set (the plan then explains each reference)."""
    from mlflow_nemo_judge.config.load import load_config, load_target
    from mlflow_nemo_judge.config.models import EvalConfig

    is_config = isinstance(obj, EvalConfig)
    data = obj.to_dict()
    sites = list(_sites(data, {}) if is_config else _sites({}, data))
    if not sites:
        return obj
    res = nemo if isinstance(nemo, Resolver) else resolver(nemo)
    if res is None:
        return obj
    refs: dict[str, str] = {}
    for path, holder, key, kind in sites:
        ref = holder[key]
        holder[key] = res.dataset(ref, path) if kind == "dataset" else res.model(ref, path)
        refs[path] = ref
    new = load_config(data) if is_config else load_target(data)
    new._source = obj._source  # relative dataset paths still resolve against the original's folder
    remember(new, {**references_of(obj), **refs})
    return new


def _sites(cfg: dict[str, Any], tgt: dict[str, Any]) -> Any:
    """``(config path, holder dict, key, kind)`` of every dataset/model reference in the two dumps."""
    for tname, task in (cfg.get("tasks") or {}).items():
        if not isinstance(task, dict):
            continue
        if is_reference(task.get("dataset")):
            yield f"tasks.{tname}.dataset", task, "dataset", "dataset"
        for mname, metric in (task.get("metrics") or {}).items():
            params = metric.get("params") if isinstance(metric, dict) else None
            if isinstance(params, dict) and is_reference(params.get("model")):
                yield f"tasks.{tname}.metrics.{mname}.params.model", params, "model", "model"
    for key in ("dataset", "cached_outputs"):
        if is_reference(tgt.get(key)):
            yield f"target.{key}", tgt, key, "dataset"
    if is_reference(tgt.get("model")):
        yield "target.model", tgt, "model", "model"
