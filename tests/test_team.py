"""The team journal on a real PostgreSQL server (started by the tests, see pg_server.py):
several processes write one history, each task is polled by one of them at a time, the
others follow through LISTEN/NOTIFY, and nothing is lost when a process or the server dies.

Other processes are real processes (``python -c``) talking to the simulator over HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from pg_server import PostgresServer, postgres_server, wait_for

from mh_notebook import JournalError, TaskWatcher, read_history
from mh_notebook.sim import Simulator

pytestmark = pytest.mark.postgres
SPEED = 20.0

CHILD = textwrap.dedent(
    """
    import sys, time
    from mh_notebook.watcher import TaskWatcher
    url, key, journal, mode = sys.argv[1:]
    w = TaskWatcher(key, url, store=journal, display="none", time_scale={speed})
    print("ready", flush=True)  # imported and connected: the ids come now
    ids = sys.stdin.readline().split()
    w.resume() if mode == "resume" else w.watch(ids)
    print("watching", flush=True)
    if mode == "forever":
        time.sleep(600)
    w.wait(120)
    w.stop()
    print("done", flush=True)
    """
).format(speed=SPEED)


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def url(pg: PostgresServer) -> str:
    return pg.new_database()


def _child(sim: Simulator, url: str, mode: str) -> subprocess.Popen[str]:
    """Another notebook (a process of its own), ready to be told what to watch."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, sim.url, sim.api_key, url, mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    assert line == "ready", child.stderr.read() if child.stderr else line
    return child


def _tell(child: subprocess.Popen[str], ids: list[str]) -> None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(" ".join(ids) + "\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "watching"


def _rows(url: str, table: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def test_two_writers_one_killed_and_a_third_resumes(sim: Simulator, url: str) -> None:
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=lat) for lat in range(20, 120, 2)]
    first, second = ids[:25], ids[25:]
    finisher, victim = _child(sim, url, "wait"), _child(sim, url, "forever")
    _tell(finisher, first)
    _tell(victim, second)
    assert wait_for(lambda: len(read_history(url).query("status == 'succeeded'")) >= 10, 60)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert finisher.wait(120) == 0
    rescuer = _child(sim, url, "resume")
    _tell(rescuer, [])
    assert rescuer.wait(120) == 0
    history = read_history(url).set_index("task_id")
    assert sorted(history.index) == sorted(ids)  # every task exactly once
    assert (history["status"] == "succeeded").all()
    for task_id in ids:  # exact latencies, from the server's timestamps
        truth = sim.timeline(task_id)
        assert history.loc[task_id, "latency_s"] == pytest.approx(truth["end"] - truth["created"], abs=2e-3)
    assert _rows(url, "watched") == 50  # in the database, not in a file
    assert set(history["base_url"]) == {sim.url}


def test_shared_tasks_are_polled_once_and_followed_through_notify(sim: Simulator, url: str) -> None:
    other = _child(sim, url, "wait")  # another notebook, another machine
    ids = [sim.submit(model="seedream-4.5", outcome="succeeded", latency=20 + 2 * i) for i in range(20)]
    _tell(other, ids)
    seen: dict[str, float] = {}
    with TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED) as w:
        w.on_done(lambda t: seen.setdefault(t.id, time.time()))
        w.watch(ids)
        final = w.wait(timeout=120)
    assert other.wait(120) == 0
    assert {str(t.status) for t in final.values()} == {"succeeded"}
    for task_id in ids:  # each end reached this notebook within a second
        assert seen[task_id] - sim.timeline(task_id)["end"] < 1.0
    solo = [sim.submit(model="seedream-4.5", outcome="succeeded", latency=20 + 2 * i) for i in range(20)]
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as alone:
        alone.watch(solo)  # the same batch, one person
        alone.wait(timeout=120)
    shared_requests = sum(sim.requests[i] for i in ids)
    solo_requests = sum(sim.requests[i] for i in solo)
    print(f"requests: shared {shared_requests}, one watcher alone {solo_requests}")
    assert solo_requests >= 3 * len(solo)  # a real workload, not tasks that had ended already
    assert shared_requests <= 1.3 * solo_requests, (shared_requests, solo_requests)


def test_a_dead_holders_leases_are_taken_over(sim: Simulator, url: str) -> None:
    holder = _child(sim, url, "forever")
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=150 + i) for i in range(5)]
    _tell(holder, ids)
    with TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED) as w:
        w.watch(ids)
        time.sleep(1.0)
        assert not w.engine.team.held  # the other process holds them all
        polled_here = sum(w.polls.values())
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        final = w.wait(timeout=60)
        assert {str(t.status) for t in final.values()} == {"succeeded"}
        assert sum(w.polls.values()) > polled_here  # this process took over


def test_the_server_going_away_loses_nothing(sim: Simulator, pg: PostgresServer, url: str) -> None:
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=60 + 10 * i) for i in range(6)]
    with TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED) as w:
        w.watch(ids)
        time.sleep(0.5)
        pg.stop()
        try:
            assert wait_for(lambda: w.snapshot().notice is not None, 20)
            notice = w.snapshot().notice or ""
            assert "unreachable" in notice or "delayed" in notice, notice
            final = w.wait(timeout=60)  # polling goes on without the database
            assert {str(t.status) for t in final.values()} == {"succeeded"}
        finally:
            pg.restart()
        assert wait_for(lambda: w.snapshot().notice is None, 30)
    history = read_history(url).set_index("task_id")
    assert (history.loc[ids, "status"] == "succeeded").all()  # written once it was back


def test_without_psycopg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("psycopg", "psycopg_pool"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(JournalError, match=r"mh-notebook\[postgres\]"):
        read_history("postgresql://nobody@127.0.0.1:1/nothing")


def test_the_password_never_shows(url: str) -> None:
    from mh_notebook.pgstore import PostgresStore

    secret = url.replace("postgres@", "postgres:hunter2-secret@")
    store = PostgresStore(secret)
    try:
        assert "hunter2-secret" not in repr(store)
        assert "hunter2-secret" not in store.location
    finally:
        store.close()
    with pytest.raises(JournalError) as info:  # nobody listens on port 1
        PostgresStore("postgresql://postgres:hunter2-secret@127.0.0.1:1/x", connect_timeout=2)
    assert "hunter2-secret" not in str(info.value)


def test_shared_polling_outlives_the_watcher_that_brought_the_journal(sim: Simulator, url: str) -> None:
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=60 + 5 * i) for i in range(4)]
    first = TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED)
    with TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED) as second:
        first.watch(ids)
        second.watch(ids)
        first.stop()  # closes the journal the engine's shared polling was using
        final = second.wait(timeout=60)
        assert {str(t.status) for t in final.values()} == {"succeeded"}
        time.sleep(1.5)  # a renewal or two
        assert second.snapshot().notice is None
        assert second.engine.team is not None and second.engine.team.journal is second.store
