"""SQLite and PostgreSQL journals side by side, and what shared polling saves (issue 12).

1. Journal write latency: one observed change per transaction, as the engine writes them
   (p50/p95 ms over ``--writes`` writes), SQLite file vs PostgreSQL on 127.0.0.1.
2. ``read_history()`` build time at ``--tasks`` tasks (5 events each, the synthetic workload
   of history_build.py), best of 3, both backends, and the ratio to SQLite.
3. Requests for one batch of ``--batch`` tasks watched by N processes sharing one
   PostgreSQL journal (N = 1, 2, 3) against one watcher alone with no shared journal,
   counted at the simulator.

The PostgreSQL server is a throw-away cluster started here (tests/pg_server.py: Debian's
initdb/pg_ctl, fsync off); on a real server writes cost a network round trip more.

    python benchmarks/journal_backends.py [--tasks 100000] [--writes 2000] [--batch 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from history_build import synthetic
from pg_server import postgres_server

from mh_notebook.history import read_history
from mh_notebook.journal.postgres import PostgresStore
from mh_notebook.journal.protocol import Store, Watched
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.records import Event
from mh_notebook.sim import Simulator
from mh_notebook.watcher import TaskWatcher

SPEED = 20.0
CHILD = textwrap.dedent(
    """
    import sys
    from mh_notebook.watcher import TaskWatcher
    url, key, journal = sys.argv[1:]
    w = TaskWatcher(key, url, store=journal, display="none", time_scale={speed!r})
    print("ready", flush=True)
    w.watch(sys.stdin.readline().split())
    w.wait(300)
    w.stop()
    """
).format(speed=SPEED)


def write_latency(store: Store, n: int) -> tuple[float, float]:
    """p50, p95 milliseconds of one-event transactions."""
    store.add_watched([Watched(f"w{i}", "https://modelhunter.ai", 1.0) for i in range(n)])
    times = []
    for i in range(n):
        event = Event(f"w{i}", "running", 1_780_000_000.0 + i, 2, "video", "vidu", "viduq3-turbo", 1.0)
        start = time.perf_counter()
        store.add(event)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * len(times))]


def history_time(store: Store, n_tasks: int) -> float:
    """Best of three ``read_history`` builds, seconds, after loading ``n_tasks`` tasks."""
    events, watched = synthetic(n_tasks)
    for at in range(0, len(watched), 5000):
        store.add_watched(watched[at : at + 5000])
    for at in range(0, len(events), 5000):
        store.add_many(events[at : at + 5000])
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        frame = read_history(store)
        best = min(best, time.perf_counter() - start)
    assert len(frame) == n_tasks, len(frame)
    return best


def shared_requests(url_for: object, batch: int, watchers: int) -> tuple[int, int]:
    """(requests for ``batch`` tasks watched by ``watchers`` processes sharing a PostgreSQL
    journal, requests for the same kind of batch watched by one watcher alone)."""
    with Simulator(seed=7, speed=SPEED) as sim:
        url = url_for()  # type: ignore[operator]
        children = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, sim.url, sim.api_key, url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(watchers)
        ]
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        ids = [
            sim.submit(model="seedream-4.5", outcome="succeeded", latency=20 + 3 * i) for i in range(batch)
        ]
        for child in children:
            assert child.stdin is not None
            child.stdin.write(" ".join(ids) + "\n")
            child.stdin.flush()
        for child in children:
            child.wait(300)
        alone = [
            sim.submit(model="seedream-4.5", outcome="succeeded", latency=20 + 3 * i) for i in range(batch)
        ]
        with TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as w:
            w.watch(alone)
            w.wait(300)
        return sum(sim.requests[i] for i in ids), sum(sim.requests[i] for i in alone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        print("\njournal write latency (one change per transaction)")
        print(f"{'backend':<12}{'p50 ms':>10}{'p95 ms':>10}")
        for name, store in (
            ("sqlite", SQLiteStore(Path(tmp) / "w.sqlite")),
            ("postgresql", PostgresStore(pg.new_database())),
        ):
            p50, p95 = write_latency(store, args.writes)
            store.close()
            print(f"{name:<12}{p50:>10.2f}{p95:>10.2f}")
        print(f"\nread_history() at {args.tasks:,} tasks ({5 * args.tasks:,} events), best of 3")
        sqlite_store = SQLiteStore(Path(tmp) / "h.sqlite")
        base = history_time(sqlite_store, args.tasks)
        sqlite_store.close()
        pg_store = PostgresStore(pg.new_database())
        pg_time = history_time(pg_store, args.tasks)
        pg_store.close()
        print(f"{'sqlite':<12}{base:>8.2f} s{1.0:>8.2f}x")
        print(f"{'postgresql':<12}{pg_time:>8.2f} s{pg_time / base:>8.2f}x")
        print(f"\nrequests for one batch of {args.batch} tasks (simulator at speed {SPEED:g})")
        print(f"{'watchers sharing a PostgreSQL journal':<40}{'requests':>10}{'one alone':>11}{'ratio':>8}")
        for n in (1, 2, 3):
            shared, alone = shared_requests(pg.new_database, args.batch, n)
            print(f"{n:<40}{shared:>10}{alone:>11}{shared / alone:>8.2f}")


if __name__ == "__main__":
    main()
