"""The lister's guard against a list that lags behind the tasks' own GETs (:mod:`.staleness`):
it feeds the evidence in (each page item, each end a GET brings) and sends the occasional
verification GET. When two stale pages show the list lagging, ``on_lagging(now, worst)``
(the lister) turns to per-task polling for a while.

Runs on the poller's loop only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..records import latency_key
from .sightings import status_rank
from .staleness import Candidate, LagWatch, Verifications, pick_verification
from .state import TaskState

if TYPE_CHECKING:
    from ..models import Task

__all__ = ["LagGuard"]

log = logging.getLogger("mh_notebook.poller")


class Host(Protocol):
    """What the guard uses of its :class:`~.poller.Poller`."""

    clock: Any
    _loop: Any
    _gate: Any
    _pacer: Any
    _inflight: set[Any]

    def state(self, task_id: str) -> TaskState | None: ...
    def _schedule(self, state: TaskState, delay: float, *, first: bool = False) -> None: ...
    async def _take_turn(self, *, honour_pause: bool, first: bool = False) -> bool: ...
    async def _poll(self, state: TaskState) -> None: ...


def _epoch(task: Task) -> float | None:
    return None if task.completed_at is None else task.completed_at.timestamp()


class LagGuard:
    """Stale-page evidence and verification GETs of one poller (poller thread)."""

    def __init__(self, poller: Host, on_lagging: Callable[[float, float], None]) -> None:
        self._p = poller
        self._on_lagging = on_lagging
        self.enabled = True
        """False: no detection and no verification GETs (the list is trusted, as before)."""
        self.lag = LagWatch()
        self.checks = Verifications()
        self.sent = 0
        """Verification GETs sent."""
        self.gap = 9.0
        """Seconds (loop time) between two verification GETs at least."""
        self._next = 0.0

    def scale(self, min_interval: float, list_retry: float) -> None:
        """Fit the constants to the schedule's floor and the list's retry period (scaled
        with ``time_scale``): margin 2 floors, a verification each 10 at most, the first
        of a model with no window at 20 floors of age, stale pages remembered 10 retries."""
        self.lag.margin, self.lag.memory = 2.0 * min_interval, 10.0 * list_retry
        self.gap, self.checks.base = 10.0 * min_interval, 20.0 * min_interval

    def _page_at(self, sent_local: float) -> float | None:
        """The earliest the server's clock read when a request was sent (``None`` while the
        offset is unbounded: no evidence is taken then)."""
        clock = self._p.clock
        return clock.server_at_least(sent_local) if math.isfinite(clock.error) else None

    def page_item(self, task: Task, sent_local: float) -> None:
        """One item of a page sent at local ``sent_local``: remember it showed a watched
        task running; judge the page stale if the task is known to have ended before."""
        state = self._p.state(task.id) if self.enabled else None
        page_at = None if state is None else self._page_at(sent_local)
        if state is None or page_at is None:
            return
        now = self._p.clock.server_now(sent_local)
        if status_rank(task.status) == 3:  # a later page with the end: were earlier ones stale?
            if self.lag.end_known(task.id, _epoch(task), now):
                self._on_lagging(now, self.lag.worst)
            return
        known = state.task
        ended_at = None if known is None or not state.ended else _epoch(known)
        if ended_at is None:
            self.lag.shown_running(task.id, page_at)
        elif self.lag.page_after_end(page_at, ended_at, now):  # its GET saw the end first
            self._on_lagging(now, self.lag.worst)

    def sweep(self, server_now: float) -> None:
        """Ends that GETs brought since (the planner's, results, refreshes): were the pages
        that showed those tasks running stale? Forgets tasks no longer watched."""
        for task_id in list(self.lag.running):
            state = self._p.state(task_id)
            if state is None:
                self.lag.drop(task_id)
            elif (
                state.ended
                and state.task is not None
                and self.lag.end_known(task_id, _epoch(state.task), server_now)
            ):
                self._on_lagging(server_now, self.lag.worst)
                return
        if len(self.checks.verified) > 2 * len(self.lag.running) + 100:
            self.checks.forget(self.lag.running)

    def maybe_verify(self, now: float) -> None:
        """Send one verification GET if ``gap`` has passed and a task only pages observed
        is past its threshold (:func:`~.staleness.pick_verification`)."""
        p = self._p
        if not self.enabled or now < self._next:
            return
        server_now = p.clock.server_now(time.time())
        self.sweep(server_now)
        candidates = []
        for task_id in self.lag.running:
            state = p.state(task_id)
            if state is None or state.ended or state.in_flight or state.covered or state.result_wanted:
                continue
            task = state.task
            if task is None or task.created_at is None or not state.leased:
                continue
            age = server_now - task.created_at.timestamp()
            key = latency_key(task.provider, task.model)
            listed = self.lag.listed.get(task_id, 0)  # of one age, the first created wins
            candidates.append(Candidate(task_id, age, key, state.window, listed))
        chosen = pick_verification(self.checks, candidates)
        if chosen is None:
            return
        self._next = now + self.gap
        state = p.state(chosen.id)
        assert state is not None
        state.in_flight = True  # no walk covers it, no other poll of it goes meanwhile
        job = asyncio.create_task(self._verify(state, chosen))
        p._inflight.add(job)
        job.add_done_callback(p._inflight.discard)

    async def _verify(self, state: TaskState, chosen: Candidate) -> None:
        p = self._p
        try:
            if not await p._take_turn(honour_pause=True):
                state.in_flight = False
                if state.task is not None and not state.ended:
                    p._schedule(state, p._pacer.next_delay(state, state.task))
                return
            state.last_polled = p._loop.time()
            state.sent_rate = p._gate.count_send()
            self.sent += 1
            await p._poll(state)  # as any poll: counted, errors backed off, queued again
            self.checks.done(chosen, state.ended)
            if state.ended and state.task is not None:
                server_now = p.clock.server_now(time.time())
                if self.lag.end_known(state.task_id, _epoch(state.task), server_now):
                    self._on_lagging(server_now, self.lag.worst)
        except Exception:  # the loop must never die
            log.exception("unexpected error while verifying %s", state.task_id)
