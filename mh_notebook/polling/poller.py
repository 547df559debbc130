"""The poller: which tasks are watched, and what each answer about one of them means.

One daemon thread, one asyncio loop, one ``AsyncClient`` (:mod:`.loop`). Each task has its
next-poll time (:class:`~.schedule.Pacer`, by its :class:`~.policy.PollPolicy`); list pages
observe many at once where cheaper (:mod:`.lister`); every request takes its turn in a rate
limit and a cap on requests in flight (:class:`~.gate.RequestGate`). A 429 that shows a
server limit pauses everyone (others hold back their own request, at most ``max_interval``),
errors back off per task, 401/403 stops polling (the key probed every ``max_interval``).
No widgets, no journals: changes go to ``on_observation``; ``on_tick`` runs periodically.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import TypeVar

from ..client import AsyncClient, check_task_id, is_transient
from ..errors import AuthenticationError, ModelHunterError, NotFoundError, RateLimitedError, ServerError
from ..models import Task
from ..records import TaskStatus, latency_key
from .clock import ClockOffset
from .gate import RequestGate, check_rate
from .hazard import HazardModel
from .lister import Lister
from .listing import Health, Settings
from .loop import LoopThread
from .policy import LatencyModel, PollPolicy
from .schedule import Pacer, PollQueue
from .state import Kind, Observation, TaskState

__all__ = ["Observation", "Poller", "TaskState"]

log = logging.getLogger("mh_notebook.poller")

T = TypeVar("T")


class Poller:
    """Polls many tasks from one background thread; thread-safe to call from anywhere.

    All durations are real seconds: each task carries the (possibly scaled) policy it was
    watched with. ``rate_limit`` is the most requests per second for the whole poller,
    bursts of ``burst`` (default: one second's worth, at least 1: a group of tasks due at
    once, such as a batch of one model ending together, is asked about within a second;
    1 while 429s show a server limit, under which the rate settles: :mod:`~.budget`).
    When more polls are due than the budget allows, the poll likeliest to see an end on
    time goes first (:mod:`~.hazard`). ``clock`` is the server's clock.
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
        list_polling: bool = True,
        list_settings: Settings | None = None,
    ) -> None:
        self._gate = RequestGate(rate_limit, burst, max_in_flight)  # checks them first
        self.budget = self._gate.budget
        self.policy = policy or PollPolicy()
        self.latency = latency or LatencyModel(min_samples=self.policy.min_samples)
        self.prior = LatencyModel(min_samples=self.policy.min_samples, half_life=16.0, keep=400)
        """Latencies per task type (all models of it): the window of a model not learned yet."""
        self.clock, self._rng = clock or ClockOffset(), random.Random(seed)
        hazard = HazardModel(floor=max(1e-3, self.policy.min_interval / 9))  # ages of about 0.1 s
        self._pacer = Pacer(self.latency, self.prior, self.clock, self._rng, hazard)
        self._tick_interval, self._client_factory, self._on_close = tick_interval, client_factory, on_close
        self._on_observation, self._on_tick = on_observation, on_tick
        self._states: dict[str, TaskState] = {}
        self._states_lock = threading.Lock()
        self._queue = PollQueue(self.state, self._pacer.worth)  # by the chance of an on-time end
        self._inflight: set[asyncio.Task[None]] = set()
        self._paused = False
        self.auth_error: AuthenticationError | None = None
        self._auth_probe_at = 0.0
        self._wakeup = asyncio.Event()
        self.lister = Lister(self, list_settings, enabled=list_polling)  # list_polling=False: GETs only
        self._loop_thread = LoopThread(name)
        self._loop = self._loop_thread.loop
        self._loop_thread.start(self._run)

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
                self._pacer.hazard.forget(task_id)

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

    @property
    def budget_belief(self) -> str | None:
        """What the 429s seen lately say: a server limit, or random (for the panel)."""
        return self._gate.belief

    @property
    def list_health(self) -> Health:
        """Whether the task list works (after a failure: when it is tried again)."""
        return self.lister.health

    @property
    def polling_mode(self) -> str:
        """How it polls, one line for the panel: pages and GETs, or why per-task GETs."""
        return self.lister.mode()

    def set_rate(self, rate_limit: float, burst: float | None = None) -> None:
        """Change the ceiling of the request budget (requests per second, bursts of ``burst``)."""
        check_rate(rate_limit, burst)
        self.call_soon(self._gate.set_ceiling, rate_limit, burst)

    def set_leased(self, task_ids: Iterable[str], leased: bool) -> None:
        """Poll these tasks here (``True``), or leave them to another process (``False``)."""
        self.call_soon(self._set_leased, list(task_ids), leased)

    def observe(self, task: Task, polls: int) -> None:
        """A change seen by another process (``polls``: requests it spent on the task)."""
        self.call_soon(self._observe_elsewhere, task, polls)

    def learn(self, ends: Iterable[tuple[str, str, str, float, bool]]) -> None:
        """Seed the latency models with ``(provider, model, type, latency, succeeded)`` ends (a journal's)."""
        self._pacer.learn(ends)

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
        return self._loop_thread.running

    @property
    def in_poller_thread(self) -> bool:
        """True when called from the poller's own thread (a callback, a tick)."""
        return self._loop_thread.in_thread

    def refresh(self, task_id: str) -> concurrent.futures.Future[Task]:
        """Fetch ``task_id`` now (with retries) for fresh result URLs; a future of the task.

        It takes its turn in the rate limit, the cap in flight and any 429 pause, like a poll."""
        return self._loop_thread.submit(lambda: self._refresh(task_id))

    def spawn(self, make: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Run ``make()`` as a background job on the poller's loop; a future of its result.

        For work that must not hold up polling (e.g. downloads): it takes no turn in the
        request budget unless it asks for one, and it is cancelled when the poller stops.
        """
        return self._loop_thread.spawn(make)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling, close connections and end the thread (no wait from the thread itself)."""
        self._loop_thread.stop(timeout, self._wakeup.set)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` in the poller thread, soon (thread-safe)."""
        self._loop_thread.call_soon(fn, *args)

    # ---------------------------------------------------------- loop thread
    async def _run(self) -> None:
        self._client = self._client_factory()
        self._gate.open(self._loop.time)
        ticker = asyncio.create_task(self._ticker())
        self._loop_thread.ready()
        try:
            await self._schedule_forever()
        finally:
            ticker.cancel()
            jobs = [*self._inflight, *self._loop_thread.jobs()]
            for job in jobs:
                job.cancel()
            await asyncio.gather(ticker, *jobs, return_exceptions=True)
            await self._client.aclose()
            if self._on_close is not None:
                await self._on_close()
            self._tick()

    async def _schedule_forever(self) -> None:
        while not self._loop_thread.stopping:
            self.lister.maybe_plan()  # list pages for the due tasks, when cheaper than their GETs
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
                self._gate.release()
                continue
            state.in_flight = True
            state.last_polled = self._loop.time()
            state.sent_rate = self._gate.count_send()
            job = asyncio.create_task(self._poll(state))
            self._inflight.add(job)
            job.add_done_callback(self._inflight.discard)

    async def _take_turn(self, *, honour_pause: bool, first: bool = False) -> bool:
        """Wait for the rate limit and a free slot; False (no slot held) if now held back.

        A real server limit's pause holds everyone back; ``honour_pause`` adds the user's pause and a
        refused key (refreshes asked for by the user and key probes pass those).
        """
        await self._gate.acquire(first)  # first: a list page, before any poll
        held = self._gate.paused() or (honour_pause and (self._paused or self.auth_error is not None))
        if held:
            self._gate.release()
        return not held

    def _idle_for(self) -> float | None:
        """Seconds to sleep before the next poll is due (``None``: until woken)."""
        due = self._queue.next_due()  # no budget spent on stale entries
        if self._paused or due is None:
            return None
        if self.auth_error is not None:  # probe the key now and then, nothing more
            return max(0.0, self._auth_probe_at - self._loop.time())
        return max(self.lister.wake_at(due), self._gate.pause_until) - self._loop.time()

    def _schedule(self, state: TaskState, delay: float, *, first: bool = False) -> None:
        """Queue the next poll in ``delay`` seconds; ``first`` jumps ahead of every overdue poll."""
        self._queue.push(state, self._loop.time(), delay, first=first)
        self._wakeup.set()

    def _pick(self, *, any_time: bool = False) -> TaskState | None:
        """The due poll worth most now (:func:`~.schedule.poll_rank`), off the queue; ``any_time``: any."""
        return self._queue.pick(now := self._loop.time(), any_time=any_time, until=self.lister.horizon(now))

    def _set_leased(self, task_ids: list[str], leased: bool) -> None:
        for state in self.states(task_ids):
            was, state.leased = state.leased, leased
            if leased and not was and not state.ended:
                task = state.task
                self._schedule(state, 0.0 if task is None else self._pacer.next_delay(state, task))

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
                self._schedule(state, self._pacer.next_delay(state, task))

    async def _poll(self, state: TaskState) -> None:
        try:
            state.polls += 1
            self.lister.count(page=False)
            try:
                task = await self._client.get_task(state.task_id, retry=False)
            except ModelHunterError as exc:
                self._on_error(state, exc)
            else:
                self._gate.on_answer(state.sent_rate)
                self._record_answer(state, task)
                if task.status == TaskStatus.EXPIRED:
                    self._schedule(state, 0.0, first=True)  # the next answer carries a fresh URL
                elif not state.ended:
                    self._schedule(state, self._pacer.next_delay(state, task))
        except Exception:  # the loop must never die: report and back off
            log.exception("unexpected error while polling %s", state.task_id)
            self._schedule(state, state.policy.max_error_backoff)
        finally:
            state.in_flight = False
            self._gate.release()

    def _record_answer(self, state: TaskState, task: Task, elsewhere: bool = False) -> None:
        previous = state.task.status if state.task is not None else None
        now = time.time()
        task = task.carrying(state.task)  # what only some answers send is not forgotten
        state.task, state.fetched_at, state.result_wanted = task, now, False
        now, state.seen_ended_at = state.seen_ended_at or now, None  # a page saw the end first
        for stamp in (task.created_at, task.completed_at):  # both are in the server's past
            if stamp is not None:
                self.clock.observe_timestamp(stamp.timestamp(), now)
        state.errors, state.not_found, state.last_error = 0, 0, None
        if not state.ended:  # its age or its end, once: refreshes of its URLs teach nothing
            self._pacer.seen(state, task)
        if self.auth_error is not None:  # the key works again: everyone polls again
            self.auth_error = None
            self._wakeup.set()
        if previous is None and task.model is not None:  # the prediction made at first sight
            state.predicted_latency = self._pacer.predict(task)
        ended = task.is_terminal and not state.ended  # once, not on refreshes of its URLs
        if ended:
            state.ended = True
            if task.latency is not None:
                self._learn(task, task.latency)
        if previous != task.status:
            obs = Observation(Kind.CHANGE, state.task_id, now, task, previous, state.polls)
            self._emit(replace(obs, elsewhere=elsewhere, ended=ended))

    def _learn(self, task: Task, latency: float) -> None:
        """Add an end to the latency models; if it fell outside the window the others of its
        model were scheduled by, schedule them again (a provider got faster, or failed early)."""
        if not self._pacer.add_end(task, latency):
            return
        key = latency_key(task.provider, task.model)
        for other in self.states():
            if other.task is None or other.ended or other.in_flight:
                continue
            if latency_key(other.task.provider, other.task.model) == key:
                self._schedule(other, self._pacer.next_delay(other, other.task))

    def _on_error(self, state: TaskState, exc: ModelHunterError) -> None:
        state.last_error = exc.message
        previous = state.task.status if state.task is not None else None
        if isinstance(exc, AuthenticationError):
            self._on_auth_error(state, exc)
            return
        if isinstance(exc, NotFoundError) and state.task is None:
            self._on_not_found(state, exc)
            return
        if isinstance(exc, RateLimitedError):  # a real limit holds everyone back, noise this task
            asked = state.policy.error_backoff if exc.retry_after is None else exc.retry_after
            delay = min(asked, state.policy.max_interval)  # noise: never starves its own task
            if self._gate.limited(exc.retry_after, state.policy.error_backoff, state.sent_rate):
                delay = self._gate.pause_left()
        else:
            state.errors += 1
            delay = state.policy.error_delay(state.errors, self._rng)
        self._emit(
            Observation(Kind.ERROR, state.task_id, time.time(), state.task, previous, state.polls, exc)
        )
        self._schedule(state, delay)

    def _on_not_found(self, state: TaskState, exc: NotFoundError) -> None:
        """404 for a task never seen: asked again ``not_found_retries`` times, then given up."""
        state.not_found += 1
        if state.not_found > state.policy.not_found_retries:
            state.ended = state.is_not_found = True
            self._emit(Observation(Kind.NOT_FOUND, state.task_id, time.time(), None, None, state.polls, exc))
            return
        self._schedule(state, state.policy.not_found_interval)

    def _on_auth_error(self, state: TaskState, exc: AuthenticationError) -> None:
        """401/403: stop polling; one task is asked again every ``max_interval``."""
        previous = state.task.status if state.task is not None else None
        if self.auth_error is None:
            self.auth_error = exc
            obs = Observation(Kind.AUTH, state.task_id, time.time(), state.task, previous, state.polls, exc)
            self._emit(obs)
        self._auth_probe_at = self._loop.time() + state.policy.max_interval
        self._schedule(state, 0.0)

    async def _refresh(self, task_id: str, attempts: int = 8) -> Task:
        """Fetch now, riding out transient errors; every request counts on the task and in the budget."""
        state, sent = self.state(task_id), [0.0]
        for attempt in range(1, attempts + 1):
            try:
                task = await self._fetch_in_turn(task_id, state, sent)
            except ModelHunterError as exc:
                limit = self._gate.answered(sent[0], exc, self.policy.error_backoff)
                if not (is_transient(exc) or isinstance(exc, ServerError)) or attempt == attempts:
                    raise  # like polling, any 5xx is worth another try here
                if isinstance(exc, RateLimitedError):  # a limit's pause holds the next turn
                    await asyncio.sleep(0.0 if limit else exc.retry_after or self.policy.error_backoff)
                else:
                    await asyncio.sleep(self.policy.error_delay(attempt, self._rng))
                continue
            self._gate.on_answer(sent[0])
            if state is not None:
                self._record_answer(state, task)
            if task.status != TaskStatus.EXPIRED or attempt == attempts:
                return task  # "expired" re-issues the URL: the next answer carries it
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch_in_turn(self, task_id: str, state: TaskState | None, sent: list[float]) -> Task:
        """One request for a refresh, in the budget's turn (``sent[0]``: the rate it was sent at)."""
        while True:
            if await self._take_turn(honour_pause=False):
                break
            await asyncio.sleep(self._gate.pause_left())
        try:
            if state is not None:
                state.polls += 1
            self.lister.count(page=False)
            sent[0] = self._gate.count_send()
            return await self._client.get_task(task_id, retry=False)
        finally:
            self._gate.release()

    def _emit(self, observation: Observation) -> None:
        if observation.kind in (Kind.CHANGE, Kind.NOT_FOUND):  # the ones journalled
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
            self._gate.on_tick(self._tick_interval)
            self._tick()

    def _tick(self) -> None:
        if self._on_tick is None:
            return
        try:
            self._on_tick()
        except Exception:
            log.exception("tick callback failed")
