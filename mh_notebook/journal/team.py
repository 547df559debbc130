"""Shared polling through a team journal (PostgreSQL): leases and notifications.

Every process that watches tasks journalled in one PostgreSQL database takes part. Each
task is polled by one of them at a time: the holder of its lease, a row taken with
``SELECT ... FOR UPDATE SKIP LOCKED`` and renewed every ``renew`` seconds; a lease whose
holder died expires after ``ttl`` seconds on the database's clock (the machines' own
clocks may disagree by minutes) and is taken over. The others learn each change
through ``LISTEN/NOTIFY`` (and, should a notification be missed, by reading the journal
every ``catch_up`` seconds) and show it as if they had polled it themselves.

One process at a time also holds the team's **list duty** per account (API and key): a
lease like a task's, whose key no task id can take. Each process hands its list-pollable
tasks (answered once: their creation time is known) to the duty; the holder polls every
task handed to it, its own and the others', through list pages and one GET per result,
and journals what it sees; the others send no pages and follow. When the holder dies, the
duty and the tasks' leases lapse after ``ttl`` and the next process to renew takes them.

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
from ..records import ENDED, Event
from .protocol import TeamJournal

__all__ = ["Duty", "TeamJournal", "TeamPolling", "TeamThread"]

log = logging.getLogger("mh_notebook.team")


class Poller(Protocol):
    """The part of :class:`~mh_notebook.polling.poller.Poller` shared polling drives."""

    def set_leased(self, task_ids: Iterable[str], leased: bool) -> None: ...
    def observe(self, task: Task, polls: int) -> None: ...


class Duty(Protocol):
    """The engine's side of the list duty (see the module): what the holder adopts."""

    name: str
    """The duty's key in ``leases`` (one per account), also the holder of handed tasks."""

    def adopt(self, tasks: list[tuple[str, Task | None, int]]) -> None:
        """Poll these tasks for the team: ``(id, task as last journalled, polls spent)``."""
        ...

    def adopted(self) -> frozenset[str]:
        """The tasks adopted and not dropped."""
        ...

    def ended(self) -> set[str]:
        """The adopted tasks seen ended here."""
        ...

    def drop(self, task_ids: Iterable[str]) -> None:
        """Stop polling these adopted tasks (unless a watcher here watches them)."""
        ...

    def held_elsewhere(self, holder: str | None, until: float = math.inf) -> None:
        """Another process holds the duty (its name; ``""``: not known yet, so no pages
        either), or nobody else (``None``), surely until ``until`` (monotonic seconds: a
        process frozen past it sends no page before its next renewal says it still holds it)."""
        ...


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
        duty: Duty | None = None,
    ) -> None:
        self.journal, self.poller, self.duty = journal, poller, duty
        self.ttl, self.renew, self.catch_up = ttl, renew, catch_up
        self.holder = f"{socket.gethostname()}:{secrets.token_hex(4)}"
        """Who we are in the ``leases`` table."""
        self.held: set[str] = set()
        """Our tasks polled here: their leases, or the duty's while we hold it."""
        self.handed: set[str] = set()
        """Our tasks handed to the list duty (polled by its holder, who may be us)."""
        self.duty_holder: str | None = None
        """Who holds the list duty (``holder`` when we do), at the last renewal."""
        self._release: set[str] = set()
        self.error: str | None = None
        """Why the team journal cannot be reached, while it lasts."""
        self._next_renew = self._next_catch_up = -math.inf
        self._ok_at = math.inf
        self._alone = False
        self._fresh = True  # what the poller believes of our tasks is unknown: say it all

    def tick(
        self,
        now: float,
        active: list[str],
        watched: Callable[[str], bool],
        pollable: Iterable[str] = (),
    ) -> None:
        """Every engine tick: renew leases when due, and show what the others saw.
        ``pollable`` are the ``active`` tasks list pages may poll (handed to the duty)."""
        if self.error is not None and now < self._next_renew:
            return  # unreachable: try again at the next renewal, not on every tick
        pollable = set(pollable)
        newly = self.duty is not None and not self._alone and not pollable <= self.handed
        try:
            if now >= self._next_renew or newly:  # tasks just answered go to the duty at once
                self._renew(now, active, pollable)
            self._follow(now, active, watched)
        except Exception as exc:  # noqa: BLE001 - a database away must never stop polling
            self._unreachable(now, active, exc)
            return
        self._ok_at, self.error = now, None

    def _renew(self, now: float, active: list[str], pollable: set[str]) -> None:
        followed = set(active)
        handed = pollable if self._duty_holder(now, pollable) else set()  # a live holder: the duty polls them
        per_task = [t for t in active if t not in handed]
        held = self.journal.claim_leases(per_task, self.holder, self.ttl) if per_task else set()
        gone = self.held - followed  # not followed through us any more: not ours to hand out
        if gone:
            self.journal.release_leases(sorted(gone), self.holder)
        if self.duty is not None:
            held |= self._hand(handed, followed)
        self._set_leased(held, followed)
        self.held, self._alone, self._fresh, self._next_renew = held, False, False, now + self.renew

    def _duty_holder(self, now: float, pollable: set[str]) -> bool:
        """Claim or renew the list duty (while we have tasks for it); True if someone holds it."""
        duty = self.duty
        if duty is None:
            return False
        if pollable or duty.adopted():
            self.duty_holder = self.journal.claim_duty(duty.name, self.holder, self.ttl)
        else:
            if self.duty_holder == self.holder:  # nothing left to poll: let another take it at once
                self.journal.release_leases([duty.name], self.holder)
            self.duty_holder = None
        if self.duty_holder == self.holder:  # ours until the lease may lapse (renewed every `renew`)
            duty.held_elsewhere(None, until=now + self.ttl - self.renew)
        else:  # pages only from the holder: none while it is not known (nobody sends them twice)
            duty.held_elsewhere(self.duty_holder or "")
        return self.duty_holder is not None

    def _hand(self, handed: set[str], followed: set[str]) -> set[str]:
        """Hand our list-pollable tasks to the duty; as its holder, adopt the others' tasks.
        Returns our tasks polled here through the duty."""
        assert self.duty is not None
        duty, on_duty = self.duty, self.duty_holder == self.holder
        gone = self.handed - followed
        if gone:
            self.journal.release_leases(sorted(gone), duty.name)
        if handed:
            self.journal.hand_leases(sorted(handed), self.holder, duty.name, self.ttl)
        self.handed = set(handed)
        if not on_duty:
            duty.drop(duty.adopted())
            return set()
        release = sorted(duty.ended() | self._release)
        tasks = self.journal.duty_tasks(duty.name, self.ttl, release)
        self._release = set()
        duty.drop(duty.adopted() - tasks | set(release))
        self._adopt(tasks - followed - duty.adopted())
        return handed & tasks

    def _adopt(self, task_ids: set[str]) -> None:
        """Adopt the others' tasks the duty holds, unless the journal says they ended."""
        if not task_ids or self.duty is None:
            return
        last = {e.task_id: e for e in self.journal.latest_events(sorted(task_ids))}
        ended = {t for t, e in last.items() if e.status in ENDED}
        self._release |= ended
        tasks = sorted(task_ids - ended)
        self.duty.adopt([(t, _task(last[t]), last[t].polls) if t in last else (t, None, 0) for t in tasks])

    def _set_leased(self, held: set[str], followed: set[str]) -> None:
        if self._fresh:
            self.poller.set_leased(held, True)
            self.poller.set_leased(followed - held, False)
        else:
            previous = followed if self._alone else self.held & followed  # alone: we polled everything
            self.poller.set_leased(held - previous, True)
            self.poller.set_leased(previous - held, False)

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
            if self.duty is not None:  # the duty lapsed too: the others' tasks are theirs again
                self.duty.drop(self.duty.adopted())
                self.duty.held_elsewhere(None)
                self.duty_holder, self.handed = None, set()
        self._next_renew = now + max(self.renew, self.ttl / 2)  # a database away is not asked every tick

    def watched_ended(self, task_ids: list[str]) -> None:
        """Leases of ended tasks are no longer renewed: each lapses within ``ttl``. Not given
        back at once: the others may not know of the end yet (its notification on its way,
        its event perhaps not yet journalled), and one that took a lease given back would
        poll the task once more, for nothing; by the time it lapses, they know."""
        self.held -= set(task_ids)
        self.handed -= set(task_ids)

    def close(self) -> None:
        """Give back every lease we hold and the list duty (best effort): the others take
        our tasks and the duty over at once. Our tasks handed to the duty go back to it
        only if another process hands them again (it watches them too)."""
        ours, self.held = sorted(self.held), set()
        handed, self.handed = sorted(self.handed | set(ours)), set()
        try:
            if ours:
                self.journal.release_leases(ours, self.holder)
            if self.duty is not None:
                if handed:
                    self.journal.release_leases(handed, self.duty.name)
                if self.duty_holder == self.holder:
                    self.journal.release_leases([self.duty.name], self.holder)
                self.duty.drop(self.duty.adopted())
                self.duty.held_elsewhere(None)
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
