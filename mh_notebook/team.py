"""Shared polling through a team journal (PostgreSQL): leases and notifications.

Every process that watches tasks journalled in one PostgreSQL database takes part. Each
task is polled by one of them at a time: the holder of its lease, a row taken with
``SELECT ... FOR UPDATE SKIP LOCKED`` and renewed every ``renew`` seconds; a lease whose
holder died expires after ``ttl`` seconds and is taken over. The others learn each change
through ``LISTEN/NOTIFY`` (and, should a notification be missed, by reading the journal
every ``catch_up`` seconds) and show it as if they had polled it themselves.

If the database cannot be reached for longer than ``ttl``, every process polls its tasks
itself again (more requests, nothing missed) until the database is back.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import socket
from collections.abc import Callable, Iterable
from typing import Protocol

from .models import Task
from .store import Event

__all__ = ["TeamJournal", "TeamPolling"]

log = logging.getLogger("mh_notebook.team")


class TeamJournal(Protocol):
    """What a shared journal offers for shared polling (``PostgresStore`` does)."""

    def claim_leases(self, task_ids: list[str], holder: str, until: float, now: float) -> set[str]:
        """Take or renew the leases of these tasks that are free, expired or ours; the held ones."""

    def release_leases(self, task_ids: list[str], holder: str) -> None:
        """Give up our leases of these tasks."""

    def latest_events(self, task_ids: list[str]) -> list[Event]:
        """The last informative event of each of these tasks."""

    def notifications(self) -> list[str]:
        """Ids of tasks changed since the last call (never blocks)."""


class Poller(Protocol):
    """The part of :class:`~mh_notebook.poller.Poller` shared polling drives."""

    def set_leased(self, task_ids: Iterable[str], leased: bool) -> None: ...
    def observe(self, task: Task, polls: int) -> None: ...


class TeamPolling:
    """Leases and notifications for one engine and one team journal (engine thread only)."""

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
        held = self.journal.claim_leases(active, self.holder, now + self.ttl, now) if active else set()
        previous = set(active) if self._alone else self.held  # alone: we polled everything
        self.poller.set_leased(held - previous, True)
        self.poller.set_leased(previous - held, False)
        self.held, self._alone, self._next_renew = held, False, now + self.renew

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
        """Leases of ended tasks are given back (best effort)."""
        ours = [t for t in task_ids if t in self.held]
        if not ours:
            return
        self.held -= set(ours)
        try:
            self.journal.release_leases(ours, self.holder)
        except Exception:
            log.debug("could not release leases", exc_info=True)

    def close(self) -> None:
        """Give back every lease we hold."""
        self.watched_ended(sorted(self.held))


def _task(event: Event) -> Task | None:
    """The task as the other process saw it (from the journalled ``raw`` body)."""
    if not event.raw:
        return None
    try:
        return Task.from_api(json.loads(event.raw))
    except (ValueError, TypeError):
        return None
