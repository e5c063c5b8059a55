"""Workload 6 — response cache: workload 1 (500 seed samples, 200 ms mock latency) at one parallelism,
run cold into an empty cache directory and then again with the cache warm: wall-time ratio and the
endpoint calls each run made (the mock's request count). A third run with the cache off gives the
cold run's cost of writing the cache. Every row's text is distinct, so the cold run gets no hits.

    python bench/bench_cache.py [--parallelism 32] [--samples 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Mock, machine_facts, make_dataset, md_table, mock_target, save, seed_config, temp_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parallelism", type=int, default=32)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--latency", type=float, default=0.2)
    a = ap.parse_args()
    facts = machine_facts()
    from mlflow_nemo_judge.engine import run_local

    rows: list[dict[str, Any]] = []
    with temp_dir("bench-cache-") as d, Mock(latency=a.latency) as mock:
        data = make_dataset(a.samples, d, unique=True)
        cfg = seed_config(mock.chat_url, data, limit=None, parallelism=a.parallelism)
        target = mock_target(mock.chat_url)
        run_local(
            seed_config(mock.chat_url, data, limit=5),
            target,
            cache=False,
            progress_bar=False,
            work_dir=d / "warm",
        )

        def run(name: str, **opts: Any) -> Any:
            mock.reset()
            t0 = time.perf_counter()
            res = run_local(cfg, target, progress_bar=False, work_dir=d / name, **opts)
            wall = time.perf_counter() - t0
            rows.append(
                {
                    "run": name,
                    "wall_s": wall,
                    "engine_wall_s": res.usage.wall_seconds,
                    "endpoint_calls": mock.count(),
                    "usage_requests": res.usage.requests,
                    "cache_hits": res.usage.cache_hits,
                    "loadavg_1m": os.getloadavg()[0],
                }
            )
            print(
                f"  {name}: {wall:.2f}s, {mock.count()} calls, {res.usage.cache_hits} cache hits", flush=True
            )
            return res

        off = run("cache off", cache=False)
        cold = run("cold cache", cache=True, cache_dir=d / "cache")
        warm = run("warm cache", cache=True, cache_dir=d / "cache")
        same = cold.to_nemo_dict() == warm.to_nemo_dict() == off.to_nemo_dict()
        db = d / "cache" / "responses.sqlite"
        db_mb = db.stat().st_size / 2**20 if db.exists() else 0.0
    by = {r["run"]: r for r in rows}
    table = [
        [
            r["run"],
            f"{r['wall_s']:.2f}",
            r["endpoint_calls"],
            r["cache_hits"],
            f"{r['wall_s'] / by['cold cache']['wall_s']:.4f}",
        ]
        for r in rows
    ]
    out = {
        "facts": facts,
        "command": "python bench/bench_cache.py " + " ".join(sys.argv[1:]),
        "runs": rows,
        "same_results": same,
        "cache_db_mb": db_mb,
        "warm_over_cold": by["warm cache"]["wall_s"] / by["cold cache"]["wall_s"],
        "cold_over_off": by["cold cache"]["wall_s"] / by["cache off"]["wall_s"],
    }
    path = save("cache", out)
    print(f"\nfacts: {facts}\nsaved {path}\n")
    print(md_table(["run", "wall (s)", "endpoint calls", "cache hits", "wall / cold"], table))
    print(
        f"\nwarm/cold = {out['warm_over_cold']:.4f} (speed-up {1 / out['warm_over_cold']:.0f}x); "
        f"cold/off = {out['cold_over_off']:.3f}; identical results: {same}; cache file {db_mb:.1f} MB"
    )


if __name__ == "__main__":
    main()
