"""Workload 5 — start-up.

Commands: wall time of ``mlflow-nemo-judge --help`` and of ``validate`` on the example config with the
Llama 3.1 70B target (``--no-secrets``: no key needed), median of several runs, next to ``python -c pass``
(the interpreter's own start) and ``python -c 'import mlflow'`` for scale.

Phases (issue 15): ``mlflow-nemo-judge run CONFIG --target T`` tracked to an existing sqlite store (and,
with ``--server``, to a loopback ``mlflow server``), from process start to the first model call. Each
phase's end is marked by ``_startup_probe.py`` (which runs the CLI in its own process); the first call is
the earliest arrival in the mock server's own request log (same clock, ``time.time()``). Every run is a
new evaluation (its own ``--limit``, an empty cache folder), so none is reused or answered from a cache.
Three variants alternate run by run: ``as shipped`` (early start: the model calls begin while MLflow
is imported and the store opened, ``tracking/early.py``); ``early start off``
(``NEMO_JUDGE_EARLY_START=0``: the calls wait until the run exists and its setup is handed to its
thread, as before issue 15); and ``--no-tracking``, the floor. With early start the marks are no
longer in sequence (the first request comes before ``import mlflow`` is done), so the table gives each
mark's median time since spawn, with the step from the row above only where it is positive.

Bytecode: this machine sets ``PYTHONDONTWRITEBYTECODE``, which would make every start compile the
package's modules from source; a user's install has them compiled. So the children write and reuse
bytecode under a private ``PYTHONPYCACHEPREFIX`` (filled by the untimed first run).

    python bench/bench_startup.py [--runs 7] [--phase-runs 5] [--server] [--only commands|phases]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    Mock,
    machine_facts,
    make_dataset,
    md_table,
    mock_target,
    save,
    seed_config,
    temp_dir,
)

PROBE = Path(__file__).resolve().parent / "_startup_probe.py"
VARIANTS = ("as shipped", "early start off", "--no-tracking")
# (mark, label): the marks _startup_probe.py writes, in the order a run reaches them; "first_request"
# comes from the mock server's log.
MARKS = (
    ("interpreter", "interpreter up"),
    ("cli_imported", "CLI imported"),
    ("plan_ready", "config, plan, data scan done"),
    ("mlflow_import_start", "`import mlflow` started"),
    ("mlflow_imported", "`import mlflow` done"),
    ("store_open", "store open (client + preflight read)"),
    ("run_created", "experiment resolved, identity searched, run created"),
    ("setup_logged", "run setup written (sources, prompts, params, inputs, LoggedModel; setup thread)"),
    ("first_request", "**first model request arrives**"),
)


def phases_bench(runs: int, server: bool) -> dict[str, Any]:
    """Median mark times of ``run`` to sqlite (and a server), before/after, interleaved run by run."""
    results: dict[str, Any] = {}
    with (
        temp_dir("nj-startup-") as d,
        Mock(latency=0.0, log_limit=10_000) as mock,
        contextlib.ExitStack() as st,
    ):
        data = make_dataset(64, d)
        cfg_path, tgt_path = d / "config.json", d / "target.json"
        cfg_path.write_text(json.dumps(seed_config(mock.chat_url, data, limit=None)), encoding="utf-8")
        tgt_path.write_text(json.dumps(mock_target(mock.chat_url)), encoding="utf-8")
        stores = {"sqlite": f"sqlite:///{d}/mlflow.db"}
        if server:
            from bench_tracking import mlflow_server

            stores["mlflow server"] = st.enter_context(mlflow_server(d))
        limit = iter(range(1, 64))
        for store, uri in stores.items():
            # The store exists (made by a first run, not timed) and the page cache is warm.
            _one_run(mock, d, cfg_path, tgt_path, uri, next(limit), VARIANTS[0])
            marks: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
            for _ in range(runs):
                for v in VARIANTS:
                    marks[v].append(_one_run(mock, d, cfg_path, tgt_path, uri, next(limit), v))
            results[store] = {"marks": marks, "table": _phase_table(marks)}
    return results


def _one_run(
    mock: Mock, d: Path, cfg: Path, tgt: Path, uri: str, limit: int, variant: str
) -> dict[str, float]:
    """One ``run`` in a fresh process; its marks relative to the moment it was spawned."""
    out = d / "marks.json"
    out.unlink(missing_ok=True)
    cache = Path(tempfile.mkdtemp(dir=d, prefix="cache-"))
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "NVIDIA_API_KEY")}
    env["NEMO_JUDGE_PROBE_OUT"] = str(out)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(d / "pycache")
    if variant == "early start off":
        env["NEMO_JUDGE_EARLY_START"] = "0"
    argv = [str(cfg), "--target", str(tgt), "--tracking-uri", uri, "--experiment", "startup"]
    if variant == "--no-tracking":
        argv.append("--no-tracking")
    argv += ["--limit", str(limit), "--cache-dir", str(cache), "--no-progress", "--quiet"]
    mock.reset()
    t0 = time.time()
    p = subprocess.run(
        [sys.executable, str(PROBE), "run", *argv], capture_output=True, text=True, env=env, cwd=REPO
    )
    if p.returncode != 0:
        raise SystemExit(f"run failed ({p.returncode}): {p.stderr[-3000:]}")
    marks = json.loads(out.read_text(encoding="utf-8"))
    log = mock._admin("GET", "/mock/requests")["requests"]
    marks["first_request"] = min(e["time"] for e in log)
    return {k: v - t0 for k, v in marks.items()}


def _phase_table(marks: dict[str, list[dict[str, float]]]) -> list[list[str]]:
    rows = []
    prev: dict[str, float] = {}
    for key, label in MARKS:
        cells = [label]
        for v in VARIANTS:
            vals = [m[key] for m in marks[v] if key in m]
            if not vals:
                cells.append("—")
                continue
            med = statistics.median(vals)
            step = med - prev[v] if v in prev and key != "mlflow_import_start" else -1.0
            width = f" (+{step:.3f})" if step >= 0 else ""
            cells.append(f"{med:.3f}{width}")
            if key != "mlflow_import_start":
                prev[v] = med
        rows.append(cells)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--phase-runs", type=int, default=5)
    ap.add_argument("--server", action="store_true", help="phases also against a loopback mlflow server")
    ap.add_argument("--only", choices=("commands", "phases"))
    a = ap.parse_args()
    facts = machine_facts()
    out: dict[str, Any] = {
        "facts": facts,
        "command": "python bench/bench_startup.py " + " ".join(sys.argv[1:]),
    }
    if a.only != "phases":
        out |= commands_bench(a.runs)
    if a.only != "commands":
        out["phases"] = phases_bench(a.phase_runs, a.server)
    path = save("startup" if a.only is None else f"startup_{a.only}", out)
    print(f"facts: {facts}\nsaved {path}\n")
    if "table" in out:
        print(md_table(["command", f"median of {a.runs} (s)", "min (s)", "max (s)"], out["table"]) + "\n")
    for store, res in out.get("phases", {}).items():
        print(f"### {store}: median of {a.phase_runs} (s since process start; phase width in brackets)\n")
        print(md_table(["mark", *VARIANTS], res["table"]) + "\n")


def commands_bench(runs: int) -> dict[str, Any]:
    exe = str(Path(sys.executable).parent / "mlflow-nemo-judge")
    ex = REPO / "examples" / "doctor_consults"
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "mlflow-nemo-judge --help": [exe, "--help"],
        "mlflow-nemo-judge validate … --no-secrets": [
            exe,
            "validate",
            str(ex / "config.yaml"),
            "--target",
            str(ex / "targets" / "llama-3.1-70b.yaml"),
            "--no-secrets",
        ],
        "python -c 'import mlflow'": [sys.executable, "-c", "import mlflow"],
    }
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "NVIDIA_API_KEY")}
    times: dict[str, list[float]] = {k: [] for k in commands}
    for name, cmd in commands.items():  # warm the page cache, check the command works
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        if p.returncode != 0:
            raise SystemExit(f"{name} failed ({p.returncode}): {p.stderr[-2000:]}")
    for _ in range(runs):
        for name, cmd in commands.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, env=env, cwd=REPO, check=True)
            times[name].append(time.perf_counter() - t0)
    rows = [
        [name, f"{statistics.median(v):.3f}", f"{min(v):.3f}", f"{max(v):.3f}"] for name, v in times.items()
    ]
    return {"times": times, "table": rows}


if __name__ == "__main__":
    main()
