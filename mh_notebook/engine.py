"""The engine: one per API (base URL and key) per process, shared by every watcher of it.

It owns what must not multiply when a notebook cell is re-run: the poller thread, the
request budget (the API's limit is per key, not per watcher), the connection pool and
the journal writes. :class:`~mh_notebook.watcher.TaskWatcher` objects attach to it; a
task watched by several watchers is polled once, journalled once per journal file, and
every watcher of it sees its changes. The engine ends when its last watcher stops.

Observation times are journalled on the server's clock (local time plus the learned
offset, see :mod:`mh_notebook.clock`), so that every duration in a history is a
difference of two times on one clock, whatever the skew between the two machines.

Journal writes happen in the poller thread but never stall it: each waits at most
``JOURNAL_WAIT`` seconds for another process's lock; what could not be written is kept
in order and written again on the next tick (the watchers show a notice meanwhile). A
batch the journal refuses for another reason is written event by event: an event the
journal still refuses while it accepts others is cleaned (:func:`~mh_notebook.store.clean_event`)
or, failing that, quarantined (:attr:`Engine.quarantined`, logged), never blocking the rest.
A watcher's :meth:`~mh_notebook.watcher.TaskWatcher.stop` tries for ``STOP_WAIT`` seconds
at most; what is still unwritten is named in an :class:`UnwrittenWarning`, kept on the
watcher and, for SQLite, in a file next to the journal that its next opening writes in.

The results of succeeded tasks are kept by the engine's :class:`~mh_notebook.results.Keeper`
(:meth:`Engine.keep`): fetched once on the poller's loop, never holding up a poll; saved
files are journalled like events.

A watcher whose journal is shared by several processes (PostgreSQL) brings shared polling
(:mod:`mh_notebook.team`): its tasks are polled here only while this process holds their
lease, and the others' changes arrive from the journal. Team work runs in a thread of its
own (:class:`~mh_notebook.team.TeamThread`), never on the poller's loop: a database that
does not answer never holds up polling. A task followed through no team journal any more
is polled here again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, cast

from .client import AsyncClient, RetryPolicy
from .clock import ClockOffset
from .journal.protocol import JournalBusyError, JournalError, SavedResult, Store, Unwritten, Watched
from .journal.sqlite import write_unwritten
from .journal.team import TeamPolling, TeamThread
from .models import Task
from .policy import LatencyModel, PollPolicy
from .poller import Observation, Poller, TaskState
from .records import Event, clean_event, event_from_task
from .results import Keeper, KeepSpec, KeptResult

__all__ = [
    "JOURNAL_WAIT",
    "STOP_WAIT",
    "Engine",
    "Quarantined",
    "Subscriber",
    "UnwrittenWarning",
    "engine_for",
]

log = logging.getLogger("mh_notebook.engine")

JOURNAL_WAIT = 0.05
"""Longest a journal write from the poller thread waits for another process's lock (s)."""
STOP_WAIT = 5.0
"""Longest :meth:`Engine.detach` (a watcher's ``stop()``) tries to write what is waiting (s)."""
_TICK = 0.1
_RETRY_EVERY = 0.5
_BACKLOG_LIMIT = 1_000_000
_TEAM_CLOSE_WAIT = 3.0


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


class Subscriber(Protocol):
    """What the engine needs of a watcher (``TaskWatcher`` is one)."""

    store: Store
    rate_limit: float
    """The most requests per second this watcher allows against the API."""
    burst: float | None

    def watches(self, task_id: str) -> bool:
        """True if this watcher watches ``task_id``."""

    def observe(self, observation: Observation) -> None:
        """Called in the poller thread for each change of a watched task, once journalled."""

    def redraw(self) -> None:
        """Called in the poller thread every tick."""


class Engine:
    """The shared poller, budget and journal writer of one API in this process.

    Get it with :func:`engine_for`; attach watchers with :meth:`attach`.
    """

    def __init__(self, api_key: str, base_url: str, *, timeout: float | None, max_in_flight: int) -> None:
        self.base_url = base_url
        self._subs: list[Subscriber] = []
        self._lock = threading.RLock()
        self._pending: dict[object, _Pending] = {}
        self._pending_lock = threading.Lock()  # guards the lists only, never held during I/O
        self._write_lock = threading.Lock()  # one writer of the pending rows at a time
        self._retry_at: dict[object, float] = {}  # journal -> when a failed write is tried again
        self._seeded: set[object] = set()
        self._unsure_seen: dict[object, tuple[Store, dict[str, tuple[float, float]]]] = {}
        """First-seen times journalled before the server's clock was known: per journal,
        task id -> (local time, journalled time); corrected once it is (poller thread)."""
        self.journal_error: str | None = None
        """Why the last journal write failed, until a write succeeds again."""
        self.quarantined: list[Quarantined] = []
        """Events a working journal refused even cleaned (each logged once)."""
        self.team: TeamPolling | None = None
        """Shared polling through a team journal (PostgreSQL), once a watcher brings one."""
        self._team_thread: TeamThread | None = None
        self.clock = ClockOffset()
        """The server's clock relative to this machine's, learned from its answers."""
        self.poller = Poller(
            lambda: AsyncClient(
                api_key,
                base_url,
                timeout=timeout,
                retry=RetryPolicy(max_attempts=1),
                allow_insecure_http=True,  # the watcher checked the URL
                on_response=self.clock.observe_date,
            ),
            clock=self.clock,
            on_observation=self._observe,
            on_tick=self._tick,
            on_close=lambda: self.keeper.aclose(),
            max_in_flight=max_in_flight,
            tick_interval=_TICK,
            name=f"mh-poller {base_url}",
        )
        self.keeper = Keeper(self.poller, timeout=max(timeout or 60.0, 60.0))
        """Fetches, keeps and saves the results of succeeded tasks (see :meth:`keep`)."""

    def __repr__(self) -> str:
        return (
            f"Engine(base_url={self.base_url!r}, watchers={len(self._subs)}, "
            f"tasks={len(self.poller.states())}, rate_limit={self.poller.rate_limit:g}/s)"
        )

    @property
    def running(self) -> bool:
        """True until the last watcher has detached."""
        return self.poller.running

    @property
    def latency(self) -> LatencyModel:
        """What the engine has learned of latencies (real seconds) for this API."""
        return self.poller.latency

    # ------------------------------------------------------------ watchers
    def attach(self, sub: Subscriber) -> None:
        """Add a watcher: the budget becomes the lowest limit of all, and its journal teaches."""
        with self._lock:
            self._subs.append(sub)
            self._apply_rate()
            fresh = _store_key(sub.store) not in self._seeded
            self._seeded.add(_store_key(sub.store))
            if self.team is None and _is_team(sub.store):
                self.team = TeamPolling(sub.store, self.poller)  # type: ignore[arg-type]
                if self._team_thread is None:
                    self._team_thread = TeamThread(f"mh-team {self.base_url}")
        if fresh:
            ends = sub.store.recent_ends(2000, self.base_url)
            self.poller.call_soon(self.poller.learn, _learned(ends))

    def detach(self, sub: Subscriber, timeout: float = STOP_WAIT) -> Unwritten | None:
        """Remove a watcher: its journal is written (``timeout`` seconds at most), tasks nobody
        else watches are dropped, and the engine stops with its last watcher.

        Returns what could not be written to the watcher's journal (also named in an
        :class:`UnwrittenWarning` and, for SQLite, kept in
        :func:`~mh_notebook.store.unwritten_path`), or None when everything was written or
        another watcher of the same journal writes it on.
        """
        with _REGISTRY_LOCK, self._lock:
            if sub not in self._subs:
                return None
            self._subs.remove(sub)
            mine = [s for s in self.poller.states() if sub.watches(s.task_id)]
            ids = [s.task_id for s in mine]
            self.poller.unwatch(t for t in ids if not any(o.watches(t) for o in self._subs))
            last = not self._subs
            handed_over = self._hand_over_team(sub)
            if last:
                _REGISTRY.pop(_registry_key(self), None)
            else:
                self._apply_rate()
        self._journal_counts(sub.store, mine)
        if handed_over is not None:  # our leases given back before the journal closes, if it answers
            concurrent.futures.wait([handed_over], timeout=_TEAM_CLOSE_WAIT)
        unwritten = self._settle(sub.store, timeout)
        if last:
            self.poller.stop()
            if self._team_thread is not None:
                self._team_thread.stop()
        return unwritten

    def _settle(self, store: Store, timeout: float) -> Unwritten | None:
        """Write what waits for ``store`` of a leaving watcher; give up what is left, unless
        another attached watcher writes the same journal."""
        key = _store_key(store)
        if any(_store_key(o.store) == key for o in self.subscribers()):
            return None
        self.flush(store, timeout)
        with self._pending_lock:
            left = self._pending.pop(key, None)
        if not left:
            return None
        unwritten = left.copy()
        _give_up(store, unwritten)
        return unwritten

    def _hand_over_team(self, leaving: Subscriber) -> concurrent.futures.Future[None] | None:
        """Shared polling goes on through a journal a remaining watcher holds open (the
        leaving one closes its own), or ends with the last team watcher; the future of the
        old leases given back (in the team thread). Tasks nobody follows through a team any
        more are polled here again (see :meth:`_poll_unfollowed`)."""
        team = self.team
        if team is None or team.journal is not cast(object, leaving.store) or self._team_thread is None:
            return None
        remaining = next((o.store for o in self._subs if _is_team(o.store)), None)
        self.team = TeamPolling(remaining, self.poller) if remaining is not None else None  # type: ignore[arg-type]
        return self._team_thread.run(team.close)  # our leases: given back, or expire in 5 s

    def watch(
        self,
        sub: Subscriber,
        items: Iterable[str | Task],
        policy: PollPolicy,
        fresh: Iterable[str] = (),
        seen: tuple[float, float] | None = None,
    ) -> list[str]:
        """Poll these tasks for ``sub`` (once, whoever else watches them); returns their ids.

        ``fresh`` are the ids new to ``sub``: what is known of them already is journalled in
        its journal unless another watcher of that journal watches them too. ``seen`` is
        ``(local time, first_seen_at journalled)`` of ``fresh``: corrected in the journal
        once the server's clock is known, if it was not then.
        """
        items = list(items)
        mine = _store_key(sub.store)
        with self._lock:
            ids = list(fresh)
            others = [o for o in self._subs if o is not sub and _store_key(o.store) == mine]
            new_here = [s for s in self.poller.states(ids) if not any(o.watches(s.task_id) for o in others)]
        events = [  # a journal new to a known task gets its state so far
            event_from_task(s.task, self.clock.server_now(s.fetched_at or 0.0), s.polls)
            for s in new_here
            if s.task is not None
        ]
        if events:
            self.poller.call_soon(self._journal_many, sub.store, events)
        if seen is not None and ids:
            self.poller.call_soon(self._first_seen_unsure, sub.store, ids, *seen)
        spent = _journalled_polls(sub.store, [i for i in ids if self.poller.state(i) is None])
        return self.poller.watch(items, policy, leased=not _is_team(sub.store), polls=spent)

    def _journal_counts(self, store: Store, states: list[TaskState]) -> None:
        """Journal the requests spent on unfinished tasks since their last change, so that
        the next engine watching them counts on from there (issue 17, item 16)."""
        events = [
            event_from_task(s.task, self.clock.server_now(s.fetched_at or 0.0), s.polls)
            for s in states
            if s.task is not None and not s.ended and s.polls > s.reported_polls
        ]
        self._journal_many(store, events)  # queued in order (any thread), written as it can be

    def journal_watched(self, store: Store, rows: list[Watched]) -> None:
        """Record newly watched tasks (any thread): written now if the journal is free within
        ``JOURNAL_WAIT``, else kept and written by the poller thread."""
        if not rows:
            return
        try:
            store.add_watched(rows, wait=JOURNAL_WAIT)
        except Exception as exc:  # noqa: BLE001 - busy or broken, any store: kept, tried again
            with self._pending_lock:
                self._pending.setdefault(_store_key(store), _Pending()).watched.extend(rows)
            self.journal_error = f"journal writes delayed: {_reason(exc)}"

    def pending(self, store: Store) -> Unwritten:
        """What waits to be written to ``store``'s journal (copies; any thread)."""
        with self._pending_lock:
            return self._pending.get(_store_key(store), _Pending()).copy()

    def keep(self, task: Task, spec: KeepSpec) -> concurrent.futures.Future[list[KeptResult]]:
        """Keep ``task``'s results as ``spec`` asks (on the poller's loop); saved files are
        journalled in ``spec.store`` before the future is done."""
        return self.poller.spawn(lambda: self._keep(task, spec))

    async def _keep(self, task: Task, spec: KeepSpec) -> list[KeptResult]:
        kept = await self.keeper.keep_task(task, spec)
        rows = [row for row in (k.saved() for k in kept) if row is not None]
        if rows and not spec.store.closed:  # a watcher stopped meanwhile closed its journal
            with self._pending_lock:
                waiting = self._pending.setdefault(_store_key(spec.store), _Pending()).saved
                waiting.update(((r.task_id, r.idx), r) for r in rows)
            self._write_pending(spec.store, JOURNAL_WAIT)
        return kept

    def _first_seen_unsure(self, store: Store, ids: list[str], local: float, journalled: float) -> None:
        if hasattr(store, "correct_first_seen"):
            unsure = self._unsure_seen.setdefault(_store_key(store), (store, {}))[1]
            unsure.update(dict.fromkeys(ids, (local, journalled)))
        self._correct_first_seen()

    def _correct_first_seen(self, wait: float | None = JOURNAL_WAIT, only: Store | None = None) -> None:
        """Put first-seen times journalled before the server's clock was known on it (issue
        17, item 15), in every journal or ``only`` one; kept for the next tick while the
        clock is unknown or a journal busy."""
        if not self._unsure_seen or not self.clock.error <= 1.0:
            return
        for key, (store, unsure) in list(self._unsure_seen.items()):
            if only is not None and key != _store_key(only):
                continue
            fixes = [(t, old, self.clock.server_now(local)) for t, (local, old) in unsure.items()]
            fixes = [(t, old, new) for t, old, new in fixes if abs(new - old) > self.clock.error]
            try:
                if fixes and not store.closed:
                    store.correct_first_seen(fixes, wait=wait)  # type: ignore[attr-defined]
            except Exception:  # busy or broken, any store: tried again
                log.debug("first-seen times not corrected yet", exc_info=True)
                continue
            del self._unsure_seen[key]

    def _apply_rate(self) -> None:
        rate = min(s.rate_limit for s in self._subs)
        bursts = [s.burst for s in self._subs if s.burst is not None]
        self.poller.set_rate(rate, min(bursts) if bursts else None)

    def subscribers(self) -> list[Subscriber]:
        """The attached watchers (a copy)."""
        with self._lock:
            return list(self._subs)

    # --------------------------------------------------------- poller thread
    def _observe(self, obs: Observation) -> None:
        subs = [s for s in self.subscribers() if s.watches(obs.task_id)]
        if obs.kind in ("change", "not_found"):
            event = _event(obs, self.clock.server_now(obs.observed_at))
            stores = [  # a change another process saw is in the team journal already
                store
                for store in {_store_key(s.store): s.store for s in subs}.values()
                if not (obs.elsewhere and _is_team(store))
            ]
            for store in stores:
                self._journal_many(store, [event])
            if obs.previous is None:
                self._journal_prediction(obs.task_id, stores)
        for sub in subs:
            try:
                sub.observe(obs)
            except Exception:
                log.exception("a watcher failed on %s", obs.task_id)

    def _journal_prediction(self, task_id: str, stores: Iterable[Store]) -> None:
        """Record the latency predicted at first sight (analysis only: under another
        process's lock it is skipped rather than waited for)."""
        state = self.poller.state(task_id)
        if state is None or state.predicted_latency is None:
            return
        for store in stores:
            try:
                store.set_predictions([(task_id, state.predicted_latency)], wait=JOURNAL_WAIT)
            except Exception:
                log.debug("prediction for %s not journalled", task_id, exc_info=True)

    def _journal_many(self, store: Store, events: list[Event]) -> None:
        """Write now, or after what is already waiting for this journal (order is kept)."""
        if not events:
            return
        with self._pending_lock:
            waiting = self._pending.setdefault(_store_key(store), _Pending()).events
            waiting.extend(events)
            if len(waiting) > _BACKLOG_LIMIT:
                log.error(
                    "journal backlog over %d events: the oldest %d dropped",
                    _BACKLOG_LIMIT,
                    len(waiting) - _BACKLOG_LIMIT,
                )
                del waiting[:-_BACKLOG_LIMIT]
        self._write_pending(store, JOURNAL_WAIT)

    def _write_pending(self, store: Store, wait: float, *, lock_wait: float = 0.0, now: bool = False) -> bool:
        """Write what waits for ``store``: watched tasks, events, saved files. False if some
        of it is still waiting. Gives way to a writer in another thread after ``lock_wait`` s.

        After a failed try, the next waits ``_RETRY_EVERY`` (unless ``now``): a journal locked
        for long costs the poller thread ``JOURNAL_WAIT`` per retry, not per change.
        """
        key = _store_key(store)
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

    def _take(self, key: object, what: str, n: int) -> None:
        """Forget the first ``n`` waiting ``what`` ("watched" or "events"): written or quarantined."""
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
        deadline = time.monotonic() + _TICK
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

    @property
    def notice(self) -> str | None:
        """A problem every watcher of this API shows: the journal or the team journal."""
        team = self.team.error if self.team is not None else None
        quarantined = (
            f"{len(self.quarantined)} events refused by the journal (engine.quarantined)"
            if self.quarantined
            else None
        )
        return self.journal_error or team or quarantined

    def _tick(self) -> None:
        subs = self.subscribers()
        self._correct_first_seen()
        team = self.team  # read once: detach may replace it meanwhile
        self._poll_unfollowed(subs, team)
        if team is not None and self._team_thread is not None:
            self._team_thread.tick(lambda: self._team_tick(team, subs))
        with self._pending_lock:
            waiting = {k for k, p in self._pending.items() if p}
        behind = {_store_key(s.store): s.store for s in subs if _store_key(s.store) in waiting}
        for store in behind.values():
            self._write_pending(store, JOURNAL_WAIT)
        for sub in subs:
            try:
                sub.redraw()
            except Exception:
                log.exception("a watcher failed to redraw")

    def _poll_unfollowed(self, subs: list[Subscriber], team: TeamPolling | None) -> None:
        """Tasks left to another process that no watcher follows through a team journal
        any more (its last one left) are polled here again."""
        loose = [s.task_id for s in self.poller.states() if not s.leased and not s.ended]
        if not loose:
            return
        members = [s for s in subs if _is_team(s.store)] if team is not None else []
        orphans = [t for t in loose if not any(m.watches(t) for m in members)]
        if orphans:
            self.poller.set_leased(orphans, True)

    def _team_tick(self, team: TeamPolling, subs: list[Subscriber]) -> None:
        """Leases and the others' changes for the tasks journalled in the team journal
        (in the team thread: it may wait on the database)."""
        if not self.poller.running:
            return
        members = [s for s in subs if _is_team(s.store)]
        states = [s for s in self.poller.states() if any(m.watches(s.task_id) for m in members)]
        team.watched_ended([s.task_id for s in states if s.ended])
        active = [s.task_id for s in states if not s.ended]
        try:
            team.tick(time.monotonic(), active, lambda t: any(m.watches(t) for m in members))
        except RuntimeError:  # the poller stopped meanwhile: nothing left to tell it
            if self.poller.running:
                raise

    def flush(self, store: Store, timeout: float = STOP_WAIT) -> bool:
        """Write what is waiting for ``store``, trying for ``timeout`` seconds at most; True if
        nothing is left waiting. From the poller thread (a callback), one bounded try only."""
        if self.poller.in_poller_thread:
            return self._write_pending(store, JOURNAL_WAIT, lock_wait=_TICK, now=True)
        self._correct_first_seen(only=store)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if (
                self._write_pending(store, max(0.0, min(0.1, left)), lock_wait=max(0.0, left), now=True)
                or left <= 0
            ):
                with self._pending_lock:
                    return not self._pending.get(_store_key(store))
            time.sleep(min(0.05, max(0.0, left)))


def _is_team(store: Store) -> bool:
    """A journal shared by processes on several machines, with leases (PostgreSQL)."""
    return store.capabilities.shared_polling


def _store_key(store: Store) -> object:
    """One key per journal: its file for SQLite (several watchers may open one file, under
    several spellings of its path)."""
    identity = getattr(store, "identity", None)
    if identity is not None:
        return identity
    path = getattr(store, "path", None)
    return str(path) if path is not None else id(store)


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
    path = getattr(store, "path", None)
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
        f"journal {getattr(store, 'location', type(store).__name__)} in time; they are kept {kept}"
    )
    log.warning("%s", message)
    warnings.warn(message, UnwrittenWarning, stacklevel=5)


def _event(obs: Observation, observed_at: float) -> Event:
    """The journal's record of ``obs``, observed at ``observed_at`` on the server's clock."""
    if obs.task is not None and obs.kind == "change":
        return event_from_task(obs.task, observed_at, obs.polls)
    return Event(obs.task_id, "not_found", observed_at, obs.polls)


def _journalled_polls(store: Store, task_ids: list[str]) -> dict[str, int]:
    """Requests the journal counts for these tasks (a SQL journal's; none if unreadable).

    Counts are cumulative and the journal keeps the largest: a new engine counts on from
    it, rather than the journal adding counts up, because journal writes are at least once
    (a batch written again, one change journalled by two watchers, a team member's event
    read back) and one process polls a task of a team journal at a time (its lease).
    """
    latest = getattr(store, "latest_events", None)
    if latest is None or not task_ids:
        return {}
    try:
        return {e.task_id: e.polls for e in latest(task_ids, wait=JOURNAL_WAIT)}  # watch() returns at once
    except Exception:  # a count is not worth failing watch() for
        log.debug("journalled counts of %d tasks not read", len(task_ids), exc_info=True)
        return {}


def _learned(ends: list[Event]) -> list[tuple[str, str, str, float, bool]]:
    """Journalled ends as the poller learns them: latencies in seconds, as the server timed them."""
    return [
        (
            e.provider or "?",
            e.model or "?",
            e.type or "?",
            e.completed_at - e.created_at,
            e.status == "succeeded",
        )
        for e in ends
        if e.created_at is not None and e.completed_at is not None
    ]


_REGISTRY: dict[tuple[str, str], Engine] = {}
_REGISTRY_LOCK = threading.RLock()


def _key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _registry_key(engine: Engine) -> tuple[str, str]:
    return next((k for k, e in _REGISTRY.items() if e is engine), ("", ""))


def engine_for(
    sub: Subscriber, api_key: str, base_url: str, *, timeout: float | None = 10.0, max_in_flight: int = 8
) -> Engine:
    """The running engine of this API (base URL and key) with ``sub`` attached; started if none.

    ``timeout`` and ``max_in_flight`` apply when the engine is started here.
    """
    key = (base_url, _key_digest(api_key))
    with _REGISTRY_LOCK:
        engine = _REGISTRY.get(key)
        if engine is None or not engine.running:
            engine = _REGISTRY[key] = Engine(api_key, base_url, timeout=timeout, max_in_flight=max_in_flight)
        engine.attach(sub)
    return engine


def running_engines() -> list[Engine]:
    """The engines of this process (for diagnostics and tests)."""
    with _REGISTRY_LOCK:
        return [e for e in _REGISTRY.values() if e.running]
