"""Job execution of the FAKE NeMo service (a test double; see ``fake_nemo``).

Jobs are computed for real in a worker thread by the fake's own scorer (``scorer``: an implementation
of NeMo's documented semantics that does not import this package's engine), after the job's ``hf://``
datasets are read back from the fake's own Data Store with ``huggingface_hub``. Every status change is appended to ``FakeJob.history`` and announced on the
service's ``changed`` condition, so tests wait for a state instead of polling on a timer.
"""

from __future__ import annotations

import datetime
import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_nemo_judge.testing.fake_nemo.scorer import Cancelled, score_job
from mlflow_nemo_judge.testing.fake_nemo.wire import new_id, now

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_nemo_judge.testing.fake_nemo.server import FakeNemoService

__all__ = ["FakeJob", "JobRunner", "logs_zip", "request_cancel", "start_job"]


@dataclass
class FakeJob:
    """A job's record (with secrets: read-backs are redacted by the server) and its runtime state."""

    record: dict[str, Any]
    logs: list[str] = field(default_factory=list)
    result_zip: bytes | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    # (status, progress, samples_processed) after every change, oldest first: what a poller could see.
    history: list[tuple[str, float | None, int | None]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.record["id"])

    def snapshot(self) -> None:
        """Append the current status to ``history``; call with the service lock held."""
        details = self.record["status_details"]
        self.history.append(
            (str(self.record["status"]), details.get("progress"), details.get("samples_processed"))
        )

    def log(self, level: str, message: str) -> None:
        self.logs.append(f"{datetime.datetime.now(datetime.timezone.utc).isoformat()} {level} {message}")


class _Cancelled(Exception):
    pass


class JobRunner:
    """Runs one fake job to a terminal status. ``store`` is the owning service (locks, stores, options)."""

    def __init__(self, store: FakeNemoService, job: FakeJob) -> None:
        self.store = store
        self.job = job

    def _update(
        self, status: str | None = None, record: Mapping[str, Any] | None = None, **details: Any
    ) -> None:
        """Change status/details (and ``record`` fields) in one locked step, then wake waiters."""
        with self.store.changed:
            rec = self.job.record
            if status in ("pending", "running") and self.job.cancel.is_set():
                raise _Cancelled  # a cancel arrived between two steps: never un-cancel the job
            if status is not None:
                rec["status"] = status
            rec["status_details"].update(details)
            rec.update(record or {})
            rec["updated_at"] = now()
            self.job.snapshot()
            self.store.changed.notify_all()

    def _pause(self, seconds: float) -> None:
        if self.job.cancel.wait(seconds):
            raise _Cancelled

    def run(self) -> None:
        job = self.job
        try:
            self._pause(self.store.queue_delay)
            self._update("pending")
            job.log("INFO", f"Job {job.id} scheduled")
            self._pause(self.store.queue_delay)
            tasks = list(job.record["config"].get("tasks") or {})
            self._update(
                "running", progress=0.0, samples_processed=0, task_status={t: "pending" for t in tasks}
            )
            job.log("INFO", f"Job {job.id} running")
            while self.store.hold_jobs.is_set():  # tests freeze jobs here to attach or cancel mid-run
                self._pause(0.02)
            if self.store.take_failure():
                raise RuntimeError(
                    "simulated failure requested by the test (fail_next_job): the evaluation "
                    "could not be completed"
                )
            self._evaluate(tasks)
        except _Cancelled:
            job.log("INFO", f"Job {job.id} cancelled")
            self._update("cancelled", message="Job cancelled by the user.")
        except BaseException as exc:  # a worker thread has no caller: every failure becomes the job's status
            message = " ".join(str(exc).split()) or type(exc).__name__
            job.log("ERROR", f"Job {job.id} failed: {type(exc).__name__}: {message}")
            with self.store.lock:
                ts = {
                    t: ("failed" if s != "completed" else s)
                    for t, s in (job.record["status_details"].get("task_status") or {}).items()
                }
            self._update("failed", message=message, task_status=ts)

    def _materialize(self, ds: Any, work: Path) -> Any:
        """Turn an Entity Store reference or an hf:// URL on this fake's Data Store into a local path."""
        if isinstance(ds, str):
            ns, _, name = ds.partition("/")
            found = self.store.get_es_dataset(ns, name)
            if found is None:
                raise RuntimeError(f"dataset {ds!r} not found in the Entity Store")
            ds = {"files_url": found["files_url"]}
        if not isinstance(ds, Mapping) or not str(ds.get("files_url", "")).startswith("hf://datasets/"):
            return ds
        if ds.get("hf_endpoint") not in (None, "", self.store.hf_url):
            # another hub: a loopback fake fetches nothing from the internet
            raise RuntimeError(
                f"{ds['files_url']}: hf_endpoint {ds['hf_endpoint']!r} is not this fake's Data Store"
            )
        from huggingface_hub import HfApi, hf_hub_download

        parts = str(ds["files_url"])[len("hf://datasets/") :].split("/", 2)
        repo_id, sub = f"{parts[0]}/{parts[1]}", (parts[2] if len(parts) > 2 else "").strip("/")
        api = HfApi(endpoint=self.store.hf_url, token=False)
        files = [
            f
            for f in api.list_repo_files(repo_id, repo_type="dataset")
            if not sub or f == sub or f.startswith(sub + "/")
        ]
        if not files:
            raise RuntimeError(f"{ds['files_url']}: no such files in the Data Store")
        local = None
        for f in files:
            local = Path(
                hf_hub_download(
                    repo_id,
                    f,
                    repo_type="dataset",
                    endpoint=self.store.hf_url,
                    token=False,
                    cache_dir=str(work / "hf-cache"),
                )
            )
        assert local is not None
        snapshot = local
        for _ in Path(files[-1]).parts:
            snapshot = snapshot.parent
        return {**{k: v for k, v in ds.items() if k != "hf_endpoint"}, "files_url": str(snapshot / sub)}

    def _model(self, ref: str, where: str) -> dict[str, Any]:
        """An Entity Store model (``"namespace/name"``) as the inline ``{"api_endpoint": ...}`` it stores."""
        ns, _, name = ref.partition("/")
        found = self.store.entity_store.get_model(ns, name) if name else None
        if found is None or not isinstance(found.get("api_endpoint"), Mapping):
            raise RuntimeError(
                f"{where}: model {ref!r} not found in the Entity Store (or has no api_endpoint)"
            )
        return {"api_endpoint": dict(found["api_endpoint"])}

    def _resolve_models(self, cfg: dict[str, Any], tgt: dict[str, Any]) -> None:
        """Model references in the target and in judge metrics, resolved as NeMo does before it runs."""
        if isinstance(tgt.get("model"), str):
            tgt["model"] = self._model(tgt["model"], "target.model")
        for tname, task in (cfg.get("tasks") or {}).items():
            for mname, metric in (task.get("metrics") or {}).items():
                params = metric.get("params") or {}
                if isinstance(params.get("model"), str):
                    params["model"] = self._model(
                        params["model"], f"tasks.{tname}.metrics.{mname}.params.model"
                    )

    def _evaluate(self, tasks: list[str]) -> None:
        job = self.job
        work = self.store.work_dir / job.id
        work.mkdir(parents=True, exist_ok=True)
        cfg = json.loads(json.dumps(job.record["config"]))
        tgt = json.loads(json.dumps(job.record["target"]))
        self._resolve_models(cfg, tgt)

        def on_sample(done: dict[str, int], totals: dict[str, int]) -> None:
            processed, total = sum(done.values()), max(1, sum(totals.values()))
            status = {
                t: ("completed" if done.get(t, 0) >= n else "running" if done.get(t) else "pending")
                for t, n in totals.items()
            }
            self._update(
                progress=round(100.0 * processed / total, 2), samples_processed=processed, task_status=status
            )
            if self.store.sample_delay:
                time.sleep(self.store.sample_delay)

        try:
            outcome = score_job(
                cfg,
                tgt,
                load=lambda ds: self._materialize(ds, work),
                on_sample=on_sample,
                log=job.log,
                cancelled=job.cancel.is_set,
                minimal_stats=self.store.minimal_stats,
            )
        except Cancelled:
            raise _Cancelled from None
        result_id = new_id("evaluation_result")
        ts = now()
        files_url = f"hf://datasets/evaluation-results/{job.id}"
        entity_doc = {
            "created_at": ts,
            "updated_at": ts,
            "id": result_id,
            "job": job.id,
            "tasks": outcome.tasks,
            "groups": outcome.groups,
            "namespace": job.record.get("namespace") or "default",
            "files_url": files_url,
            "custom_fields": {},
            "description": None,
            "project": None,
            "ownership": None,
        }
        job.log("INFO", "Job completed successfully.")
        job.result_zip = self._zip(entity_doc, outcome.samples if self.store.include_samples else None)
        self.store.put_result(entity_doc)
        # The result id lands with the "completed" status, so no reader sees a completed job without it.
        self._update(
            "completed",
            record={"result": result_id, "output_files_url": files_url},
            message="Job completed successfully.",
            progress=100.0,
            samples_processed=sum(len(v) for v in outcome.samples.values()),
            task_status={t: "completed" for t in outcome.samples},
        )

    def _zip(self, aggregate: dict[str, Any], samples: dict[str, list[dict[str, Any]]] | None) -> bytes:
        from mlflow_nemo_judge.config.secrets import redact

        buf = io.BytesIO()
        root = f"{self.job.id}/"
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(root + "evaluation_result.json", json.dumps(aggregate, indent=2))
            if samples is not None:
                zf.writestr(root + "results/results.json", json.dumps(samples, ensure_ascii=False))
            zf.writestr(root + "config.json", json.dumps(redact(self.job.record["config"]), indent=2))
            zf.writestr(root + "logs/job.log", "\n".join(self.job.logs) + "\n")
        return buf.getvalue()


def job_record(
    body: Mapping[str, Any],
    namespace: str,
    target: dict[str, Any],
    config: dict[str, Any],
    *,
    output_files_url: str | None = None,
) -> dict[str, Any]:
    """A new job's record as the Evaluator returns it (status ``created``): the one shape the v1, v2 and
    live routes all store and serve."""
    ts = now()
    return {
        "created_at": ts,
        "updated_at": ts,
        "id": new_id("eval"),
        "namespace": namespace,
        "description": body.get("description"),
        "target": target,
        "config": config,
        "result": None,
        "output_files_url": output_files_url,
        "status_details": {"message": None, "task_status": {}, "progress": None, "samples_processed": None},
        "status": "created",
        "project": body.get("project"),
        "custom_fields": body.get("custom_fields") or {},
        "ownership": body.get("ownership"),
    }


def start_job(store: FakeNemoService, job: FakeJob, on_done: Callable[[], None] | None = None) -> None:
    def target() -> None:
        JobRunner(store, job).run()
        if on_done is not None:
            on_done()

    job.thread = threading.Thread(target=target, name=f"fake-nemo-{job.id}", daemon=True)
    job.thread.start()


def request_cancel(store: FakeNemoService, job: FakeJob) -> None:
    """Ask a job to stop: ``cancelling`` now, ``cancelled`` once its worker notices (between two rows)."""
    with store.changed:
        job.cancel.set()
        if job.record["status"] in ("created", "pending", "running"):
            job.record["status"] = "cancelling"
            job.record["updated_at"] = now()
            job.snapshot()
            store.changed.notify_all()


def logs_zip(job: FakeJob) -> bytes:
    """The job's logs as v1 serves them: a ZIP archive (the SDK's ``download_logs`` docstring, §7.4)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{job.id}/logs/job.log", "\n".join(job.logs) + "\n")
    return buf.getvalue()
