"""Observation times journalled while the server's clock was unsure are corrected once it is
known (engine.journalling.ObservedTimes): in every journal, in the write queue, never lost
nor duplicated (issue 19's "why p95 misses", first bullet)."""

from __future__ import annotations

import email.utils
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mh_notebook.engine.journalling import CLOCK_SETTLE, CLOCK_SURE, ObservedTimes
from mh_notebook.engine.writes import JournalWrites
from mh_notebook.journal.memory import MemoryStore
from mh_notebook.journal.protocol import JournalBusyError, ObservedFix, Store
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.polling.clock import ClockOffset
from mh_notebook.polling.policy import PollPolicy
from mh_notebook.polling.state import Kind, Observation
from mh_notebook.records import REDUCED_COLUMNS, Event, TaskStatus
from mh_notebook.sim import Simulator
from mh_notebook.watcher import TaskWatcher

SPEED = 20.0
SKEW = 30.0
PER_TASK = PollPolicy(list_polling=False)


def _until(condition: Callable[[], bool], timeout: float = 60.0, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(every)


def _spy_ends(w: TaskWatcher) -> dict[str, tuple[float, float]]:
    """Per task, the local time its end was first observed and the clock's error then (by
    wrapping the engine's observer: the engine has no public hook for it)."""
    poller, found = w.engine.poller, dict[str, tuple[float, float]]()
    inner = poller._on_observation

    def spy(obs: Observation) -> None:
        if obs.ended and obs.kind == Kind.CHANGE:
            found.setdefault(obs.task_id, (obs.observed_at, w.engine.clock.error))
        inner(obs)

    poller._on_observation = spy
    return found


def _journal(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | Path | None:
    if kind == "memory":
        return None
    if kind == "sqlite":
        return tmp_path / "journal.sqlite"
    url: str = request.getfixturevalue("url")
    return url


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgresql"])
def test_an_end_seen_before_the_clock_was_known_is_journalled_on_it(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = _journal(kind, tmp_path, request)
    with Simulator(seed=5, speed=SPEED, clock_skew=SKEW, whole_seconds=True) as sim:
        fast = sim.submit(model="seedream-4.5", outcome="succeeded", latency=0.1)  # ended at once
        slow = sim.submit(model="seedream-4.5", outcome="succeeded", latency=3600.0)
        time.sleep(0.2)
        # the first answer early in a server second: the Date header leaves the offset's
        # middle ~0.4 s off (a whole-second header says little until seconds turn over)
        _until(lambda: 0.02 <= time.time() % 1.0 <= 0.1, every=0.005)
        with TaskWatcher(
            sim.api_key, sim.url, store=store, display="none", time_scale=SPEED, policy=PER_TASK
        ) as w:
            seen = _spy_ends(w)
            w.watch([fast, slow])
            _until(lambda: fast in seen)
            local, error_then = seen[fast]
            _until(lambda: _pinned(w, slow))  # more answers pin the offset
            _until(lambda: len(w.engine._observed) == 0)  # corrected in the journal
            row = w.history().set_index("task_id").loc[fast]
            events = w.events()
    truth = local + SKEW  # the simulator runs in this process: its clock is ours plus the skew
    seen_end = row["completed_at"].timestamp() + row["detection_delay_s"]
    assert error_then > CLOCK_SURE  # journalled while unsure (else this tests nothing)
    assert abs(seen_end - truth) <= CLOCK_SURE + 1e-5, (seen_end - truth, error_then)
    mine = events[events["task_id"] == fast]
    assert mine["status"].astype(str).tolist().count("succeeded") == 1  # not duplicated, not lost
    end = mine[mine["status"] == "succeeded"]["observed_at"].iloc[0].timestamp()
    assert abs(end - truth) <= CLOCK_SURE + 1e-5
    log = [t for t, task_id, code in sim.request_log if task_id == fast and code == 200]
    assert log and min(log) <= local  # the simulator answered before the end was observed


def _pinned(w: TaskWatcher, task_id: str) -> bool:
    """Ask once more (a Date header at another phase of the second); True once pinned."""
    if w.clock_offset.error <= CLOCK_SURE:
        return True
    w.engine.refresh(task_id).result(timeout=30)
    time.sleep(0.013)  # the next request at another phase of the server's second
    return False


# --------------------------------------------------------------- the journal and its queue
class _Flaky(MemoryStore):
    """A memory journal that can refuse writes (busy) or write and then report failure (an
    acknowledgement lost on the way back)."""

    def __init__(self) -> None:
        super().__init__()
        self.mode = "ok"

    def add_many(self, events: Iterable[Event], *, wait: float | None = None) -> None:
        if self.mode == "busy":
            raise JournalBusyError("busy")
        super().add_many(events)
        if self.mode == "lost":
            raise JournalBusyError("the answer was lost")


class _FlakySQLite(SQLiteStore):
    """The same over a SQLite journal."""

    mode = "ok"

    def add_many(self, events: Iterable[Event], *, wait: float | None = None) -> None:
        if self.mode == "busy":
            raise JournalBusyError("busy")
        super().add_many(events, wait=wait)
        if self.mode == "lost":
            raise JournalBusyError("the answer was lost")


_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED]),
        st.sampled_from(["ok", "busy", "lost"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40)
@given(_EVENTS, st.booleans(), st.sampled_from(["memory", "sqlite"]))
def test_corrected_events_are_journalled_once_each_queued_or_written(
    steps: list[tuple[str, TaskStatus, str]], settle: bool, kind: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store: _Flaky | _FlakySQLite = _Flaky() if kind == "memory" else _FlakySQLite(Path(tmp) / "j.sqlite")
        try:  # a refused write's backoff over at once: the queue is corrected, not yet written
            with mock.patch("mh_notebook.engine.writes._RETRY_EVERY", 0.0):
                _check_corrections(store, steps, settle)
        finally:
            store.close()


def _check_corrections(
    store: _Flaky | _FlakySQLite, steps: list[tuple[str, TaskStatus, str]], settle: bool
) -> None:
    clock = ClockOffset(lo=SKEW - 0.5, hi=SKEW + 0.5, samples=1)  # unsure: the middle is the truth + 0.3
    writes = JournalWrites()
    observed = ObservedTimes(clock, writes)
    truth = SKEW - 0.3
    expected = []
    for n, (task_id, status, mode) in enumerate(steps):
        local = 1000.0 + n
        event = Event(task_id, status, clock.server_now(local), n)
        store.mode = mode
        writes.events(store, [event])
        writes.write(store, 0.0, now=True)  # as a retrying tick would
        observed.journalled([store], event, local)
        expected.append(event._replace(observed_at=local + truth))
    store.mode = "ok"
    if settle:  # a network that never pins the clock: corrected with the best known, later
        clock.lo, clock.hi = truth - 0.01, truth + 0.15
        observed.correct(now=1000.0 + len(steps))
        assert len(observed) == len(steps)  # not pinned, not due yet
        observed.correct(now=1000.0 + len(steps) + CLOCK_SETTLE)
        expected = [e._replace(observed_at=e.observed_at + 0.07) for e in expected]
        clock.lo, clock.hi = truth - 0.01, truth + 0.01  # pinned later: they are forgotten
    else:
        clock.lo, clock.hi = truth - 0.01, truth + 0.01  # pinned
        observed.correct(now=1000.0)
    assert len(observed) == 0
    observed.correct(now=1000.0)
    assert writes.write(store, 0.0, now=True)
    got = sorted(store.events(), key=lambda e: e.polls)
    assert [(e.task_id, e.status, e.polls) for e in got] == [(e.task_id, e.status, e.polls) for e in expected]
    assert [e.observed_at for e in got] == pytest.approx([e.observed_at for e in expected], abs=1e-9)


def test_a_task_summary_takes_its_times_from_the_corrected_events(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "j.sqlite")
    clock = ClockOffset(lo=-0.5, hi=0.5, samples=1)
    writes = JournalWrites()
    observed = ObservedTimes(clock, writes)
    for n, status in enumerate([TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED]):
        event = Event("t", status, 100.0 + n, n)
        writes.events(store, [event])
        observed.journalled([store], event, 100.0 + n)
    clock.lo, clock.hi = 0.39, 0.41
    observed.correct(now=100.0)
    (row,) = (r for r in store.reduced_rows() if r[0] == "t")
    got = dict(zip(REDUCED_COLUMNS, row, strict=True))
    assert (got["first_seen_at"], got["started_at"], got["seen_end"]) == pytest.approx((100.4, 101.4, 102.4))
    store.close()


def test_the_unsure_set_is_bounded_and_forgets_what_it_corrected() -> None:
    from mh_notebook.engine import journalling

    clock = ClockOffset(lo=-0.5, hi=0.5, samples=1)
    writes = JournalWrites()
    observed = ObservedTimes(clock, writes)
    store: Store = MemoryStore()
    limit = journalling.UNSURE_LIMIT
    for n in range(limit + 10):
        observed.journalled([store], Event(f"t{n}", TaskStatus.RUNNING, float(n), 1), float(n))
    assert len(observed) == limit
    clock.lo = clock.hi = 0.0
    observed.correct(now=0.0)
    assert len(observed) == 0


class _BusyOnce(MemoryStore):
    """A memory journal whose first correction finds it busy."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def correct_observed(self, items: Iterable[ObservedFix], *, wait: float | None = None) -> None:
        if not self.refused:
            self.refused += 1
            raise JournalBusyError("busy")
        super().correct_observed(items, wait=wait)


def test_a_busy_journal_is_corrected_later_and_a_leaving_one_with_the_best_known() -> None:
    clock = ClockOffset(lo=-0.5, hi=0.5, samples=1)
    writes = JournalWrites()
    observed = ObservedTimes(clock, writes)
    busy, leaving = _BusyOnce(), MemoryStore()
    event = Event("t", TaskStatus.SUCCEEDED, 100.0, 3)
    for store in (busy, leaving):
        writes.events(store, [event])
    observed.journalled([busy, leaving], event, 100.0)
    clock.lo, clock.hi = 0.1, 0.3  # better, not pinned
    observed.correct(now=101.0, only=leaving, lock_wait=0.1, final=True)  # its last watcher stops
    assert [e.observed_at for e in leaving.events()] == [pytest.approx(100.2)]
    assert len(observed) == 1  # the other journal's entry waits for the pin
    clock.lo, clock.hi = 0.11, 0.13
    with mock.patch("mh_notebook.engine.writes._RETRY_EVERY", 0.0):
        observed.correct(now=101.0)
        assert busy.refused == 1 and len(observed) == 1  # busy: kept for the next tick
        observed.correct(now=101.0)
    assert len(observed) == 0
    assert [e.observed_at for e in busy.events()] == [pytest.approx(100.12)]
    assert [e.observed_at for e in leaving.events()] == [pytest.approx(100.2)]  # forgotten there


def test_an_observation_from_before_a_clock_step_stays_as_journalled() -> None:
    # attack s23: the server's clock stepped +60 s before the offset was pinned; the offset
    # learned after the step, applied to a local time from before it, moved the end by 60 s
    clock = ClockOffset()
    clock.observe_date(99.0, 100.0, "Thu, 01 Jan 1970 00:01:40 GMT")  # offset in [-1, 1]: unsure
    writes = JournalWrites()
    observed = ObservedTimes(clock, writes)
    store = MemoryStore()
    event = Event("t", TaskStatus.SUCCEEDED, clock.server_now(100.0), 3)
    writes.events(store, [event])
    observed.journalled([store], event, 100.0)
    assert writes.write(store, 0.0, now=True) and len(observed) == 1
    for local in (200.0, 200.5):  # stepped by +60 s: the evidence contradicts the old interval
        clock.observe_date(local - 0.001, local, email.utils.formatdate(local + 60.3, usegmt=True))
    assert clock.steps == 1 and clock.error <= 1.0
    observed.correct(now=100.0 + CLOCK_SETTLE)  # settled: due with the best offset known
    assert len(observed) == 0  # forgotten, not corrected with the offset of after the step
    assert [e.observed_at for e in store.events()] == [event.observed_at]
