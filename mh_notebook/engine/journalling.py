"""What the engine reads from and makes for a journal, besides the write queue.

The record of an observation, the counts and latencies a new engine learns from a journal,
and the first-seen and observation times journalled before the server's clock was known
(corrected on it).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator

from ..journal.protocol import ObservedFix, Store
from ..polling.clock import ClockOffset
from ..polling.state import Kind, Observation
from ..records import NOT_FOUND, Event, TaskStatus, event_from_task, latency_key
from .writes import JOURNAL_WAIT, JournalWrites, store_key

__all__ = [
    "CLOCK_SETTLE",
    "CLOCK_SURE",
    "FirstSeen",
    "ObservedTimes",
    "event_of",
    "journalled_polls",
    "learned",
]

CLOCK_SURE = 0.05
"""The server's clock is pinned once its offset's error is at most this (s): an observation
journalled while it is larger is corrected once it is."""
CLOCK_SETTLE = 30.0
"""An observation journalled while the clock was unsure is corrected this long after (s)
with the offset as then known, pinned or not (a slow network may never pin it), and forgotten."""
UNSURE_LIMIT = 20_000
"""Most observations per journal remembered for correction (the oldest are left as journalled)."""

log = logging.getLogger("mh_notebook.engine")


class FirstSeen:
    """First-seen times journalled before the server's clock was known: per journal, task id
    -> (local time, journalled time); corrected once it is (poller thread)."""

    def __init__(self, clock: ClockOffset) -> None:
        self.clock = clock
        self._unsure: dict[object, tuple[Store, dict[str, tuple[float, float]]]] = {}
        self._steps = clock.steps

    def _after_a_step(self) -> None:
        """A clock was stepped since: the times remembered stay as journalled (see
        :meth:`ObservedTimes._after_a_step`)."""
        if self.clock.steps != self._steps:
            self._unsure.clear()
            self._steps = self.clock.steps

    def unsure(self, store: Store, ids: list[str], local: float, journalled: float) -> None:
        """First-seen times of ``ids`` journalled in ``store`` at ``journalled`` (``local`` here),
        maybe before the server's clock was known: corrected once it is."""
        self._after_a_step()
        unsure = self._unsure.setdefault(store_key(store), (store, {}))[1]
        unsure.update(dict.fromkeys(ids, (local, journalled)))
        self.correct()

    def correct(self, wait: float | None = JOURNAL_WAIT, only: Store | None = None) -> None:
        """Put first-seen times journalled before the server's clock was known on it (issue
        17, item 15), in every journal or ``only`` one; kept for the next tick while the
        clock is unknown or a journal busy."""
        self._after_a_step()
        if not self._unsure or not self.clock.error <= 1.0:
            return
        for key, (store, unsure) in list(self._unsure.items()):
            if only is not None and key != store_key(only):
                continue
            fixes = [(t, old, self.clock.server_now(local)) for t, (local, old) in unsure.items()]
            fixes = [(t, old, new) for t, old, new in fixes if abs(new - old) > self.clock.error]
            try:
                if fixes and not store.closed:
                    store.correct_first_seen(fixes, wait=wait)
            except Exception:  # busy or broken, any store: tried again
                log.debug("first-seen times not corrected yet", exc_info=True)
                continue
            del self._unsure[key]


_Key = tuple[str, str, float, int]


class ObservedTimes:
    """Observations journalled while the server's clock was unsure (``error > CLOCK_SURE``):
    per journal, event identity -> local time; each corrected once the clock is pinned or
    ``CLOCK_SETTLE`` later, in the journal and in its write queue, then forgotten (issue 17)."""

    def __init__(self, clock: ClockOffset, writes: JournalWrites) -> None:
        self.clock = clock
        self.writes = writes
        self._unsure: dict[object, tuple[Store, dict[_Key, float]]] = {}
        self._lock = threading.Lock()  # the poller thread and a stopping watcher's flush
        self._steps = clock.steps

    def _after_a_step(self) -> None:
        """A clock was stepped since the remembered observations were journalled: the offset
        known now would move them by the step; they stay as journalled (attack s23)."""
        steps = self.clock.steps
        if steps != self._steps:
            with self._lock:
                self._unsure.clear()
                self._steps = steps

    def journalled(self, stores: list[Store], event: Event, local: float) -> None:
        """``event``, observed at local time ``local``, was queued for ``stores``: remembered
        for correction if the clock was unsure."""
        self._after_a_step()
        if self.clock.error <= CLOCK_SURE or not stores:
            return
        key = (event.task_id, str(event.status), event.observed_at, event.polls)
        with self._lock:
            for store in stores:
                unsure = self._unsure.setdefault(store_key(store), (store, {}))[1]
                unsure[key] = local
                if len(unsure) > UNSURE_LIMIT:  # the oldest stays as journalled
                    del unsure[next(iter(unsure))]

    def correct(
        self,
        now: float | None = None,
        *,
        only: Store | None = None,
        lock_wait: float = 0.0,
        final: bool = False,
    ) -> None:
        """Correct what is due (at local time ``now``; everything if ``final``: a journal
        left by its last watcher), in every journal or ``only`` one; what a busy journal or
        writer refused is tried again on the next call."""
        now = time.time() if now is None else now
        self._after_a_step()
        for key, store, due in self._due(now, only, final):
            fixes = [ObservedFix(t, s, p, at, self.clock.server_now(local)) for (t, s, at, p), local in due]
            fixes = [fix for fix in fixes if fix.corrected != fix.journalled]
            if self.writes.correct_observed(store, fixes, JOURNAL_WAIT, lock_wait, now=final):
                self._forget(key, [k for k, _ in due])

    def _due(
        self, now: float, only: Store | None, final: bool
    ) -> list[tuple[object, Store, list[tuple[_Key, float]]]]:
        """Per journal, the observations to correct now: all once the clock is pinned (or
        ``final``), else those journalled ``CLOCK_SETTLE`` ago."""
        pinned = final or self.clock.error <= CLOCK_SURE
        with self._lock:  # journalled in order: the settled ones come first
            due = [
                (key, store, list(unsure.items() if pinned else _settled(unsure, now)))
                for key, (store, unsure) in self._unsure.items()
                if only is None or key == store_key(only)
            ]
        return [(key, store, items) for key, store, items in due if items]

    def _forget(self, key: object, keys: list[_Key]) -> None:
        with self._lock:
            unsure = self._unsure.get(key, (None, {}))[1]
            for k in keys:
                unsure.pop(k, None)
            if not unsure:
                self._unsure.pop(key, None)

    def __len__(self) -> int:
        """Observations remembered for correction, over every journal."""
        with self._lock:
            return sum(len(unsure) for _, unsure in self._unsure.values())


def _settled(unsure: dict[_Key, float], now: float) -> Iterator[tuple[_Key, float]]:
    """The entries of ``unsure`` journalled ``CLOCK_SETTLE`` or more before ``now`` (in order)."""
    return itertools.takewhile(lambda item: now - item[1] >= CLOCK_SETTLE, unsure.items())


def event_of(obs: Observation, observed_at: float) -> Event:
    """The journal's record of ``obs``, observed at ``observed_at`` on the server's clock."""
    if obs.task is not None and obs.kind == Kind.CHANGE:
        return event_from_task(obs.task, observed_at, obs.polls)
    return Event(obs.task_id, NOT_FOUND, observed_at, obs.polls)


def journalled_polls(store: Store, task_ids: list[str]) -> dict[str, int]:
    """Requests the journal counts for these tasks (a SQL journal's; none if unreadable).

    Counts are cumulative and the journal keeps the largest: a new engine counts on from
    it, rather than the journal adding counts up, because journal writes are at least once
    (a batch written again, one change journalled by two watchers, a team member's event
    read back) and one process polls a task of a team journal at a time (its lease).
    """
    if not task_ids:
        return {}
    try:
        return {
            e.task_id: e.polls for e in store.latest_events(task_ids, wait=JOURNAL_WAIT)
        }  # watch() returns at once
    except Exception:  # a count is not worth failing watch() for
        log.debug("journalled counts of %d tasks not read", len(task_ids), exc_info=True)
        return {}


def learned(ends: list[Event]) -> list[tuple[str, str, str, float, bool]]:
    """Journalled ends as the poller learns them: latencies in seconds, as the server timed them."""
    return [
        (
            *latency_key(e.provider, e.model),
            e.type or "?",
            e.completed_at - e.created_at,
            e.status == TaskStatus.SUCCEEDED,
        )
        for e in ends
        if e.created_at is not None and e.completed_at is not None
    ]
