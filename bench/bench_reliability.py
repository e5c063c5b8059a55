"""Workload 7 — the cost of judge repeats and panels (issue 13): calls and wall time scale as configured.

The seed config (1 target call + 2 llm-judge metrics per row) against the mock LLM server in a
subprocess with a fixed latency, untracked (``evaluate(..., tracking=False)``, so the reliability
analysis is included), response cache off. Each variant sets ``mlflow_nemo_judge.reliability``:
``repeats`` k ∈ {1, 3, 5} and, per metric, a ``panel`` of 1 (the config's own judge, no panel) or 3 MOCK
judges (``mock/judge``, ``mock/judge-noisy``, ``mock/judge-lenient``). For each variant it reports:

* calls: what the mock served, against the expected ``samples × (1 + judges × repeats × metrics)``;
* wall/ideal, ideal = ``max(calls × latency / P, 2 × latency)`` (the work spread over P request slots;
  at least a target call followed by its judge calls), for the engine's wall and the whole call.

    python bench/bench_reliability.py                       # 50 samples, P = 8, 200 ms latency
    python bench/bench_reliability.py --latency 0.1 --runs 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Mock, machine_facts, make_dataset, md_table, mock_target, save, seed_config, temp_dir  # noqa: E402

TASK = "consult_summary_eval"
METRICS = ("completeness", "correctness")
PANEL = ("mock/judge", "mock/judge-noisy", "mock/judge-lenient")


def variant_config(chat_url: str, data: Path, repeats: int, judges: int, parallelism: int) -> dict[str, Any]:
    cfg = seed_config(chat_url, data, limit=None, parallelism=parallelism)
    block: dict[str, Any] = {"repeats": repeats, "temperature": 0.7, "seed": 0}
    if judges > 1:
        panel = [{"api_endpoint": {"url": chat_url, "model_id": m}} for m in PANEL[:judges]]
        block["metrics"] = {f"{TASK}/{m}": {"panel": panel} for m in METRICS}
    cfg["mlflow_nemo_judge"] = {"reliability": block}
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--parallelism", type=int, default=8)
    ap.add_argument("--repeats", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--panels", type=int, nargs="+", default=[1, 3], choices=[1, 2, 3])
    ap.add_argument("--runs", type=int, default=1, help="runs of each variant (the median is reported)")
    a = ap.parse_args()

    from mlflow_nemo_judge.pipeline import evaluate

    facts = machine_facts()
    n, p, lat = a.samples, a.parallelism, a.latency
    results: list[dict[str, Any]] = []
    with temp_dir("bench-reliability-") as d, Mock(latency=lat) as mock:
        data = make_dataset(n, d)
        target = mock_target(mock.chat_url)
        print("warm-up", flush=True)
        evaluate(
            variant_config(mock.chat_url, data, 2, 2, p),
            target,
            tracking=False,
            cache=False,
            progress_bar=False,
            limit=5,
        )
        for judges in a.panels:
            for k in a.repeats:
                cfg = variant_config(mock.chat_url, data, k, judges, p)
                expected = n * (1 + judges * k * len(METRICS))
                ideal = max(expected * lat / p, 2 * lat)
                for run in range(a.runs):
                    mock.reset()
                    t0 = time.perf_counter()
                    ev = evaluate(cfg, target, tracking=False, cache=False, progress_bar=False)
                    wall = time.perf_counter() - t0
                    rel = ev.reliability[0] if ev.reliability else None
                    r = {
                        "judges": judges,
                        "repeats": k,
                        "run": run,
                        "samples": n,
                        "calls": mock.count(),
                        "expected_calls": expected,
                        "ideal_s": ideal,
                        "engine_wall_s": ev.result.usage.wall_seconds,
                        "wall_s": wall,
                        "reliability_figures": len(rel.metrics()) if rel is not None else 0,
                        "loadavg_1m": os.getloadavg()[0],
                    }
                    results.append(r)
                    print(
                        f"  judges={judges} repeats={k} run={run}: {r['calls']} calls (expected {expected}), "
                        f"engine {r['engine_wall_s']:.2f}s, call {wall:.2f}s, ideal {ideal:.2f}s",
                        flush=True,
                    )

    table = []
    for judges in a.panels:
        for k in a.repeats:
            mine = [r for r in results if r["judges"] == judges and r["repeats"] == k]
            eng = statistics.median(r["engine_wall_s"] for r in mine)
            wall = statistics.median(r["wall_s"] for r in mine)
            calls = sorted({r["calls"] for r in mine})
            ideal = mine[0]["ideal_s"]
            table.append(
                [
                    judges,
                    k,
                    "/".join(map(str, calls)),
                    mine[0]["expected_calls"],
                    "yes" if calls == [mine[0]["expected_calls"]] else "NO",
                    f"{ideal:.2f}",
                    f"{eng:.2f}",
                    f"{eng / ideal:.3f}",
                    f"{wall / ideal:.3f}",
                ]
            )
    out = {
        "facts": facts,
        "command": "python bench/bench_reliability.py " + " ".join(sys.argv[1:]),
        "latency_s": lat,
        "parallelism": p,
        "samples": n,
        "runs": results,
        "table": table,
    }
    path = save("reliability", out)
    print(f"\nfacts: {facts}\nsaved {path}\n")
    headers = ["judges", "repeats", "calls", "expected", "equal", "ideal (s)", "engine wall (s)"]
    print(md_table([*headers, "engine/ideal", "call/ideal"], table))


if __name__ == "__main__":
    main()
