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
import os
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

__all__ = ["final_metrics", "log_files", "log_result_files", "log_table", "samples_kind", "stage", "upload"]


def log_files(cl: Any, run_id: str, files: Mapping[str, str | bytes | Path], secrets: Sequence[str]) -> None:
    """Stage ``{relative path: content}`` in a temp dir and upload it under ``nemo_judge/`` in one go.
    Text is redacted; bytes and files (plots, already redacted copies) go as they are."""
    if not files:
        return
    with tempfile.TemporaryDirectory(prefix="nemo-judge-art-") as tmp:
        stage(Path(tmp), files, secrets)
        cl.log_artifacts(run_id, tmp, ART_DIR)


def stage(root: Path, files: Mapping[str, str | bytes | Path], secrets: Sequence[str]) -> None:
    """Write ``files`` under ``root`` (text redacted); a file already at its place stays as it is, and
    one on the same file system is hard-linked rather than copied (the samples file can be GBs)."""
    for rel, content in files.items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            if content.resolve() == dst.resolve():
                continue
            try:
                os.link(content, dst)
            except OSError:
                shutil.copyfile(content, dst)
        elif isinstance(content, bytes):
            dst.write_bytes(content)
        else:
            dst.write_text(redact_text(content, secrets), encoding="utf-8")


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


def samples_kind(collected: Collected) -> str:
    """How a finished run logs its samples (the ``TAG_SAMPLES`` value): a UI ``table`` (and the JSONL
    file), the ``jsonl`` file only (past the table's row cap), or ``none``."""
    if collected.table.rows:
        return "table"
    return "jsonl" if collected.count else "none"


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
) -> None:
    """Upload a finished run's files, charts and per-sample table together. The charts are drawn by
    the plot worker (``compare/plot_worker.py``) while this stages the rest; the table's
    ``mlflow.loggedArtifacts`` entry is the caller's, in its tag batch."""
    from mlflow_nemo_judge.tracking.background import in_thread
    from mlflow_nemo_judge.tracking.reports import RELIABILITY_DIR, report_files

    files: dict[str, str | bytes | Path] = {
        "results.json": json.dumps(result.to_nemo_dict(), indent=2, ensure_ascii=False)
    }
    if result.job:
        files["job.json"] = json.dumps(redact(result.job), indent=2, default=str)
    files.update(rcp.recomputed_files(result))
    with tempfile.TemporaryDirectory(prefix="nemo-judge-art-") as tmp:
        root = Path(tmp) / "upload"
        root.mkdir()
        drawn = (
            in_thread(lambda: _draw_charts(collected, root, model), "nemo-judge-charts")
            if plots and collected.values
            else None
        )
        if result.samples_path is not None and Path(result.samples_path).exists():
            files["samples.jsonl"] = _redacted_copy(
                Path(result.samples_path), root / "samples.jsonl", secrets
            )
        if reliability is not None:
            files.update(report_files(reliability, Path(tmp) / "reliability", RELIABILITY_DIR))
        collected.table.write(root / Path(ART_TABLE).relative_to(ART_DIR))
        if drawn is not None:
            drawn.result()
        stage(root, files, secrets)
        upload(cl, run_id, root)


def _draw_charts(collected: Collected, root: Path, model: str | None) -> None:
    from mlflow_nemo_judge.compare.plot_worker import Chart, shared

    charts = [
        Chart(f"{task} / {mname}", per, root / "plots" / _safe_name(task) / f"{_safe_name(mname)}.png", model)
        for (task, mname), per in collected.values.items()
    ]
    shared().render(charts)


UPLOADERS = 4  # files uploaded at once to a remote store


def upload(cl: Any, run_id: str, root: Path) -> None:
    """Everything under ``root`` to the run's ``nemo_judge/``. A remote store takes one request per file
    and MLflow sends them one after another, so several go at once there; a local store copies."""
    paths = [p for p in sorted(root.rglob("*")) if p.is_file()]
    remote = str(getattr(cl, "tracking_uri", "") or "").startswith(("http://", "https://"))
    if not remote or len(paths) < 2:
        cl.log_artifacts(run_id, str(root), ART_DIR)
        return
    from concurrent.futures import ThreadPoolExecutor

    def one(p: Path) -> None:
        parent = p.parent.relative_to(root).as_posix()
        cl.log_artifact(run_id, str(p), ART_DIR if parent == "." else f"{ART_DIR}/{parent}")

    with ThreadPoolExecutor(max_workers=UPLOADERS, thread_name_prefix="nemo-judge-upload") as pool:
        list(pool.map(one, paths))  # the first failure is raised here
