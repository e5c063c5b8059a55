"""Workload 3 — tracking overhead: ``evaluate(...)`` with MLflow tracking on, divided by the same
evaluation with ``tracking=False``, side by side in one process.

Seed config (1 target + 2 judge calls per row) against the mock LLM server in a subprocess at zero
latency (the worst case for the ratio: against a real endpoint the model time dominates and the ratio
shrinks toward 1). Stores: a local sqlite file, and a loopback ``mlflow server --workers 1`` with a
sqlite backend (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``). Tracked variants are run with the
default per-sample traces (``trace_samples`` 200) and with ``trace_samples=0``. The response cache is
off, so every variant makes the same calls. The process is warmed up first (imports, schema migration,
first LoggedModel) so one-time costs are charged to no variant.

    python bench/bench_tracking.py                     # 25 and 1000 samples, sqlite + server (~6 min)
    python bench/bench_tracking.py --sizes 25 --latency 0.2     # the same at a 200 ms model latency
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Mock, machine_facts, make_dataset, md_table, mock_target, save, seed_config, temp_dir  # noqa: E402


@contextlib.contextmanager
def mlflow_server(d: Path) -> Iterator[str]:
    """A loopback ``mlflow server --workers 1`` with a sqlite backend; yields its URI."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(d / "server.log", "w")  # noqa: SIM115 - closed below
    p = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{d}/server.db",
            "--artifacts-destination",
            f"{d}/server-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read() == b"OK":
                    break
            except OSError:
                pass
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start; see {d / 'server.log'}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[25, 1000])
    ap.add_argument("--repeats", type=int, nargs="+", default=[3, 1], help="repeats per size")
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument("--latency", type=float, default=0.0)
    a = ap.parse_args()
    facts = machine_facts()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    from mlflow.tracking import MlflowClient

    from mlflow_nemo_judge.pipeline import evaluate

    results: list[dict[str, Any]] = []
    with temp_dir("bench-tracking-") as d, Mock(latency=a.latency) as mock, contextlib.ExitStack() as stack:
        os.chdir(d)  # a local store's artifacts (./mlruns) land here
        sqlite_uri = f"sqlite:///{d}/mlflow.db"
        MlflowClient(tracking_uri=sqlite_uri).search_experiments()  # schema migration, not timed
        stores = {"sqlite": sqlite_uri}
        if not a.no_server:
            stores["server"] = stack.enter_context(mlflow_server(d))
        target = mock_target(mock.chat_url)
        data = make_dataset(max(a.sizes), d)

        def run(n: int, variant: str) -> dict[str, Any]:
            cfg = seed_config(mock.chat_url, data, limit=n)
            mock.reset()
            t0 = time.perf_counter()
            if variant == "off":
                ev = evaluate(cfg, target, tracking=False, cache=False, progress_bar=False)
            else:
                store, traces = variant.split("/")
                ev = evaluate(
                    cfg,
                    target,
                    experiment=f"bench-{n}",
                    tracking_uri=stores[store],
                    force=True,
                    cache=False,
                    progress_bar=False,
                    trace_samples=None if traces == "traces" else 0,
                )
            wall = time.perf_counter() - t0
            return {
                "samples": n,
                "variant": variant,
                "wall_s": wall,
                "calls": mock.count(),
                "engine_wall_s": ev.result.usage.wall_seconds,
                "loadavg_1m": os.getloadavg()[0],
            }

        variants = ["off"] + [f"{s}/{t}" for s in stores for t in ("traces", "no-traces")]
        print("warm-up", flush=True)
        for v in variants:
            run(10, v)
        for n, reps in zip(a.sizes, a.repeats + [1] * len(a.sizes), strict=False):
            for rep in range(reps):
                for v in variants:
                    r = run(n, v)
                    r["repeat"] = rep
                    results.append(r)
                    print(f"  n={n} {v} rep={rep}: {r['wall_s']:.2f}s ({r['calls']} calls)", flush=True)

    table = []
    for n in a.sizes:
        med = {
            v: statistics.median(r["wall_s"] for r in results if r["samples"] == n and r["variant"] == v)
            for v in {r["variant"] for r in results if r["samples"] == n}
        }
        for v in sorted(med, key=lambda x: (x != "off", x)):
            extra = med[v] - med["off"]
            table.append(
                [
                    n,
                    v,
                    f"{med[v]:.2f}",
                    f"{med[v] / med['off']:.2f}",
                    f"{extra:.2f}",
                    f"{extra / n * 1000:.1f}",
                ]
            )
    out = {
        "facts": facts,
        "command": "python bench/bench_tracking.py " + " ".join(sys.argv[1:]),
        "latency_s": a.latency,
        "runs": results,
        "table": table,
    }
    path = save("tracking" if a.latency == 0 else f"tracking_lat{a.latency:g}", out)
    print(f"\nfacts: {facts}\nsaved {path}\n")
    print(
        md_table(
            [
                "samples",
                "variant",
                "median wall (s)",
                "tracked/untracked",
                "added (s)",
                "added per sample (ms)",
            ],
            table,
        )
    )


if __name__ == "__main__":
    main()
