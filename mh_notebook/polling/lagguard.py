"""The lister's guard against a list that lags behind the tasks' own GETs (:mod:`.staleness`):
it feeds the evidence in (each page item, each end a GET brings) and sends the occasional
verification GET. When two stale pages show the list lagging, ``on_lagging(now, worst)``
(the lister) turns to per-task polling for a while.

Runs on the poller's loop only.
"""

from __future__ import annotations

import asyncio
import logging
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

    def page_item(self, task: Task, sent_local: float, received_local: float) -> None:
        """One item of a page sent at local ``sent_local`` and answered at ``received_local``:
        remember it showed a watched task running, or its end (seen when the answer came:
        a slow page's end is not dated back to its send); judge the page stale if this
        process had seen the task's end before it was sent
        (:meth:`~.staleness.LagWatch.page_after_end`: local times only)."""
        state = self._p.state(task.id) if self.enabled else None
        if state is None:
            return
        if status_rank(task.status) == 3:
            self.lag.end_seen(task.id, received_local)
            return
        if not state.ended:
            self.lag.shown_running(task.id, sent_local)
            return
        if task.id not in self.lag.ended:  # its end came by a GET (answered at fetched_at or before)
            self.lag.end_seen(task.id, state.fetched_at or sent_local)
        if self.lag.page_after_end(task.id, sent_local, received_local):
            self._on_lagging(self._p.clock.server_now(time.time()), self.lag.worst)

    def sweep(self) -> None:
        """Ends that GETs brought since (the planner's, results, refreshes) are remembered;
        tasks no longer watched are forgotten."""
        for task_id in list(self.lag.running):
            state = self._p.state(task_id)
            if state is None:
                self.lag.drop(task_id)
            elif state.ended:
                self.lag.end_seen(task_id, state.fetched_at or time.time())
        if len(self.lag.ended) > 2 * len(self.lag.running) + 1000:  # ended tasks no longer watched
            self.lag.ended = {k: at for k, at in self.lag.ended.items() if self._p.state(k) is not None}
        if len(self.checks.verified) > 2 * len(self.lag.running) + 100:
            self.checks.forget(self.lag.running)

    def maybe_verify(self, now: float) -> None:
        """Send one verification GET if ``gap`` has passed and a task only pages observed
        is past its threshold (:func:`~.staleness.pick_verification`)."""
        p = self._p
        if not self.enabled or now < self._next:
            return
        server_now = p.clock.server_now(time.time())
        self.sweep()
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
            if state.ended:  # the pages that show it running from now on are stale
                self.lag.end_seen(state.task_id, state.fetched_at or time.time())
        except Exception:  # the loop must never die
            log.exception("unexpected error while verifying %s", state.task_id)
