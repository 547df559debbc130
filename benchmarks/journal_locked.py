"""A SQLite journal locked by another process: what the kernel waits for, and what is lost.

Another process holds the journal's write lock (``BEGIN EXCLUSIVE``) for the whole run.
One watcher (simulator at speed 100, over real HTTP) watches ``--tasks`` tasks of 1-3 s:

- ``watch()``: seconds until it returns (issue 17, item 2: it took 4 s, then raised);
- how long until every task has ended, against the same run with no lock;
- ``history()`` while locked: seconds, and the tasks it shows ended;
- ``stop()`` while locked: seconds (bounded by ``engine.STOP_WAIT``), events it names unwritten;
- once the lock goes: the journal's next opening writes them in (tasks ended in the file).

    python benchmarks/journal_locked.py [--tasks 40]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from mh_notebook import TaskWatcher, read_history
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.sim import Simulator

LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""


def run(n: int, locked: bool) -> dict[str, float]:
    """One run; the figures by name."""
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, Simulator(seed=5, speed=100) as sim:
        journal = Path(tmp) / "j.sqlite"
        SQLiteStore(journal).close()
        ids = [
            sim.submit(model="seedream-4.0", outcome="succeeded", latency=100 + 200 * i / n) for i in range(n)
        ]
        w = TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=100, rate_limit=50)
        locker = None
        if locked:
            locker = subprocess.Popen(
                [sys.executable, "-c", LOCKER, str(journal)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        start = time.monotonic()
        w.watch(ids)
        figures["watch_s"] = time.monotonic() - start
        w.wait(timeout=120)
        figures["all_ended_s"] = time.monotonic() - start
        start = time.monotonic()
        frame = w.history()
        figures["history_s"] = time.monotonic() - start
        figures["history_ended"] = float((frame["status"] == "succeeded").sum())
        start = time.monotonic()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            w.stop()
        figures["stop_s"] = time.monotonic() - start
        figures["unwritten_events"] = float(len(w.unwritten.events) if w.unwritten else 0)
        if locker is not None and locker.stdin is not None:
            locker.stdin.write("\n")
            locker.stdin.close()
            locker.wait(30)
        written = read_history(journal)
        figures["journal_ended_after"] = float((written["status"] == "succeeded").sum())
    return figures


def main() -> None:
    """Print the figures of a free and a locked journal side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    args = parser.parse_args()
    free, locked = run(args.tasks, False), run(args.tasks, True)
    print(f"{args.tasks} tasks of 1-3 s; a journal free vs locked by another process for the whole run\n")
    print(f"{'figure':<22} {'free':>10} {'locked':>10}")
    for name in free:
        print(f"{name:<22} {free[name]:>10.3f} {locked[name]:>10.3f}")


if __name__ == "__main__":
    main()
