"""Subprocess mode of the mock LLM server: the ``python -m ...mock_llm`` CLI and ``start_subprocess``.

A separate process keeps the server off the caller's GIL, which matters for benchmarks that drive it
at high request rates.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow_nemo_judge.testing.mock_llm.faults import FaultConfig
from mlflow_nemo_judge.testing.mock_llm.models import MOCK_MODELS
from mlflow_nemo_judge.testing.mock_llm.rate_limits import RateLimitConfig
from mlflow_nemo_judge.testing.mock_llm.server import STARTUP_LINE, MockLLMServer

__all__ = ["main", "start_subprocess"]

_FAULT_FLAGS = (
    "rate_limit",
    "server_error",
    "drop",
    "timeout",
    "malformed",
    "think",
    "null_content",
    "empty_content",
    "retry_after",
    "timeout_seconds",
)
_LISTENING_RE = re.compile(r"listening on (http://\S+)")


def _alias_arg(text: str) -> tuple[str, str]:
    name, sep, target = text.partition("=")
    if not sep or not name or target not in MOCK_MODELS:
        raise argparse.ArgumentTypeError(
            f"expected NAME=MOCK_ID with MOCK_ID one of {', '.join(MOCK_MODELS)}"
        )
    return name, target


def _rate_arg(text: str) -> tuple[str, float]:
    name, sep, rate = text.rpartition("=")
    try:
        value = float(rate)
    except ValueError:
        value = 0.0
    if not sep or not name or not value > 0:
        raise argparse.ArgumentTypeError("expected MODEL=REQUESTS_PER_SECOND with a rate > 0")
    return name, value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlflow_nemo_judge.testing.mock_llm",
        description="Run the MOCK OpenAI-compatible LLM server (a test double, not a model) until SIGTERM/SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept per model request")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="split evenly over rate-limit/server-error/drop"
    )
    for name in _FAULT_FLAGS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=None)
    parser.add_argument("--only-models", nargs="+", default=None, help="apply faults only to these model ids")
    parser.add_argument(
        "--alias",
        action="append",
        default=[],
        type=_alias_arg,
        metavar="NAME=MOCK_ID",
        help="serve NAME as a mock model",
    )
    parser.add_argument(
        "--model-rps",
        action="append",
        default=[],
        type=_rate_arg,
        metavar="MODEL=RPS",
        help="admit at most RPS requests per second of MODEL (429 with Retry-After above it)",
    )
    parser.add_argument("--rps-burst", type=float, default=None, help="seconds of the rate a bucket holds")
    parser.add_argument("--log-limit", type=int, default=100_000, help="request log entries kept in memory")
    return parser.parse_args(argv)


def _faults_from_args(args: argparse.Namespace) -> FaultConfig | None:
    values: dict[str, Any] = FaultConfig.transient(args.fault_rate).to_dict() if args.fault_rate else {}
    values.update({name: getattr(args, name) for name in _FAULT_FLAGS if getattr(args, name) is not None})
    if args.only_models is not None:
        values["only_models"] = args.only_models
    return FaultConfig.from_dict(values) if values else None


def _rate_limits_from_args(args: argparse.Namespace) -> RateLimitConfig | None:
    if not args.model_rps:
        return None
    burst = {} if args.rps_burst is None else {"burst": args.rps_burst}
    return RateLimitConfig(models=dict(args.model_rps), **burst)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; print the one startup line on stdout for the parent to parse."""
    args = _parse_args(argv)
    aliases = dict(args.alias)
    server = MockLLMServer(
        latency=args.latency,
        faults=_faults_from_args(args),
        seed=args.seed,
        host=args.host,
        port=args.port,
        aliases=aliases,
        log_limit=args.log_limit,
        rate_limits=_rate_limits_from_args(args),
    )
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with server:
        print(STARTUP_LINE.format(url=server.base_url), flush=True)
        while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals everywhere
            pass
    return 0


def start_subprocess(
    latency: float = 0.0,
    *,
    seed: int = 0,
    port: int = 0,
    aliases: Mapping[str, str] | None = None,
    startup_timeout: float = 30.0,
    rate_limits: RateLimitConfig | None = None,
    **faults: Any,
) -> tuple[subprocess.Popen[str], str]:
    """Launch the mock server as a child process -> (process, base_url); the caller terminates it.

    ``faults`` are FaultConfig fields (``rate_limit=0.1``, ``only_models=[...]``) or ``fault_rate`` for
    ``FaultConfig.transient``; ``rate_limits`` caps models' requests per second. A separate process keeps the server off the caller's GIL, which matters
    for benchmarks that drive it at high request rates.
    """
    command = [
        sys.executable,
        "-m",
        "mlflow_nemo_judge.testing.mock_llm",
        "--port",
        str(port),
        "--latency",
        str(latency),
        "--seed",
        str(seed),
    ]
    for name, value in faults.items():
        if name == "fault_rate":
            command += ["--fault-rate", str(value)]
        elif name == "only_models":
            if value is not None:
                command += ["--only-models", *value]
        elif name in _FAULT_FLAGS:
            command += [f"--{name.replace('_', '-')}", str(value)]
        else:
            raise TypeError(f"start_subprocess() got an unknown fault {name!r}")
    for alias, target in (aliases or {}).items():
        command += ["--alias", f"{alias}={target}"]
    if rate_limits is not None:
        for model, rps in rate_limits.models.items():
            command += ["--model-rps", f"{model}={rps!r}"]
        command += ["--rps-burst", repr(rate_limits.burst)]
    # The child must import this package even when it is run from a source checkout, not installed.
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()

    def read_stdout() -> None:
        # readline() has no timeout, so it runs here and a dead or hung child fails fast below. The
        # thread then drains stdout to EOF, so the child can never block on a full pipe, and closes it.
        stream = process.stdout
        if stream is None:
            lines.put("")
            return
        with stream:
            lines.put(stream.readline())
            for _ in stream:
                pass

    threading.Thread(target=read_stdout, name="mock-llm-stdout", daemon=True).start()
    try:
        line = lines.get(timeout=startup_timeout)
    except queue.Empty:
        line = ""
    match = _LISTENING_RE.search(line)
    if match is None:
        process.kill()
        process.wait()
        raise RuntimeError(
            f"mock LLM server did not start (exit code {process.returncode}, first line {line!r})"
        )
    return process, match.group(1)
