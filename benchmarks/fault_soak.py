"""Fault soak: hundreds of tasks through a heavy fault mix, with a stop and a resume.

The simulator answers with 429 + Retry-After, 5xx (JSON and HTML), HTML pages with 200,
truncated JSON, dropped connections and slow answers; result URLs expire quickly. A first
watcher is stopped when about 40% of the tasks have ended; a second one resumes from the
journal and finishes. Checked: every task reaches its real final status, the history
loses nothing, the rate limit holds at the simulator, no exception escapes the poller
thread, and stale result URLs are refreshed.

    python benchmarks/fault_soak.py [--tasks 400] [--speed 20]

``tests/test_soak.py`` runs a quick version of the same routine.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mh_notebook.history import read_history
from mh_notebook.sim import CATALOGUE, Faults, Simulator
from mh_notebook.watcher import TaskWatcher

HEAVY = Faults(
    rate_429=0.05, retry_after=0.05, rate_5xx=0.08, rate_html=0.04, rate_truncated=0.04,
    rate_drop=0.04, rate_slow=0.03, slow_seconds=1.5,
)  # fmt: skip


@dataclass
class SoakResult:
    tasks: int
    requests: int
    faulted: int
    wrong_status: list[str]
    missing_from_history: list[str]
    peak_per_second: int
    limit_per_second: float
    escaped_errors: list[str]
    refreshed_urls: int
    seconds: float
    resumed: int
    by_code: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.wrong_status or self.missing_from_history or self.escaped_errors) and (
            self.peak_per_second <= self.limit_per_second
        )


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def _peak(times: list[float], window: float) -> int:
    times.sort()
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def run_soak(n_tasks: int = 400, speed: float = 20.0, rate_limit: float = 20.0, seed: int = 11) -> SoakResult:
    """Run the soak. Latencies, the rate limit and the URL lifetime (5 s) are in simulated
    seconds: the simulator runs ``speed`` times faster and the watchers' clocks match."""
    rng = random.Random(seed)
    collector = _Collector()
    logging.getLogger("mh_notebook").addHandler(collector)
    escaped: list[str] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: escaped.append(repr(args.exc_value))
    journal = Path(tempfile.mkdtemp()) / "soak.sqlite"
    start = time.time()
    try:
        with Simulator(seed=seed, speed=speed, faults=HEAVY, url_lifetime=5.0) as sim:
            ids = [sim.submit(model=rng.choice(list(CATALOGUE))) for _ in range(n_tasks)]
            opts = {
                "store": journal,
                "display": "none",
                "time_scale": speed,
                "rate_limit": rate_limit,
            }
            first = TaskWatcher(sim.api_key, sim.url, **opts)  # type: ignore[arg-type]
            first.watch(ids)
            while len(ids) - len(first.pending) < 0.4 * n_tasks:
                time.sleep(0.05)
            first.stop()
            second = TaskWatcher(sim.api_key, sim.url, **opts)  # type: ignore[arg-type]
            resumed = second.resume()
            final = second.wait(timeout=600)
            time.sleep(5.1)  # every result URL has expired by now
            refreshed = 0
            for task_id in [i for i in ids if sim.timeline(i)["outcome"] == "succeeded"][:10]:
                old = (second.tasks.get(task_id) or first.tasks[task_id]).result[0].url
                if second.fresh_task(task_id).result[0].url != old:
                    refreshed += 1
            second.stop()
            truth = {i: sim.timeline(i)["outcome"] for i in ids}
            seen = {**first.tasks, **final}
            log = list(sim.request_log)
        history = read_history(journal).set_index("task_id")
    finally:
        threading.excepthook = previous_hook
        logging.getLogger("mh_notebook").removeHandler(collector)
    by_code: dict[int, int] = {}
    for _, _, code in log:
        by_code[code] = by_code.get(code, 0) + 1
    return SoakResult(
        tasks=n_tasks,
        requests=len(log),
        faulted=sum(n for code, n in by_code.items() if code != 200),
        wrong_status=[i for i in ids if str(seen[i].status) != truth[i]],
        missing_from_history=[
            i for i in ids if i not in history.index or history.loc[i, "status"] != truth[i]
        ],
        peak_per_second=_peak([t for t, _, _ in log], 1.0 / speed),  # per simulated second
        limit_per_second=rate_limit * 2 + 2,  # sustained rate + one burst (+2: timer slack)
        escaped_errors=escaped + collector.records,
        refreshed_urls=refreshed,
        seconds=time.time() - start,
        resumed=len(resumed),
        by_code=dict(sorted(by_code.items())),
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--speed", type=float, default=20.0)
    parser.add_argument(
        "--rate-limit", type=float, default=20.0, help="watcher requests per simulated second"
    )
    args = parser.parse_args()
    r = run_soak(args.tasks, args.speed, args.rate_limit)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"{r.tasks} tasks, simulator speed {args.speed:g}, heavy faults {HEAVY}")
    print(
        f"ran {r.seconds:.1f} s real; {r.requests} status requests, {r.faulted} faulted ({r.faulted / r.requests:.0%}); by HTTP code (0 = dropped): {r.by_code}"
    )
    print(f"stopped at ~40% and resumed {r.resumed} unfinished tasks from the journal")
    print(
        f"tasks with a wrong final status: {len(r.wrong_status)}; missing or wrong in the history: {len(r.missing_from_history)}"
    )
    print(
        f"peak requests in any simulated second at the simulator: {r.peak_per_second} (ceiling {args.rate_limit:g}/s; checked against {r.limit_per_second:g})"
    )
    print(f"exceptions escaping the poller (thread hooks, error logs): {len(r.escaped_errors)}")
    print(f"expired result URLs refreshed on demand: {r.refreshed_urls}/10")
    print("RESULT:", "PASS" if r.ok and r.refreshed_urls == 10 else "FAIL")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
