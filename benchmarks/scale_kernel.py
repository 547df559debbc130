"""Scale: 100, 1,000 and 10,000 tasks watched by one watcher in a real Jupyter kernel.

The simulator runs in its own process (speed 1: tasks stay active during the measure);
a kernel started with jupyter_client creates a TaskWatcher with a SQLite journal, watches
every id and displays the panel; then, for ``--seconds``, the benchmark runs a trivial
cell (``1 + 1``) twice a second and records every message the kernel publishes.

Targets (issue 6), at 10,000 tasks: watch() well under 10 s; a trivial cell under 100 ms
median; at most ~2 panel refreshes a second; no widget message over 256 KiB; kernel memory
grows by less than 300 MB; the panel stays readable (summary plus bounded rows).

    python benchmarks/scale_kernel.py [--sizes 100 1000 10000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from jupyter_client.manager import KernelManager

MODELS = ["viduq3-turbo", "kling-v3.0", "veo-3.1", "seedream-4.5", "nano-banana-2", "eleven-v3", "wan-2.6"]


async def _submit(url: str, key: str, n: int) -> list[str]:
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:

        async def one(i: int) -> str:
            async with sem, session.post(f"{url}/sim/v1/tasks", json={"model": MODELS[i % len(MODELS)]}) as r:
                return str((await r.json())["data"]["id"])

        return await asyncio.gather(*(one(i) for i in range(n)))


def _run(kc: Any, code: str, timeout: float = 120) -> tuple[float, list[tuple[float, dict[str, Any]]]]:
    start = time.perf_counter()
    msg_id = kc.execute(code)
    messages = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        messages.append((time.perf_counter(), msg))
        if msg["msg_type"] == "error":
            raise RuntimeError("\n".join(msg["content"]["traceback"]))
        if (
            msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
            and msg["parent_header"].get("msg_id") == msg_id
        ):
            return time.perf_counter() - start, messages


def _stdout(messages: list[tuple[float, dict[str, Any]]]) -> str:
    return "".join(m["content"].get("text", "") for _, m in messages if m["msg_type"] == "stream")


def _drain(kc: Any) -> list[tuple[float, dict[str, Any]]]:
    out = []
    while True:
        try:
            out.append((time.perf_counter(), kc.get_iopub_msg(timeout=0.05)))
        except queue.Empty:
            return out


def measure(n: int, seconds: float, url: str, key: str) -> dict[str, float]:
    ids = asyncio.run(_submit(url, key, n))
    work = Path(tempfile.mkdtemp())
    (work / "ids.json").write_text(json.dumps(ids))
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(work))
    kc = km.blocking_client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    try:
        _run(
            kc,
            "import json, time, resource\nfrom mh_notebook import TaskWatcher\ndef rss():\n    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20",
        )
        before = float(_stdout(_run(kc, "print(rss())")[1]))
        code = (
            f"ids = json.load(open('ids.json'))\nw = TaskWatcher({key!r}, {url!r}, store='journal.sqlite')\n"
            "t0 = time.perf_counter(); w.watch(ids); watch_s = time.perf_counter() - t0\nw"
        )
        _, shown = _run(kc, code)
        watch_s = float(_stdout(_run(kc, "print(watch_s)")[1]))
        messages, trivial = list(shown), []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            elapsed, msgs = _run(kc, "1 + 1")
            trivial.append(elapsed)
            messages += msgs
            time.sleep(0.5)
            messages += _drain(kc)
        after = float(_stdout(_run(kc, "print(rss())")[1]))
        rows = int(_stdout(_run(kc, "print(w.panel.table.value.count('<tr>') - 1)")[1]))
        summary = _stdout(_run(kc, "import re; print(re.sub('<[^>]+>', ' ', w.panel.summary.value))")[1])
        polls = int(_stdout(_run(kc, "print(sum(w.polls.values()))")[1]))
        _run(kc, "w.stop()")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    updates = [
        (t, m)
        for t, m in messages
        if m["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "update"
    ]
    sizes = [len(json.dumps(m["content"])) + sum(len(b) for b in m.get("buffers", [])) for _, m in updates]
    refreshes, last = 0, -1.0
    for t, _ in sorted(updates, key=lambda x: x[0]):
        if t - last > 0.1:  # a refresh may touch several widgets at once
            refreshes += 1
        last = t
    return {
        "tasks": n, "watch_s": watch_s, "trivial_ms_p50": statistics.median(trivial) * 1000,
        "trivial_ms_max": max(trivial) * 1000, "refreshes_per_s": refreshes / seconds,
        "max_msg_kib": max(sizes, default=0) / 1024, "rss_growth_mb": after - before, "rows": rows,
        "summary": " ".join(summary.split()), "polls": polls,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    sim = subprocess.Popen(
        [sys.executable, "-m", "mh_notebook.cli", "sim", "--port", "0", "--speed", "1", "--seed", "0"],
        stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        lines = [sim.stdout.readline() for _ in range(3)]
        url, key = (line.split("=", 1)[1].strip() for line in lines[1:3])
        results = [measure(n, args.seconds, url, key) for n in args.sizes]
    finally:
        sim.terminate()
        sim.wait(10)
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.seconds:g} s of polling per size, default rate limit 10 req/s"
    )
    print(
        f"{'tasks':>7}{'watch()':>10}{'1+1 p50':>10}{'1+1 max':>10}{'refresh/s':>11}{'max msg':>10}{'RSS +':>9}{'rows':>6}{'polls':>7}"
    )
    for r in results:
        print(
            f"{r['tasks']:>7,}{r['watch_s']:>9.3f}s{r['trivial_ms_p50']:>8.1f}ms{r['trivial_ms_max']:>8.1f}ms{r['refreshes_per_s']:>11.2f}"
            f"{r['max_msg_kib']:>7.1f}KiB{r['rss_growth_mb']:>7.1f}MB{r['rows']:>6}{r['polls']:>7}"
        )
    for r in results:
        print(f"  panel summary at {r['tasks']:,}: {r['summary']}")
    big = results[-1]
    checks = [
        ("watch() well under 10 s", big["watch_s"] < 10),
        ("1 + 1 median under 100 ms", big["trivial_ms_p50"] < 100),
        ("at most ~2 refreshes a second", big["refreshes_per_s"] <= 2.2),
        ("no widget message over 256 KiB", big["max_msg_kib"] <= 256),
        ("kernel memory grows < 300 MB", big["rss_growth_mb"] < 300),
        ("panel rows bounded (<= 45)", big["rows"] <= 45),
    ]
    print(f"\nTargets at {big['tasks']:,} tasks:")
    for name, ok in checks:
        print(f"  {'MET   ' if ok else 'MISSED'} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
