"""How many requests per second the mock LLM server can serve, measured with a minimal client.

The client is raw asyncio sockets speaking HTTP/1.1 keep-alive with pre-encoded requests (the seed
config's real target and judge bodies, in the 1:2 mix an evaluation sends), so it costs a small
fraction of what it measures. Several client processes can be used so the client side is never the
limit. Used by bench_efficiency.py to show the server is not the bottleneck of the engine runs.

    python bench/mock_capacity.py --latency 0.2 --connections 128 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import JUDGE_MODEL, TARGET_MODEL, Mock, shared_rows  # noqa: E402


def request_bytes(chat_url: str) -> list[bytes]:
    """[target, judge, judge] requests for the first shared rows, exactly as the engine renders them."""
    from tests.fixtures.seed_config import completeness_system_prompt, correctness_system_prompt

    u = urlsplit(chat_url)
    out: list[bytes] = []
    for row in shared_rows()[:10]:
        content = row["content"]
        bodies = [
            {
                "model": TARGET_MODEL,
                "max_tokens": 200,
                "messages": [
                    {
                        "role": "system",
                        "content": "Given a full medical consultation, please provide a 50 word "
                        "summary of the consultation.",
                    },
                    {"role": "user", "content": f"Full Consult: {content}"},
                ],
            },
        ]
        for sp in (completeness_system_prompt, correctness_system_prompt):
            bodies.append(
                {
                    "model": JUDGE_MODEL,
                    "messages": [
                        {"role": "system", "content": sp},
                        {
                            "role": "user",
                            "content": f"\nFull Consult: {content}\nSummary: {row['summary']}\n",
                        },
                    ],
                }
            )
        for b in bodies:
            raw = json.dumps(b).encode()
            head = (
                f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(raw)}\r\nConnection: keep-alive\r\n\r\n"
            ).encode()
            out.append(head + raw)
    return out


async def _drive(host: str, port: int, reqs: list[bytes], connections: int, seconds: float) -> int:
    done = 0
    deadline = time.perf_counter() + seconds

    async def one(offset: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        i = offset
        try:
            while time.perf_counter() < deadline:
                writer.write(reqs[i % len(reqs)])
                i += 1
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head[:80])
                done += 1
        finally:
            writer.close()

    await asyncio.gather(*(one(k) for k in range(connections)))
    return done


def _worker(args: tuple[str, int, list[bytes], int, float]) -> int:
    host, port, reqs, conns, seconds = args
    return asyncio.run(_drive(host, port, reqs, conns, seconds))


def measure(chat_url: str, *, connections: int, seconds: float, processes: int = 2) -> float:
    """Requests/s served over ``connections`` keep-alive connections split over ``processes`` clients."""
    u = urlsplit(chat_url)
    reqs = request_bytes(chat_url)
    per = max(1, connections // processes)
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(processes) as pool:
        counts = pool.map(
            _worker, [(u.hostname or "127.0.0.1", u.port or 80, reqs, per, seconds)] * processes
        )
    wall = time.perf_counter() - t0
    del wall  # pool start-up is not part of the rate: each worker ran for ``seconds``
    return sum(counts) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--connections", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--processes", type=int, default=2)
    a = ap.parse_args()
    with Mock(latency=a.latency) as mock:
        for c in a.connections:
            rps = measure(mock.chat_url, connections=c, seconds=a.seconds, processes=a.processes)
            ideal = c / a.latency if a.latency > 0 else float("inf")
            print(f"latency={a.latency}s connections={c}: {rps:.0f} req/s (latency bound {ideal:.0f} req/s)")


if __name__ == "__main__":
    main()
