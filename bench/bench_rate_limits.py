"""Workload 8 — rate-limited endpoints (issue 15): per-endpoint adaptive concurrency against a stub that
rate-limits the target and the judge differently.

Two MOCK LLM servers as subprocesses, each a different endpoint (origin): the target
(``mock/faithful-summarizer``) admits ``--target-rps`` requests/s, the judge (``mock/judge``)
``--judge-rps``; above that each answers 429 at once with ``Retry-After``/``retry-after-ms`` (the time
until it admits again; token bucket holding ``--burst`` s of its rate, full at start). Both serve
admitted requests after ``--latency``. The seed config (1 target + 2 judge calls per sample), untracked,
response cache off, at each ``--parallelism`` (above what the limits allow, so the client must adapt).

Reported per endpoint, from the servers' own request logs: admitted requests, 429s, sustained
throughput = (admitted − the bucket's initial fill) / (last admitted arrival − first admitted arrival),
as a share of the endpoint's limit, and samples lost (rows with a target or judge error).

    python bench/bench_rate_limits.py                    # 200 samples, 20 / 40 req/s, 200 ms, P = 16 and 32
    python bench/bench_rate_limits.py --parallelism 64 --samples 400
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import loadavg, machine_facts, make_dataset, md_table, mock_target, save, seed_config, temp_dir  # noqa: E402

from mlflow_nemo_judge.config import load_config, load_target  # noqa: E402
from mlflow_nemo_judge.engine import RunOptions, run_plan_async  # noqa: E402
from mlflow_nemo_judge.plan import build_plan  # noqa: E402
from mlflow_nemo_judge.testing.mock_llm import RateLimitConfig, start_subprocess  # noqa: E402

TARGET, JUDGE = "mock/faithful-summarizer", "mock/judge"


def _get(root: str, path: str) -> Any:
    with urllib.request.urlopen(root + path, timeout=30) as r:
        return json.loads(r.read())


def _endpoint_figures(root: str, model: str, rps: float, burst: float) -> dict[str, Any]:
    log = _get(root, "/mock/requests")["requests"]
    admitted = sorted(e["time"] for e in log if e["model"] == model and e["status"] == 200)
    refused = sum(1 for e in log if e["model"] == model and e["status"] == 429)
    span = admitted[-1] - admitted[0] if len(admitted) > 1 else 0.0
    capacity = max(1.0, rps * burst)
    sustained = (len(admitted) - capacity) / span if span > 0 else 0.0
    stats = _get(root, "/mock/config")["rate_limit_stats"]
    return {
        "limit_rps": rps,
        "admitted": len(admitted),
        "refused_429": refused,
        "span_s": round(span, 3),
        "sustained_rps": round(sustained, 2),
        "share_of_limit": round(sustained / rps, 3),
        "peak_in_flight": stats["peak_in_flight"].get(model),
    }


def run_once(data: Path, samples: int, parallelism: int, t_root: str, j_root: str) -> dict[str, Any]:
    cfg = seed_config(f"{j_root}/v1/chat/completions", data, limit=samples, parallelism=parallelism)
    plan = build_plan(load_config(cfg), load_target(mock_target(f"{t_root}/v1/chat/completions", TARGET)))
    t0 = time.perf_counter()
    result = asyncio.run(run_plan_async(plan, RunOptions(cache=False, progress_bar=False)))
    wall = time.perf_counter() - t0
    records = list(result.iter_samples())
    lost = sum(1 for r in records if r.target_error is not None or any(m.error for m in r.metrics.values()))
    result.close()
    return {
        "wall_s": round(wall, 3),
        "samples": len(records),
        "samples_lost": lost,
        "retries": result.usage.retries,
        "failed_requests": result.usage.failed_requests,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--target-rps", type=float, default=20.0)
    ap.add_argument("--judge-rps", type=float, default=40.0)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--burst", type=float, default=0.25)
    ap.add_argument("--parallelism", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--name", default="rate_limits")
    args = ap.parse_args()

    facts = machine_facts()
    load_start = loadavg()
    rows: list[list[Any]] = []
    runs: list[dict[str, Any]] = []
    with temp_dir("bench-rate-") as tmp:
        data = make_dataset(args.samples, tmp, unique=True)
        for p in args.parallelism:
            t_proc, t_url = start_subprocess(
                args.latency, rate_limits=RateLimitConfig({TARGET: args.target_rps}, burst=args.burst)
            )
            j_proc, j_url = start_subprocess(
                args.latency, rate_limits=RateLimitConfig({JUDGE: args.judge_rps}, burst=args.burst)
            )
            try:
                t_root, j_root = t_url.rsplit("/v1", 1)[0], j_url.rsplit("/v1", 1)[0]
                run = run_once(data, args.samples, p, t_root, j_root)
                run["parallelism"] = p
                run["target"] = _endpoint_figures(t_root, TARGET, args.target_rps, args.burst)
                run["judge"] = _endpoint_figures(j_root, JUDGE, args.judge_rps, args.burst)
            finally:
                for proc in (t_proc, j_proc):
                    os.kill(proc.pid, signal.SIGTERM)
                    proc.wait(10)
            runs.append(run)
            for name in ("target", "judge"):
                e = run[name]
                rows.append(
                    [
                        p,
                        name,
                        f"{e['limit_rps']:g}",
                        e["admitted"],
                        e["refused_429"],
                        e["sustained_rps"],
                        f"{e['share_of_limit']:.0%}",
                        e["peak_in_flight"],
                        run["samples_lost"],
                        run["wall_s"],
                    ]
                )
    print(
        md_table(
            [
                "P",
                "endpoint",
                "limit req/s",
                "admitted",
                "429s",
                "sustained req/s",
                "share of limit",
                "peak in flight",
                "samples lost",
                "wall s",
            ],
            rows,
        )
    )
    print(f"load average at start {load_start}, end {loadavg()}")
    path = save(
        args.name,
        {
            "machine": facts,
            "loadavg_start": [round(x, 2) for x in load_start],
            "args": vars(args),
            "runs": runs,
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
