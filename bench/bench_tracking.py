"""Workload 3 — tracking overhead: ``evaluate(...)`` with MLflow tracking on, against the same
evaluation with ``tracking=False``, side by side in one process.

Seed config (1 target + 2 judge calls per row) against the mock LLM server in a subprocess. Stores: a
local sqlite file, and a loopback ``mlflow server --workers 1`` with a sqlite backend and local artifacts
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``); with ``--team`` also the team stack (``mlflow server`` on
PostgreSQL and an S3-compatible store, ``mlflow_nemo_judge.testing.team_stack``). Tracked variants: a trace for every sample, streamed
(``traces``); the same writer holding every trace until the end (``traces-at-end``: an unbounded batch,
i.e. the burst after the last model call that streaming replaced); and ``trace_samples=0``. For each
traced run the bench reads the sink's ``TraceReport``: the time spent writing traces and the share of
it that overlapped the model calls (written before the engine's last record). The response cache is
off, so every variant makes the same calls. The process is warmed up first (imports, schema migration,
first LoggedModel) so one-time costs are charged to no variant.

    python bench/bench_tracking.py                               # 200 ms latency, parallelism 8, 25 + 50
    python bench/bench_tracking.py --team                        # + mlflow server on PostgreSQL + S3
    python bench/bench_tracking.py --latency 0 --sizes 25 1000   # the zero-latency worst case
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
    ap.add_argument("--sizes", type=int, nargs="+", default=[25, 50])
    ap.add_argument("--repeats", type=int, nargs="+", default=[2, 2], help="repeats per size")
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument(
        "--team",
        action="store_true",
        help="also the team stack: mlflow server on PostgreSQL + an S3-compatible store (testing.team_stack)",
    )
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--parallelism", type=int, default=8)
    ap.add_argument("--name", help="results file name (default tracking / tracking_lat<latency>)")
    ap.add_argument(
        "--kinds",
        nargs="+",
        default=["traces", "traces-at-end", "no-traces"],
        choices=["traces", "traces-at-end", "no-traces"],
        help="tracked variants per store",
    )
    a = ap.parse_args()
    facts = machine_facts()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    from mlflow.tracking import MlflowClient

    from mlflow_nemo_judge.pipeline import evaluate
    from mlflow_nemo_judge.tracking import trace_stream
    from mlflow_nemo_judge.tracking.mlflow_sink import MlflowSink

    reports: list[Any] = []
    finish = MlflowSink.finish

    def spy_finish(self: MlflowSink, result: Any, reliability: Any = None) -> None:
        try:
            finish(self, result, reliability)
        finally:
            reports.append(self.trace_report)

    MlflowSink.finish = spy_finish  # type: ignore[method-assign]  # the bench reads the trace report

    results: list[dict[str, Any]] = []
    with temp_dir("bench-tracking-") as d, Mock(latency=a.latency) as mock, contextlib.ExitStack() as stack:
        os.chdir(d)  # a local store's artifacts (./mlruns) land here
        sqlite_uri = f"sqlite:///{d}/mlflow.db"
        MlflowClient(tracking_uri=sqlite_uri).search_experiments()  # schema migration, not timed
        stores = {"sqlite": sqlite_uri}
        if not a.no_server:
            stores["server"] = stack.enter_context(mlflow_server(d))
        if a.team:
            from mlflow_nemo_judge.testing.team_stack import start_team_stack

            stores["team"] = stack.enter_context(start_team_stack(d / "team")).tracking_uri
        target = mock_target(mock.chat_url)
        data = make_dataset(max(a.sizes), d)

        def run(n: int, variant: str) -> dict[str, Any]:
            cfg = seed_config(mock.chat_url, data, limit=n, parallelism=a.parallelism)
            mock.reset()
            reports.clear()
            t0 = time.perf_counter()
            if variant == "off":
                ev = evaluate(cfg, target, tracking=False, cache=False, progress_bar=False)
            else:
                store, traces = variant.split("/")
                # "at-end": the same writer holding every trace until finish, as before traces were
                # streamed (one burst after the last model call), for a side-by-side figure.
                at_end = traces == "traces-at-end"
                trace_stream.BATCH_MAX = 10**9 if at_end else batch_max
                trace_stream.BATCH_WAIT = 1e9 if at_end else batch_wait
                ev = evaluate(
                    cfg,
                    target,
                    experiment=f"bench-{n}",
                    tracking_uri=stores[store],
                    force=True,
                    cache=False,
                    progress_bar=False,
                    trace_samples=0 if traces == "no-traces" else n,
                )
            wall = time.perf_counter() - t0
            rep = reports[0] if reports and reports[0] is not None else None
            return {
                "samples": n,
                "variant": variant,
                "wall_s": wall,
                "calls": mock.count(),
                "engine_wall_s": ev.result.usage.wall_seconds,
                "traces_written": rep.written if rep else 0,
                "trace_write_s": rep.write_seconds if rep else 0.0,
                "trace_overlap_s": rep.overlapped_seconds if rep else 0.0,
                "loadavg_1m": os.getloadavg()[0],
            }

        batch_max, batch_wait = trace_stream.BATCH_MAX, trace_stream.BATCH_WAIT
        kinds = tuple(a.kinds)
        variants = ["off"] + [f"{s}/{t}" for s in stores for t in kinds]
        print("warm-up", flush=True)
        for v in variants:
            run(10, v)
        for n, reps in zip(a.sizes, a.repeats + [1] * len(a.sizes), strict=False):
            for rep in range(reps):
                for v in variants:
                    r = run(n, v)
                    r["repeat"] = rep
                    results.append(r)
                    print(
                        f"  n={n} {v} rep={rep}: {r['wall_s']:.2f}s ({r['calls']} calls, "
                        f"{r['traces_written']} traces, {r['trace_write_s']:.2f}s writing, "
                        f"{r['trace_overlap_s']:.2f}s overlapped)",
                        flush=True,
                    )

    table = []
    for n in a.sizes:
        runs = [r for r in results if r["samples"] == n]
        med = {
            v: statistics.median(r["wall_s"] for r in runs if r["variant"] == v)
            for v in {r["variant"] for r in runs}
        }
        for v in sorted(med, key=lambda x: (x != "off", x)):
            extra = med[v] - med["off"]
            mine = [r for r in runs if r["variant"] == v]
            write = sum(r["trace_write_s"] for r in mine)
            overlap = sum(r["trace_overlap_s"] for r in mine)
            table.append(
                [
                    n,
                    v,
                    f"{med[v]:.2f}",
                    f"{med[v] / med['off']:.2f}",
                    f"{extra:+.2f}",
                    f"{write / len(mine):.2f}" if write else "–",
                    f"{100 * overlap / write:.0f} %" if write else "–",
                ]
            )
    out = {
        "facts": facts,
        "command": "python bench/bench_tracking.py " + " ".join(sys.argv[1:]),
        "latency_s": a.latency,
        "parallelism": a.parallelism,
        "runs": results,
        "table": table,
    }
    path = save(a.name or ("tracking" if a.latency == 0 else f"tracking_lat{a.latency:g}"), out)
    print(f"\nfacts: {facts}\nsaved {path}\n")
    print(
        md_table(
            [
                "samples",
                "variant",
                "median wall (s)",
                "tracked/untracked",
                "added (s)",
                "trace writing (s)",
                "of it overlapped",
            ],
            table,
        )
    )


if __name__ == "__main__":
    main()
