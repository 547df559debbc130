"""List polling in the poller: the planner's choices (:mod:`.listing`) turned into requests.

Every ``gap`` seconds, when a poll is due, :meth:`Lister.maybe_plan` asks
:func:`~.listing.plan` for the cheapest way to observe the due tasks: list pages over a
``startDate`` window (filtered by provider or model where that is cheaper), or their own
GETs. The tasks a walk covers (every watched task in its window, due or not) are marked
``covered``: the queue holds no poll for them until the walk is over. Then each one the
pages showed is an observation (:meth:`Lister.fold`) and is queued again by its schedule;
each one they did not show (a lagging list, a walk cut short) keeps its due time. While
planning is on, a due GET waits for the next plan (at most ``gap``), so a task about to
be covered by a walk is not also asked on its own.

What a page shows is folded in like a GET's answer, through :func:`~.listing.merge`: a
page never moves a status backwards and never overrides a newer GET. ``succeeded`` (or
``expired``) on a page queues exactly one GET, ahead of every other poll, for the result
URLs; ``failed`` and ``cancelled`` end the task with no GET. A page counts against the
budget like any request, takes its turn in the gate (rate, in-flight slots, a limit's
pause). It is counted by the poller (``pages``, :meth:`Lister.mode`), not in the ``polls``
of the tasks it showed: a task's ``polls`` are its own GETs (with list polling, mostly the
one for its result).

404, 403 or a malformed page: per-task GETs, exactly as without the list, and one small
probe of the list after a doubling backoff (:class:`~.listing.Health`). 429, 5xx and
network errors end the walk (its tasks keep their due times) and are the gate's business.
Runs on the poller's loop only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from dataclasses import replace
from typing import Any, Protocol

from ..errors import (
    AuthenticationError,
    MalformedResponseError,
    ModelHunterError,
    NotFoundError,
    RateLimitedError,
)
from ..models import Task, TaskPage
from ..records import TaskStatus
from .lagguard import LagGuard
from .learning import after_failure, after_lag, after_walk, walk_outcome
from .listing import (
    Health,
    ListFailure,
    ListState,
    PageWalk,
    Plan,
    Settings,
    Sighting,
    Source,
    Watched,
    merge,
    plan,
)
from .state import TaskState


class Host(Protocol):
    """What the lister uses of its :class:`~.poller.Poller` (no import: no circle)."""

    clock: Any
    policy: Any
    auth_error: Any
    _loop: Any
    _gate: Any
    _queue: Any
    _client: Any
    _pacer: Any
    _rng: Any
    _paused: bool
    _inflight: set[Any]
    _wakeup: Any
    _states: Any

    @property
    def effective_rate(self) -> float: ...
    def state(self, task_id: str) -> TaskState | None: ...
    def states(self) -> list[TaskState]: ...
    def _schedule(self, state: TaskState, delay: float, *, first: bool = False) -> None: ...
    def _record_answer(self, state: TaskState, task: Task, elsewhere: bool = False) -> None: ...
    async def _poll(self, state: TaskState) -> None: ...
    async def _take_turn(self, *, honour_pause: bool, first: bool = False) -> bool: ...


__all__ = ["Lister"]

log = logging.getLogger("mh_notebook.poller")

_RESULT = frozenset({TaskStatus.SUCCEEDED, TaskStatus.EXPIRED})
"""Statuses whose URLs only the task's own GET gives."""
_RATE_SPAN = 10.0
"""Seconds (loop time) over which the panel's rates are measured."""


class Lister:
    """One poller's list polling: plans, walks and the list's health (poller thread)."""

    def __init__(self, poller: Host, settings: Settings | None = None, *, enabled: bool = True) -> None:
        self._p = poller
        self.enabled = enabled
        """False: per-task GETs only, as before the list existed."""
        self.duty_elsewhere: str | None = None
        """Another process of a team journal holds the list duty (its name; ``""``: not
        known yet): no pages here."""
        self.duty_until = math.inf
        """Monotonic time until which this process surely holds the list duty (a team
        journal's; renewed every second): after it, no page until a renewal says so."""
        self.state = ListState(settings=settings or Settings())
        self.walking = False
        self.pages = self.gets = 0
        """Requests sent: list pages, and GETs (polls, result GETs and refreshes)."""
        self._gating = False
        self._released = 0.0
        self._next_plan = 0.0
        self._gap, self._interval = 0.1, 0.9
        self._steady_at = 0.0
        """Loop time of the next walk over every task (spare budget permitting)."""
        self._retry = 30.0
        self._sent: collections.deque[tuple[float, bool]] = collections.deque()
        self._failing_walks = 0
        self.guard = LagGuard(poller, self._lagging)
        """Stale-page evidence and verification GETs (``guard.enabled = False``: trust the list)."""

    # ------------------------------------------------------------ the queue's view
    def horizon(self, now: float) -> float:
        """Polls due by this loop time may go out now (the rest wait for the next plan)."""
        return self._released if self._gating and not self.walking and self.plans else now

    def wake_at(self, due: float) -> float:
        """When a poll due at ``due`` may go (at once, or at the next plan), or the next
        walk over every task is due, if sooner."""
        at = max(due, self._next_plan) if due > self.horizon(due) else due
        return at if not self.plans or self.walking else min(at, max(self._steady_at, self._next_plan))

    def count(self, *, page: bool) -> None:
        """One request sent (a page, or a GET)."""
        if page:
            self.pages += 1
        else:
            self.gets += 1
        now = self._p._loop.time()
        self._sent.append((now, page))
        while self._sent and self._sent[0][0] < now - _RATE_SPAN:
            self._sent.popleft()

    # ------------------------------------------------------------ planning
    def maybe_plan(self) -> None:
        """Plan if list polling is on, no walk is under way, ``gap`` has passed and a
        poll is due (and nothing holds requests back)."""
        p = self._p
        now = p._loop.time()
        held = p._paused or p.auth_error is not None or p._gate.paused()
        if not self.plans or self.walking or now < self._next_plan or held:
            return
        due = p._queue.next_due()
        due_now = due is not None and due <= now
        if not due_now and now < self._steady_at:
            return
        health = self.state.health
        if not health.available and p.clock.server_now(time.time()) < health.retry_at:
            self._gating, self._next_plan = False, now + self._gap  # per-task GETs until the retry
            return
        if health.available and self.pages:
            self.guard.maybe_verify(now)  # one task only pages observed, long past its window
        started = time.perf_counter()
        watched, candidates = self._watched(now)
        server_now = p.clock.server_now(time.time())
        chosen = self._steady(watched, server_now) if now >= self._steady_at else None
        if chosen is None and not due_now:
            self._next_plan = now + self._gap
            return
        chosen = chosen or self._plan_ahead(watched, server_now)
        self._gating = bool(candidates) and not chosen.per_task
        self._released = now
        spent = time.perf_counter() - started
        self._next_plan = now + max(self._gap, 3.0 * spent)  # planning never eats the thread
        if chosen.walks and candidates:
            self._start_round(chosen, candidates, now)
            self._steady_at = now + self._interval

    def _plan_ahead(self, watched: list[Watched], server_now: float) -> Plan:
        """The plan for the tasks due now and those due before its pages can have gone (at
        the budget's rate; half a ``min_interval`` at most): a group due just after
        another joins its round instead of waiting for its end (issue 19: rounds of images
        and videos alternated, each group seen every 1.2 s instead of every second)."""
        chosen = plan(self.state, watched, server_now)
        pages = sum(w.est_pages for w in chosen.walks)
        if not pages or chosen.per_task:
            return chosen
        ahead = min(pages / max(self._p.effective_rate, 1e-9), self._interval / 2)
        return plan(self.state, watched, server_now, ahead)

    def _steady(self, watched: list[Watched], server_now: float) -> Plan | None:
        """A walk over every task as if all were due, if the spare budget affords one each
        ``min_interval`` (half the rate at most): ends seen within a second, for a few pages."""
        everyone = [replace(w, due=min(w.due, server_now)) for w in watched]
        chosen = plan(self.state, everyone, server_now)
        pages = sum(w.est_pages for w in chosen.walks)
        if chosen.per_task or not chosen.walks or pages > 0.5 * self._p.effective_rate * self._interval:
            self._steady_at = math.inf
            return None
        return chosen

    def _watched(self, now: float) -> tuple[list[Watched], dict[str, TaskState]]:
        """The planner's view of every task list polling may observe (due times on the
        server's clock), and their states."""
        p = self._p
        server_now = p.clock.server_now(time.time())
        watched, states = [], {}
        gaps, retries = [], []
        for s in p.states():
            task = s.task
            if (
                s.ended
                or not s.leased
                or s.in_flight
                or s.covered
                or s.result_wanted
                or not s.policy.list_polling
                or task is None
                or task.created_at is None
            ):
                continue
            due = server_now + (s.due_at - now)
            watched.append(
                Watched(s.task_id, task.created_at.timestamp(), due, task.status, task.provider, task.model)
            )
            states[s.task_id] = s
            gaps.append(s.policy.min_interval)
            retries.append(s.policy.list_retry)
        if states:
            self._interval, self._retry = min(gaps), min(retries)
            self._gap = self._interval / 9.0
            self.guard.scale(self._interval, self._retry)
        return watched, states

    def _start_round(self, chosen: Plan, candidates: dict[str, TaskState], now: float) -> None:
        covered: dict[str, float] = {}
        for walk in chosen.walks:
            for task_id in walk.covers:
                state = candidates[task_id]
                covered[task_id] = state.due_at
                state.covered = True
        self.walking = True
        job = asyncio.create_task(self._round(chosen.walks, covered))
        self._p._inflight.add(job)
        job.add_done_callback(self._p._inflight.discard)

    async def _round(self, walks: tuple[PageWalk, ...], covered: dict[str, float]) -> None:
        observed: set[str] = set()
        try:
            await asyncio.gather(*(self._walk(w, observed) for w in walks))
        except Exception:  # the loop must never die
            log.exception("unexpected error while walking the task list")
        finally:
            self.walking = False
            self._settle(covered, observed)

    def _settle(self, covered: dict[str, float], observed: set[str]) -> None:
        """Queue the covered tasks again: the observed by their schedule (done in
        :meth:`fold`), the others at the due time they had."""
        p = self._p
        now = p._loop.time()
        for task_id, due in covered.items():
            state = p.state(task_id)
            if state is None:
                continue
            state.covered = False
            if task_id not in observed and not state.ended and not state.result_wanted:
                p._schedule(state, max(0.0, due - now))
        p._wakeup.set()

    # ------------------------------------------------------------ one walk
    async def _walk(self, walk: PageWalk, observed: set[str]) -> None:
        p = self._p
        pages: list[list[Sighting]] = []
        first_sent: float | None = None
        cursor: str | None = None
        mine = {s.task_id for s in p.states() if not s.ended}
        for _ in range(walk.max_pages):
            if not await p._take_turn(honour_pause=True, first=True):
                return  # a limit's pause, the user's pause or a refused key: tasks keep their due times
            if not self.plans:  # the duty may have passed on while this process was frozen
                p._gate.release()
                return
            sent_local = time.time()
            server_sent = p.clock.server_now(sent_local)
            first_sent = server_sent if first_sent is None else first_sent
            self.count(page=True)
            sent_rate = p._gate.count_send()
            try:
                page = await p._client.list_tasks(**walk.query(), cursor=cursor, retry=False)
            except ModelHunterError as exc:
                self._on_error(exc, sent_rate, server_sent)
                return
            finally:
                p._gate.release()
            p._gate.on_answer(sent_rate)
            self._failing_walks = 0
            pages.append(self._take_page(page, sent_local, observed))
            cursor = page.cursor
            if not page.has_more or cursor is None:
                break
        outcome = walk_outcome(walk, pages)
        assert first_sent is not None  # at least one page was read
        self.state = after_walk(self.state, walk, outcome, mine, first_sent)

    def _take_page(self, page: TaskPage, sent_local: float, observed: set[str]) -> list[Sighting]:
        sightings, received = [], time.time()  # (called as the page's answer came)
        server_sent = self._p.clock.server_now(sent_local)
        for task in page.tasks:
            sightings.append(Sighting.from_task(task, server_sent, Source.PAGE))
            self.guard.page_item(task, sent_local, received)  # (before the fold: what was known until now)
            if task.id not in observed and self.fold(task, sent_local):
                observed.add(task.id)
        return sightings

    def _on_error(self, exc: ModelHunterError, sent_rate: float, server_sent: float) -> None:
        p = self._p
        failure = None
        if isinstance(exc, NotFoundError):
            failure = ListFailure.MISSING
        elif isinstance(exc, AuthenticationError):
            failure = ListFailure.REFUSED
        elif isinstance(exc, MalformedResponseError):
            failure = ListFailure.MALFORMED
        if failure is not None:
            settings = replace(self.state.settings, backoff=self._retry, backoff_cap=60.0 * self._retry)
            self.state = after_failure(replace(self.state, settings=settings), failure, server_sent)
            log.info("task list unusable (%s): polling each task", exc.message)
            return
        if isinstance(exc, RateLimitedError):
            p._gate.limited(exc.retry_after, p.policy.error_backoff, sent_rate)
        self._failing_walks += 1  # 5xx, network: the next plan waits a backoff
        delay = p.policy.error_delay(self._failing_walks, p._rng)
        self._next_plan = max(self._next_plan, p._loop.time() + delay)

    # ------------------------------------------------------------ what a page shows
    def fold(self, task: Task, sent_local: float) -> bool:
        """Fold one page item (of a page sent at local time ``sent_local``) into its task's
        state; True if it observed a watched task (queued again by its schedule, counted
        from when the page was sent, or for its result GET)."""
        p = self._p
        state = p.state(task.id)
        if state is None or state.ended or not state.leased or state.in_flight or state.result_wanted:
            return False
        if not state.policy.list_polling:
            return False
        new = Sighting.from_task(task, p.clock.server_now(sent_local), Source.PAGE)
        if state.task is not None:
            fetched = p.clock.server_now(state.fetched_at or 0.0)
            old = Sighting.from_task(state.task, fetched, Source.GET)
            if merge(old, new).status != new.status:
                return False  # a lagging page, or older than the last GET: not an observation
        if task.status in _RESULT:  # its URLs come with its own GET: one, before other polls
            state.result_wanted, state.seen_ended_at = True, time.time()
            state.ended_on_page = new.completed_at or new.seen_at  # (in the order of the ends)
            state.covered = False
            p._schedule(state, 0.0, first=True)
            return True
        p._record_answer(state, task)
        state.covered = False
        if not state.ended:
            p._schedule(state, p._pacer.next_delay(state, task) - (time.time() - sent_local))
        return True

    def _lagging(self, now: float, worst: float) -> None:
        """The list lags behind the tasks' own GETs (two stale pages): per-task polling for
        ``list_retry`` (doubling per episode in a row), then the list is tried again."""
        if not self.state.health.available:
            return
        period = self.guard.lag.episode(now, self._retry, 60.0 * self._retry)
        self.state = after_lag(self.state, now, period, worst)
        log.info("the task list lags behind task GETs (by up to %.1f s): polling each task", worst)

    async def fetch_page(self, **query: Any) -> TaskPage:
        """``client.list_tasks(**query)`` once, in its turn in the budget and counted as a
        page (the walks of ``watch_account``: :mod:`mh_notebook.engine.account`)."""
        p = self._p
        while not await p._take_turn(honour_pause=False):  # noqa: ASYNC110 - as refreshes wait
            await asyncio.sleep(p._gate.pause_left())
        self.count(page=True)
        sent_rate = p._gate.count_send()
        try:
            page: TaskPage = await p._client.list_tasks(**query, retry=False)
        except RateLimitedError as exc:  # a limit's 429 pauses every request, as for polls
            p._gate.limited(exc.retry_after, p.policy.error_backoff, sent_rate)
            raise
        finally:
            p._gate.release()
        p._gate.on_answer(sent_rate)
        return page

    @property
    def plans(self) -> bool:
        """Whether pages may be sent: list polling on, and the list duty not elsewhere."""
        return self.enabled and self.duty_elsewhere is None and time.monotonic() < self.duty_until

    # ------------------------------------------------------------ for the panel
    @property
    def health(self) -> Health:
        """Whether the list works; after a failure, when it is tried again."""
        return self.state.health

    def mode(self) -> str:
        """How the poller polls, in one line for the panel."""
        health = self.state.health
        if not self.enabled:
            return "per-task GETs (list polling off)"
        if self.duty_elsewhere == "":
            return "per-task GETs until this process knows who holds the team's list duty"
        if self.duty_elsewhere is not None:
            return (
                f"list duty held by another process ({self.duty_elsewhere}): its pages are followed "
                "through the team journal; per-task GETs for tasks not answered yet"
            )
        if not health.available:
            wait = max(0.0, health.retry_at - self._p.clock.server_now(time.time()))
            return f"per-task GETs: {health.reason or 'the list failed'}; trying it again in {wait:.0f} s"
        if self.pages == 0:
            return "per-task GETs (the list has not been cheaper yet)"
        now, sent = self._p._loop.time(), list(self._sent)  # one copy: the poller thread appends
        recent = [page for t, page in sent if t >= now - _RATE_SPAN]
        span = min(_RATE_SPAN, max(1e-3, now - sent[0][0])) if sent else _RATE_SPAN
        rate = sum(recent) / span
        per_task = (self.pages + self.gets) / max(1, len(self._p._states))
        return f"{rate:.1f} list pages/s + 1 GET per result: {per_task:.1f} requests per task"
