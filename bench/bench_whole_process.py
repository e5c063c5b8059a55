"""Whole-process comparison (issue 15): ours, ``mlflow.genai.evaluate`` and Inspect AI, each as a fresh process.

Every variant is a **new OS process**, timed by this parent from spawn to exit
(``time.perf_counter`` around ``subprocess.run``): interpreter start, imports, store set-up, the
evaluation, the logging, shutdown. All talk to ONE mock LLM server subprocess on 127.0.0.1
(``_common.Mock``; ``set_latency`` switches the latency per group), same rows, same target and judge
prompts, same regex. Per samples × latency group the variants run interleaved (the order rotates by one
per repeat), ``--repeats`` times; the figure is the median wall. Before every run the mock's request
count is reset, after it the count is recorded: 3 × samples (1 target + 2 judge calls per row), + 1
allowed for genai (its harness validates ``predict_fn`` with one call). Every run is checked to be a new
evaluation (ours: ``"reused": false`` in its JSON output), and each tool's mean ratings are recorded
(the mock judge is deterministic, so they must agree).

Variants (``--variants``; ``--parallelism`` P, default 8):

* ``ours``: the CLI exactly as a user runs it, ``mlflow-nemo-judge run CONFIG --target TARGET
  --tracking-uri sqlite:///STORE/mlflow.db --experiment bench --cache-dir EMPTY --no-progress --output
  json``, the seed config with ``params.parallelism: P``. Product defaults otherwise: per-sample traces
  on, response cache on into an empty folder per run (it pays the writes, never gets a hit). Concurrency:
  P calls in flight per endpoint (URL + model id), so at most P target + P judge calls at once; samples in
  flight are bounded by a window of 4 × P.
* ``untracked``: the same command with ``--no-tracking`` (context: what tracking costs).
* ``genai``: ``python bench/_genai_proc.py``: ``mlflow.genai.evaluate`` with ``predict_fn`` and the two
  ``@scorer`` functions of ``bench_vs_genai.genai_pieces``, ``MLFLOW_GENAI_EVAL_MAX_WORKERS=P``,
  ``MLFLOW_GENAI_EVAL_PREDICT_RATE_LIMIT=0``, ``MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT=0``, tracking to its
  own sqlite store. Concurrency: P predict threads, P score threads × 2 parallel scorers: up to P target +
  2P judge calls at once.
* ``inspect``: the ``inspect eval`` CLI (not the Python API) on ``bench/_inspect_task.py@consult_summary``
  (dataset = the rows, ``content`` as input; solver = system message, ``Full Consult: {prompt}``,
  ``generate(max_tokens=200)``; a ``@scorer`` sending both judge prompts concurrently), model
  ``openai-api/mock/mock/faithful-summarizer`` (Inspect's OpenAI-compatible provider, service ``mock``:
  ``MOCK_BASE_URL`` = the mock's ``/v1``, ``MOCK_API_KEY``), judge ``openai-api/mock/mock/judge``,
  ``--max-connections P``, ``--display none``, its default ``.eval`` log written to a log dir in the temp
  dir. Concurrency: Inspect's ``max_connections`` is a semaphore per model (provider class, API key and
  model name), and the judge model (a ``get_model`` inside the scorer) inherits the eval's
  ``max_connections``: at most P target + P judge calls at once, as ours. Samples in flight:
  ``max_samples``, whose default is ``max_connections`` (P); ``--inspect-max-samples`` sets it, and the
  optional variant ``inspect_wide`` runs it at 4 × P (ours' sample window).

Stores (``--store``): ``migrated`` (default) gives ours and genai each a fresh copy of one pre-migrated,
empty sqlite database (a user's existing store; schema creation charged to neither); ``empty`` gives each
a path to a database that does not exist yet (the process creates and migrates it, ~2-3 s, charged to both).
Inspect has no store; it writes its log.

Environment of every child (the same for all): ``MLFLOW_DISABLE_TELEMETRY=true``, ``DO_NOT_TRACK=true``
(MLflow's usage telemetry would try the internet), ``NO_PROXY`` for loopback, ``TQDM_DISABLE=1`` (genai's
progress bar; ours runs with ``--no-progress``, Inspect with ``--display none``), no ``INSPECT_TELEMETRY``
hook, and byte-compiled modules cached under the temp dir (``PYTHONPYCACHEPREFIX``, with
``PYTHONDONTWRITEBYTECODE`` unset): the editable install of this package otherwise has no ``.pyc`` files on a
machine that sets ``PYTHONDONTWRITEBYTECODE``, and every process would recompile it from source, which a
wheel install never does. One untimed warm-up round of every variant fills that cache (and the OS file
cache) first.

    python bench/bench_whole_process.py                      # 50 and 500 samples x 200 ms and 0 ms, 3 repeats
    python bench/bench_whole_process.py --samples 20 --latency 0.2 0 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    JUDGE_MODEL,
    TARGET_MODEL,
    Mock,
    machine_facts,
    make_dataset,
    md_table,
    mock_target,
    save,
    seed_config,
    temp_dir,
)

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ALL_VARIANTS = ("ours", "untracked", "genai", "inspect", "inspect_wide")
DEFAULT_VARIANTS = ("ours", "untracked", "genai", "inspect")
METRICS = ("completeness", "correctness")
INSPECT_TARGET = f"openai-api/mock/{TARGET_MODEL}"
INSPECT_JUDGE = f"openai-api/mock/{JUDGE_MODEL}"
# Inherited settings that would change what a child does or where it reports.
DROP_ENV = (
    "PYTHONDONTWRITEBYTECODE",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_GENAI_EVAL_MAX_WORKERS",
    "MLFLOW_GENAI_EVAL_MAX_SCORER_WORKERS",
    "MLFLOW_GENAI_EVAL_PREDICT_RATE_LIMIT",
    "MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT",
    "NEMO_JUDGE_CACHE_DIR",
    "INSPECT_TELEMETRY",
    "INSPECT_API_KEY_OVERRIDE",
    "INSPECT_EVAL_MODEL",
    "INSPECT_LOG_DIR",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {}
    for name in ("inspect-ai", "openai", "mlflow-nemo-judge"):
        try:
            out[name] = version(name)
        except Exception:
            out[name] = "not installed"
    return out


class Bench:
    def __init__(self, a: argparse.Namespace, d: Path, mock: Mock) -> None:
        self.a, self.d, self.mock = a, d, mock
        self.n_runs = 0
        env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        env.update(
            {
                "PYTHONPYCACHEPREFIX": str(d / "pycache"),
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                "TQDM_DISABLE": "1",
            }
        )
        self.env = env
        self.target_path = d / "target.json"
        self.target_path.write_text(json.dumps(mock_target(mock.chat_url)), encoding="utf-8")
        self.template: Path | None = None
        if a.store == "migrated":
            tmpl = d / "template"
            tmpl.mkdir()
            self._child(
                [
                    sys.executable,
                    "-c",
                    "import sys; from mlflow.tracking import MlflowClient; "
                    "MlflowClient(tracking_uri=sys.argv[1]).search_experiments()",
                    f"sqlite:///{tmpl}/mlflow.db",
                ],
                "migrate template store",
                env=self.env,
                cwd=d,
            )
            self.template = tmpl / "mlflow.db"

    # ------------------------------------------------------------------------------------ helpers

    def _child(self, cmd: list[str], label: str, env: dict[str, str], cwd: Path) -> tuple[float, Any]:
        """Run one process to its exit; -> (wall seconds from spawn to exit, CompletedProcess)."""
        t0 = time.perf_counter()
        try:
            p = subprocess.run(
                cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=self.a.timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr or ""
            tail = (err.decode(errors="replace") if isinstance(err, bytes) else err)[-4000:]
            raise SystemExit(
                f"{label}: no exit within {self.a.timeout:g} s\ncommand: {' '.join(cmd)}\nstderr tail:\n{tail}"
            ) from None
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(
                f"{label}: exit {p.returncode}\ncommand: {' '.join(cmd)}\n"
                f"stdout tail:\n{p.stdout[-2000:]}\nstderr tail:\n{p.stderr[-4000:]}"
            )
        return wall, p

    def _store(self) -> tuple[str, Path]:
        self.n_runs += 1
        s = self.d / f"run{self.n_runs}"
        s.mkdir()
        if self.template is not None:
            shutil.copyfile(self.template, s / "mlflow.db")
        return f"sqlite:///{s}/mlflow.db", s

    def data(self, n: int) -> tuple[Path, Path]:
        """The rows file (distinct texts beyond the 50 shared rows: the cache must not answer repeats) and
        ours' config for ``n`` samples."""
        rows = self.d / f"consults_{n}_unique.jsonl"
        cfg = self.d / f"config_{n}.json"
        if not cfg.exists():
            rows = make_dataset(n, self.d, unique=True)
            cfg_d = seed_config(self.mock.chat_url, rows, limit=n, parallelism=self.a.parallelism)
            cfg.write_text(json.dumps(cfg_d), encoding="utf-8")
        return rows, cfg

    # ----------------------------------------------------------------------------------- variants

    def run(self, variant: str, n: int) -> dict[str, Any]:
        rows, cfg = self.data(n)
        uri, s = self._store()
        self.mock.reset()
        if variant in ("ours", "untracked"):
            r = self._ours(variant, cfg, uri, s)
        elif variant == "genai":
            r = self._genai(rows, n, uri)
        else:
            ms = self.a.inspect_max_samples if variant == "inspect" else 4 * self.a.parallelism
            r = self._inspect(variant, rows, s, ms)
        r["calls"] = self.mock.count()
        expected = 3 * n
        r["calls_ok"] = r["calls"] == expected or (variant == "genai" and r["calls"] == expected + 1)
        r["dir_bytes"] = sum(f.stat().st_size for f in s.rglob("*") if f.is_file())
        shutil.rmtree(s, ignore_errors=True)  # bounded disk use over 50+ runs
        return r

    def _ours(self, variant: str, cfg: Path, uri: str, s: Path) -> dict[str, Any]:
        cmd = [str(BIN / "mlflow-nemo-judge"), "run", str(cfg), "--target", str(self.target_path)]
        cmd += (
            ["--no-tracking"] if variant == "untracked" else ["--tracking-uri", uri, "--experiment", "bench"]
        )
        cmd += ["--cache-dir", str(s / "cache"), "--no-progress", "--output", "json"]
        wall, p = self._child(cmd, variant, self.env, self.d)
        out = json.loads(p.stdout)
        run = out["runs"][0]
        if run.get("reused"):
            raise SystemExit(
                f"{variant}: the CLI reused an earlier run ({run.get('run_id')}); not a new evaluation"
            )
        metrics = run["results"]["tasks"]["consult_summary_eval"]["metrics"]
        means = {m: metrics[m]["scores"][m]["value"] for m in METRICS}
        usage = run["usage"]
        return {
            "wall_s": wall,
            "means": means,
            "reused": bool(run.get("reused")),
            "run_id": run.get("run_id"),
            "engine_wall_s": usage.get("wall_seconds"),
            "cache_hits": usage.get("cache_hits"),
            "samples_done": usage.get("samples"),
        }

    def _genai(self, rows: Path, n: int, uri: str) -> dict[str, Any]:
        env = dict(self.env)
        env.update(
            {
                "MLFLOW_GENAI_EVAL_MAX_WORKERS": str(self.a.parallelism),
                "MLFLOW_GENAI_EVAL_PREDICT_RATE_LIMIT": "0",
                "MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT": "0",
            }
        )
        cmd = [sys.executable, str(BENCH / "_genai_proc.py"), "--data", str(rows), "--samples", str(n)]
        cmd += ["--chat-url", self.mock.chat_url, "--tracking-uri", uri, "--experiment", "bench"]
        wall, p = self._child(cmd, "genai", env, self.d)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        return {
            "wall_s": wall,
            "means": out["means"],
            "run_id": out["run_id"],
            "samples_done": out["samples"],
        }

    def _inspect(self, variant: str, rows: Path, s: Path, max_samples: int | None) -> dict[str, Any]:
        env = dict(self.env)
        env.update(
            {"MOCK_BASE_URL": self.mock.base_url, "MOCK_API_KEY": "mock-not-a-key", "INSPECT_DISPLAY": "none"}
        )
        log_dir = s / "inspect-logs"
        cmd = [str(BIN / "inspect"), "eval", "_inspect_task.py@consult_summary", "--model", INSPECT_TARGET]
        cmd += ["-T", f"data={rows}", "-T", f"judge_model={INSPECT_JUDGE}"]
        cmd += ["--max-connections", str(self.a.parallelism), "--log-dir", str(log_dir), "--display", "none"]
        if max_samples is not None:
            cmd += ["--max-samples", str(max_samples)]
        # `inspect eval` finds task files relative to its working directory: run it in bench/.
        wall, _ = self._child(cmd, variant, env, BENCH)
        from inspect_ai.log import read_eval_log

        logs = sorted(log_dir.glob("*.eval"))
        if len(logs) != 1:
            raise SystemExit(f"{variant}: expected one .eval log in {log_dir}, found {logs}")
        log = read_eval_log(str(logs[0]), header_only=True)
        if log.status != "success" or log.results is None:
            raise SystemExit(f"{variant}: eval status {log.status!r}: {log.error}")
        means = {sc.name: sc.metrics["mean"].value for sc in log.results.scores}
        return {
            "wall_s": wall,
            "means": {m: means.get(m) for m in METRICS},
            "samples_done": log.results.completed_samples,
            "log_bytes": logs[0].stat().st_size,
            "max_samples": max_samples,
        }


def rotate(seq: list[str], k: int) -> list[str]:
    k %= len(seq)
    return seq[k:] + seq[:k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, nargs="+", default=[50, 500])
    ap.add_argument("--latency", type=float, nargs="+", default=[0.2, 0.0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="+", choices=ALL_VARIANTS, default=list(DEFAULT_VARIANTS))
    ap.add_argument(
        "--parallelism",
        type=int,
        default=8,
        help="ours' parallelism = genai's workers = Inspect's max_connections",
    )
    ap.add_argument(
        "--inspect-max-samples",
        type=int,
        default=None,
        help="Inspect's --max-samples (default: its own, = max_connections)",
    )
    ap.add_argument("--store", choices=("migrated", "empty"), default="migrated")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds one process may take")
    ap.add_argument("--warmup-samples", type=int, default=8)
    ap.add_argument("--name", default="whole_process")
    a = ap.parse_args()
    if any(v.startswith("inspect") for v in a.variants) and versions()["inspect-ai"] == "not installed":
        raise SystemExit(
            "inspect-ai is not installed: pip install -e '.[bench]' (or pip install inspect-ai openai)"
        )
    facts = {**machine_facts(), **versions()}
    command = "python bench/bench_whole_process.py " + " ".join(sys.argv[1:])
    runs: list[dict[str, Any]] = []
    warmup: list[dict[str, Any]] = []
    variants = list(a.variants)
    with temp_dir("bench-whole-") as d, Mock(latency=0.0) as mock:
        b = Bench(a, d, mock)
        print(f"warm-up: every variant once, {a.warmup_samples} samples, 0 ms", flush=True)
        for v in variants:
            r = b.run(v, a.warmup_samples)
            warmup.append({"variant": v, **r})
            print(f"  {v}: {r['wall_s']:.2f}s", flush=True)
        for n in a.samples:
            for lat in a.latency:
                mock.set_latency(lat)
                for rep in range(a.repeats):
                    for v in rotate(variants, rep):
                        r = b.run(v, n)
                        r.update({"variant": v, "samples": n, "latency_s": lat, "repeat": rep})
                        r["loadavg_1m"] = round(os.getloadavg()[0], 2)
                        runs.append(r)
                        flag = "" if r["calls_ok"] else "  <-- CALL COUNT MISMATCH"
                        print(
                            f"  n={n} lat={lat:g} rep={rep} {v}: {r['wall_s']:.2f}s, {r['calls']} calls, "
                            f"means {r['means']}{flag}",
                            flush=True,
                        )
        mock_cpu = mock.cpu_seconds()

    groups: list[dict[str, Any]] = []
    for n in a.samples:
        for lat in a.latency:
            g: dict[str, Any] = {"samples": n, "latency_s": lat, "variants": {}}
            for v in variants:
                rs = [r for r in runs if r["variant"] == v and r["samples"] == n and r["latency_s"] == lat]
                g["variants"][v] = {
                    "median_wall_s": statistics.median(r["wall_s"] for r in rs),
                    "walls_s": [round(r["wall_s"], 2) for r in rs],
                    "calls": sorted({r["calls"] for r in rs}),
                    "means": rs[0]["means"],
                }
            med = {v: g["variants"][v]["median_wall_s"] for v in variants}
            if "ours" in med:
                g["ratios_vs_ours"] = {f"{v}/ours": med[v] / med["ours"] for v in variants if v != "ours"}
            means = {v: g["variants"][v]["means"] for v in variants}
            ref = next(iter(means.values()))
            g["means_agree"] = all(
                all(abs(float(m[k]) - float(ref[k])) < 1e-9 for k in METRICS) for m in means.values()
            )
            groups.append(g)
    bad_calls = [r for r in runs + warmup if not r["calls_ok"]]
    out = {
        "facts": facts,
        "command": command,
        "settings": {
            "parallelism": a.parallelism,
            "inspect_max_samples": a.inspect_max_samples,
            "store": a.store,
            "repeats": a.repeats,
            "timeout_s": a.timeout,
            "variants": variants,
            "inspect_models": [INSPECT_TARGET, INSPECT_JUDGE],
        },
        "warmup": warmup,
        "runs": runs,
        "groups": groups,
        "mock_cpu_s": mock_cpu,
        "call_count_mismatches": len(bad_calls),
    }
    path = save(a.name, out)
    print(f"\nfacts: {facts}\ncommand: {command}\nsaved {path}\n")

    def cell(g: dict[str, Any], v: str) -> str:
        return f"{g['variants'][v]['median_wall_s']:.2f}"

    ratio_cols = [v for v in variants if v not in ("ours", "untracked")]
    headers = ["samples", "latency"] + [f"{v} (s)" for v in variants]
    headers += [f"{v}/ours" for v in ratio_cols] + (
        ["ours/untracked"] if "untracked" in variants and "ours" in variants else []
    )
    table = []
    for g in groups:
        row = [g["samples"], f"{g['latency_s'] * 1000:g} ms"] + [cell(g, v) for v in variants]
        if "ours" in variants:
            row += [f"{g['ratios_vs_ours'][f'{v}/ours']:.2f}x" for v in ratio_cols]
            if "untracked" in variants:
                row.append(f"{1 / g['ratios_vs_ours']['untracked/ours']:.2f}")
        table.append(row)
    print("Median wall per process (spawn to exit):\n")
    print(md_table(headers, table))
    print("\nEach run (s), model calls (expected 3 x samples; genai +1 allowed), mean ratings:\n")
    detail = []
    for g in groups:
        for v in variants:
            gv = g["variants"][v]
            m = gv["means"]
            detail.append(
                [
                    g["samples"],
                    f"{g['latency_s'] * 1000:g} ms",
                    v,
                    ", ".join(map(str, gv["walls_s"])),
                    ", ".join(map(str, gv["calls"])),
                    f"{float(m['completeness']):.3f} / {float(m['correctness']):.3f}",
                ]
            )
    print(
        md_table(
            ["samples", "latency", "variant", "each run (s)", "model calls", "completeness / correctness"],
            detail,
        )
    )
    if not all(g["means_agree"] for g in groups):
        print("\nWARNING: the tools' mean ratings differ (see the table above)")
    if bad_calls:
        print(f"\nERROR: {len(bad_calls)} run(s) made an unexpected number of model calls")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
