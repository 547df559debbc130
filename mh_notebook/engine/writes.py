"""The engine's journal write queue: what waits to be written to each journal, in order.

Writes happen in the poller thread but never stall it: each waits at most ``JOURNAL_WAIT``
seconds for another process's lock; what could not be written is kept in order and written
again on the next tick. A batch the journal refuses for another reason is written event by
event: an event the journal still refuses while it accepts others is cleaned
(:func:`~mh_notebook.store.clean_event`) or, failing that, quarantined, never blocking the
rest. What a leaving watcher's journal still lacks after ``STOP_WAIT`` is given up: named in
an :class:`UnwrittenWarning` and, for SQLite, kept in a file its next opening writes in.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from ..journal.protocol import (
    JournalBusyError,
    JournalError,
    ObservedFix,
    SavedResult,
    Store,
    Unwritten,
    Watched,
)
from ..journal.sqlite import write_unwritten
from ..records import Event, clean_event

__all__ = [
    "JOURNAL_WAIT",
    "STOP_WAIT",
    "JournalWrites",
    "Quarantined",
    "UnwrittenWarning",
    "store_key",
]

log = logging.getLogger("mh_notebook.engine")

JOURNAL_WAIT = 0.05
"""Longest a journal write from the poller thread waits for another process's lock (s)."""
STOP_WAIT = 5.0
"""Longest :meth:`Engine.detach` (a watcher's ``stop()``) tries to write what is waiting (s)."""
TICK = 0.1
"""The poller's tick (s): the longest one event-by-event write goes on."""
_RETRY_EVERY = 0.5
_BACKLOG_LIMIT = 1_000_000


class UnwrittenWarning(UserWarning):
    """``stop()`` could not write everything to the journal in time; the message names what
    is unwritten and where it is kept."""


class Quarantined(NamedTuple):
    """An event a working journal refused even cleaned: logged and kept here, never retried."""

    event: Event
    reason: str


@dataclass
class _Pending:
    """What waits to be written to one journal, in order."""

    watched: list[Watched] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    saved: dict[tuple[str, int], SavedResult] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.watched or self.events or self.saved)

    def copy(self) -> Unwritten:
        return Unwritten(list(self.watched), list(self.events), list(self.saved.values()))


class JournalWrites:
    """Per journal, the rows waiting to be written, and the one writer of them (any thread)."""

    def __init__(self) -> None:
        self._pending: dict[object, _Pending] = {}
        self._pending_lock = threading.Lock()  # guards the lists only, never held during I/O
        self._write_lock = threading.Lock()  # one writer of the pending rows at a time
        self._retry_at: dict[object, float] = {}  # journal -> when a failed write is tried again
        self.journal_error: str | None = None
        """Why the last journal write failed, until a write succeeds again."""
        self.quarantined: list[Quarantined] = []
        """Events a working journal refused even cleaned (each logged once)."""

    def watched(self, store: Store, rows: list[Watched]) -> None:
        """Record newly watched tasks: written now if the journal is free within
        ``JOURNAL_WAIT``, else kept and written by the poller thread."""
        if not rows:
            return
        try:
            store.add_watched(rows, wait=JOURNAL_WAIT)
        except Exception as exc:  # noqa: BLE001 - busy or broken, any store: kept, tried again
            with self._pending_lock:
                self._pending.setdefault(store_key(store), _Pending()).watched.extend(rows)
            self.journal_error = f"journal writes delayed: {_reason(exc)}"

    def events(self, store: Store, events: list[Event]) -> None:
        """Write now, or after what is already waiting for this journal (order is kept)."""
        if not events:
            return
        with self._pending_lock:
            waiting = self._pending.setdefault(store_key(store), _Pending()).events
            waiting.extend(events)
            if len(waiting) > _BACKLOG_LIMIT:
                log.error(
                    "journal backlog over %d events: the oldest %d dropped",
                    _BACKLOG_LIMIT,
                    len(waiting) - _BACKLOG_LIMIT,
                )
                del waiting[:-_BACKLOG_LIMIT]
        self.write(store, JOURNAL_WAIT)

    def saved(self, store: Store, rows: list[SavedResult]) -> None:
        """Journal saved result files (after the rows already waiting)."""
        with self._pending_lock:
            waiting = self._pending.setdefault(store_key(store), _Pending()).saved
            waiting.update(((r.task_id, r.idx), r) for r in rows)
        self.write(store, JOURNAL_WAIT)

    async def saved_now(self, store: Store, rows: list[SavedResult], tries: int = 200) -> None:
        """:meth:`saved`, then tried again every 50 ms (10 s in all) until written: a result
        is done once journalled, so a kernel restart right after ``on_done`` loses nothing
        (after the tries it waits with the others). Poller loop; it goes on meanwhile."""
        self.saved(store, rows)
        for _ in range(tries):
            waiting = self.pending(store).saved
            if store.closed or not any(row in waiting for row in rows):
                return
            await asyncio.sleep(0.05)
            self.write(store, JOURNAL_WAIT)

    def correct_observed(
        self, store: Store, fixes: list[ObservedFix], wait: float, lock_wait: float, *, now: bool = False
    ) -> bool:
        """Put these events on the server's clock in ``store``'s journal and in its queue;
        False (nothing changed) if the writer or the journal is busy.

        Under the writer's lock, so that no batch is on its way: the journal's rows are
        updated first (a batch written whose acknowledgement was lost included), then the
        queued events are corrected in place, so a retried batch writes the corrected event,
        once (the journal ignores an event it holds). A busy journal is tried again after
        ``_RETRY_EVERY`` (unless ``now``), as writes are."""
        key = store_key(store)
        if not fixes:
            return True
        if not now and time.monotonic() < self._retry_at.get(key, 0.0):
            return False
        if not self._write_lock.acquire(timeout=lock_wait):
            return False
        try:
            if not store.closed:
                store.correct_observed(fixes, wait=wait)
            with self._pending_lock:
                pending = self._pending.get(key)
                if pending is not None:
                    _correct_queued(pending.events, fixes)
        except Exception:
            log.debug("observation times not corrected yet", exc_info=True)
            self._retry_at[key] = time.monotonic() + _RETRY_EVERY
            return False
        finally:
            self._write_lock.release()
        return True

    def pending(self, store: Store) -> Unwritten:
        """What waits to be written to ``store``'s journal (copies)."""
        with self._pending_lock:
            return self._pending.get(store_key(store), _Pending()).copy()

    def behind(self) -> set[object]:
        """The keys of the journals something waits for."""
        with self._pending_lock:
            return {k for k, p in self._pending.items() if p}

    def settled(self, store: Store) -> bool:
        """True if nothing waits for ``store``."""
        with self._pending_lock:
            return not self._pending.get(store_key(store))

    def give_up(self, store: Store) -> Unwritten | None:
        """Forget what still waits for ``store``: named in an :class:`UnwrittenWarning` and
        kept next to a SQLite journal; None if nothing waited."""
        with self._pending_lock:
            left = self._pending.pop(store_key(store), None)
        if not left:
            return None
        unwritten = left.copy()
        _give_up(store, unwritten)
        return unwritten

    def write(self, store: Store, wait: float, *, lock_wait: float = 0.0, now: bool = False) -> bool:
        """Write what waits for ``store``: watched tasks, events, saved files. False if some
        of it is still waiting. Gives way to a writer in another thread after ``lock_wait`` s.

        After a failed try, the next waits ``_RETRY_EVERY`` (unless ``now``): a journal locked
        for long costs the poller thread ``JOURNAL_WAIT`` per retry, not per change.
        """
        key = store_key(store)
        if not now and time.monotonic() < self._retry_at.get(key, 0.0):
            return False
        if not self._write_lock.acquire(timeout=lock_wait):
            return False
        try:  # in this order, each only once the one before is written: a task is watched
            problem = (  # in the journal before its events appear there
                self._write_watched(store, key, wait)
                or self._write_events(store, key, wait)
                or self._write_saved(store, key, wait)
            )
        finally:
            self._write_lock.release()
        self.journal_error = problem
        if problem is None:
            self._retry_at.pop(key, None)
        else:
            self._retry_at[key] = time.monotonic() + _RETRY_EVERY
        return problem is None

    def _take(self, key: object, what: Literal["watched", "events"], n: int) -> None:
        """Forget the first ``n`` waiting ``what``: written or quarantined."""
        with self._pending_lock:
            pending = self._pending.get(key)
            if pending is not None:
                del getattr(pending, what)[:n]

    def _write_watched(self, store: Store, key: object, wait: float) -> str | None:
        with self._pending_lock:
            rows = list(self._pending[key].watched) if key in self._pending else []
        if not rows:
            return None
        try:
            store.add_watched(rows, wait=wait)
        except Exception as exc:  # noqa: BLE001 - busy or broken, any store: kept, tried again
            return f"journal writes delayed ({len(rows)} watched tasks pending): {_reason(exc)}"
        self._take(key, "watched", len(rows))
        return None

    def _write_events(self, store: Store, key: object, wait: float) -> str | None:
        """The waiting events in one transaction; if the journal refuses it for a reason other
        than a lock, one by one (a bad event must not hold up the others)."""
        with self._pending_lock:
            batch = list(self._pending[key].events) if key in self._pending else []
        if not batch:
            return None
        try:
            store.add_many(batch, wait=wait)
        except JournalBusyError as exc:
            return f"journal writes delayed ({len(batch)} pending): {exc.message}"
        except Exception:  # noqa: BLE001 - any store: find the event it refuses
            return self._write_one_by_one(store, key, batch, wait)
        self._take(key, "events", len(batch))
        return None

    def _write_one_by_one(self, store: Store, key: object, batch: list[Event], wait: float) -> str | None:
        """Write ``batch`` event by event, for one tick at most; an event refused by a journal
        that accepts an empty write is cleaned, and quarantined if still refused."""
        deadline = time.monotonic() + TICK
        for done, event in enumerate(batch):
            if time.monotonic() > deadline:
                return f"journal writes delayed ({len(batch) - done} pending): writing event by event"
            try:
                store.add_many([event], wait=wait)
            except Exception as exc:  # noqa: BLE001 - any store
                if isinstance(exc, JournalBusyError) or not _writable(store, wait):
                    return f"journal writes delayed ({len(batch) - done} pending): {_reason(exc)}"
                self._clean_or_quarantine(store, event, _reason(exc), wait)
            self._take(key, "events", 1)
        return None

    def _clean_or_quarantine(self, store: Store, event: Event, reason: str, wait: float) -> None:
        cleaned = clean_event(event)
        if cleaned != event:
            try:
                store.add_many([cleaned], wait=wait)
                log.warning(
                    "event %s/%s journalled with its text cleaned: %s", event.task_id, event.status, reason
                )
                return
            except Exception as exc:  # noqa: BLE001 - any store
                reason = _reason(exc)
        self.quarantined.append(Quarantined(event, reason))
        log.error("event %s/%s quarantined, the journal refuses it: %s", event.task_id, event.status, reason)

    def _write_saved(self, store: Store, key: object, wait: float) -> str | None:
        """Journal the saved result files waiting for ``store`` (kept for the next tick if busy)."""
        with self._pending_lock:
            rows = dict(self._pending[key].saved) if key in self._pending else {}
        if not rows:
            return None
        try:
            store.add_results(list(rows.values()), wait=wait)
        except Exception as exc:  # noqa: BLE001 - busy or broken, any store: kept, tried again
            return f"journal writes delayed ({len(rows)} saved files pending): {_reason(exc)}"
        with self._pending_lock:
            waiting = self._pending[key].saved if key in self._pending else {}
            for k, row in rows.items():
                if waiting.get(k) is row:
                    del waiting[k]
        return None


def store_key(store: Store) -> object:
    """One key per journal: its file for SQLite (several watchers may open one file, under
    several spellings of its path)."""
    return store.identity


def _correct_queued(events: list[Event], fixes: list[ObservedFix]) -> None:
    """Correct the queued ``events`` that ``fixes`` name, in place (one pass)."""
    by_key = {fix.old_key: fix.corrected for fix in fixes}
    for at, event in enumerate(events):
        corrected = by_key.get((event.task_id, event.status, event.observed_at, event.polls))
        if corrected is not None:
            events[at] = event._replace(observed_at=corrected)


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, JournalError) else f"{type(exc).__name__}: {exc}"


def _writable(store: Store, wait: float) -> bool:
    """Whether ``store`` accepts a write at all now (an empty transaction)."""
    try:
        store.add_many([], wait=wait)
    except Exception:  # noqa: BLE001 - any store: not now
        return False
    return True


def _give_up(store: Store, unwritten: Unwritten) -> None:
    """Say what a stop could not write, and keep it where it can be recovered."""
    path = store.path
    kept = "on the watcher's `unwritten` attribute"
    if path is not None:
        try:
            kept = (
                f"in {write_unwritten(path, unwritten)} (the journal's next opening writes it in) and {kept}"
            )
        except OSError as exc:
            kept += f" (not in a file: {exc})"
    named = ", ".join(f"{e.task_id} {e.status}" for e in unwritten.events[:20])
    more = f" and {len(unwritten.events) - 20} more" if len(unwritten.events) > 20 else ""
    message = (
        f"stop() could not write {len(unwritten.events)} events ({named}{more}), "
        f"{len(unwritten.watched)} watched tasks and {len(unwritten.saved)} saved files to the "
        f"journal {store.location} in time; they are kept {kept}"
    )
    log.warning("%s", message)
    warnings.warn(message, UnwrittenWarning, stacklevel=6)
