"""Shared helpers for the benchmarks: the mock server in a subprocess, the seed config, datasets, facts.

Every benchmark talks to loopback only (127.0.0.1) and runs the mock LLM server in its own process, so
the server never shares the evaluating process's GIL. Figures are ratios measured side by side in one
run; the absolute times are kept for context only (the machine is shared).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED_DATA = REPO.parent / "shared" / "data" / "doctor_consults_with_summaries.jsonl"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_MODEL = "mock/faithful-summarizer"
JUDGE_MODEL = "mock/judge"


# ------------------------------------------------------------------------------------------- facts


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def machine_facts() -> dict[str, Any]:
    """What a reader needs to weigh the figures: cores, versions, load, date."""
    from importlib.metadata import version

    def v(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "mlflow": v("mlflow"),
        "httpx": v("httpx"),
        "httpcore": v("httpcore"),
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in loadavg()],
    }


def peak_rss_mb() -> float:
    """Peak RSS of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def save(name: str, payload: dict[str, Any]) -> Path:
    """Write a benchmark's figures as JSON beside the scripts (bench/results/<name>.json)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    payload = {**payload, "loadavg_end": [round(x, 2) for x in loadavg()]}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


# -------------------------------------------------------------------------------------------- mock


class Mock:
    """The mock LLM server as a child process (``python -m mlflow_nemo_judge.testing.mock_llm``).

    The request log is capped at a few entries (``--log-limit``) so a 300k-request run does not make the
    server hold every body; ``count()`` still returns the exact number of model requests it served.
    """

    def __init__(self, latency: float = 0.0, log_limit: int = 8) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow_nemo_judge.testing.mock_llm",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--latency",
                str(latency),
                "--log-limit",
                str(log_limit),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.close()
            raise RuntimeError(f"mock server did not start: {line!r}")
        self.base_url = line.rsplit(" ", 1)[-1].strip()  # http://127.0.0.1:PORT/v1
        self.root = self.base_url.rsplit("/v1", 1)[0]
        self.chat_url = f"{self.base_url}/chat/completions"

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.root + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def count(self) -> int:
        return int(self._admin("GET", "/mock/requests")["total"])

    def reset(self) -> None:
        self._admin("DELETE", "/mock/requests")

    def set_latency(self, seconds: float) -> None:
        self._admin("POST", "/mock/config", {"latency": seconds})

    def cpu_seconds(self) -> float:
        """User+system CPU the server process has used (from /proc), to show how busy it was."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Mock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------ config, data


def seed_config(
    judge_url: str,
    data_path: Path | str,
    *,
    limit: int | None,
    parallelism: int | None = None,
    max_retries: int | None = None,
) -> dict[str, Any]:
    """The seed notebook's config (1 target call + 2 judge calls per row) against the mock judge."""
    from tests.fixtures.seed_config import seed_config as _seed

    cfg = _seed(judge_url=judge_url, judge_model=JUDGE_MODEL, files_url=str(data_path))
    ds = cfg["tasks"]["consult_summary_eval"]["dataset"]
    if limit is None:
        ds.pop("limit", None)
    else:
        ds["limit"] = limit
    params: dict[str, Any] = {}
    if parallelism is not None:
        params["parallelism"] = parallelism
    if max_retries is not None:
        params["max_retries"] = max_retries
    if params:
        cfg["params"] = params
    return cfg


def mock_target(chat_url: str, model: str = TARGET_MODEL) -> dict[str, Any]:
    return {"type": "model", "model": {"api_endpoint": {"url": chat_url, "model_id": model}}}


def shared_rows() -> list[dict[str, Any]]:
    if not SHARED_DATA.exists():
        raise SystemExit(f"shared dataset not found at {SHARED_DATA}")
    with open(SHARED_DATA, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def make_dataset(n: int, directory: Path, unique: bool = False) -> Path:
    """``n`` rows made by repeating the shared rows with new ids (``C001-r3``), as JSONL in ``directory``.

    ``unique`` also makes every repeated row's text distinct (a suffix on ``content``), so no two rows
    render the same request: needed where the response cache is on, which would otherwise answer the
    repeats from the first occurrence.
    """
    rows = shared_rows()
    path = directory / f"consults_{n}{'_unique' if unique else ''}.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            base = rows[i % len(rows)]
            row = dict(base)
            rep = i // len(rows)
            row["ID"] = base["ID"] if rep == 0 else f"{base['ID']}-r{rep}"
            if unique and rep:
                row["content"] = f"{base['content']}\n(Follow-up copy {rep}.)"
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
        return str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
