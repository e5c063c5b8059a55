"""Live evaluation (``POST /v1/evaluation/live``): one synchronous call, no job persisted (reference §4.6).

The service only evaluates data-source targets live (``rows`` or ``dataset``; a model target would need
inference, which live evaluation does not do) and newer docs cap the data at 10 rows. Two uses:

* ``validate --backend nemo --live``: a real dry run. The first ``LIVE_MAX_ROWS`` rows are submitted and
  the service's scores (or its error) reported, so a config the service would reject fails here, before
  a long job is created.
* ``run --backend nemo --nemo-live``: a small run (at most ``LIVE_MAX_ROWS`` rows) answered in one call
  instead of a job to poll. More rows are refused, never silently cut: a run must evaluate what it says.

The answer is the SDK's ``LiveEvaluation``: ``{"status", "status_details", "result", "logs"}``; anything
but ``completed`` with a result is an error carrying the service's message.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow_nemo_judge.backends.nemo.client import NemoClient
from mlflow_nemo_judge.backends.nemo.results import build_result
from mlflow_nemo_judge.config.secrets import redact
from mlflow_nemo_judge.errors import ConfigError, NemoJobError
from mlflow_nemo_judge.results import EvalResult

__all__ = ["LIVE_MAX_ROWS", "LIVE_TARGETS", "live_body", "live_result", "score_lines", "submit_live"]

LIVE_MAX_ROWS = 10
LIVE_TARGETS = ("rows", "dataset")


def _cap_limit(cfg: dict[str, Any], n: int) -> None:
    raw = cfg.get("params")
    params: dict[str, Any] = raw if isinstance(raw, dict) else {}
    current = params.get("limit_samples")
    params["limit_samples"] = min(n, current) if isinstance(current, int) else n
    cfg["params"] = params


def live_body(
    cfg: Mapping[str, Any], tgt: Mapping[str, Any], *, dry_run: bool, limit: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config and target to submit live. ``dry_run`` takes the first rows; a run refuses more.

    ``cfg``/``tgt`` are submission bodies (staged, secrets resolved); copies are returned.
    """
    cfg_out, tgt_out = copy.deepcopy(dict(cfg)), copy.deepcopy(dict(tgt))
    kind = tgt_out.get("type")
    if kind not in LIVE_TARGETS:
        raise ConfigError(
            "target.type",
            f"live evaluation takes data-source targets only ({' or '.join(LIVE_TARGETS)}), not {kind!r}: "
            "the service does no inference live; validate without --live, or run as a job",
        )
    cap = LIVE_MAX_ROWS if limit is None else min(limit, LIVE_MAX_ROWS)
    if kind == "rows":
        rows = list(tgt.get("rows") or [])
        if limit is not None:
            rows = rows[:limit]
        if not dry_run and len(rows) > LIVE_MAX_ROWS:
            raise ConfigError(
                "--nemo-live",
                f"live evaluation takes at most {LIVE_MAX_ROWS} rows and the target has {len(rows)}: "
                "run it as a job (drop --nemo-live) or pass --limit",
            )
        tgt_out["rows"] = rows[:cap]
    elif not dry_run and (limit is None or limit > LIVE_MAX_ROWS):
        # A dataset's size is only known to the service: a run could be cut short without anyone noticing.
        raise ConfigError(
            "--nemo-live",
            f"a dataset target is live-evaluated only with --limit N (N <= {LIVE_MAX_ROWS}), so the run "
            "evaluates exactly the rows it says; or run it as a job (drop --nemo-live)",
        )
    else:
        _cap_limit(cfg_out, cap)
    return cfg_out, tgt_out


def submit_live(
    client: NemoClient, cfg: Mapping[str, Any], tgt: Mapping[str, Any], namespace: str | None = None
) -> dict[str, Any]:
    """POST the live evaluation; the (redacted) ``LiveEvaluation`` of a completed one, else an error."""
    body: dict[str, Any] = {"config": dict(cfg), "target": dict(tgt)}
    if namespace:
        body["namespace"] = namespace
    answer = client.request("POST", f"{client.evaluator_url}/v1/evaluation/live", json_body=body).json()
    answer = redact(answer) if isinstance(answer, dict) else {"status": None, "result": answer}
    status = answer.get("status")
    if status != "completed" or not isinstance(answer.get("result"), Mapping):
        message = (answer.get("status_details") or {}).get("message") or "no message from the service"
        raise NemoJobError(
            f"NeMo live evaluation {status or 'answered without a status'}: {message}",
            job_id="live",
            job=answer,
        )
    return dict(answer)


def live_result(answer: Mapping[str, Any], cfg: Mapping[str, Any], *, wall_seconds: float) -> EvalResult:
    """The ``EvalResult`` of a completed live evaluation: the service's aggregates (a live answer carries
    no per-sample rows), group members from the submitted config."""
    result = answer["result"]
    work_dir = Path(tempfile.mkdtemp(prefix="nemo-judge-live-"))
    groups = {g: list((v or {}).get("tasks") or []) for g, v in (cfg.get("groups") or {}).items()}
    out = build_result(
        result,
        None,
        work_dir=work_dir,
        job={"id": result.get("job"), "live": True, **answer},
        group_tasks=groups,
        samples_processed=(answer.get("status_details") or {}).get("samples_processed"),
        wall_seconds=wall_seconds,
    )
    out.own(work_dir)  # removed with the result, so no run leaves a temp folder behind
    return out


def score_lines(result: Mapping[str, Any]) -> list[str]:
    """``task/metric/score = value (n=count)`` lines of an ``EvaluationResult``, tasks then groups."""
    lines = []
    for kind in ("tasks", "groups"):
        for name, node in sorted((result.get(kind) or {}).items()):
            for metric, mv in sorted(((node or {}).get("metrics") or {}).items()):
                for score, sc in sorted(((mv or {}).get("scores") or {}).items()):
                    stats = (sc or {}).get("stats") or {}
                    value = (sc or {}).get("value")
                    shown = (
                        "NaN/none" if value is None else f"{value:g}" if isinstance(value, float) else value
                    )
                    count = f" (n={stats['count']})" if stats.get("count") is not None else ""
                    prefix = "group " if kind == "groups" else ""
                    lines.append(f"{prefix}{name}/{metric}/{score} = {shown}{count}")
    return lines
