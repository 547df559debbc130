"""One engine per API per process: shared polling, one budget, and the lifecycle's edge cases.

Everything against the simulator over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from mh_notebook import ConfigurationError, Task
from mh_notebook.engine import STOP_WAIT, UnwrittenWarning, running_engines
from mh_notebook.errors import AuthenticationError
from mh_notebook.history import read_history
from mh_notebook.journal.memory import MemoryStore
from mh_notebook.journal.protocol import JournalBusyError, Watched
from mh_notebook.journal.sqlite import SQLiteStore, unwritten_path
from mh_notebook.records import Event
from mh_notebook.sim import Simulator
from mh_notebook.watcher import TaskWatcher

SPEED = 100.0


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mh-poller")]


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u - t < window) for i, t in enumerate(times)), default=0)


def _settled(w: TaskWatcher) -> None:
    """Wait until the engine thread has run what was queued for it so far."""
    done = threading.Event()
    w.engine.poller.call_soon(done.set)
    assert done.wait(10)


@pytest.fixture
def long_tasks(sim: Simulator) -> list[str]:
    return [sim.submit(model="veo-3.1", latency=100_000) for _ in range(20)]


def test_rerun_watchers_share_one_thread_and_one_budget(sim: Simulator, long_tasks: list[str]) -> None:
    before = len(_threads())
    watchers = []
    try:
        for _ in range(5):  # the same cell run five times
            w = TaskWatcher(sim.api_key, sim.url, store=None, display="none", rate_limit=10, burst=2)
            w.watch(long_tasks)
            watchers.append(w)
        assert len(_threads()) == before + 1
        assert len({id(w.engine) for w in watchers}) == 1
        start = time.time()
        time.sleep(3.0)
    finally:
        for w in watchers:
            w.stop()
    sent = [t for t, tid, _ in sim.request_log if t >= start and tid in long_tasks]
    assert len(sent) >= 10  # it was polling
    assert len(sent) / 3.0 <= 10 * 1.3  # not 5 x 10 req/s
    assert len(_threads()) == before


def test_a_task_watched_twice_is_polled_once_and_both_see_it(sim: Simulator) -> None:
    task_id = sim.submit(model="seedream-4.0", outcome="succeeded", latency=20)
    with (
        TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as a,
        TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as b,
    ):
        a.watch(task_id)
        b.watch(task_id)
        assert a.wait(timeout=30)[task_id].status == b.wait(timeout=30)[task_id].status == "succeeded"
        assert a.polls[task_id] == b.polls[task_id] == sim.requests[task_id]
        assert a.store.events() and b.store.events()  # each journal got the changes
        before = len(b.store.events())
        b.watch(task_id)  # watched again: nothing new to journal
        _settled(b)
        assert len(b.store.events()) == before


def test_refreshes_take_their_turn_in_the_rate_limit(sim: Simulator) -> None:
    task_id = sim.submit(model="seedream-4.0", outcome="succeeded", latency=1)
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none", rate_limit=4, burst=1) as w:
        w.watch(task_id)
        w.wait(timeout=30)
        start = time.time()
        futures = [w.engine.poller.refresh(task_id) for _ in range(12)]
        for f in futures:
            f.result(30)
    times = [t for t, tid, _ in sim.request_log if tid == task_id and t >= start]
    assert len(times) == 12
    assert _max_in_window(times) <= 4 + 1 + 1  # rate + burst + timer granularity
    assert times[-1] - times[0] >= 12 / 4 * 0.7


def test_as_completed_ends_when_a_task_is_not_found(sim: Simulator) -> None:
    real = sim.submit(model="seedream-4.0", latency=5)
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as w:
        w.watch(real, "task_ghost")
        assert [t.id for t in w.as_completed(timeout=30)] == [real]
        assert [t.id for t in w.as_completed(timeout=30)] == [real]  # also once already ended


def test_watching_from_the_kernel_while_the_engine_polls_loses_nothing(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [sim.submit(model="eleven-v3", latency=0.5 + i * 0.01) for i in range(300)]
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED, rate_limit=50) as w:
        for task_id in ids:  # one at a time: the engine thread iterates states meanwhile
            w.watch(task_id)
            _ = w.pending, w.polls
        final = w.wait(timeout=60)
    assert set(final) == set(ids)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class BrokenStore(MemoryStore):
    """A journal whose writes fail (a full disk, a corrupt file)."""

    def add_many(self, events: object, *, wait: float | None = None) -> None:
        raise OSError("disk full")


def test_a_failing_journal_never_stops_waits_or_callbacks(sim: Simulator) -> None:
    ids = [sim.submit(model="seedream-4.0", latency=3) for _ in range(3)]
    done: list[str] = []
    w = TaskWatcher(sim.api_key, sim.url, store=BrokenStore(), display="none", time_scale=SPEED)
    w.on_done(lambda t: done.append(t.id))
    w.watch(ids)
    assert set(w.wait(timeout=30)) == set(ids)
    assert sorted(done) == sorted(ids)
    assert "disk full" in (w.snapshot().notice or "")
    with pytest.warns(UnwrittenWarning, match="kept on the watcher's `unwritten` attribute"):
        w.stop()  # a journal with no file: what it could not write stays on the watcher
    assert w.unwritten is not None and {e.task_id for e in w.unwritten.events} == set(ids)


def test_a_locked_journal_does_not_stall_polling(sim: Simulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    ids = [sim.submit(model="seedream-4.0", latency=lat) for lat in (3, 5, 8)]
    with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as w:
        w.watch(ids)
        other = sqlite3.connect(journal, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            assert set(w.wait(timeout=10)) == set(ids)  # not 30 s per write
            assert "delayed" in (w.snapshot().notice or "")
        finally:
            other.execute("COMMIT")
            other.close()
        frame = w.history()
    assert set(frame["task_id"]) == set(ids)
    assert (frame["status"] == "succeeded").all()


def test_timeout_none_is_accepted(sim: Simulator) -> None:
    task_id = sim.submit(model="seedream-4.0", latency=2)
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED, timeout=None) as w:
        w.watch(task_id)
        assert w.wait(timeout=30)[task_id].status == "succeeded"


def _open_fds(path: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    return [str(p) for p in fds.iterdir() if str(path) in os.path.realpath(p)]


def test_stop_closes_the_journal_and_ends_the_thread(sim: Simulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    before = len(_threads())
    w = TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED)
    w.watch(sim.submit(model="seedream-4.0", latency=2))
    w.wait(timeout=30)
    assert _open_fds(journal)
    w.stop()
    assert not _open_fds(journal)
    assert len(_threads()) == before
    assert running_engines() == []


def test_stop_from_a_callback(sim: Simulator) -> None:
    task_id = sim.submit(model="seedream-4.0", latency=2)
    w = TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED)
    stopped = threading.Event()

    @w.on_done
    def stop(task: Task) -> None:
        w.stop()
        stopped.set()

    w.watch(task_id)
    assert stopped.wait(30)
    assert w.callback_errors == []
    deadline = time.monotonic() + 10
    while _threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _threads() == []


def test_polling_resumes_once_the_key_works_again(sim: Simulator) -> None:
    key = sim.api_key
    task_id = sim.submit(model="seedream-4.0", latency=3)
    sim.api_key = "river_test_rotated-key"  # the server refuses our key for a while
    with TaskWatcher(key, sim.url, store=None, display="none", time_scale=SPEED) as w:
        w.watch(task_id)
        with pytest.raises(AuthenticationError):
            w.wait(timeout=10)
        sim.api_key = key  # fixed on the server's side
        w.resume_polling()  # the panel's Resume: try the key at once
        assert w.wait(timeout=30)[task_id].status == "succeeded"
        assert w.auth_error is None


def test_the_key_is_probed_again_without_being_asked(sim: Simulator) -> None:
    key = sim.api_key
    task_id = sim.submit(model="seedream-4.0", latency=3)
    sim.api_key = "river_test_rotated-key"
    with TaskWatcher(key, sim.url, store=None, display="none", time_scale=SPEED) as w:
        w.watch(task_id)
        with pytest.raises(AuthenticationError):
            w.wait(timeout=10)
        refused = sim.requests[task_id]
        sim.api_key = key
        deadline = time.monotonic() + 30
        while w.auth_error is not None and time.monotonic() < deadline:  # probed every max_interval
            time.sleep(0.05)
        assert w.wait(timeout=30)[task_id].status == "succeeded"
        assert sim.requests[task_id] <= refused + 5  # a probe, not a hammering


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://example.com", False),
        ("http://10.0.0.1:8080", False),
        ("http://modelhunter.ai.evil", False),
        ("http://127.0.0.1:1", True),
        ("http://localhost:8765", True),
        ("http://[::1]:8765", True),
        ("https://example.com", True),
    ],
)
def test_plain_http_only_to_this_machine(url: str, ok: bool) -> None:
    from mh_notebook import Client

    if ok:
        Client("river_test_key", url).close()
        return
    with pytest.raises(ConfigurationError, match="unencrypted"):
        Client("river_test_key", url)
    with pytest.raises(ConfigurationError, match="unencrypted"):
        TaskWatcher("river_test_key", url, store=None, display="none")
    Client("river_test_key", url, allow_insecure_http=True).close()  # the explicit opt-in


class Shell:
    """Stands for Colab's shell: a subclass of ZMQInteractiveShell under another name."""

    kernel = object()


@pytest.mark.parametrize(("shell", "mode"), [(Shell(), "auto"), (object(), "text"), (None, "text")])
def test_display_auto_detects_a_kernel_by_its_kernel_attribute(
    monkeypatch: pytest.MonkeyPatch, shell: object, mode: str
) -> None:
    import IPython

    from mh_notebook.watcher.settings import resolve_display as _resolve_display

    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    assert _resolve_display("auto") == mode


def test_history_is_scoped_and_read_history_is_whole(sim: Simulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    first = [sim.submit(model="seedream-4.0", latency=2) for _ in range(2)]
    second = [sim.submit(model="eleven-v3", latency=2) for _ in range(3)]
    with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as a:
        a.watch(first)
        a.wait(timeout=30)
    with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as b:
        b.watch(second)
        b.wait(timeout=30)
        assert sorted(b.history()["task_id"]) == sorted(second)
        assert set(b.events()["task_id"]) == set(second)
        assert set(b.latency_summary().index.get_level_values("model")) == {"eleven-v3"}
    whole = read_history(journal)
    assert sorted(whole["task_id"]) == sorted(first + second)
    assert set(whole["base_url"]) == {sim.url}


def test_learned_latencies_are_real_seconds_and_stay_with_their_api(sim: Simulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    ids = [sim.submit(model="seedream-4.5", outcome="succeeded", latency=lat) for lat in (5, 6, 7, 6)]
    with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as w:
        w.watch(ids)
        w.wait(timeout=30)
    key = ("bytedance", "seedream-4.5")
    with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as same:
        _settled(same)
        window = same.engine.latency.window(key)
        assert window is not None
        assert window[0] <= 0.05 <= 0.07 <= window[1] < 0.2  # real seconds at speed 100
    with (
        Simulator(seed=2, speed=SPEED) as other,  # another API (another base URL)
        TaskWatcher(other.api_key, other.url, store=journal, display="none") as elsewhere,
    ):
        _settled(elsewhere)
        assert elsewhere.engine.latency.window(key) is None


def test_a_models_first_end_borrows_its_types_scatter_live_and_from_the_journal(
    sim: Simulator, tmp_path: Path
) -> None:
    journal = tmp_path / "j.sqlite"
    known = [
        sim.submit(model=model, outcome="succeeded", latency=lat)
        for model, lats in (("seedream-4.5", (5, 6, 7)), ("seedream-4.0", (4, 5, 4.5)))
        for lat in lats
    ]
    new = sim.submit(model="nano-banana-2", outcome="succeeded", latency=6)
    key = ("google", "nano-banana-2")
    with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as w:
        w.watch(known)
        w.wait(timeout=30)
        w.watch(new)
        w.wait(timeout=30)
        _settled(w)
        assert w.engine.latency.count(key) == 1
        assert w.engine.latency.window(key) is not None  # one end of its own is enough
    with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as again:
        _settled(again)
        window = again.engine.latency.window(key)
        assert window is not None and window[0] < 0.06 < window[1]  # real seconds at speed 100


def test_two_watchers_of_one_journal_file_write_each_change_once(sim: Simulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    task_id = sim.submit(model="seedream-4.0", outcome="succeeded", latency=3)
    with (
        TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as a,
        TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as b,
    ):
        a.watch(task_id)
        b.watch(task_id)
        a.wait(timeout=30)
    statuses = [e.status for e in read_history_events(journal) if e.task_id == task_id]
    assert statuses.count("succeeded") == 1


def read_history_events(journal: Path) -> Iterator[Event]:
    from mh_notebook.journal.sqlite import SQLiteStore

    store = SQLiteStore(journal)
    try:
        yield from store.events()
    finally:
        store.close()


def test_history_after_stop_reads_the_closed_journal(sim: Simulator, tmp_path: Path) -> None:
    task_id = sim.submit(model="seedream-4.0", latency=2)
    with TaskWatcher(
        sim.api_key, sim.url, store=tmp_path / "j.sqlite", display="none", time_scale=SPEED
    ) as w:
        w.watch(task_id)
        w.wait(timeout=30)
    assert w.store.closed
    assert w.tasks[task_id].status == "succeeded"  # what it knew stays readable
    assert w.snapshot().counts == {"succeeded": 1}
    assert list(w.history()["status"]) == ["succeeded"]
    assert not _open_fds(tmp_path / "j.sqlite")


# --------------------------------------------------------- a misbehaving world: the journal
LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""


@contextlib.contextmanager
def _locked_by_another_process(journal: Path) -> Iterator[None]:
    """Another process holds ``journal``'s write lock (``BEGIN EXCLUSIVE``) until the block ends."""
    SQLiteStore(journal).close()  # the file exists, in WAL mode, at the current schema
    child = subprocess.Popen([sys.executable, "-c", LOCKER, str(journal)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "locked"
        yield
    finally:
        child.stdin.write("\n")
        child.stdin.close()
        child.wait(30)


def _journalled(journal: Path, ids: list[str], timeout: float = 30.0) -> pd.DataFrame:
    """The journal's history once every one of ``ids`` has ended in it (read from the file)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = read_history(journal).set_index("task_id")
        ended = frame.reindex(ids)["status"].isin(["succeeded", "failed", "cancelled"])
        if ended.all() or time.monotonic() > deadline:
            return frame
        time.sleep(0.2)


def test_a_journal_locked_by_another_process_never_stalls_polling(sim: Simulator, tmp_path: Path) -> None:
    """Promise: "never stalls polling" (issue 17, item 2). While another process holds the SQLite
    journal's lock, watch() returns at once, polling goes on and tasks end, history() and
    events() answer at once with everything observed, and once the lock goes everything is
    written to the file."""
    journal = tmp_path / "j.sqlite"
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=100 + 20 * i) for i in range(6)]
    with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as w:
        with _locked_by_another_process(journal):
            started = time.monotonic()
            w.watch(ids)
            assert time.monotonic() - started < 5  # not SQLite's 30 s busy timeout
            assert set(w.wait(timeout=30)) == set(ids)
            assert "delayed" in (w.snapshot().notice or "")
            started = time.monotonic()
            frame, events = w.history().set_index("task_id"), w.events()
            assert time.monotonic() - started < 5
            assert (frame.loc[ids, "status"] == "succeeded").all()
            assert (frame.loc[ids, "base_url"] == sim.url).all()  # the watched rows, not yet written
            assert set(events[events["status"] == "succeeded"]["task_id"]) == set(ids)
            assert read_history(journal).empty  # really nothing written yet
        written = _journalled(journal, ids)
        assert (written.loc[ids, "status"] == "succeeded").all()
        assert (written.loc[ids, "base_url"] == sim.url).all()
        assert w.unwritten is None


class CountingStore(SQLiteStore):
    """A SQLite journal that counts the poller's tries to write events."""

    tries = 0

    def add_many(self, events: Iterable[Event], *, wait: float | None = None) -> None:
        self.tries += 1
        super().add_many(events, wait=wait)


def test_a_long_lock_costs_the_poller_a_few_tries_not_one_per_change(sim: Simulator, tmp_path: Path) -> None:
    """Promise: "never stalls polling" (issue 17, item 2). Each try waits up to 50 ms for the
    lock; while a journal stays locked, the engine tries again every 0.5 s, not at every
    change (one try per change cost 3.5x the time for 40 tasks)."""
    journal = tmp_path / "j.sqlite"
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=100 + 5 * i) for i in range(30)]
    store = CountingStore(journal)
    with TaskWatcher(sim.api_key, sim.url, store=store, display="none", time_scale=SPEED, rate_limit=50) as w:
        with _locked_by_another_process(journal):
            started = time.monotonic()
            w.watch(ids)
            w.wait(timeout=60)
            elapsed = time.monotonic() - started
            changes = len(w.engine.pending(store).events)
            assert changes >= len(ids)  # each end at least, all waiting
            assert store.tries <= 2 * (elapsed / 0.5 + 2)  # a batch and an empty probe per retry
        _journalled(journal, ids)
    store.close()


class WatchedLaterStore(SQLiteStore):
    """A SQLite journal busy for the watched list only, until told otherwise."""

    busy = True

    def add_watched(self, items: Iterable[Watched], *, wait: float | None = None) -> None:
        if self.busy:
            raise JournalBusyError("busy for the watched list")
        super().add_watched(items, wait=wait)


def test_a_task_is_watched_in_the_journal_before_its_events_appear(sim: Simulator, tmp_path: Path) -> None:
    """Promise: what waits is written in order (issue 17, "bounded waits"): a task's watched row
    before its events, so a reader of the file never sees a change of a task without its API."""
    journal = tmp_path / "j.sqlite"
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=30 + 10 * i) for i in range(3)]
    store = WatchedLaterStore(journal)
    with TaskWatcher(sim.api_key, sim.url, store=store, display="none", time_scale=SPEED) as w:
        w.watch(ids)
        w.wait(timeout=30)
        _settled(w)
        assert read_history(journal).empty  # the events wait behind the watched rows
        store.busy = False
        frame = _journalled(journal, ids)
        assert (frame.loc[ids, "base_url"] == sim.url).all()
    store.close()


def test_stop_while_the_journal_is_locked_names_and_keeps_what_is_unwritten(
    sim: Simulator, tmp_path: Path
) -> None:
    """Promise: "loses nothing" (issue 17, item 9). stop() while another process holds the
    journal waits a bounded time, then warns naming each unwritten event, keeps them on
    ``unwritten`` and next to the journal; history() still has them; the journal's next
    opening writes them in."""
    journal = tmp_path / "j.sqlite"
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=50 + 10 * i) for i in range(3)]
    w = TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED)
    with _locked_by_another_process(journal):
        w.watch(ids)
        w.wait(timeout=30)
        started = time.monotonic()
        with pytest.warns(UnwrittenWarning, match="could not write") as caught:
            w.stop()
        assert time.monotonic() - started < STOP_WAIT + 10
        message = str(caught[0].message)
        assert all(f"{task_id} succeeded" in message for task_id in ids)
        assert w.unwritten is not None
        assert {e.task_id for e in w.unwritten.events if e.status == "succeeded"} == set(ids)
        assert {r.task_id for r in w.unwritten.watched} == set(ids)
        assert unwritten_path(journal).exists() and str(unwritten_path(journal)) in message
        assert (w.history().set_index("task_id").loc[ids, "status"] == "succeeded").all()
    frame = read_history(journal).set_index("task_id")  # opening it writes them in
    assert (frame.loc[ids, "status"] == "succeeded").all() and (frame.loc[ids, "base_url"] == sim.url).all()
    assert not unwritten_path(journal).exists()


ODD = "nul\x00 lone\ud800 bell\x07 esc\x1b[31m tab\t nl\n é 🙂"


def test_odd_server_text_never_blocks_the_journal(sim: Simulator, tmp_path: Path) -> None:
    """Promise: "loses nothing" (issue 17, item 7). NULs, lone surrogates and control characters
    in every string the server lets a task carry: nothing blocks, every task ends in the
    journal (the text cleaned where the database refuses it), later tasks too."""
    journal = tmp_path / "j.sqlite"
    odd = [
        sim.submit(model="seedream-4.0", outcome="failed", latency=30, error_code=f"E\x00\ud83d{i}", error_message=ODD)
        for i in range(3)
    ]  # fmt: skip
    later = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=100 + 10 * i) for i in range(4)]
    with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as w:
        w.watch(odd + later)
        assert set(w.wait(timeout=30)) == set(odd + later)
    frame = read_history(journal).set_index("task_id")
    assert (frame.loc[odd, "status"] == "failed").all() and (frame.loc[later, "status"] == "succeeded").all()
    assert set(frame.loc[odd, "error_message"]) == {ODD.replace("\x00", "\ufffd").replace("\ud800", "\ufffd")}
    assert frame.loc[odd[0], "error_code"] == "E\ufffd\ufffd0"
    assert w.unwritten is None and w.engine.quarantined == []


@pytest.mark.parametrize("journal", ["memory", "sqlite"])
def test_odd_text_in_metadata_leaves_every_frame_readable(
    sim: Simulator, tmp_path: Path, journal: str
) -> None:
    """Promise: "loses nothing" (attack s25). A lone surrogate in a task's metadata is valid
    JSON (``"\\ud800"``): it made ``history()``, ``latency_summary()`` and ``read_history()``
    raise ``UnicodeEncodeError`` for every task (a DataFrame's text is UTF-8). Then, cleaned
    to U+FFFD, keys that differ only there became one column (values lost), and metadata
    nested 600 deep raised ``RecursionError``. Now a lone surrogate is written as its
    escape: every key its own column, every value kept."""
    store = None if journal == "memory" else tmp_path / "j.sqlite"
    deep: dict[str, object] = {"leaf": "x"}
    for _ in range(600):
        deep = {"d": deep}
    tags = [
        {"k": "fine"},
        {"k": ODD},
        {ODD: 1},
        dict(zip(["run\ud800", "run\udc00", "run\ufffd"], "ABC", strict=True)),
        deep,
    ]
    escaped = ODD.replace("\ud800", "\\ud800")
    with TaskWatcher(sim.api_key, sim.url, store=store, display="none", time_scale=SPEED) as w:
        # submitted here: the creation's metadata is known whether or not a GET repeats it
        image = {"prompt": "a pier"}
        ids = [
            w.submit("seedream/text-to-image", model="seedream-4-5", input=image, metadata=t) for t in tags
        ]
        w.wait(timeout=30)
        frames = [w.history(), *([read_history(store)] if store is not None else [])]
        assert len(w.latency_summary()) == 1
    for frame in frames:
        frame = frame.set_index("task_id")
        assert list(frame.loc[ids[:3], "metadata.k"].fillna("-")) == ["fine", escaped, "-"]
        assert frame.loc[ids[2], f"metadata.{escaped}"] == 1
        runs = ["metadata.run\\ud800", "metadata.run\\udc00", "metadata.run\ufffd"]
        assert list(frame.loc[ids[3], runs]) == ["A", "B", "C"]
        assert frame.loc[ids[4], "metadata." + "d." * 600 + "leaf"] == "x"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    from pg_server import postgres_server

    with postgres_server() as server:
        yield server.new_database()


@pytest.mark.postgres
def test_odd_server_text_never_blocks_a_postgresql_journal(sim: Simulator, pg_url: str) -> None:
    """Promise: "loses nothing" (issue 17, item 7) with PostgreSQL, which refuses NUL in text:
    every task ends in the journal, later ones too."""
    odd = [
        sim.submit(model="seedream-4.0", outcome="failed", latency=30, error_message=ODD) for _ in range(2)
    ]
    later = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=100 + 10 * i) for i in range(3)]
    with TaskWatcher(sim.api_key, sim.url, store=pg_url, display="none", time_scale=SPEED) as w:
        w.watch(odd + later)
        assert set(w.wait(timeout=60)) == set(odd + later)
    frame = read_history(pg_url).set_index("task_id")
    assert (frame.loc[odd, "status"] == "failed").all() and (frame.loc[later, "status"] == "succeeded").all()
    assert set(frame.loc[odd, "error_message"]) == {ODD.replace("\x00", "\ufffd").replace("\ud800", "\ufffd")}
    assert w.unwritten is None and w.engine.quarantined == []


def test_an_event_the_journal_refuses_is_quarantined_and_blocks_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    """Promise: "loses nothing" (issue 17, item 7). An event a working journal refuses (here a
    trigger of the database) is retried alone, quarantined with the reason and logged; every
    event before and after it is written."""
    journal = tmp_path / "j.sqlite"
    SQLiteStore(journal).close()
    db = sqlite3.connect(journal)
    db.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.error_code = 'POISON' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    )
    db.commit()
    db.close()
    bad = sim.submit(model="seedream-4.0", outcome="failed", latency=30, error_code="POISON")
    good = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=60 + 20 * i) for i in range(4)]
    with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as w:
        w.watch([bad, *good])
        assert set(w.wait(timeout=30)) == {bad, *good}
        frame = _journalled(journal, good)
        assert (frame.loc[good, "status"] == "succeeded").all()
        assert frame.loc[bad, "status"] != "failed"  # its earlier events are there, the refused one is not
        assert "refused" in (w.snapshot().notice or "")
    assert w.unwritten is None
    quarantined = w.engine.quarantined
    assert [(q.event.task_id, q.event.status) for q in quarantined] == [(bad, "failed")]
    assert "poisoned" in quarantined[0].reason


def test_one_journal_file_under_two_spellings_is_learned_from_once(sim: Simulator, tmp_path: Path) -> None:
    """Promise: a journal teaches the latency model once per engine (issue 17, item 21e), however
    its path is spelled (a symlink, ``x/../x``)."""
    (tmp_path / "x").mkdir()
    journal = tmp_path / "x" / "j.sqlite"
    os.symlink(journal, tmp_path / "link.sqlite")
    ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=20 + i) for i in range(3)]
    with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as first:
        first.watch(ids)
        first.wait(timeout=30)
        key = (first.tasks[ids[0]].provider or "?", first.tasks[ids[0]].model or "?")
    spellings = [tmp_path / "link.sqlite", tmp_path / "x" / ".." / "x" / "j.sqlite", journal]
    watchers = [
        TaskWatcher(sim.api_key, sim.url, store=p, display="none", time_scale=SPEED) for p in spellings
    ]
    try:
        assert len({id(w.engine) for w in watchers}) == 1
        _settled(watchers[0])
        assert watchers[0].engine.latency.count(key) == 3
    finally:
        for w in watchers:
            w.stop()


def _all_ended(w: TaskWatcher, n: int) -> bool:
    tasks = w.tasks
    return len(tasks) == n and all(t.is_terminal for t in tasks.values())


def test_a_journal_busy_in_this_process_never_holds_up_keeping_results(
    sim: Simulator, tmp_path: Path
) -> None:
    """Promise: "never stalls polling" (issue 17, item 21d). The Keeper reads the journal (and
    writes files) off the poller's loop: while another thread of the kernel is inside a long
    journal write, a succeeded task's result is kept and every other task is still polled."""
    journal = tmp_path / "j.sqlite"
    first = sim.submit(model="seedream-4.0", outcome="succeeded", latency=30)
    others = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=150 + 10 * i) for i in range(4)]
    with TaskWatcher(
        sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED, save_to=tmp_path / "out"
    ) as w:
        with _locked_by_another_process(journal):
            user = threading.Thread(target=w.store.add_watched, args=([Watched("task_zz", sim.url, 0.0)],))
            user.start()  # the user's own write without a bound: holds the journal up to 30 s
            time.sleep(0.3)
            w.watch([first, *others])
            deadline = time.monotonic() + 20  # not after the user's 30 s
            while not _all_ended(w, 5) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _all_ended(w, 5)
            assert user.is_alive()
        user.join(40)
        assert set(w.wait(timeout=60)) == {first, *others}
        assert set(w.saved_files) == {first, *others}
