"""The polling engine: one daemon thread, one asyncio loop, one ``AsyncClient``.

It decides which task to ask about next (each task has its own next-poll time from
:class:`~mh_notebook.polling.policy.PollPolicy`), keeps a global rate limit (a token bucket
whose rate follows the learned budget) and a cap on requests in flight that every request
takes its turn in (polls and refreshes alike), pauses everyone on a 429 that shows a
server limit (other 429s hold back their own request only), backs off per
task on errors, and stops on 401/403 (probing the key again every ``max_interval`` until
it works). It knows nothing
of widgets or journals: every change it sees is handed to ``on_observation`` (in the
poller thread), and ``on_tick`` is called on a fixed period.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from ..client import AsyncClient, check_task_id, is_transient
from ..errors import AuthenticationError, ModelHunterError, NotFoundError, RateLimitedError, ServerError
from ..models import Task, TaskStatus
from .budget import AdaptiveRate, TokenBucket, poll_priority
from .clock import ClockOffset
from .policy import LatencyModel, PollPolicy

__all__ = ["Observation", "PollQueue", "Poller", "TaskState", "poll_rank"]

log = logging.getLogger("mh_notebook.poller")

Kind = Literal["change", "error", "not_found", "auth"]
T = TypeVar("T")


@dataclass
class TaskState:
    """What the poller knows about one watched task."""

    task_id: str
    task: Task | None = None
    polls: int = 0
    """Requests spent on this task so far (by every engine: one that watches a task a
    journal knows starts from the journal's count)."""
    reported_polls: int = 0
    """``polls`` as of the last change handed to ``on_observation`` (what was journalled)."""
    errors: int = 0
    """Consecutive failed requests."""
    not_found: int = 0
    """404 answers in a row."""
    ended: bool = False
    """Terminal status seen, or given up (not found)."""
    is_not_found: bool = False
    last_error: str | None = None
    fetched_at: float | None = None
    """Wall-clock time the latest ``task`` was fetched (its URLs are fresh from then)."""
    first_seen_at: float | None = None
    policy: PollPolicy = field(default_factory=PollPolicy)
    """The schedule this task is polled on (real seconds)."""
    last_polled: float = -math.inf
    """Loop time the last poll was sent."""
    queued_at: float | None = None
    """Loop time its first poll was queued: a task never polled has waited since then."""
    predicted_latency: float | None = None
    """The latency (server seconds) predicted when the task's model was first known."""
    leased: bool = True
    """False while another process polls this task (a shared team journal): changes then
    arrive through :meth:`Poller.observe` instead."""
    due_age: float = 0.0
    """Its age (server seconds) when its next poll is due."""
    window: tuple[float, float] | None = None
    """The latency window its next poll was scheduled by."""
    version: int = 0
    in_flight: bool = False
    sent_rate: float = 0.0
    """The engine's sending rate (requests per second) when its last poll was sent."""


class PollQueue:
    """The queued polls of a poller: when each is due, and which due one goes first.

    Pure: no clock and no thread of its own (every method takes the loop time), so the
    schedule can be driven with a fake clock. ``lookup`` gives a task's live state; an
    entry stands while its task is watched, leased, not ended and not queued again since.
    """

    def __init__(self, lookup: Callable[[str], TaskState | None]) -> None:
        self._lookup = lookup
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, state: TaskState, now: float, delay: float, *, first: bool = False) -> None:
        """Queue ``state``'s next poll ``delay`` seconds after ``now`` (replacing any queued
        one); ``first`` puts it ahead of every overdue poll."""
        state.version += 1
        if state.queued_at is None:
            state.queued_at = now
        at = 0.0 if first else now + max(0.0, delay)
        heapq.heappush(self._heap, (at, next(self._seq), state.task_id, state.version))

    def _stands(self, entry: tuple[float, int, str, int]) -> TaskState | None:
        state = self._lookup(entry[2])
        if state is None or state.version != entry[3] or state.ended or not state.leased:
            return None  # not leased: polled elsewhere, queued again when the lease comes back
        return state

    def next_due(self) -> float | None:
        """When the earliest queued poll is due (``None``: nothing queued)."""
        while self._heap and self._stands(self._heap[0]) is None:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pick(self, now: float, *, any_time: bool = False) -> TaskState | None:
        """The due poll worth most at ``now`` (:func:`poll_rank`), taken off the queue;
        with ``any_time``, the earliest if none is due."""
        ready: list[tuple[tuple[float, ...], tuple[float, int, str, int], TaskState]] = []
        while self._heap and (self._heap[0][0] <= now or (any_time and not ready)):
            entry = heapq.heappop(self._heap)
            state = self._stands(entry)
            if state is None or state.in_flight:
                continue
            ready.append((poll_rank(state, now - entry[0], now), entry, state))
        if not ready:
            return None
        best = max(ready, key=lambda r: r[0])
        for _, entry, _ in ready:
            if entry is not best[1]:
                heapq.heappush(self._heap, entry)
        return best[2]


def poll_rank(state: TaskState, overdue: float, now: float) -> tuple[float, ...]:
    """:func:`poll_priority` of a due poll of ``state``, ``overdue`` seconds late at loop
    time ``now``: a task never answered first (its first answer tells its model and age),
    then the fewest polls still needed at its age now. A task never polled has waited
    since its first poll was queued, and is starved no sooner than any other (counted as
    never polled, every new task went before the ones starved past ``max_interval``)."""
    policy = state.policy
    age = state.due_age + overdue
    remaining = 0.0 if state.task is None else policy.remaining_polls(age, state.window)
    since = state.last_polled if state.last_polled > -math.inf else state.queued_at
    waited = now - since if since is not None else 0.0
    return poll_priority(remaining, overdue, waited, policy.max_interval)


@dataclass(frozen=True)
class Observation:
    """One thing the poller learned about one task, handed to ``on_observation``."""

    kind: Kind
    task_id: str
    observed_at: float
    """Wall-clock time (``time.time()``) the answer arrived."""
    task: Task | None
    """The task as just fetched (``None`` for errors before any answer)."""
    previous: TaskStatus | None
    polls: int
    error: ModelHunterError | None = None
    elsewhere: bool = False
    """Seen by another process of a shared journal (already journalled there)."""
    ended: bool = False
    """The task's end: the first terminal status seen for it. A ``succeeded`` answering the
    refresh of an expired URL is not one; a ``succeeded`` first seen right after
    ``expired`` (the task ended and its URL expired between two polls) is."""


class Poller:
    """Polls many tasks from one background thread; thread-safe to call from anywhere.

    All durations are real seconds: each task carries the (possibly scaled) policy it was
    watched with. ``rate_limit`` is the most requests per second for the whole poller,
    bursts of ``burst`` (default: one second's worth, at least 1: a group of tasks due at
    once, such as a batch of one model ending together, is asked about within a second); the rate sent
    settles under the server's own limit when 429s show one (:class:`AdaptiveRate`).
    When more polls are due than the budget allows, the cheapest task goes first
    (:func:`poll_priority`). Server timestamps are compared with local time through
    ``clock``, the learned offset of the server's clock.
    """

    def __init__(
        self,
        client_factory: Callable[[], AsyncClient],
        *,
        on_observation: Callable[[Observation], None],
        on_tick: Callable[[], None] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        policy: PollPolicy | None = None,
        rate_limit: float = 10.0,
        burst: float | None = None,
        max_in_flight: int = 8,
        tick_interval: float = 0.5,
        seed: int | None = None,
        latency: LatencyModel | None = None,
        clock: ClockOffset | None = None,
        name: str = "mh-poller",
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        self.policy = policy or PollPolicy()
        self.latency = latency or LatencyModel(min_samples=self.policy.min_samples)
        self.prior = LatencyModel(min_samples=self.policy.min_samples, half_life=16.0, keep=400)
        """Latencies per task type (all models of it): the window of a model not learned yet."""
        self._check_rate(rate_limit, burst)
        self.budget = AdaptiveRate(rate_limit)
        self._burst = burst
        self.clock = clock or ClockOffset()
        self._limiter: TokenBucket | None = None
        self._sent = self._held = 0
        self.budget_belief: str | None = None
        """What the 429s seen lately say: a server limit, or random (for the panel)."""
        self._max_in_flight, self._tick_interval = max_in_flight, tick_interval
        self._client_factory, self._on_observation, self._on_tick = client_factory, on_observation, on_tick
        self._on_close = on_close
        self._jobs: set[asyncio.Task[object]] = set()
        self._rng = random.Random(seed)
        self._states: dict[str, TaskState] = {}
        self._states_lock = threading.Lock()
        self._queue = PollQueue(self.state)
        self._paused = False
        self._pause_until = 0.0
        self.auth_error: AuthenticationError | None = None
        self._auth_probe_at = 0.0
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._wakeup = asyncio.Event()
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._started.wait()
        if self._startup_error is not None:
            self._thread.join(10)
            raise self._startup_error

    # ------------------------------------------------------- public, any thread
    def watch(
        self,
        items: Iterable[str | Task],
        policy: PollPolicy | None = None,
        *,
        leased: bool = True,
        polls: Mapping[str, int] | None = None,
    ) -> list[str]:
        """Start watching ids or tasks (idempotent); returns their ids. Never blocks.

        ``policy`` is the schedule for tasks new to this poller (default: the poller's);
        ``leased=False`` leaves them to another process until :meth:`set_leased`;
        ``polls`` are requests already spent on them elsewhere (a journal's count), where
        the count of tasks new to this poller starts.
        """
        spent = polls or {}
        batch = [(item.id, item) if isinstance(item, Task) else (check_task_id(item), None) for item in items]
        new = []
        with self._states_lock:  # registered here, so state queries see them at once
            for task_id, task in batch:
                if task_id not in self._states:
                    state = TaskState(
                        task_id, first_seen_at=time.time(), policy=policy or self.policy, leased=leased
                    )
                    state.polls = state.reported_polls = spent.get(task_id, 0)
                    self._states[task_id] = state
                    new.append((state, task))
        if new:
            self.call_soon(self._start, new)
        return [task_id for task_id, _ in batch]

    def unwatch(self, task_ids: Iterable[str]) -> None:
        """Stop polling these tasks (their states are forgotten)."""
        with self._states_lock:
            for task_id in task_ids:
                self._states.pop(task_id, None)

    def state(self, task_id: str) -> TaskState | None:
        """The live state of one task (``None`` if not watched)."""
        with self._states_lock:
            return self._states.get(task_id)

    def states(self, task_ids: Iterable[str] | None = None) -> list[TaskState]:
        """The live states of these tasks (default: all), a list safe to iterate anywhere."""
        with self._states_lock:
            if task_ids is None:
                return list(self._states.values())
            return [s for s in map(self._states.get, task_ids) if s is not None]

    @property
    def rate_limit(self) -> float:
        """The ceiling: the most requests per second ever sent."""
        return self.budget.ceiling

    @property
    def effective_rate(self) -> float:
        """Requests per second allowed now (under the ceiling after the server's 429s)."""
        return self.budget.rate

    def set_rate(self, rate_limit: float, burst: float | None = None) -> None:
        """Change the ceiling of the request budget (requests per second, bursts of ``burst``)."""
        self._check_rate(rate_limit, burst)
        self.call_soon(self._set_ceiling, rate_limit, burst)

    def set_leased(self, task_ids: Iterable[str], leased: bool) -> None:
        """Poll these tasks here (``True``), or leave them to another process (``False``)."""
        self.call_soon(self._set_leased, list(task_ids), leased)

    def observe(self, task: Task, polls: int) -> None:
        """A change seen by another process (``polls``: requests it spent on the task)."""
        self.call_soon(self._observe_elsewhere, task, polls)

    def pause(self) -> None:
        """Stop sending requests until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        """Send requests again after :meth:`pause`; after a 401/403, try the key again
        (the error is cleared now and comes back if the key is still refused)."""
        self._paused = False
        self.auth_error = None
        self.call_soon(self._wakeup.set)

    @property
    def paused(self) -> bool:
        """True while paused by :meth:`pause`."""
        return self._paused

    @property
    def running(self) -> bool:
        """True until :meth:`stop` has finished."""
        return self._thread.is_alive() and not self._stopping

    @property
    def in_poller_thread(self) -> bool:
        """True when called from the poller's own thread (a callback, a tick)."""
        return threading.current_thread() is self._thread

    def refresh(self, task_id: str) -> concurrent.futures.Future[Task]:
        """Fetch ``task_id`` now (with retries) for fresh result URLs; a future of the task.

        The request takes its turn in the rate limit, the cap on requests in flight and
        any 429 pause, like every poll.
        """
        if self._loop.is_closed():
            raise RuntimeError("the poller has been stopped")
        return asyncio.run_coroutine_threadsafe(self._refresh(task_id), self._loop)

    def spawn(self, make: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Run ``make()`` as a background job on the poller's loop; a future of its result.

        For work that must not hold up polling (e.g. downloads): it takes no turn in the
        request budget unless it asks for one, and it is cancelled when the poller stops.
        """
        if self._loop.is_closed() or self._stopping:
            raise RuntimeError("the poller has been stopped")
        return asyncio.run_coroutine_threadsafe(self._job(make), self._loop)

    async def _job(self, make: Callable[[], Awaitable[T]]) -> T:
        job = asyncio.current_task()
        assert job is not None  # a coroutine run by the loop
        self._jobs.add(job)
        try:
            return await make()
        finally:
            self._jobs.discard(job)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling, close connections and end the thread (no wait from the thread itself)."""
        if not self._thread.is_alive():
            return
        self._stopping = True
        with contextlib.suppress(RuntimeError):
            self.call_soon(self._wakeup.set)
        if not self.in_poller_thread:
            self._thread.join(timeout)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` in the poller thread, soon (thread-safe)."""
        if self._loop.is_closed():
            raise RuntimeError("the poller has been stopped")
        self._loop.call_soon_threadsafe(fn, *args)

    @staticmethod
    def _check_rate(rate_limit: float, burst: float | None) -> None:
        if not rate_limit > 0 or (burst is not None and not burst >= 1):
            raise ValueError(f"rate_limit must be > 0 and burst >= 1, got {rate_limit!r} and {burst!r}")

    # ---------------------------------------------------------- loop thread
    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._run())
        except BaseException as exc:  # a failed start is raised in __init__
            if not self._started.is_set():
                self._startup_error = exc
            else:
                log.exception("the poller thread failed")
        finally:
            self._started.set()
            self._stopping = True
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

    async def _run(self) -> None:
        self._client = self._client_factory()
        self._new_limiter()
        self._slots = asyncio.Semaphore(self._max_in_flight)
        self._inflight: set[asyncio.Task[None]] = set()
        ticker = asyncio.create_task(self._ticker())
        self._started.set()
        try:
            await self._schedule_forever()
        finally:
            ticker.cancel()
            jobs = [*self._inflight, *self._jobs]
            for job in jobs:
                job.cancel()
            await asyncio.gather(ticker, *jobs, return_exceptions=True)
            await self._client.aclose()
            if self._on_close is not None:
                await self._on_close()
            self._tick()

    def _new_limiter(self) -> None:
        """The token bucket follows the budget's rate (its tokens are kept)."""
        rate = self.budget.rate
        burst = min(self._burst, max(1.0, rate)) if self._burst is not None else max(1.0, rate)
        if self._limiter is None:
            self._limiter = TokenBucket(rate, burst)
        else:
            self._limiter.set(rate, burst)

    def _set_ceiling(self, rate_limit: float, burst: float | None) -> None:
        self.budget.set_ceiling(rate_limit)
        self._burst = burst
        self._new_limiter()

    def _limited(self, retry_after: float | None, fallback: float, sent_rate: float | None = None) -> bool:
        """A 429 for a request sent at ``sent_rate``. If the budget sees a server limit in
        it (:meth:`AdaptiveRate.on_limited`), everyone waits ``Retry-After`` and the rate
        shrinks (once per pause); True then. Otherwise only its own request waits."""
        wait = retry_after if retry_after is not None else fallback
        now = self._loop.time()
        if not self.budget.on_limited(now, wait, sent_rate):
            self._new_limiter()  # a probe may have lowered the rate
            return False
        self._pause_until = max(self._pause_until, now + wait)
        self._new_limiter()
        return True

    def _count_send(self) -> float:
        """One request goes out now: counted for the budget; the rate it is sent at."""
        self._sent += 1
        return self.budget.on_send(self._loop.time())

    async def _schedule_forever(self) -> None:
        while not self._stopping:
            delay = self._idle_for()
            if delay is None or delay > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                continue
            probing = self.auth_error is not None  # one request to see if the key works again
            if probing:
                self._auth_probe_at = self._loop.time() + self.policy.max_interval
            if not await self._take_turn(honour_pause=not probing):
                continue  # a 429, a 401 or a pause arrived while we queued
            state = self._pick(any_time=probing)
            if state is None:
                self._slots.release()
                continue
            state.in_flight = True
            state.last_polled = self._loop.time()
            state.sent_rate = self._count_send()
            job = asyncio.create_task(self._poll(state))
            self._inflight.add(job)
            job.add_done_callback(self._inflight.discard)

    async def _take_turn(self, *, honour_pause: bool) -> bool:
        """Wait for the rate limit and a free slot; False (no slot held) if now held back.

        A real server limit's pause holds everyone back; ``honour_pause`` adds the user's pause and a
        refused key (refreshes asked for by the user and key probes pass those).
        """
        assert self._limiter is not None
        if await self._limiter.acquire():
            self._held += 1  # the budget held a request back: it binds
        await self._slots.acquire()
        held = self._loop.time() < self._pause_until or (
            honour_pause and (self._paused or self.auth_error is not None)
        )
        if held:
            self._slots.release()
        return not held

    def _idle_for(self) -> float | None:
        """Seconds to sleep before the next poll is due (``None``: until woken)."""
        due = self._queue.next_due()  # no budget spent on stale entries
        if self._paused or due is None:
            return None
        if self.auth_error is not None:  # probe the key now and then, nothing more
            return max(0.0, self._auth_probe_at - self._loop.time())
        return max(due, self._pause_until) - self._loop.time()

    def _schedule(self, state: TaskState, delay: float, *, first: bool = False) -> None:
        """Queue the next poll in ``delay`` seconds; ``first`` jumps ahead of every overdue poll."""
        self._queue.push(state, self._loop.time(), delay, first=first)
        self._wakeup.set()

    def _pick(self, *, any_time: bool = False) -> TaskState | None:
        """The due poll worth most now (:func:`poll_rank`), taken off the queue; with
        ``any_time``, the earliest if none is due."""
        return self._queue.pick(self._loop.time(), any_time=any_time)

    def _set_leased(self, task_ids: list[str], leased: bool) -> None:
        for state in self.states(task_ids):
            was, state.leased = state.leased, leased
            if leased and not was and not state.ended:
                self._schedule(state, 0.0 if state.task is None else self._next_delay(state, state.task))

    def _observe_elsewhere(self, task: Task, polls: int) -> None:
        state = self.state(task.id)
        if state is None:
            return
        state.polls = max(state.polls, polls)  # counted on from there if the lease comes here
        if state.task is None or state.task.status != task.status:
            self._record_answer(state, task, elsewhere=True)

    def _start(self, batch: list[tuple[TaskState, Task | None]]) -> None:
        for state, task in batch:
            if task is None:
                self._schedule(state, 0.0)
                continue
            self._record_answer(state, task)  # a Task we were handed counts as an observation
            if not task.is_terminal:  # it tells the age and model: no need to ask at once
                self._schedule(state, self._next_delay(state, task))

    async def _poll(self, state: TaskState) -> None:
        try:
            state.polls += 1
            try:
                task = await self._client.get_task(state.task_id, retry=False)
            except ModelHunterError as exc:
                self._on_error(state, exc)
            else:
                self.budget.on_answer(self._loop.time(), state.sent_rate)
                self._record_answer(state, task)
                if task.status == TaskStatus.EXPIRED:
                    self._schedule(state, 0.0, first=True)  # the next answer carries a fresh URL
                elif not state.ended:
                    self._schedule(state, self._next_delay(state, task))
        except Exception:  # the loop must never die: report and back off
            log.exception("unexpected error while polling %s", state.task_id)
            self._schedule(state, state.policy.max_error_backoff)
        finally:
            state.in_flight = False
            self._slots.release()

    def _record_answer(self, state: TaskState, task: Task, elsewhere: bool = False) -> None:
        previous = state.task.status if state.task is not None else None
        now = time.time()
        task = task.carrying(state.task)  # what only some answers send is not forgotten
        state.task, state.fetched_at = task, now
        for stamp in (task.created_at, task.completed_at):  # both are in the server's past
            if stamp is not None:
                self.clock.observe_timestamp(stamp.timestamp(), now)
        state.errors = state.not_found = 0
        state.last_error = None
        if self.auth_error is not None:  # the key works again: everyone polls again
            self.auth_error = None
            self._wakeup.set()
        if previous is None and task.model is not None:  # the prediction made at first sight
            state.predicted_latency = self.latency.predict(_key(task))
        ended = task.is_terminal and not state.ended  # once, not on refreshes of its URLs
        if ended:
            state.ended = True
            if task.latency is not None:
                self._learn(task, task.latency)
        if previous != task.status:
            task_id, polls = state.task_id, state.polls
            self._emit(
                Observation("change", task_id, now, task, previous, polls, elsewhere=elsewhere, ended=ended)
            )

    def learn(self, ends: Iterable[tuple[str, str, str, float, bool]]) -> None:
        """Seed the latency models with ``(provider, model, type, latency, succeeded)`` ends
        (a journal's, say); poller thread."""
        for provider, model, kind, latency, ok in ends:
            self.latency.add((provider, model), latency, ok, kind)
            self.prior.add(("*", kind), latency, ok)

    def _learn(self, task: Task, latency: float) -> None:
        """Add an end to the latency models; if it fell outside the window the others of its
        kind were scheduled by, schedule them again (a provider got faster, or failed early)."""
        key = _key(task)
        before = self.latency.window(key)
        ok = task.status == TaskStatus.SUCCEEDED
        self.latency.add(key, latency, ok, _type_key(task)[1])
        self.prior.add(_type_key(task), latency, ok)
        if before is None or before[0] <= latency <= before[1]:
            return
        for other in self.states():
            if other.task is not None and not other.ended and not other.in_flight and _key(other.task) == key:
                self._schedule(other, self._next_delay(other, other.task))

    def _next_delay(self, state: TaskState, task: Task) -> float:
        """The schedule's next gap for ``task``, its age taken on the server's clock.

        Scheduled by a window, its age is the least the clock's error allows: a poll placed
        at a narrow window's end must not come before it (early in a session a whole-second
        ``Date`` header leaves the offset's middle up to half a second off; early, the poll
        misses the end and the next comes a whole gap later); late, it costs that much.
        """
        now = time.time()
        if task.created_at is not None:
            created = task.created_at.timestamp()
            if task.created_at.microsecond == 0:  # whole seconds: floored, so half a second on average
                created += 0.5
            elapsed = self.clock.server_now(now) - created
            least = self.clock.server_at_least(now) - created
        else:
            elapsed = least = now - (state.first_seen_at or now)
        window = self.latency.window(_key(task))  # its model's, helped by its type's
        if window is None:  # a model never seen to succeed: what tasks of its type took
            window = self.prior.window(_type_key(task))
        if window is None:
            elapsed = max(0.0, elapsed)
            delay = state.policy.next_delay(task.status, elapsed, None, self._rng)
        else:  # early ends: its model's own record once it has one, else its type's
            elapsed = max(0.0, least)
            model, key = self.latency, _key(task)
            if model.count(key) < model.min_samples:
                model, key = self.prior, _type_key(task)
            early, until = model.early_share(key, window[0]), model.early_until(key, window[0])
            delay = state.policy.next_delay(task.status, elapsed, window, self._rng, early, until)
        state.due_age, state.window = elapsed + delay, window
        return delay

    def _on_error(self, state: TaskState, exc: ModelHunterError) -> None:
        state.last_error = exc.message
        previous = state.task.status if state.task is not None else None
        if isinstance(exc, AuthenticationError):
            self._on_auth_error(state, exc)
            return
        if isinstance(exc, NotFoundError) and state.task is None:
            state.not_found += 1
            if state.not_found > state.policy.not_found_retries:
                state.ended = state.is_not_found = True
                self._emit(Observation("not_found", state.task_id, time.time(), None, None, state.polls, exc))
                return
            self._schedule(state, state.policy.not_found_interval)
            return
        if isinstance(exc, RateLimitedError):  # a real limit holds everyone back, noise this task
            delay = exc.retry_after if exc.retry_after is not None else state.policy.error_backoff
            if self._limited(exc.retry_after, state.policy.error_backoff, state.sent_rate):
                delay = max(0.0, self._pause_until - self._loop.time())
        else:
            state.errors += 1
            delay = state.policy.error_delay(state.errors, self._rng)
        self._emit(Observation("error", state.task_id, time.time(), state.task, previous, state.polls, exc))
        self._schedule(state, delay)

    def _on_auth_error(self, state: TaskState, exc: AuthenticationError) -> None:
        """401/403: stop polling; one task is asked again every ``max_interval``."""
        previous = state.task.status if state.task is not None else None
        if self.auth_error is None:
            self.auth_error = exc
            obs = Observation("auth", state.task_id, time.time(), state.task, previous, state.polls, exc)
            self._emit(obs)
        self._auth_probe_at = self._loop.time() + state.policy.max_interval
        self._schedule(state, 0.0)

    async def _refresh(self, task_id: str, attempts: int = 8) -> Task:
        """Fetch now, riding out transient errors; every request is counted on the task."""
        state = self.state(task_id)
        for attempt in range(1, attempts + 1):
            try:
                task = await self._fetch_in_turn(task_id, state)
            except ModelHunterError as exc:
                if not (is_transient(exc) or isinstance(exc, ServerError)) or attempt == attempts:
                    raise  # like polling, any 5xx is worth another try here
                if isinstance(exc, RateLimitedError):  # a limit's pause holds the next turn
                    if not self._limited(exc.retry_after, self.policy.error_backoff):
                        await asyncio.sleep(exc.retry_after or self.policy.error_backoff)
                else:
                    await asyncio.sleep(self.policy.error_delay(attempt, self._rng))
                continue
            if state is not None:
                self._record_answer(state, task)
            if task.status != TaskStatus.EXPIRED or attempt == attempts:
                return task  # "expired" re-issues the URL: the next answer carries it
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch_in_turn(self, task_id: str, state: TaskState | None) -> Task:
        """One request for a refresh, sent when the budget and a 429 pause allow."""
        while True:
            if await self._take_turn(honour_pause=False):
                break
            await asyncio.sleep(max(0.0, self._pause_until - self._loop.time()))
        try:
            if state is not None:
                state.polls += 1
            self._count_send()
            return await self._client.get_task(task_id, retry=False)
        finally:
            self._slots.release()

    def _emit(self, observation: Observation) -> None:
        if observation.kind in ("change", "not_found"):  # the ones journalled
            state = self.state(observation.task_id)
            if state is not None:
                state.reported_polls = max(state.reported_polls, observation.polls)
        try:
            self._on_observation(observation)
        except Exception:
            log.exception("observer failed on %s", observation.task_id)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval)
            self._adapt_rate()
            self._tick()

    def _adapt_rate(self) -> None:
        """Grow the budget back towards the ceiling while it is what holds polls back (most
        requests waited for a token), end a probe, and say what the 429s look like."""
        (used, self._sent), (held, self._held) = (self._sent, 0), (self._held, 0)
        now = self._loop.time()
        if self.budget.on_tick(now, self._tick_interval, used, held):
            self._new_limiter()
        self.budget_belief = self.budget.belief(now)

    def _tick(self) -> None:
        if self._on_tick is None:
            return
        try:
            self._on_tick()
        except Exception:
            log.exception("tick callback failed")


def _type_key(task: Task) -> tuple[str, str]:
    return ("*", task.type or "?")


def _key(task: Task) -> tuple[str, str]:
    return (task.provider or "?", task.model or "?")
