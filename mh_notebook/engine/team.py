"""An engine's part in a team journal (PostgreSQL): leases, the list duty, hand-overs.

The engine's watchers whose journal is shared by several processes poll their tasks only
while this process holds the task's lease (:class:`~mh_notebook.journal.team.TeamPolling`,
in a thread of its own: a database that does not answer never holds up polling). Their
list-pollable tasks are handed to the account's list duty; while this process holds it,
:class:`ListDuty` adopts the tasks the other processes handed to it: they are polled here
(pages and one GET per result) and journalled in the team journal, whose notifications
the others follow; nothing of them shows in this process's own watchers. A task followed
through no team journal any more is polled here again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import time
from collections.abc import Callable, Iterable

from ..journal.protocol import Store
from ..journal.team import TeamPolling, TeamThread
from ..models import Task
from ..polling.policy import PollPolicy
from ..polling.poller import Poller, TaskState
from .boundary import Observation, Subscriber, SubscriberSpec

__all__ = ["EngineTeam", "ListDuty", "duty_name", "is_team"]


def is_team(store: Store) -> bool:
    """A journal shared by processes on several machines, with leases (PostgreSQL)."""
    return store.team_journal() is not None


def duty_name(base_url: str, api_key: str) -> str:
    """The list duty's key for one account (the API's base URL and a one-way fingerprint of
    the key, never the key): it has spaces, which no task id may hold, so it never collides
    with a task's lease."""
    return f"list duty {base_url} {hashlib.sha256(api_key.encode()).hexdigest()[:16]}"


def list_pollable(state: TaskState) -> bool:
    """Whether list pages may poll this task: answered once (its creation time known), not
    ended, and its policy allows pages."""
    task = state.task
    return not state.ended and task is not None and task.created_at is not None and state.policy.list_polling


class ListDuty:
    """The tasks other processes handed to the list duty this process holds: polled here,
    journalled in the team journal. A :class:`~.boundary.Subscriber` that shows nothing."""

    def __init__(
        self,
        name: str,
        poller: Poller,
        store: Store,
        unwatch: Callable[[Subscriber, Iterable[str]], None],
        policy: Callable[[], PollPolicy],
    ) -> None:
        self.name = name
        self._poller, self._unwatch, self._policy = poller, unwatch, policy
        self._spec = SubscriberSpec(store, math.inf, None)
        self._ids: frozenset[str] = frozenset()  # replaced whole: read from the poller thread

    @property
    def spec(self) -> SubscriberSpec:
        """The team journal its observations are written to."""
        return self._spec

    def watches(self, task_id: str) -> bool:
        """True for an adopted task."""
        return task_id in self._ids

    def observe(self, observation: Observation) -> None:
        """Nothing: journalled by the engine, shown by the processes that watch the task."""

    def tick(self) -> None:
        """Nothing to redraw."""

    def adopt(self, tasks: list[tuple[str, Task | None, int]]) -> None:
        """Poll these tasks here: first what the journal knows of them (as if seen by
        another process, so not journalled again), then by their schedule."""
        new = [(t, task, polls) for t, task, polls in tasks if t not in self._ids]
        if not new:
            return
        self._ids = self._ids | {t for t, _, _ in new}
        fresh = [(t, task, polls) for t, task, polls in new if self._poller.state(t) is None]
        ids = [t for t, _, _ in fresh]  # (one watched here already is polled here already)
        self._poller.watch(ids, self._policy(), leased=False, polls={t: p for t, _, p in fresh})
        for _, task, polls in fresh:
            if task is not None:
                self._poller.observe(task, polls)
        self._poller.set_leased(ids, True)

    def adopted(self) -> frozenset[str]:
        """The tasks adopted and not dropped."""
        return self._ids

    def ended(self) -> set[str]:
        """The adopted tasks seen ended here."""
        return {s.task_id for s in self._poller.states(self._ids) if s.ended}

    def drop(self, task_ids: Iterable[str]) -> None:
        """Stop polling these adopted tasks, unless a watcher here watches them."""
        gone = self._ids & set(task_ids)
        if gone:
            self._ids = self._ids - gone
            self._unwatch(self, gone)

    def held_elsewhere(self, holder: str | None, until: float = math.inf) -> None:
        """The panel's polling line says who sends the pages; no pages are sent here then,
        nor after ``until`` (monotonic) until a renewal says the duty is still ours."""
        lister = self._poller.lister
        lister.duty_elsewhere, lister.duty_until = holder, until


class EngineTeam:
    """Shared polling for one engine: the team journal a watcher brought, its thread, the
    list duty, and the hand-over when that watcher leaves."""

    def __init__(
        self, poller: Poller, duty: str, unwatch: Callable[[Subscriber, Iterable[str]], None]
    ) -> None:
        self.poller, self.duty_name, self._unwatch = poller, duty, unwatch
        self.polling: TeamPolling | None = None
        self._duty: ListDuty | None = None
        self.thread: TeamThread | None = None
        self.policy: PollPolicy | None = None
        """The schedule of the last task a team watcher watched here (adopted tasks get it)."""

    def join(self, store: Store, thread_name: str) -> None:
        """A watcher attaches with ``store``: shared polling starts if it is the first team journal."""
        if self.polling is None and is_team(store):
            self.polling = self._start(store)
            if self.thread is None:
                self.thread = TeamThread(thread_name)

    def _start(self, store: Store) -> TeamPolling:
        shared = store.team_journal()
        assert shared is not None
        self._duty = ListDuty(
            self.duty_name, self.poller, store, self._unwatch, lambda: self.policy or self.poller.policy
        )
        return TeamPolling(shared, self.poller, duty=self._duty)

    def observers(self) -> list[Subscriber]:
        """Subscribers of the engine's own: the list duty's adopted tasks."""
        duty = self._duty
        return [] if duty is None or self.polling is None else [duty]

    def hand_over(
        self, leaving: Subscriber, remaining: list[Subscriber]
    ) -> concurrent.futures.Future[None] | None:
        """Shared polling goes on through a journal a remaining watcher holds open (the
        leaving one closes its own), or ends with the last team watcher; the future of the
        old leases and duty given back (in the team thread)."""
        team = self.polling
        if team is None or team.journal is not leaving.spec.store.team_journal() or self.thread is None:
            return None
        store = next((o.spec.store for o in remaining if is_team(o.spec.store)), None)
        self.polling = self._start(store) if store is not None else None
        if self.polling is None:
            self._duty = None
        return self.thread.run(team.close)  # our leases: given back, or expire in 5 s

    def stop(self) -> None:
        """The engine stops: end the team thread once its jobs have run."""
        if self.thread is not None:
            self.thread.stop()

    def tick(self, subs: list[Subscriber]) -> None:
        """Every engine tick (poller thread): poll orphans here, and queue a team tick."""
        team = self.polling  # read once: a hand-over may replace it meanwhile
        self._poll_unfollowed(subs, team)
        if team is not None and self.thread is not None:
            self.thread.tick(lambda: self._team_tick(team, subs))

    def _poll_unfollowed(self, subs: list[Subscriber], team: TeamPolling | None) -> None:
        """Tasks left to another process that no watcher follows through a team journal
        any more (its last one left) are polled here again."""
        loose = [s.task_id for s in self.poller.states() if not s.leased and not s.ended]
        if not loose:
            return
        members = [s for s in subs if is_team(s.spec.store)] + self.observers() if team is not None else []
        orphans = [t for t in loose if not any(m.watches(t) for m in members)]
        if orphans:
            self.poller.set_leased(orphans, True)

    def _team_tick(self, team: TeamPolling, subs: list[Subscriber]) -> None:
        """Leases, the list duty and the others' changes for the tasks journalled in the team
        journal (in the team thread: it may wait on the database)."""
        if not self.poller.running:
            return
        members = [s for s in subs if is_team(s.spec.store)]
        states = [s for s in self.poller.states() if any(m.watches(s.task_id) for m in members)]
        team.watched_ended([s.task_id for s in states if s.ended])
        active = [s.task_id for s in states if not s.ended]
        pages = self.poller.lister.enabled
        pollable = [s.task_id for s in states if pages and list_pollable(s)]
        try:
            team.tick(time.monotonic(), active, lambda t: any(m.watches(t) for m in members), pollable)
        except RuntimeError:  # the poller stopped meanwhile: nothing left to tell it
            if self.poller.running:
                raise
