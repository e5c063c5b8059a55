"""Workload 4 — scaling: 1k, 10k and 100k samples at zero mock latency and parallelism 64.

Each size runs in a fresh Python process (so peak RSS, ``ru_maxrss``, is that evaluation's own) against
one mock LLM server subprocess. Datasets are made from the shared doctor-consult rows (repeated with new
ids) in a temp dir. Untracked runs (``tracking=False``) give the time and memory growth of the engine;
tracked runs (local sqlite store, default settings: per-sample table up to 20 000 rows, the JSONL file
always, 200 traces) show that the per-sample record is still logged for big runs, and how large it is.

    python bench/bench_scaling.py                               # ~12 min
    python bench/bench_scaling.py --sizes 1000 10000 --tracked-sizes 1000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Mock, machine_facts, make_dataset, md_table, mock_target, save, seed_config, temp_dir  # noqa: E402


def _rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def child(a: argparse.Namespace) -> None:
    """One evaluation in this (fresh) process; prints one JSON line."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    from mlflow_nemo_judge.pipeline import evaluate

    cfg = seed_config(a.chat_url, a.data, limit=a.child, parallelism=a.parallelism)
    target = mock_target(a.chat_url)
    # Time at which each tenth of the samples was done: the throughput of the first and last tenths of one
    # run shows whether per-sample cost grows with the run's length, independent of other runs' load.
    marks: list[float] = []
    step = max(1, a.child // 10)

    def on_progress(task: str, done: int, total: int | None) -> None:
        if done % step == 0:
            marks.append(time.perf_counter())

    kw: dict[str, Any] = {"cache": False, "progress_bar": False, "on_progress": on_progress}
    uri = None
    if a.tracked:
        from mlflow.tracking import MlflowClient

        store = Path(a.store)
        store.mkdir(parents=True, exist_ok=True)
        os.chdir(store)
        uri = f"sqlite:///{store}/mlflow.db"
        MlflowClient(tracking_uri=uri).search_experiments()  # migration, not timed
    else:
        import mlflow  # noqa: F401 - imported in both variants so the baselines compare
    rss0 = _rss_now_mb()
    t0 = time.perf_counter()
    if a.tracked:
        ev = evaluate(cfg, target, tracking_uri=uri, experiment="scaling", **kw)
    else:
        ev = evaluate(cfg, target, tracking=False, **kw)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    res = ev.result
    # The first tenth also holds the start-up (plan, the dataset's row count): compare the later tenths.
    deciles = [step / (b - a_) for a_, b in zip([t0, *marks], marks, strict=False)]
    out: dict[str, Any] = {
        "samples": a.child,
        "tracked": a.tracked,
        "wall_s": wall,
        "decile_samples_per_s": [round(x, 1) for x in deciles],
        "engine_wall_s": res.usage.wall_seconds,
        "requests": res.usage.requests,
        "rss_before_mb": rss0,
        "peak_rss_mb": peak,
        "samples_jsonl_mb": Path(res.samples_path).stat().st_size / 2**20 if res.samples_path else None,
    }
    if a.tracked:
        from mlflow.tracking import MlflowClient

        cl = MlflowClient(tracking_uri=uri)
        run = cl.get_run(ev.run_ids[0])
        arts: dict[str, float] = {}

        def walk(path: str | None) -> None:
            for f in cl.list_artifacts(run.info.run_id, path):
                if f.is_dir:
                    walk(f.path)
                else:
                    arts[f.path] = (f.file_size or 0) / 2**20

        walk(None)
        out["artifacts_mb"] = {k: round(v, 2) for k, v in sorted(arts.items(), key=lambda kv: -kv[1])[:6]}
        out["tags"] = {
            k: v
            for k, v in run.data.tags.items()
            if k.startswith("nemo_judge.") and k.split(".")[-1] in ("samples", "traces", "state")
        }
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--tracked-sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    ap.add_argument("--parallelism", type=int, default=64)
    ap.add_argument("--name", default="scaling", help="results file name (bench/results/NAME.json)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--chat-url", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--tracked", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    facts = machine_facts()
    runs: list[dict[str, Any]] = []
    with temp_dir("bench-scaling-") as d, Mock(latency=0.0) as mock:
        data = make_dataset(max(a.sizes + a.tracked_sizes), d)
        plan = [(n, False) for n in a.sizes] + [(n, True) for n in a.tracked_sizes]
        for i, (n, tracked) in enumerate(plan):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--chat-url",
                mock.chat_url,
                "--data",
                str(data),
                "--parallelism",
                str(a.parallelism),
                "--store",
                str(d / f"store{i}"),
            ]
            if tracked:
                cmd.append("--tracked")
            mock.reset()
            cpu0 = mock.cpu_seconds()
            la0 = os.getloadavg()[0]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if p.returncode != 0 or line is None:
                print(p.stdout[-2000:], p.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"child for n={n} tracked={tracked} failed")
            r = json.loads(line[len("RESULT ") :])
            r.update(
                {
                    "mock_calls": mock.count(),
                    "mock_cpu_s": mock.cpu_seconds() - cpu0,
                    "loadavg_1m_before": la0,
                    "loadavg_1m_after": os.getloadavg()[0],
                }
            )
            runs.append(r)
            print(
                f"  n={n} tracked={tracked}: wall {r['wall_s']:.1f}s (engine {r['engine_wall_s']:.1f}s), "
                f"peak RSS {r['peak_rss_mb']:.0f} MB (before run {r['rss_before_mb']:.0f}), "
                f"{r['mock_calls']} calls, {r['mock_calls'] / r['engine_wall_s']:.0f} req/s, "
                f"samples.jsonl {r['samples_jsonl_mb']:.1f} MB, samples/s per tenth {r['decile_samples_per_s']}"
                + (f", artifacts {r.get('artifacts_mb')}" if tracked else ""),
                flush=True,
            )
            # Leave the temp space for the next child: the tracked store holds a copy of samples.jsonl.
            import shutil

            shutil.rmtree(d / f"store{i}", ignore_errors=True)

    def get(n: int, tracked: bool) -> dict[str, Any] | None:
        return next((r for r in runs if r["samples"] == n and r["tracked"] == tracked), None)

    print(
        md_table(
            [
                "samples",
                "tracked",
                "samples/s in tenths 2..10 of the run",
                "last tenth / median of tenths 2..10",
            ],
            [
                [
                    r["samples"],
                    r["tracked"],
                    ", ".join(f"{x:.0f}" for x in r["decile_samples_per_s"][1:]),
                    f"{r['decile_samples_per_s'][-1] / statistics.median(r['decile_samples_per_s'][1:]):.2f}",
                ]
                for r in runs
                if len(r["decile_samples_per_s"]) > 2
            ],
        )
    )
    print()
    growth = []
    for tracked in (False, True):
        sizes = sorted(r["samples"] for r in runs if r["tracked"] == tracked)
        for lo, hi in zip(sizes, sizes[1:], strict=False):
            rl, rh = get(lo, tracked), get(hi, tracked)
            assert rl and rh
            growth.append(
                [
                    ("tracked" if tracked else "untracked"),
                    f"{hi}/{lo}",
                    f"{hi / lo:.0f}",
                    f"{rh['wall_s'] / rl['wall_s']:.2f}",
                    f"{rh['engine_wall_s'] / rl['engine_wall_s']:.2f}",
                    f"{rh['peak_rss_mb'] - rl['peak_rss_mb']:.0f}",
                ]
            )
    out = {
        "facts": facts,
        "command": "python bench/bench_scaling.py " + " ".join(sys.argv[1:]),
        "runs": runs,
        "growth": growth,
    }
    path = save(a.name, out)
    print(f"\nfacts: {facts}\nsaved {path}\n")
    print(
        md_table(
            [
                "samples",
                "tracked",
                "wall (s)",
                "engine wall (s)",
                "req/s",
                "peak RSS (MB)",
                "RSS before run (MB)",
                "samples.jsonl (MB)",
            ],
            [
                [
                    r["samples"],
                    r["tracked"],
                    r["wall_s"],
                    r["engine_wall_s"],
                    f"{r['mock_calls'] / r['engine_wall_s']:.0f}",
                    r["peak_rss_mb"],
                    r["rss_before_mb"],
                    r["samples_jsonl_mb"],
                ]
                for r in runs
            ],
        )
    )
    print()
    print(
        md_table(
            ["variant", "sizes", "size ratio", "wall ratio", "engine wall ratio", "peak RSS growth (MB)"],
            growth,
        )
    )


if __name__ == "__main__":
    main()
