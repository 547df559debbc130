"""How long the poller waits on a PostgreSQL team journal that stops answering (issue 17, item 3).

A watcher journals ``--tasks`` tasks in a throw-away PostgreSQL cluster (tests/pg_server.py);
every process of the server is frozen (SIGSTOP: the connections stay open, nothing answers,
like a network black hole) for ``--pause`` seconds, then thawed (SIGCONT). Printed:

- the longest gap between two ticks of the poller's loop (scheduled every 0.1 s) before,
  during and after the pause: what polling waited on the database;
- the tasks that ended during the pause, and whether every end is journalled afterwards.

    python benchmarks/pg_pause.py [--tasks 40] [--pause 10]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pg_server import postgres_server, wait_for

from mh_notebook.history import read_history
from mh_notebook.sim import Simulator
from mh_notebook.watcher import TaskWatcher


def main() -> None:
    """Run the pause once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--pause", type=float, default=10.0)
    args = parser.parse_args()
    with postgres_server() as pg, Simulator(seed=1, speed=20) as sim:
        url = pg.new_database()
        ids = [
            sim.submit(model="seedream-4.0", outcome="succeeded", latency=20 + 400 * i / args.tasks)
            for i in range(args.tasks)
        ]
        ticks: list[float] = []
        w = TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=20)
        on_tick = w.engine.poller._on_tick
        assert on_tick is not None

        def timed_tick() -> None:
            ticks.append(time.monotonic())
            on_tick()

        w.engine.poller._on_tick = timed_tick
        try:
            w.watch(ids)
            time.sleep(2.0)
            paused_at = time.monotonic()
            ended_before = len(w.pending)
            pg.pause()
            try:
                time.sleep(args.pause)
            finally:
                pg.resume()
            resumed_at = time.monotonic()
            ended_during = ended_before - len(w.pending)
            w.wait(timeout=120)
            wait_for(lambda: w.snapshot().notice is None, 60)
        finally:
            w.stop()
        done = time.monotonic()
        history = read_history(url).set_index("task_id")
        for name, start, end in (
            ("before", 0.0, paused_at),
            ("during", paused_at, resumed_at),
            ("after", resumed_at, done),
        ):
            inside = [t for t in ticks if start <= t <= end]
            gaps = [b - a for a, b in itertools.pairwise(inside)]
            print(f"longest gap between poller ticks {name:<7} the pause: {max(gaps, default=0):.2f} s")
        print(f"tasks ended during the {args.pause:g} s pause: {ended_during} of {args.tasks}")
        ended = int((history.loc[ids, "status"] == "succeeded").sum())
        print(f"ends journalled afterwards: {ended} of {args.tasks}")


if __name__ == "__main__":
    main()
