"""Peak memory of the local engine with and without one stalled sample (10k and 100k samples).

Each evaluation runs in a fresh Python process (so ``ru_maxrss`` is its own): a ``data`` task judging
rows of a JSONL file (one judge call per row) over an in-process ``httpx.MockTransport`` endpoint with
zero latency, parallelism 64 (an in-flight window of 256 samples). With ``--stall S`` the judge call of
row 0 is answered only after S seconds, so every other sample finishes long before it. Because a
sample's window slot is released when its record is *written* (in item order), at most a window of
records can wait behind the stall; the child reports the most records it ever held back.

    python bench/bench_stall_memory.py                  # 10k and 100k, stall 0 and 3 s (~6 min)
    python bench/bench_stall_memory.py --sizes 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_facts, md_table, save  # noqa: E402

URL = "http://judge.bench/v1/chat/completions"


def _config(data: Path, parallelism: int) -> dict[str, Any]:
    return {
        "type": "custom",
        "name": "stall-bench",
        "params": {"parallelism": parallelism},
        "tasks": {
            "t": {
                "type": "data",
                "dataset": {"files_url": str(data)},
                "metrics": {
                    "judge": {
                        "type": "llm-judge",
                        "params": {
                            "model": {"api_endpoint": {"url": URL, "model_id": "judge"}},
                            "template": {
                                "messages": [
                                    {"role": "user", "content": "Rate {{ item.n }}: {{ item.text }}"}
                                ]
                            },
                            "scores": {
                                "q": {"type": "int", "parser": {"type": "regex", "pattern": "RATING: (\\d)"}}
                            },
                        },
                    }
                },
            }
        },
    }


def child(a: argparse.Namespace) -> None:
    import httpx

    from mlflow_nemo_judge.config import load_config, load_target
    from mlflow_nemo_judge.engine import RunOptions, run_plan_async
    from mlflow_nemo_judge.plan import build_plan

    plan = build_plan(
        load_config(_config(Path(a.data), a.parallelism)), load_target({"type": "rows", "rows": [{}]})
    )
    answered = 0
    written = 0
    held_back_max = 0
    body = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "RATING: 4"}, "finish_reason": "stop"}
        ]
    }

    async def handler(req: httpx.Request) -> httpx.Response:
        nonlocal answered
        if b"Rate 0:" in req.content and a.stall > 0:
            await asyncio.sleep(a.stall)
        answered += 1
        return httpx.Response(200, json=body)

    def on_record(rec: Any) -> None:
        nonlocal written, held_back_max
        written += 1
        held_back_max = max(held_back_max, answered - written)

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            opts = RunOptions(cache=False, http_client=http, progress_bar=False, on_record=on_record)
            return await run_plan_async(plan, opts)

    t0 = time.perf_counter()
    result = asyncio.run(go())
    wall = time.perf_counter() - t0
    count = result.tasks["t"]["judge"]["q"].stats.count
    result.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        json.dumps(
            {
                "n": a.n,
                "stall": a.stall,
                "count": count,
                "peak_rss_mb": rss,
                "wall_s": wall,
                "held_back_max": held_back_max,
                "window": a.parallelism * 4,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--stalls", type=float, nargs="+", default=[0.0, 3.0])
    ap.add_argument("--parallelism", type=int, default=64)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--stall", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-stall-") as tmp:
        for n in a.sizes:
            data = Path(tmp) / f"rows-{n}.jsonl"
            with open(data, "w", encoding="utf-8") as fh:
                for i in range(n):
                    fh.write(json.dumps({"n": i, "text": f"consultation text number {i} " * 8}) + "\n")
            for stall in a.stalls:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--n",
                    str(n),
                    "--stall",
                    str(stall),
                    "--data",
                    str(data),
                    "--parallelism",
                    str(a.parallelism),
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    save("stall_memory", {"machine": machine_facts(), "runs": rows})
    print(
        md_table(
            ["samples", "stall (s)", "scored", "peak RSS (MB)", "held back (max)", "window", "wall (s)"],
            [
                [
                    r["n"],
                    r["stall"],
                    r["count"],
                    f"{r['peak_rss_mb']:.0f}",
                    r["held_back_max"],
                    r["window"],
                    f"{r['wall_s']:.1f}",
                ]
                for r in rows
            ],
        )
    )


if __name__ == "__main__":
    main()
