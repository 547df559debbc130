"""History build time and journal write cost.

Builds ``history()`` for 100,000 tasks and 500,000 events (5 per task: pending, queued,
running, the end, and one expired/refresh or error-free extra), from memory and from a
SQLite journal, and compares it with plain ``pd.DataFrame(records)`` of the same rows
measured in the same run. Then measures what journalling one observed change costs.

Target (issue 4, again in issue 16 with the server's fields: cost, started_at, estimate,
two metadata keys per task): history() at most 2x the time of pd.DataFrame(records).

    python benchmarks/history_build.py [--tasks 100000] [--writes 20000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from mh_notebook.history import read_history
from mh_notebook.journal.memory import MemoryStore
from mh_notebook.journal.protocol import Watched
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.records import Event
from mh_notebook.sim import CATALOGUE


def synthetic(n_tasks: int, seed: int = 0) -> tuple[list[Event], list[Watched]]:
    rng = random.Random(seed)
    models = list(CATALOGUE.values())
    events, watched = [], []
    t0 = 1_780_000_000.0
    for i in range(n_tasks):
        spec = models[i % len(models)]
        created = t0 + i * 0.5
        latency = spec.median * rng.uniform(0.6, 1.6)
        end = created + latency
        tid = f"task_{i:012x}"
        watched.append(Watched(tid, "https://api.modelhunter.ai", created + 0.01))
        base = (spec.type, spec.provider, spec.model, round(created, 3))
        failed = rng.random() < 0.05
        # what the documented API adds: the estimate and metadata at creation, the start and
        # the cost from answers that carry them (list items, or GET where it does)
        meta = f'{{"batch": {i % 50}, "experiment": "e{i % 7}"}}'
        started = {
            "server_started_at": round(created + 0.15 * latency, 3),
            "cost": round(0.04 + 0.01 * (i % 9), 4),
        }
        events.append(
            Event(tid, "pending", created + 0.05, 1, *base)._replace(estimated_seconds=30.0, metadata=meta)
        )
        events.append(Event(tid, "queued", created + 0.1 * latency, 2, *base))
        events.append(Event(tid, "running", created + 0.2 * latency, 4, *base)._replace(**started))
        if failed:
            events.append(
                Event(
                    tid,
                    "failed",
                    end + 0.3,
                    9,
                    *base,
                    round(end, 3),
                    0,
                    error_code="PROVIDER_ERROR",
                    error_message="Content moderation",
                )
            )
            events.append(
                Event(
                    tid,
                    "failed",
                    end + 0.4,
                    10,
                    *base,
                    round(end, 3),
                    0,
                    error_code="PROVIDER_ERROR",
                    error_message="Content moderation",
                )
            )
        else:
            events.append(
                Event(tid, "succeeded", end + 0.3, 9, *base, round(end, 3), 1, spec.format, 3.0, 24716)
            )
            events.append(Event(tid, "expired", end + 900, 10, *base, round(end, 3), 0))
    return events, watched


def best_of(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=20_000)
    args = parser.parse_args()
    events, watched = synthetic(args.tasks)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, pandas {pd.__version__}")
    print(f"{args.tasks:,} tasks, {len(events):,} events")

    memory = MemoryStore()
    memory.add_watched(watched)
    for e in events:
        memory.add(e)
    history = read_history(memory)
    records = history.to_dict("records")
    t_records = best_of(lambda: pd.DataFrame(records))
    t_memory = best_of(lambda: read_history(memory))
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.sqlite")
        store.add_watched(watched)
        store.add_many(events)  # one transaction; keeps the per-task summary
        t_sqlite = best_of(lambda: read_history(store), repeat=2)
        t_fetch = best_of(lambda: (store.reduced_rows(), store.watched()), repeat=2)
        assert read_history(store).equals(history)
        store.close()

        write_store = SQLiteStore(Path(tmp) / "writes.sqlite")
        sample = events[: args.writes]
        per_event = []
        for e in sample:
            start = time.perf_counter()
            write_store.add(e)
            per_event.append(time.perf_counter() - start)
        write_store.close()
    fresh = MemoryStore()
    start = time.perf_counter()
    for e in sample:
        fresh.add(e)
    t_mem_write = (time.perf_counter() - start) / len(sample)

    print(f"\nbaseline pd.DataFrame(records) of the {len(history):,}-row history: {t_records:.3f} s")
    print(
        f"history() from the memory journal:    {t_memory:.3f} s  ({t_memory / t_records:.2f}x baseline; target <= 2x: {'MET' if t_memory <= 2 * t_records else 'MISSED'})"
    )
    print(
        f"history() from the SQLite journal:    {t_sqlite:.3f} s  ({t_sqlite / t_records:.2f}x baseline; of which reading the per-task summary joined to the events: {t_fetch:.3f} s)"
    )
    print(
        f"\njournal write per observed change (SQLite WAL, committed, {len(sample):,} changes): "
        f"median {statistics.median(per_event) * 1e6:.0f} µs, p99 {sorted(per_event)[int(0.99 * len(per_event))] * 1e6:.0f} µs"
    )
    print(f"memory store write per change: {t_mem_write * 1e6:.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
