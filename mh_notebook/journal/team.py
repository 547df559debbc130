"""Shared polling through a team journal (PostgreSQL): leases and notifications.

Every process that watches tasks journalled in one PostgreSQL database takes part. Each
task is polled by one of them at a time: the holder of its lease, a row taken with
``SELECT ... FOR UPDATE SKIP LOCKED`` and renewed every ``renew`` seconds; a lease whose
holder died expires after ``ttl`` seconds on the database's clock (the machines' own
clocks may disagree by minutes) and is taken over. The others learn each change
through ``LISTEN/NOTIFY`` (and, should a notification be missed, by reading the journal
every ``catch_up`` seconds) and show it as if they had polled it themselves.

If the database cannot be reached for longer than ``ttl``, every process polls its tasks
itself again (more requests, nothing missed) until the database is back.

Every call here may wait on the database: the engine runs :meth:`TeamPolling.tick` in a
thread of its own, never on the poller's loop, and the results reach the poller through
its thread-safe calls (``set_leased``, ``observe``).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import queue
import secrets
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from ..models import Task
from ..records import Event
from .protocol import TeamJournal

__all__ = ["TeamJournal", "TeamPolling", "TeamThread"]

log = logging.getLogger("mh_notebook.team")


class Poller(Protocol):
    """The part of :class:`~mh_notebook.polling.poller.Poller` shared polling drives."""

    def set_leased(self, task_ids: Iterable[str], leased: bool) -> None: ...
    def observe(self, task: Task, polls: int) -> None: ...


class TeamPolling:
    """Leases and notifications for one engine and one team journal (one thread at a time:
    the engine's team thread). ``now`` arguments are monotonic seconds, for scheduling only."""

    def __init__(
        self,
        journal: TeamJournal,
        poller: Poller,
        *,
        ttl: float = 5.0,
        renew: float = 1.0,
        catch_up: float = 2.0,
    ) -> None:
        self.journal, self.poller = journal, poller
        self.ttl, self.renew, self.catch_up = ttl, renew, catch_up
        self.holder = f"{socket.gethostname()}:{secrets.token_hex(4)}"
        """Who we are in the ``leases`` table."""
        self.held: set[str] = set()
        self.error: str | None = None
        """Why the team journal cannot be reached, while it lasts."""
        self._next_renew = self._next_catch_up = -math.inf
        self._ok_at = math.inf
        self._alone = False
        self._fresh = True  # what the poller believes of our tasks is unknown: say it all

    def tick(self, now: float, active: list[str], watched: Callable[[str], bool]) -> None:
        """Every engine tick: renew leases when due, and show what the others saw."""
        if self.error is not None and now < self._next_renew:
            return  # unreachable: try again at the next renewal, not on every tick
        try:
            if now >= self._next_renew:
                self._renew(now, active)
            self._follow(now, active, watched)
        except Exception as exc:  # noqa: BLE001 - a database away must never stop polling
            self._unreachable(now, active, exc)
            return
        self._ok_at, self.error = now, None

    def _renew(self, now: float, active: list[str]) -> None:
        held = self.journal.claim_leases(active, self.holder, self.ttl) if active else set()
        followed = set(active)
        gone = self.held - followed  # not followed through us any more: not ours to hand out
        if gone:
            self.journal.release_leases(sorted(gone), self.holder)
        if self._fresh:
            self.poller.set_leased(held, True)
            self.poller.set_leased(followed - held, False)
        else:
            previous = followed if self._alone else self.held & followed  # alone: we polled everything
            self.poller.set_leased(held - previous, True)
            self.poller.set_leased(previous - held, False)
        self.held, self._alone, self._fresh, self._next_renew = held, False, False, now + self.renew

    def _follow(self, now: float, active: list[str], watched: Callable[[str], bool]) -> None:
        changed = {t for t in self.journal.notifications() if watched(t) and t not in self.held}
        if now >= self._next_catch_up:  # a missed notification is caught up here
            changed |= {t for t in active if t not in self.held}
            self._next_catch_up = now + self.catch_up
        if not changed:
            return
        for event in self.journal.latest_events(sorted(changed)):
            task = _task(event)
            if task is not None:
                self.poller.observe(task, event.polls)

    def _unreachable(self, now: float, active: list[str], exc: Exception) -> None:
        self.error = f"team journal unreachable ({type(exc).__name__}: {exc}); polling alone meanwhile"
        if self._ok_at == math.inf:
            self._ok_at = now
        if now - self._ok_at > self.ttl and not self._alone:  # our leases have expired for the others
            log.warning("%s", self.error)
            self.poller.set_leased(active, True)
            self._alone = True
        self._next_renew = now + max(self.renew, self.ttl / 2)  # a database away is not asked every tick

    def watched_ended(self, task_ids: list[str]) -> None:
        """Leases of ended tasks are no longer renewed: each lapses within ``ttl``. Not given
        back at once: the others may not know of the end yet (its notification on its way,
        its event perhaps not yet journalled), and one that took a lease given back would
        poll the task once more, for nothing; by the time it lapses, they know."""
        self.held -= set(task_ids)

    def close(self) -> None:
        """Give back every lease we hold (best effort): the others take our tasks over at once."""
        ours, self.held = sorted(self.held), set()
        if not ours:
            return
        try:
            self.journal.release_leases(ours, self.holder)
        except Exception:
            log.debug("could not release leases", exc_info=True)


class TeamThread:
    """The thread team work runs in, one job at a time, so that a database that does not
    answer holds up the team's work and never the poller: at most one tick in flight
    (a tick asked for while one runs is dropped), other jobs in the order given. A daemon:
    a job stuck on the network never keeps the interpreter from exiting."""

    def __init__(self, name: str = "mh-team") -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._ticking = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def tick(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` unless a tick is queued or running already."""
        if self._ticking.is_set():
            return
        self._ticking.set()

        def job() -> None:
            try:
                fn()
            finally:
                self._ticking.clear()

        self._jobs.put(job)

    def run(self, fn: Callable[[], None]) -> concurrent.futures.Future[None]:
        """Run ``fn`` after the jobs queued before it; a future of its end."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def job() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                done.set_exception(exc)
            else:
                done.set_result(None)

        self._jobs.put(job)
        return done

    def stop(self) -> None:
        """End the thread once the queued jobs have run (returns at once)."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:
                log.exception("team work failed")


def _task(event: Event) -> Task | None:
    """The task as the other process saw it (from the journalled ``raw`` body)."""
    if not event.raw:
        return None
    try:
        return Task.from_api(json.loads(event.raw))
    except (ValueError, TypeError):
        return None
