"""Workload 5 — start-up: wall time of ``mlflow-nemo-judge --help`` and of ``validate`` on the example
config with the Llama 3.1 70B target (``--no-secrets``: no key needed), median of several runs, next to
``python -c pass`` (the interpreter's own start) and ``python -c 'import mlflow'`` for scale.

    python bench/bench_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, machine_facts, md_table, save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    facts = machine_facts()
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
    for _ in range(a.runs):
        for name, cmd in commands.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, env=env, cwd=REPO, check=True)
            times[name].append(time.perf_counter() - t0)
    rows = [
        [name, f"{statistics.median(v):.3f}", f"{min(v):.3f}", f"{max(v):.3f}"] for name, v in times.items()
    ]
    out = {
        "facts": facts,
        "command": "python bench/bench_startup.py " + " ".join(sys.argv[1:]),
        "times": times,
        "table": rows,
    }
    path = save("startup", out)
    print(f"facts: {facts}\nsaved {path}\n")
    print(md_table(["command", f"median of {a.runs} (s)", "min (s)", "max (s)"], rows))


if __name__ == "__main__":
    main()
