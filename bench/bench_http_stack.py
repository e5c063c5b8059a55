"""HTTP stack: the engine on the old hand-written HTTP/1.1 client vs httpx over aiohttp, side by side.

Part Z, zero latency (the client's CPU is what limits the run): the seed config (1 target + 2 judge calls
per row) over ``--samples`` rows at parallelism ``--parallelism``, cache off, with the engine's HTTP
factory (``make_http_transport``) swapped per variant, in alternating order, ``--repeats`` times each:

- ``old FastHTTPClient (HEAD)``: the client this redesign deleted, loaded from ``git show HEAD:…`` into a
  temp dir outside the repository (it is never committed again); ``OpenAIClient`` calls its ``post``;
- ``aiohttp transport, direct (new default)``: ``make_http_transport`` as the engine calls it;
  ``OpenAIClient`` awaits ``transport.handle_async_request`` itself;
- ``httpx.AsyncClient over aiohttp``: ``make_http_client`` (the client wrapped around the same
  transport; the previous default), ``OpenAIClient`` calls ``AsyncClient.post``;
- ``httpx own transport, direct``: ``NEMO_JUDGE_HTTP_CLIENT=httpx`` (``httpx.AsyncHTTPTransport``).

Part L, 200 ms latency: the seed run at its own parallelism over ``--latency-samples`` rows, old vs new.

Everything else (engine, OpenAIClient, the mock in its own process) is the same code for every variant,
so the ratios isolate the HTTP stack. Figures go to ``bench/results/http_stack.json``.

    python bench/bench_http_stack.py --repeats 5    # ~2.5 min on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
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

# The last commit with the hand-written client (the redesign deleted it after this one).
OLD_REV = "5ba0b3b005215e7bcec7d19e87b8159f971f09fb"
OLD = "old FastHTTPClient (before the redesign)"
NEW = "aiohttp transport, direct (new default)"
CLIENT = "httpx.AsyncClient over aiohttp"
PLAIN = "httpx own transport, direct"


def load_old_client(directory: Path, rev: str = OLD_REV) -> ModuleType:
    """The old client's module (``transport.py`` at ``rev``) written to ``directory`` and imported under a
    private name; it is never committed again."""
    src = subprocess.run(
        ["git", "show", f"{rev}:mlflow_nemo_judge/transport.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "class FastHTTPClient" not in src:
        raise SystemExit(
            f"transport.py at {rev} has no FastHTTPClient: pass --old-rev of a commit that had it"
        )
    path = directory / "old_transport_head.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("old_transport_head", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def factory(make: Callable[[int, Any], Any] | None, env: dict[str, str]) -> Iterator[None]:
    """Swap the engine's HTTP factory (it imports ``make_http_transport`` at call time) and env knobs."""
    from mlflow_nemo_judge.http import transport

    default = transport.make_http_transport
    old_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    if make is not None:
        transport.make_http_transport = make  # type: ignore[assignment]
    try:
        yield
    finally:
        transport.make_http_transport = default
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_engine(cfg: dict[str, Any], target: dict[str, Any], work: Path) -> tuple[float, Any, float]:
    """(engine wall, result, engine-process CPU seconds), cache off.

    Runs the plan on the engine directly (not ``run_local``), so only the engine and the HTTP stack are
    in the measured path."""
    from mlflow_nemo_judge.config import load_config, load_target
    from mlflow_nemo_judge.engine import RunOptions, run_plan_async
    from mlflow_nemo_judge.plan import build_plan

    plan = build_plan(load_config(cfg), load_target(target))
    opts = RunOptions(cache=False, progress_bar=False, work_dir=work)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    res = asyncio.run(run_plan_async(plan, opts))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return res.usage.wall_seconds, res, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def variants(old: ModuleType) -> dict[str, tuple[Callable[[int, Any], Any] | None, dict[str, str]]]:
    from mlflow_nemo_judge.http.transport import make_http_client

    def old_client(connections: int, timeout: Any) -> Any:
        return old.FastHTTPClient(connections, timeout)

    return {
        OLD: (old_client, {}),
        NEW: (None, {"NEMO_JUDGE_HTTP_CLIENT": "aiohttp"}),
        CLIENT: (make_http_client, {"NEMO_JUDGE_HTTP_CLIENT": "aiohttp"}),
        PLAIN: (None, {"NEMO_JUDGE_HTTP_CLIENT": "httpx"}),
    }


def part(
    d: Path, old: ModuleType, *, latency: float, n: int, p: int | None, repeats: int, names: list[str]
) -> list[dict[str, Any]]:
    data = make_dataset(n, d)
    rows: list[dict[str, Any]] = []
    table = variants(old)
    with Mock(latency=latency) as mock:
        target = mock_target(mock.chat_url)
        cfg = seed_config(mock.chat_url, data, limit=None, parallelism=p)
        for name in names:  # warm every variant once (imports, first connections)
            with factory(*table[name]):
                run_engine(seed_config(mock.chat_url, data, limit=10, parallelism=p), target, d / "warm")
        for rep in range(repeats):
            # Alternate the order so drift in machine load does not favour one variant.
            for name in names if rep % 2 == 0 else names[::-1]:
                mock.reset()
                with factory(*table[name]):
                    wall, res, cpu = run_engine(cfg, target, d / f"{latency}-{rep}")
                reqs = mock.count()
                rows.append(
                    {
                        "variant": name,
                        "latency_s": latency,
                        "parallelism": p,
                        "repeat": rep,
                        "samples": n,
                        "requests": reqs,
                        "engine_wall_s": wall,
                        "req_per_s": reqs / wall,
                        "engine_cpu_ms_per_request": cpu / reqs * 1000,
                        "loadavg_1m": os.getloadavg()[0],
                    }
                )
                print(
                    f"  latency={latency} {name} rep={rep}: {wall:.2f}s {reqs / wall:.0f} req/s "
                    f"CPU {cpu / reqs * 1000:.3f} ms/request",
                    flush=True,
                )
    return rows


def summary(rows: list[dict[str, Any]], base: str, key: str) -> list[list[Any]]:
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r[key])
    ref = statistics.median(by[base])
    return [
        [name, ", ".join(f"{v:.4g}" for v in vals), statistics.median(vals), statistics.median(vals) / ref]
        for name, vals in by.items()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--parallelism", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency-samples", type=int, default=100)
    ap.add_argument("--latency-repeats", type=int, default=3)
    ap.add_argument(
        "--variants",
        default="old,new,client,plain",
        help="part Z variants: any of old,new,client,plain",
    )
    ap.add_argument("--old-rev", default=OLD_REV, help="a commit that still had the old client")
    ap.add_argument("--parts", default="ZL")
    ap.add_argument("--name", default="http_stack")
    a = ap.parse_args()
    out: dict[str, Any] = {
        "facts": machine_facts(),
        "command": "python bench/bench_http_stack.py " + " ".join(sys.argv[1:]),
    }
    t0 = time.perf_counter()
    with temp_dir("bench-http-") as d:
        old = load_old_client(d, a.old_rev)
        if "Z" in a.parts:
            short = {"old": OLD, "new": NEW, "client": CLIENT, "plain": PLAIN}
            names = [short[v.strip()] for v in a.variants.split(",")]
            if OLD not in names:
                names.insert(0, OLD)  # the reference every ratio is taken against
            print("Part Z: zero latency", flush=True)
            out["Z"] = part(d, old, latency=0.0, n=a.samples, p=a.parallelism, repeats=a.repeats, names=names)
        if "L" in a.parts:
            print("Part L: 200 ms latency, seed parallelism", flush=True)
            out["L"] = part(
                d, old, latency=0.2, n=a.latency_samples, p=None, repeats=a.latency_repeats, names=[OLD, NEW]
            )
    out["bench_seconds"] = time.perf_counter() - t0
    path = save(a.name, out)
    print(f"\nsaved {path} ({out['bench_seconds']:.0f} s)")
    if "Z" in out:
        print("\nZero latency, req/s (ratio = median / median of the old client):")
        print(
            md_table(["variant", "req/s, each run", "median", "ratio"], summary(out["Z"], OLD, "req_per_s"))
        )
        print(
            md_table(
                ["variant", "engine CPU ms/request, each run", "median", "ratio"],
                summary(out["Z"], OLD, "engine_cpu_ms_per_request"),
            )
        )
    if "L" in out:
        print("\n200 ms latency, engine wall (s) (ratio = median / median of the old client):")
        print(
            md_table(
                ["variant", "wall (s), each run", "median", "ratio"], summary(out["L"], OLD, "engine_wall_s")
            )
        )


if __name__ == "__main__":
    main()
