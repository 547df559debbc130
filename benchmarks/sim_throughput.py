"""Simulator throughput: status requests per second on this machine.

Runs the simulator in its own process (as ``mh-notebook sim`` does) and drives it from
this process with aiohttp over keep-alive connections on 127.0.0.1, for a fixed time.
Target (issue 2): at least 2,000 status requests per second on a 2-core machine.

    python benchmarks/sim_throughput.py [--seconds 5] [--concurrency 32] [--tasks 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import aiohttp

from mh_notebook.sim.process import SimulatorProcess


async def _drive(url: str, key: str, ids: list[str], seconds: float, concurrency: int) -> tuple[int, int]:
    headers = {"Authorization": f"Bearer {key}"}
    ok = bad = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker(offset: int) -> None:
            nonlocal ok, bad
            i = offset
            while time.perf_counter() < deadline:
                async with session.get(f"{url}/api/v1/tasks/{ids[i % len(ids)]}") as response:
                    await response.read()
                    ok, bad = (ok + 1, bad) if response.status == 200 else (ok, bad + 1)
                i += concurrency

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return ok, bad


async def _submit(url: str, key: str, n: int) -> list[str]:
    models = ["viduq3-turbo", "seedream-4.5", "eleven-v3", "veo-3.1", "nano-banana-2"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        ids = []
        for i in range(n):
            async with session.post(f"{url}/sim/v1/tasks", json={"model": models[i % len(models)]}) as r:
                ids.append((await r.json())["data"]["id"])
        return ids


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--speed", type=float, default=20.0)
    args = parser.parse_args()
    with SimulatorProcess(speed=args.speed) as sim:
        ids = asyncio.run(_submit(sim.url, sim.api_key, args.tasks))
        start = time.perf_counter()
        ok, bad = asyncio.run(_drive(sim.url, sim.api_key, ids, args.seconds, args.concurrency))
        elapsed = time.perf_counter() - start
    rate = (ok + bad) / elapsed
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"tasks: {args.tasks}, concurrency: {args.concurrency}, seconds: {elapsed:.2f}")
    print(f"status requests: {ok + bad} ({bad} non-200)")
    print(f"throughput: {rate:,.0f} requests/s (target >= 2,000: {'MET' if rate >= 2000 else 'MISSED'})")


if __name__ == "__main__":
    main()
