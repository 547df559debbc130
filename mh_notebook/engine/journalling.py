"""What the engine reads from and makes for a journal, besides the write queue.

The record of an observation, the counts and latencies a new engine learns from a journal,
and the first-seen times journalled before the server's clock was known (corrected on it).
"""

from __future__ import annotations

import logging

from ..journal.protocol import Store
from ..polling.clock import ClockOffset
from ..polling.state import Kind, Observation
from ..records import NOT_FOUND, Event, TaskStatus, event_from_task, latency_key
from .writes import JOURNAL_WAIT, store_key

__all__ = ["FirstSeen", "event_of", "journalled_polls", "learned"]

log = logging.getLogger("mh_notebook.engine")


class FirstSeen:
    """First-seen times journalled before the server's clock was known: per journal, task id
    -> (local time, journalled time); corrected once it is (poller thread)."""

    def __init__(self, clock: ClockOffset) -> None:
        self.clock = clock
        self._unsure: dict[object, tuple[Store, dict[str, tuple[float, float]]]] = {}

    def unsure(self, store: Store, ids: list[str], local: float, journalled: float) -> None:
        """First-seen times of ``ids`` journalled in ``store`` at ``journalled`` (``local`` here),
        maybe before the server's clock was known: corrected once it is."""
        unsure = self._unsure.setdefault(store_key(store), (store, {}))[1]
        unsure.update(dict.fromkeys(ids, (local, journalled)))
        self.correct()

    def correct(self, wait: float | None = JOURNAL_WAIT, only: Store | None = None) -> None:
        """Put first-seen times journalled before the server's clock was known on it (issue
        17, item 15), in every journal or ``only`` one; kept for the next tick while the
        clock is unknown or a journal busy."""
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
