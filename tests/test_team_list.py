"""The team's list duty on a real PostgreSQL server: one process of a team journal at a time
sends the list pages of an account, for every process's tasks; the others send none and
follow its journalled changes through LISTEN/NOTIFY; when it dies, another takes the duty
over once its lease lapses (5 s on the database's clock) and every task still ends right.

The processes are real processes with one API key (one account: one duty); each reports
what its own lister sent, and the simulator's count of list calls checks the sum.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from pg_server import wait_for

from mh_notebook.sim import Simulator

pytestmark = pytest.mark.postgres
SPEED = 20.0
DUTY_ELSEWHERE = "list duty held by another process"

CHILD = textwrap.dedent(
    """
    import json, sys, threading
    url, key, journal = sys.argv[1:]
    from mh_notebook.watcher import TaskWatcher
    w = TaskWatcher(key, url, store=journal, display="none", time_scale={speed})
    print("ready", flush=True)
    ids = sys.stdin.readline().split()
    w.watch(ids)
    print(json.dumps({{"holder": w.engine.team.holder}}), flush=True)
    modes, done = set(), threading.Event()
    def sample():  # what the panel's polling line said along the way
        while not done.wait(0.1):
            mode = w.engine.polling_mode
            modes.add("elsewhere" if mode.startswith("{elsewhere}") else "pages" if "list pages/s" in mode else "gets")
    threading.Thread(target=sample, daemon=True).start()
    final = w.wait(150)
    done.set()
    lister = w.engine.poller.lister
    statuses = {{t: str(task.status) for t, task in final.items()}}
    print(json.dumps({{"pages": lister.pages, "gets": lister.gets, "statuses": statuses, "modes": sorted(modes)}}), flush=True)
    w.stop()
    """
).format(speed=SPEED, elsewhere=DUTY_ELSEWHERE)


class Child:
    """A notebook in a process of its own, watching ``ids`` of one team journal."""

    def __init__(self, sim: Simulator, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, sim.url, sim.api_key, url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.holder = ""

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line and self.proc.stderr is not None:
            self.proc.wait(30)
            raise AssertionError(self.proc.stderr.read())
        return line

    def ready(self) -> None:
        assert self._line() == "ready"

    def watch(self, ids: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(ids) + "\n")
        self.proc.stdin.flush()
        self.holder = json.loads(self._line())["holder"]

    def report(self) -> dict[str, Any]:
        """What it saw and sent, once its tasks have ended."""
        report: dict[str, Any] = json.loads(self._line())
        assert self.proc.wait(60) == 0
        return report

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _children(sim: Simulator, url: str, n: int) -> list[Child]:
    children = [Child(sim, url) for _ in range(n)]  # started together: imports overlap
    for child in children:
        child.ready()
    return children


def _batch(sim: Simulator, n: int, first: float, step: float) -> dict[str, str]:
    """``n`` tasks, every fourth one failing: id -> the status it ends with."""
    outcomes = ["failed" if i % 4 == 3 else "succeeded" for i in range(n)]
    return {
        sim.submit(model="seedream-4.0", outcome=o, latency=first + step * i): o
        for i, o in enumerate(outcomes)
    }


def _leases(url: str) -> tuple[dict[str, str], dict[str, tuple[str, float]]]:
    """Task leases (id -> holder) and list duties (key -> holder and seconds until it lapses,
    on the database's clock)."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT task_id, holder, expires_at - extract(epoch FROM clock_timestamp()) FROM leases"
        ).fetchall()
    tasks = {str(t): str(h) for t, h, _ in rows if not str(t).startswith("list duty ") and h}
    duties = {str(t): (str(h), float(left)) for t, h, left in rows if str(t).startswith("list duty ")}
    return tasks, duties


def _live_duty_holder(url: str) -> str | None:
    _, duties = _leases(url)
    live = [holder for holder, left in duties.values() if holder and left > 0]
    assert len(live) <= 1, duties  # one account: one duty
    return live[0] if live else None


def test_one_process_sends_the_pages_of_the_team(sim: Simulator, url: str) -> None:
    """Promise: in a team journal, one process at a time holds the list duty of an account.
    Three processes watch one batch (a third of it each, and a part all watch): exactly
    one of them sends list pages, for every task of the batch (the others' too); the
    others send none (their panels say who holds the duty) and see every task end right
    through the journal."""
    children = _children(sim, url, 3)
    try:
        truth = _batch(sim, 24, first=100.0, step=20.0)  # 5 to 28 s at speed 20
        ids = list(truth)
        shared = ids[18:]
        parts = [ids[0:6] + shared, ids[6:12] + shared, ids[12:18] + shared]
        for child, part in zip(children, parts, strict=True):
            child.watch(part)
        reports = [child.report() for child in children]
    finally:
        for child in children:
            child.kill()
    for report, part in zip(reports, parts, strict=True):
        assert report["statuses"] == {t: truth[t] for t in part}  # every task ends right, everywhere
    pages = [r["pages"] for r in reports]
    print(f"pages per process: {pages}; GETs per process: {[r['gets'] for r in reports]}")
    print(f"list calls at the simulator: {sim.calls['list']}, GETs: {sim.calls['get']}, tasks: {len(ids)}")
    assert sum(pages) == sim.calls["list"]  # what each process says it sent is what arrived
    assert sorted(p > 0 for p in pages) == [False, False, True], pages  # one process sends pages
    for report in reports:
        if report["pages"]:
            assert "elsewhere" not in report["modes"], report["modes"]
        else:
            assert "elsewhere" in report["modes"], report["modes"]  # the panel says why no pages


def test_the_duty_is_taken_over_when_its_holder_dies(sim: Simulator, url: str) -> None:
    """Promise: the list duty outlives its holder. Two processes watch one batch; the duty's
    holder is killed mid-batch; the other takes the duty over once its lease lapses (5 s,
    on the database's clock), sends the pages from then on (it sent none before), and
    every task ends right there."""
    children = _children(sim, url, 2)
    try:
        truth = _batch(sim, 12, first=300.0, step=50.0)  # 15 to 42 s at speed 20
        ids = list(truth)
        for child in children:
            child.watch(ids)
        assert wait_for(lambda: _live_duty_holder(url) in {c.holder for c in children}, 30)
        duty_name = ""

        def all_handed() -> bool:
            nonlocal duty_name
            tasks, duties = _leases(url)
            duty_name = next(iter(duties), "")
            return len(tasks) == len(ids) and set(tasks.values()) == {duty_name}

        assert wait_for(all_handed, 30)  # every task answered once and handed to the duty
        holder = next(c for c in children if c.holder == _live_duty_holder(url))
        survivor = next(c for c in children if c is not holder)
        holder.kill()
        pages_at_kill = sim.calls["list"]
        killed = time.monotonic()
        assert wait_for(lambda: _live_duty_holder(url) == survivor.holder, 30)
        print(f"duty taken over {time.monotonic() - killed:.1f} s after its holder died (lease 5 s)")
        report = survivor.report()
    finally:
        for child in children:
            child.kill()
    assert report["statuses"] == truth
    print(f"pages: {pages_at_kill} by the dead holder, {report['pages']} by the survivor")
    assert report["pages"] > 0
    assert report["pages"] == sim.calls["list"] - pages_at_kill  # none before it took the duty
    assert {"elsewhere", "pages"} <= set(report["modes"]), report["modes"]
