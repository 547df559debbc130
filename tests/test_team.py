"""The team journal on a real PostgreSQL server (started by the tests, see pg_server.py):
several processes write one history, each task is polled by one of them at a time, the
others follow through LISTEN/NOTIFY, and nothing is lost when a process or the server dies.

Other processes are real processes (``python -c``) talking to the simulator over HTTP.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any
from urllib.parse import quote

import pytest
from pg_server import PostgresServer, wait_for

from mh_notebook import JournalError, TaskWatcher, read_history
from mh_notebook.sim import Simulator

pytestmark = pytest.mark.postgres
SPEED = 20.0
HANDOVER_POLLS = 2
"""Requests the process that does not hold a task's lease may send for it (a lease changing hands)."""

CHILD = textwrap.dedent(
    """
    import sys, time
    url, key, journal, mode = sys.argv[1:]
    if mode == "skewed":  # this machine's clock runs 60 s fast
        _real_time = time.time
        time.time = lambda: _real_time() + 60.0
    from mh_notebook.watcher import TaskWatcher
    w = TaskWatcher(key, url, store=journal, display="none", time_scale={speed})
    print("ready", flush=True)  # imported and connected: the ids come now
    ids = sys.stdin.readline().split()
    w.resume() if mode == "resume" else w.watch(ids)
    print("watching", flush=True)
    if mode in ("forever", "skewed"):
        time.sleep(600)
    w.wait(120)
    w.stop()
    print("done", flush=True)
    """
).format(speed=SPEED)


def _child(sim: Simulator, url: str, mode: str, key: str | None = None) -> subprocess.Popen[str]:
    """Another notebook (a process of its own), ready to be told what to watch; ``key``: an
    API key of its own (``sim.add_key()``), so that the simulator counts its requests apart."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, sim.url, key or sim.api_key, url, mode],
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
    """Promise: a team polls each task once (by one process at a time, the holder of its
    lease), and every notebook shows each change within about a second of its being
    journalled by another (LISTEN/NOTIFY).

    Who polled each task is counted per process (the other notebook has a key of its own,
    so the simulator tells their requests apart), not as a total set against one watcher's
    alone at another moment: a batch's total follows how busy the machine is while it runs
    (on a loaded 2-core machine one process alone sent 120 requests for the batch here,
    and one watcher alone 63 for the same batch a moment later), who polled a task does not.
    """
    other_key = sim.add_key()  # the same account; another notebook, another machine
    other = _child(sim, url, "wait", key=other_key)
    ids = [sim.submit(model="seedream-4.5", outcome="succeeded", latency=500 + 10 * i) for i in range(20)]
    _tell(other, ids)
    seen: dict[str, float] = {}
    with TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED) as w:
        w.on_done(lambda t: seen.setdefault(t.id, time.time()))
        w.watch(ids)
        final = w.wait(timeout=120)
    assert other.wait(120) == 0
    assert {str(t.status) for t in final.values()} == {"succeeded"}
    import psycopg

    with psycopg.connect(url) as conn:  # when the end was journalled, by whichever process saw it
        rows = conn.execute(
            "SELECT task_id, min(observed_at) FROM events WHERE status = 'succeeded' GROUP BY 1"
        )
        journalled = {str(t): float(at) for t, at in rows}
    follow = sorted(seen[t] - journalled[t] for t in ids)
    ends = sorted(seen[t] - sim.timeline(t)["end"] for t in ids)
    print(f"shown after being journalled: max {follow[-1]:.2f} s; after the end: median {ends[10]:.2f} s")
    assert follow[-1] < 2.0  # within about a second (slack for a loaded machine)
    by = {t: (sim.requests_by_key[(t, sim.api_key)], sim.requests_by_key[(t, other_key)]) for t in ids}
    print(f"requests per task (this process, the other): {list(by.values())}")
    with psycopg.connect(url) as conn:  # a real workload: every task was seen before its end
        rows = conn.execute("SELECT DISTINCT task_id FROM events WHERE status IN ('queued', 'running')")
        assert {str(t) for (t,) in rows} == set(ids)
    # Each task by one process. The other polls it only if the lease lapsed (a holder late by
    # more than 5 s) or was given back before the end reached it: once or twice, not along.
    twice = {t: n for t, n in by.items() if min(n) > HANDOVER_POLLS}
    assert not twice, f"polled by both processes (this, the other): {twice}"
    assert sum(min(n) for n in by.values()) <= len(ids), by


def test_a_dead_holders_leases_are_taken_over(sim: Simulator, url: str) -> None:
    """Promise: 5 s leases. A process that dies loses its leases and another polls its
    tasks to their end (tasks long enough to outlast a loaded machine's start-up)."""
    holder = _child(sim, url, "forever")
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=1000 + 10 * i) for i in range(5)]
    _tell(holder, ids)
    assert wait_for(lambda: len(_lease_holders(url)) == len(ids), 30)
    with TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED) as w:
        w.watch(ids)
        time.sleep(1.0)
        assert not w.engine.team.held  # the other process holds them all
        polled_here = sum(w.polls.values())
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        final = w.wait(timeout=90)
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
    from mh_notebook.journal.postgres import PostgresStore

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


def _lease_holders(url: str) -> dict[str, str]:
    """Who holds each task's lease: a process, or the list duty (the duty's own rows apart)."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT task_id, holder FROM leases WHERE holder <> '' AND task_id NOT LIKE 'list duty %'"
        )
        return {str(t): str(h) for t, h in rows}


def _duty_holders(url: str) -> dict[str, str]:
    """Who holds each list duty (one per account), live or lapsed."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT task_id, holder FROM leases WHERE task_id LIKE 'list duty %'")
        return {str(t): str(h) for t, h in rows}


def test_a_task_left_by_the_last_team_watcher_is_polled_again(sim: Simulator, url: str) -> None:
    """Promise: every watched task is polled by someone. A task another process holds, that
    this process followed through the team journal, is polled here again once the last
    watcher that followed it through the team leaves while a watcher of another journal
    still watches it (issue 17, item 6)."""
    holder = _child(sim, url, "forever")
    try:
        ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=150 + 10 * i) for i in range(3)]
        _tell(holder, ids)
        assert wait_for(lambda: len(_lease_holders(url)) == 3, 30)
        team = TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED)
        with TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as solo:
            team.watch(ids)  # followed through the team: the other process polls them
            solo.watch(ids)
            time.sleep(0.5)  # a lease renewal or two
            team.stop()
            os.kill(holder.pid, signal.SIGSTOP)  # the other process polls no more
            final = solo.wait(timeout=60)
            assert {str(t.status) for t in final.values()} == {"succeeded"}
            assert sum(solo.polls.values()) > 0
    finally:
        holder.kill()
        holder.wait()


def _in_team_tick() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_team_tick":
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def test_a_watcher_leaving_during_a_team_tick_breaks_nothing(
    sim: Simulator, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Promise: stop() is safe at any moment. The last team watcher leaving while a team
    tick is under way (``Engine.team`` set to ``None`` by ``detach`` mid-tick) makes no tick
    fail, and the watchers left go on polling (issue 17, item 9, the race)."""
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=100 + 10 * i) for i in range(3)]
    team = TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED)
    engine = team.engine
    watches, held_up = team._tracked.watches, threading.Event()

    def slow_watches(task_id: str) -> bool:  # holds the team tick until the team is gone
        if not held_up.is_set() and _in_team_tick():
            held_up.set()
            wait_for(lambda: engine.team is None, 10)
        return watches(task_id)

    team._tracked.watches = slow_watches  # type: ignore[method-assign]
    with (
        caplog.at_level(logging.ERROR, logger="mh_notebook"),
        TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as solo,
    ):
        team.watch(ids)
        solo.watch(ids)
        assert wait_for(held_up.is_set, 10)
        team.stop()
        final = solo.wait(timeout=60)
        assert {str(t.status) for t in final.values()} == {"succeeded"}
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures, [r.getMessage() for r in failures]


def test_polling_goes_on_while_the_server_is_paused(
    sim: Simulator, pg: PostgresServer, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Promise: never stalls polling. A PostgreSQL server that stops answering (every
    process of it SIGSTOPped: the connections stay open, nothing answers, like a network
    black hole) does not hold the poller up: team work never runs on the poller's thread,
    the tasks are polled to their end meanwhile, and once the server answers again
    (SIGCONT) everything is journalled, nothing lost (item 3)."""
    from mh_notebook.journal.team import TeamPolling

    team_threads: set[str] = set()
    team_tick = TeamPolling.tick

    def recording_tick(self: TeamPolling, *args: Any, **kwargs: Any) -> None:
        team_threads.add(threading.current_thread().name)
        team_tick(self, *args, **kwargs)

    monkeypatch.setattr(TeamPolling, "tick", recording_tick)
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=150 + 50 * i) for i in range(6)]
    w = TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED)
    try:
        w.watch(ids)
        assert wait_for(lambda: w.engine.team is not None and len(w.engine.team.held) == len(ids), 30)
        pg.pause()
        try:
            final = w.wait(timeout=60)  # the tasks end while the database is away
            assert {str(t.status) for t in final.values()} == {"succeeded"}
        finally:
            pg.resume()
        assert wait_for(lambda: w.snapshot().notice is None, 60)
    finally:
        w.stop()
    history = read_history(url).set_index("task_id")
    assert (history.loc[ids, "status"] == "succeeded").all()
    assert team_threads and not any(name.startswith("mh-poller") for name in team_threads), team_threads


def test_a_server_killed_mid_write_loses_nothing_acknowledged(
    sim: Simulator, pg: PostgresServer, url: str
) -> None:
    """Promise: loses nothing. The server killed outright (SIGKILL to the postmaster and
    every backend) while a watcher journals: what was acknowledged is still there after
    the restart, and what waited is written once the server is back, exactly once."""
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=50 + 25 * i) for i in range(16)]
    with TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED) as w:
        w.watch(ids)
        assert wait_for(lambda: len(read_history(url).query("status == 'succeeded'")) >= 3, 60)
        acknowledged = set(read_history(url).query("status == 'succeeded'")["task_id"])
        pg.kill()
        try:
            final = w.wait(timeout=60)
            assert {str(t.status) for t in final.values()} == {"succeeded"}
        finally:
            pg.restart()
        assert wait_for(lambda: w.snapshot().notice is None, 60)
    history = read_history(url).set_index("task_id")
    assert (history.loc[ids, "status"] == "succeeded").all()
    assert acknowledged <= set(history.index)
    import psycopg

    with psycopg.connect(url) as conn:  # each end written once, however often it was tried
        counts = conn.execute("SELECT count(*) FROM events WHERE status = 'succeeded' GROUP BY task_id")
        assert {int(n) for (n,) in counts} == {1}


def test_a_fast_clocked_dead_holder_is_taken_over_on_the_database_clock(sim: Simulator, url: str) -> None:
    """Promise: 5 s leases. A holder whose clock runs 60 s fast dies (its process killed);
    another process takes its tasks over within about 5 s measured on the database's clock,
    not 65 s later on the dead one's (item 13)."""
    holder = _child(sim, url, "skewed")
    try:
        ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=40_000 + i) for i in range(3)]
        _tell(holder, ids)
        assert wait_for(lambda: len(_lease_holders(url)) == 3, 30)
        import psycopg

        with psycopg.connect(url) as conn:  # leases expire on the database's clock
            row = conn.execute("SELECT max(expires_at) - extract(epoch FROM clock_timestamp()) FROM leases")
            ahead = float(row.fetchone()[0])  # type: ignore[index]
        assert ahead <= 5.0 + 2.0, f"a lease expires {ahead:.1f} s from now on the database clock"
        with TaskWatcher(sim.api_key, sim.url, store=url, display="none", time_scale=SPEED) as w:
            w.watch(ids)
            holder.kill()
            holder.wait()
            killed = time.monotonic()
            team = w.engine.team
            assert team is not None
            assert wait_for(lambda: team.held == set(ids), 30)  # promised 5 s; generous for a loaded CI
            print(f"taken over {time.monotonic() - killed:.1f} s after the holder died")
            duty = team.duty.name if team.duty is not None else ""
            assert _duty_holders(url) == {duty: team.holder}  # the list duty taken over too
            assert set(_lease_holders(url).values()) <= {team.holder, duty}
    finally:
        holder.kill()
        holder.wait()


ODD_PASSWORDS = [
    "Zq9/Xw7-kv",
    "Zq9@Xw7-kv",
    "Zq9:Xw7-kv",
    "Zq9%Xw7-kv",
    "Zq9/a@b:c%Xw7-kv",
    "Üñï cødé?#Xw7&k=v",
]


def _fragments(password: str) -> list[str]:
    """The password and every piece of it libpq may read as another field of the URL."""
    pieces = [p for p in re.split(r"[/@:%?#&= ]", password) if len(p) >= 3]
    return [password, quote(password, safe=""), *pieces]


@pytest.mark.parametrize("password", ODD_PASSWORDS)
def test_the_password_never_shows_however_libpq_reads_the_url(
    pg: PostgresServer, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Promise: the password never appears in a repr or a message. Unencoded ``/ @ : %`` in
    it make libpq read parts of it as the host, the port or the database; none of them
    shows in what we raise or log, whichever way libpq read the URL (item 14)."""
    from mh_notebook.journal.postgres import PostgresStore

    shown: list[str] = []
    raw = f"postgresql://postgres:{password}@127.0.0.1:{pg.port}/postgres"
    encoded = f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{pg.port}/postgres"
    nobody = f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:1/postgres"
    with caplog.at_level(logging.DEBUG):
        for url in (raw, encoded, nobody):
            try:
                store = PostgresStore(url, connect_timeout=2)
            except JournalError as exc:
                shown += [str(exc), repr(exc)]
            else:
                shown += [repr(store), store.location]
                store.close()
    shown += [r.getMessage() for r in caplog.records]
    for piece in _fragments(password):
        leaks = [text for text in shown if piece in text]
        assert not leaks, (piece, leaks)


def test_an_at_sign_in_the_query_is_not_taken_for_a_password(pg: PostgresServer) -> None:
    """A URL libpq reads as written opens, even with an ``@`` after its ``?``."""
    from mh_notebook.journal.postgres import PostgresStore

    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres?application_name=a@b")
    store.close()
    store = PostgresStore(f"postgresql://postgres:pw@127.0.0.1:{pg.port}/postgres?application_name=a@b")
    assert "pw" not in repr(store)
    store.close()


def test_two_machines_keep_their_own_saved_files(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: a team journal keeps each machine's saved files. Two machines saving the
    same result of one task each find their own path in the journal, not the other's
    (issue 17, item 21c: the rows were keyed by task and index alone)."""
    import socket

    from mh_notebook.journal.postgres import PostgresStore
    from mh_notebook.journal.protocol import SavedResult

    stores = {}
    for machine in ("machine-a", "machine-b"):
        monkeypatch.setattr(socket, "gethostname", lambda machine=machine: machine)
        stores[machine] = PostgresStore(url)
    try:
        for machine, store in stores.items():
            store.add_results([SavedResult("task_1", 0, f"/home/{machine}/task_1_0.png", machine, 1, 1.0)])
        for machine, store in stores.items():
            assert [r.local_path for r in store.results(["task_1"])] == [f"/home/{machine}/task_1_0.png"]
            assert [r.local_path for r in store.results()] == [f"/home/{machine}/task_1_0.png"]
    finally:
        for store in stores.values():
            store.close()


def test_every_journal_connection_is_bounded(url: str) -> None:
    """Promise: never stalls polling. Every connection of a team journal carries a
    statement timeout, an idle-in-transaction timeout, TCP keepalives, a TCP user timeout
    and a connect timeout (item 3), the listening one included."""
    from mh_notebook.journal.postgres import PostgresStore

    store = PostgresStore(url, statement_timeout=12.0)
    try:
        store.notifications()
        for conn_of in (lambda cur: cur.connection, lambda cur: store._listener):
            with store._cursor(write=False, wait=None) as cur:
                conn = conn_of(cur)
                settings = {
                    name: conn.execute(f"SHOW {name}").fetchone()[0]
                    for name in ("statement_timeout", "idle_in_transaction_session_timeout")
                }
                parameters = conn.info.get_parameters()
            assert settings == {"statement_timeout": "12s", "idle_in_transaction_session_timeout": "1min"}
            assert parameters["keepalives"] == "1" and parameters["tcp_user_timeout"] == "30000"
            assert int(parameters["connect_timeout"]) > 0
    finally:
        store.close()
