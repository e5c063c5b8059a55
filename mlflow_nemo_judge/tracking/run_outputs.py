"""What a run uploads besides tags and params: files, tables, and the outputs of a finished run.

``RunTracker`` (``runs.py``) decides *when*; this module is *how*: ``{relative path: content}`` staged
in a temp dir and uploaded under ``nemo_judge/`` in one call (text redacted), a table that is replaced
rather than appended to on a resumed finish, and a finished run's final metric batch (scores linked to
the LoggedModel and dataset, usage, reliability, recomputed scores, ``progress`` 100) and its result
files (results, job, recomputed scores, samples, reliability reports, plots, the per-sample table).

mlflow (and pandas) are imported only inside the functions, as everywhere in ``tracking``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.config.secrets import redact, redact_text
from mlflow_nemo_judge.data.scan import DatasetInfo
from mlflow_nemo_judge.results import EvalResult
from mlflow_nemo_judge.tracking import recomputed as rcp
from mlflow_nemo_judge.tracking.inputs import MAX_DATASET_DIGEST, MAX_DATASET_NAME
from mlflow_nemo_judge.tracking.names import ART_DIR, ART_TABLE, _safe_name
from mlflow_nemo_judge.tracking.params import score_metrics, usage_metrics
from mlflow_nemo_judge.tracking.progress import _now_ms

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from mlflow.entities import Metric

    from mlflow_nemo_judge.reliability.report import ReliabilityReport
    from mlflow_nemo_judge.tracking.mlflow_sink import Collected

__all__ = ["final_metrics", "log_files", "log_result_files", "log_table"]


def log_files(cl: Any, run_id: str, files: Mapping[str, str | bytes | Path], secrets: Sequence[str]) -> None:
    """Stage ``{relative path: content}`` in a temp dir and upload it under ``nemo_judge/`` in one go.
    Text is redacted; bytes and files (plots, already redacted copies) go as they are."""
    if not files:
        return
    with tempfile.TemporaryDirectory(prefix="nemo-judge-art-") as tmp:
        for rel, content in files.items():
            dst = Path(tmp) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, dst)
            elif isinstance(content, bytes):
                dst.write_bytes(content)
            else:
                dst.write_text(redact_text(content, secrets), encoding="utf-8")
        cl.log_artifacts(run_id, tmp, ART_DIR)


def log_table(cl: Any, run_id: str, df: pd.DataFrame, path: str) -> None:
    """``log_table`` appends when the file exists (a resume after a crash during finish); the table
    must be replaced instead, so then the file is overwritten in the same format."""
    existing = {f.path for f in cl.list_artifacts(run_id, ART_DIR)}
    if path not in existing:
        cl.log_table(run_id, df, path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        df.to_json(local, orient="split", index=False, date_format="iso")
        cl.log_artifact(run_id, str(local), str(Path(path).parent))


def _redacted_copy(src: Path, dst: Path, secrets: Sequence[str]) -> Path:
    """The samples file as uploaded: a failed call's error text could quote a key back; mask it."""
    if not secrets:
        return src
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            fout.write(redact_text(line, secrets))
    return dst


def final_metrics(
    result: EvalResult,
    *,
    datasets: Sequence[DatasetInfo],
    model_id: str | None,
    reliability: ReliabilityReport | None,
    step: int,
) -> list[Metric]:
    """A finished run's metric batch; headline scores name the LoggedModel and their dataset."""
    from mlflow.entities import Metric

    from mlflow_nemo_judge.tracking.reports import report_metrics

    ts = _now_ms()
    by_task = {d.task: d for d in datasets}
    metrics = []
    for sm in score_metrics(result):
        d = by_task.get(sm.task) if sm.task else None
        link = sm.headline and model_id is not None
        metrics.append(
            Metric(
                sm.key,
                sm.value,
                ts,
                0,
                model_id=model_id if link else None,
                # cut as the dataset input is (inputs.py), so the two still match
                dataset_name=d.name[:MAX_DATASET_NAME] if link and d else None,
                dataset_digest=d.digest[:MAX_DATASET_DIGEST] if link and d else None,
            )
        )
    metrics += [Metric(k, v, ts, 0) for k, v in usage_metrics(result.usage).items()]
    metrics += [Metric(k, v, ts, 0) for k, v in report_metrics(reliability).items()]
    metrics += [Metric(k, v, ts, 0) for k, v in rcp.recomputed_metrics(result).items()]
    metrics.append(Metric("progress", 100.0, ts, step))
    return metrics


def log_result_files(
    cl: Any,
    run_id: str,
    result: EvalResult,
    collected: Collected,
    *,
    secrets: Sequence[str],
    plots: bool,
    model: str | None,
    reliability: ReliabilityReport | None,
) -> str:
    """Upload a finished run's files and per-sample table; returns how the samples were logged
    (``table``, ``jsonl`` or ``none``: the ``TAG_SAMPLES`` value)."""
    from mlflow_nemo_judge.tracking.reports import RELIABILITY_DIR, report_files

    files: dict[str, str | bytes | Path] = {
        "results.json": json.dumps(result.to_nemo_dict(), indent=2, ensure_ascii=False)
    }
    if result.job:
        files["job.json"] = json.dumps(redact(result.job), indent=2, default=str)
    files.update(rcp.recomputed_files(result))
    rows, n = collected.rows, collected.count
    with tempfile.TemporaryDirectory(prefix="nemo-judge-plots-") as tmp:
        if result.samples_path is not None and Path(result.samples_path).exists():
            files["samples.jsonl"] = _redacted_copy(
                Path(result.samples_path), Path(tmp) / "samples.jsonl", secrets
            )
        if reliability is not None:
            files.update(report_files(reliability, Path(tmp) / RELIABILITY_DIR, RELIABILITY_DIR))
        if plots and collected.values:
            from mlflow_nemo_judge.compare import plots as plt

            for (task, mname), per in collected.values.items():
                rel = f"plots/{_safe_name(task)}/{_safe_name(mname)}.png"
                files[rel] = plt.score_distribution(f"{task} / {mname}", per, Path(tmp) / rel, model=model)
        log_files(cl, run_id, files, secrets)
    if rows:
        import pandas as pd

        log_table(cl, run_id, pd.DataFrame(rows), ART_TABLE)
        return "table"
    return "jsonl" if n else "none"
