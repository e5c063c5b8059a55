"""Map NeMo Evaluator job results to the ``EvalResult`` the local backend produces.

Two inputs (NeMo reference §7): the aggregate tree from ``GET /jobs/{id}/results`` (whose ``stats`` may
hold only ``count/sum/mean`` on older servers) and the per-sample ``results.json`` inside the
``download-results`` ZIP (``{task: [{item, sample: {output_text, response}, metrics, requests}]}``).

The service's ``value``/``stats`` are the run's scores, as NeMo's own API and UI show them; statistics it
did not return are derived from those it did (stddev from ``variance``/``sum_squared``, the CI from
``count/mean/stddev`` or ``stderr``: ``stats.ci_from_stats``), never taken from elsewhere. Whenever
per-sample values exist, the package's own recomputation from them (``recompute.py``, the local engine's
``stats.summarize``) is kept beside them in ``EvalResult.recomputed``, and a value that differs is
flagged with a WARNING.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from mlflow_nemo_judge.backends.nemo.recompute import recompute, warn_differences
from mlflow_nemo_judge.plan import item_id
from mlflow_nemo_judge.results import NAN, EvalResult, MetricOutcome, SampleRecord, Score, Usage
from mlflow_nemo_judge.scoring.stats import ci_from_stats

log = logging.getLogger(__name__)

# task -> list of per-sample records as NeMo writes them
SampleDoc = dict[str, list[dict[str, Any]]]
_RECORD_KEYS = ("item", "sample", "metrics")


def _is_record_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(r, Mapping) and any(k in r for k in _RECORD_KEYS) for r in value
    )


def read_results_zip(data: bytes) -> tuple[SampleDoc | None, dict[str, Any] | None]:
    """Find the per-sample records and the aggregate document in a download-results ZIP.

    The archive layout is not documented (reference §12), so files are recognised by content, not by
    name: a dict of record lists is per-sample (DFW's ``**/results.json``), a list of records is one
    task's samples (named after its folder), a dict with a ``tasks`` mapping is the aggregate.
    """
    samples: SampleDoc = {}
    aggregate: dict[str, Any] | None = None
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in sorted(zf.namelist()):
            if not name.endswith(".json"):
                continue
            try:
                doc = json.loads(zf.read(name))
            except (ValueError, UnicodeDecodeError):
                continue  # not ours to judge: configs and logs may be anything
            if isinstance(doc, Mapping) and isinstance(doc.get("tasks"), Mapping):
                aggregate = aggregate or dict(doc)
            elif isinstance(doc, Mapping) and doc and all(_is_record_list(v) for v in doc.values()):
                for task, records in doc.items():
                    samples.setdefault(str(task), []).extend(records)
            elif _is_record_list(doc) and doc:
                parent = PurePosixPath(name).parent.name or PurePosixPath(name).stem
                samples.setdefault(parent, []).extend(doc)
    return (samples or None), aggregate


def _value(v: Any) -> float:
    """A per-sample score value; null, NaN and non-numbers are NaN (unparseable judge output)."""
    if isinstance(v, Mapping):
        v = v.get("value")
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return NAN
    return NAN


def sample_record(task: str, index: int, rec: Mapping[str, Any]) -> SampleRecord:
    """One NeMo per-sample entry as a ``SampleRecord`` (same item id rule as the local engine)."""
    item = dict(rec.get("item") or {})
    sample = rec.get("sample") or {}
    response = sample.get("response") if isinstance(sample, Mapping) else None
    finish = None
    if isinstance(response, Mapping):
        choices = response.get("choices") or []
        if choices and isinstance(choices[0], Mapping):
            finish = choices[0].get("finish_reason")
    metrics: dict[str, MetricOutcome] = {}
    for mname, m in (rec.get("metrics") or {}).items():
        scores = (m or {}).get("scores") or {}
        metrics[str(mname)] = MetricOutcome(scores={str(s): _value(v) for s, v in scores.items()})
    request = None
    requests = rec.get("requests") or []
    if requests and isinstance(requests[0], Mapping) and isinstance(requests[0].get("request"), Mapping):
        # The local engine records the body minus the model id; do the same so tables line up.
        request = {k: v for k, v in requests[0]["request"].items() if k != "model"}
    return SampleRecord(
        task=task,
        index=index,
        item_id=item_id(item, index),
        item=item,
        output_text=sample.get("output_text") if isinstance(sample, Mapping) else None,
        finish_reason=finish,
        metrics=metrics,
        request=request,
    )


def _count_usage(usage: Usage, rec: Mapping[str, Any]) -> None:
    for req in rec.get("requests") or []:
        usage.requests += 1
        tokens = ((req or {}).get("response") or {}).get("usage") or {}
        usage.prompt_tokens += int(tokens.get("prompt_tokens") or 0)
        usage.completion_tokens += int(tokens.get("completion_tokens") or 0)


def _fill_ci(score: Score) -> None:
    """Add a CI (and stddev from ``sum_squared`` when that is all there is) to service-only stats."""
    st = score.stats
    if st is None or st.ci95_low is not None or st.mean is None or not st.count:
        return
    if st.stddev is None and st.variance is not None:
        st.stddev = math.sqrt(max(st.variance, 0.0))
    if st.stddev is None and st.sum_squared is not None:
        st.stddev = math.sqrt(max(st.sum_squared / st.count - st.mean**2, 0.0))
    ci = ci_from_stats(st.mean, st.count, stddev=st.stddev, stderr=st.stderr)
    if ci is not None:
        st.ci95_low, st.ci95_high = ci


def build_result(
    results: Mapping[str, Any],
    samples: SampleDoc | None,
    *,
    work_dir: Path,
    job: dict[str, Any] | None = None,
    group_tasks: Mapping[str, Iterable[str]] | None = None,
    samples_processed: int | None = None,
    wall_seconds: float = 0.0,
) -> EvalResult:
    """The ``EvalResult`` of a finished job (``backend="nemo"``); samples are spilled to ``work_dir``."""
    res = EvalResult.from_nemo_dict(dict(results), backend="nemo", job=job)
    usage = Usage(wall_seconds=wall_seconds)
    values: dict[tuple[str, str, str], list[float]] = {}
    if samples:
        work_dir.mkdir(parents=True, exist_ok=True)
        res.samples_path = work_dir / "samples.jsonl"
        order = list(res.tasks) + [t for t in samples if t not in res.tasks]
        with open(res.samples_path, "w", encoding="utf-8") as fh:
            for task in order:
                records = [sample_record(task, i, r) for i, r in enumerate(samples.get(task) or [])]
                for raw, sr in zip(samples.get(task) or [], records, strict=True):
                    fh.write(json.dumps(sr.to_dict(), ensure_ascii=False) + "\n")
                    _count_usage(usage, raw)
                usage.samples += len(records)
                keys = {(m, s) for sr in records for m, out in sr.metrics.items() for s in out.scores}
                for m, s in keys:
                    values[(task, m, s)] = [
                        sr.metrics[m].scores.get(s, NAN) if m in sr.metrics else NAN for sr in records
                    ]
    # The service's numbers are kept as reported; only the stats it left out are derived from them.
    for tree in (res.tasks, res.groups, res.subgroups):  # subgroups: nested group results, by path
        for metrics in tree.values():
            for scores in metrics.values():
                for score in scores.values():
                    _fill_ci(score)
    if samples:
        res.recomputed = recompute(res, values, group_tasks)
        warn_differences(res, f"NeMo job {job.get('id')}" if job and job.get("id") else "NeMo results")
    if not samples:
        per_task = [
            max(
                (
                    (sc.stats.count or 0) + (sc.stats.nan_count or 0)
                    for m in metrics.values()
                    for sc in m.values()
                    if sc.stats is not None
                ),
                default=0,
            )
            for metrics in res.tasks.values()
        ]
        usage.samples = samples_processed if samples_processed is not None else sum(per_task)
    res.usage = usage
    return res
