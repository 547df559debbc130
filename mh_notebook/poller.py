"""The polling engine: one daemon thread, one asyncio loop, one ``AsyncClient``.

It decides which task to ask about next (each task has its own next-poll time from
:class:`~mh_notebook.policy.PollPolicy`), keeps a global rate limit (aiolimiter's leaky
bucket) and a cap on requests in flight, pauses everyone on a 429, backs off per task on
errors, and stops on 401/403. It knows nothing of widgets: every change it sees is handed
to ``on_observation`` (in the poller thread), and ``on_tick`` is called on a fixed period
so that a view can redraw itself there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from aiolimiter import AsyncLimiter

from .client import AsyncClient, check_task_id, is_transient
from .errors import AuthenticationError, ModelHunterError, NotFoundError, RateLimitedError, ServerError
from .models import Task, TaskStatus
from .policy import LatencyModel, PollPolicy

__all__ = ["Observation", "Poller", "TaskState"]

log = logging.getLogger("mh_notebook.poller")

Kind = Literal["change", "error", "not_found", "auth"]


@dataclass
class TaskState:
    """What the poller knows about one watched task."""

    task_id: str
    task: Task | None = None
    polls: int = 0
    """Requests spent on this task so far."""
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
    version: int = 0
    in_flight: bool = False


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


class Poller:
    """Polls many tasks from a background thread; thread-safe to call from anywhere.

    ``time_scale`` speeds the schedule up for a time-scaled simulator: policy seconds
    are divided by it and the rate limit multiplied by it (1 for the real API).
    """

    def __init__(
        self,
        client_factory: Callable[[], AsyncClient],
        *,
        on_observation: Callable[[Observation], None],
        on_tick: Callable[[], None] | None = None,
        policy: PollPolicy | None = None,
        rate_limit: float = 10.0,
        burst: float | None = None,
        max_in_flight: int = 8,
        tick_interval: float = 0.5,
        time_scale: float = 1.0,
        seed: int | None = None,
        latency: LatencyModel | None = None,
    ) -> None:
        if rate_limit <= 0 or time_scale <= 0 or max_in_flight < 1:
            raise ValueError("rate_limit and time_scale must be > 0 and max_in_flight >= 1")
        self.policy = policy or PollPolicy()
        self.latency = latency or LatencyModel(min_samples=self.policy.min_samples)
        self.rate_limit, self.time_scale = rate_limit, time_scale
        self._burst = burst if burst is not None else rate_limit
        self._max_in_flight, self._tick_interval = max_in_flight, tick_interval
        self._client_factory, self._on_observation, self._on_tick = client_factory, on_observation, on_tick
        self._rng = random.Random(seed)
        self.states: dict[str, TaskState] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._paused = False
        self._pause_until = 0.0
        self.auth_error: AuthenticationError | None = None
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._wakeup = asyncio.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="mh-poller", daemon=True)
        self._thread.start()
        self._started.wait(10)

    # ------------------------------------------------------- public, any thread
    def watch(self, items: Iterable[str | Task]) -> list[str]:
        """Start watching ids or tasks (idempotent); returns their ids. Never blocks."""
        batch = [(item.id, item) if isinstance(item, Task) else (check_task_id(item), None) for item in items]
        new = []
        for task_id, task in batch:  # registered here, so state queries see them at once
            if task_id not in self.states:
                state = self.states[task_id] = TaskState(task_id, first_seen_at=time.time())
                new.append((state, task))
        self.call_soon(self._start, new)
        return [task_id for task_id, _ in batch]

    def unwatch(self, task_id: str) -> None:
        """Stop polling ``task_id`` (its state is forgotten)."""
        self.call_soon(self._remove, task_id)

    def pause(self) -> None:
        """Stop sending requests until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        """Send requests again after :meth:`pause`."""
        self._paused = False
        self.call_soon(self._wakeup.set)

    @property
    def paused(self) -> bool:
        """True while paused by :meth:`pause`."""
        return self._paused

    @property
    def running(self) -> bool:
        """True until :meth:`stop` has finished."""
        return self._thread.is_alive()

    def refresh(self, task_id: str) -> concurrent.futures.Future[Task]:
        """Fetch ``task_id`` now (with retries) for fresh result URLs; a future of the task."""
        return asyncio.run_coroutine_threadsafe(self._refresh(task_id), self._loop)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling, close connections and end the thread."""
        if not self._thread.is_alive():
            return
        self._stopping = True
        self.call_soon(self._wakeup.set)
        self._thread.join(timeout)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` in the poller thread, soon (thread-safe)."""
        if self._loop.is_closed():
            raise RuntimeError("the poller has been stopped")
        self._loop.call_soon_threadsafe(fn, *args)

    # ---------------------------------------------------------- loop thread
    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._run())
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _run(self) -> None:
        self._client = self._client_factory()
        self._limiter = AsyncLimiter(self._burst, self._burst / (self.rate_limit * self.time_scale))
        self._slots = asyncio.Semaphore(self._max_in_flight)
        self._inflight: set[asyncio.Task[None]] = set()
        ticker = asyncio.create_task(self._ticker())
        self._started.set()
        try:
            await self._schedule_forever()
        finally:
            ticker.cancel()
            for job in list(self._inflight):
                job.cancel()
            await asyncio.gather(ticker, *self._inflight, return_exceptions=True)
            await self._client.aclose()
            self._tick()

    async def _schedule_forever(self) -> None:
        while not self._stopping:
            delay = self._idle_for()
            if delay is None or delay > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                continue
            _, _, task_id, version = heapq.heappop(self._heap)
            state = self.states.get(task_id)
            if state is None or state.version != version or state.ended or state.in_flight:
                continue
            await self._limiter.acquire()
            await self._slots.acquire()
            if self._held():  # a 429, a 401 or a pause arrived while we queued
                self._slots.release()
                self._schedule(state, max(0.0, self._pause_until - self._loop.time()))
                continue
            state.in_flight = True
            job = asyncio.create_task(self._poll(state))
            self._inflight.add(job)
            job.add_done_callback(self._inflight.discard)

    def _idle_for(self) -> float | None:
        """Seconds to sleep before the next poll is due (``None``: until woken)."""
        if self._paused or self.auth_error is not None or not self._heap:
            return None
        now = self._loop.time()
        return max(self._heap[0][0], self._pause_until) - now

    def _held(self) -> bool:
        return self._paused or self.auth_error is not None or self._loop.time() < self._pause_until

    def _schedule(self, state: TaskState, delay: float, *, first: bool = False) -> None:
        """Queue the next poll in ``delay`` seconds; ``first`` jumps ahead of every overdue poll."""
        state.version += 1
        at = 0.0 if first else self._loop.time() + max(0.0, delay)
        heapq.heappush(self._heap, (at, next(self._seq), state.task_id, state.version))
        self._wakeup.set()

    def _start(self, batch: list[tuple[TaskState, Task | None]]) -> None:
        for state, task in batch:
            if task is None:
                self._schedule(state, 0.0)
                continue
            self._record_answer(state, task)  # a Task we were handed counts as an observation
            if not task.is_terminal:  # it tells the age and model: no need to ask at once
                self._schedule(state, self._next_delay(state, task))

    def _remove(self, task_id: str) -> None:
        self.states.pop(task_id, None)

    async def _poll(self, state: TaskState) -> None:
        try:
            state.polls += 1
            try:
                task = await self._client.get_task(state.task_id, retry=False)
            except ModelHunterError as exc:
                self._on_error(state, exc)
            else:
                self._record_answer(state, task)
                if task.status == TaskStatus.EXPIRED:
                    self._schedule(state, 0.0, first=True)  # the next answer carries a fresh URL
                elif not state.ended:
                    self._schedule(state, self._next_delay(state, task))
        except Exception:  # the loop must never die: report and back off
            log.exception("unexpected error while polling %s", state.task_id)
            self._schedule(state, self.policy.max_error_backoff / self.time_scale)
        finally:
            state.in_flight = False
            self._slots.release()

    def _record_answer(self, state: TaskState, task: Task) -> None:
        previous = state.task.status if state.task is not None else None
        now = time.time()
        state.task, state.fetched_at = task, now
        state.errors = state.not_found = 0
        state.last_error = None
        if task.is_terminal and not state.ended:  # learn each latency once, not on refreshes
            state.ended = True
            if task.latency is not None:
                ok = task.status == TaskStatus.SUCCEEDED
                self.latency.add(_key(task), task.latency * self.time_scale, ok)
        if previous != task.status:
            self._emit(Observation("change", state.task_id, now, task, previous, state.polls))

    def _next_delay(self, state: TaskState, task: Task) -> float:
        since = task.created_at.timestamp() if task.created_at else (state.first_seen_at or time.time())
        elapsed = max(0.0, time.time() - since) * self.time_scale
        key = _key(task)
        window = self.latency.window(key)
        early = self.latency.early_share(key, window[0]) if window else 1.0
        return self.policy.next_delay(task.status, elapsed, window, self._rng, early) / self.time_scale

    def _on_error(self, state: TaskState, exc: ModelHunterError) -> None:
        state.last_error = exc.message
        previous = state.task.status if state.task is not None else None
        if isinstance(exc, AuthenticationError):
            if self.auth_error is None:
                self.auth_error = exc
                self._emit(
                    Observation("auth", state.task_id, time.time(), state.task, previous, state.polls, exc)
                )
            self._schedule(state, 0.0)  # polled again once the key is fixed; idle until then
            return
        if isinstance(exc, NotFoundError) and state.task is None:
            state.not_found += 1
            if state.not_found > self.policy.not_found_retries:
                state.ended = state.is_not_found = True
                self._emit(Observation("not_found", state.task_id, time.time(), None, None, state.polls, exc))
                return
            self._schedule(state, self.policy.not_found_interval / self.time_scale)
            return
        state.errors += 1
        delay = self.policy.error_delay(state.errors, self._rng) / self.time_scale
        if isinstance(exc, RateLimitedError):
            wait = exc.retry_after if exc.retry_after is not None else delay
            self._pause_until = max(self._pause_until, self._loop.time() + wait)
            delay = max(delay, wait)
        self._emit(Observation("error", state.task_id, time.time(), state.task, previous, state.polls, exc))
        self._schedule(state, delay)

    async def _refresh(self, task_id: str, attempts: int = 8) -> Task:
        """Fetch now, riding out transient errors; every request is counted on the task."""
        state = self.states.get(task_id)
        for attempt in range(1, attempts + 1):
            if state is not None:
                state.polls += 1
            try:
                task = await self._client.get_task(task_id, retry=False)
            except ModelHunterError as exc:
                if not (is_transient(exc) or isinstance(exc, ServerError)) or attempt == attempts:
                    raise  # like polling, any 5xx is worth another try here
                wait = exc.retry_after if isinstance(exc, RateLimitedError) and exc.retry_after else None
                await asyncio.sleep(wait or self.policy.error_delay(attempt, self._rng) / self.time_scale)
                continue
            if state is not None:
                self._record_answer(state, task)
            if task.status != TaskStatus.EXPIRED or attempt == attempts:
                return task  # "expired" re-issues the URL: the next answer carries it
        raise AssertionError("unreachable")  # pragma: no cover

    def _emit(self, observation: Observation) -> None:
        try:
            self._on_observation(observation)
        except Exception:
            log.exception("observer failed on %s", observation.task_id)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval)
            self._tick()

    def _tick(self) -> None:
        if self._on_tick is None:
            return
        try:
            self._on_tick()
        except Exception:
            log.exception("tick callback failed")


def _key(task: Task) -> tuple[str, str]:
    return (task.provider or "?", task.model or "?")
