"""The schedule: when each task's next poll is due, and which due poll goes first.

:class:`Pacer` places a task's next poll by its policy, at its age on the server's clock,
within the latency window learned for its model (or for its type, while its model is not
learned yet). :class:`PollQueue` holds the queued polls by due time and hands out the due
one worth most (:func:`poll_rank`): by default the cheapest task first; the poller's by
:meth:`Pacer.worth`, the chance a poll now sees an end on time (:mod:`.hazard`). Neither
has a thread of its own.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections.abc import Callable, Iterable

from ..models import Task
from ..records import TaskStatus, latency_key
from .budget import poll_priority
from .clock import ClockOffset
from .hazard import HazardModel
from .policy import LatencyModel
from .state import TaskState

__all__ = ["Pacer", "PollQueue", "Worth", "cheapest", "poll_rank"]

Worth = Callable[[TaskState, float], float]
"""What a due poll of a task is worth at its age now (server seconds): the larger, the sooner."""


def cheapest(state: TaskState, age: float) -> float:
    """The default :data:`Worth`: minus the polls the task still needs until its end is
    most likely seen (:meth:`~.policy.PollPolicy.remaining_polls`), so the cheapest first."""
    return -state.policy.remaining_polls(age, state.window)


class PollQueue:
    """The queued polls of a poller: when each is due, and which due one goes first.

    Pure: no clock and no thread of its own (every method takes the loop time), so the
    schedule can be driven with a fake clock. ``lookup`` gives a task's live state; an
    entry stands while its task is watched, leased, not ended and not queued again since.
    ``worth`` ranks the due polls (:func:`poll_rank`; default :func:`cheapest`).
    """

    def __init__(self, lookup: Callable[[str], TaskState | None], worth: Worth = cheapest) -> None:
        self._lookup, self._worth = lookup, worth
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
        at = state.due_at = 0.0 if first else now + max(0.0, delay)
        heapq.heappush(self._heap, (at, next(self._seq), state.task_id, state.version))

    def _stands(self, entry: tuple[float, int, str, int]) -> TaskState | None:
        state = self._lookup(entry[2])
        if state is None or state.version != entry[3] or state.ended or not state.leased or state.covered:
            return None  # not leased: polled elsewhere, queued again when the lease comes back;
        return state  # covered: a list walk observes it, queued again when the walk is over

    def next_due(self) -> float | None:
        """When the earliest queued poll is due (``None``: nothing queued)."""
        while self._heap and self._stands(self._heap[0]) is None:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pick(self, now: float, *, any_time: bool = False, until: float | None = None) -> TaskState | None:
        """The due poll worth most at ``now`` (:func:`poll_rank`), taken off the queue;
        with ``any_time``, the earliest if none is due; ``until``: only polls due by then."""
        ready: list[tuple[tuple[float, ...], tuple[float, int, str, int], TaskState]] = []
        until = now if until is None else min(now, until)
        while self._heap and (self._heap[0][0] <= until or (any_time and not ready)):
            entry = heapq.heappop(self._heap)
            state = self._stands(entry)
            if state is None or state.in_flight:
                continue
            ready.append((poll_rank(state, now - entry[0], now, self._worth), entry, state))
        if not ready:
            return None
        best = max(ready, key=lambda r: r[0])
        for _, entry, _ in ready:
            if entry is not best[1]:
                heapq.heappush(self._heap, entry)
        return best[2]


def poll_rank(state: TaskState, overdue: float, now: float, worth: Worth = cheapest) -> tuple[float, ...]:
    """:func:`poll_priority` of a due poll of ``state``, ``overdue`` seconds late at loop
    time ``now``: a task never answered first (its first answer tells its model and age),
    then the one ``worth`` most at its age now. A task never polled has waited
    since its first poll was queued, and is starved no sooner than any other (counted as
    never polled, every new task went before the ones starved past ``max_interval``)."""
    if state.result_wanted:  # a page saw it end: its result GET first, in the order of the ends
        return (2.0, -state.ended_on_page)
    value = math.inf if state.task is None else worth(state, state.due_age + overdue)
    since = state.last_polled if state.last_polled > -math.inf else state.queued_at
    waited = now - since if since is not None else 0.0
    return poll_priority(value, overdue, waited, state.policy.max_interval)


class Pacer:
    """How long until a task's next poll, from what ends of its model and type taught.

    ``latency`` is learned per model, ``prior`` per task type (all models of it: the window
    of a model not learned yet); ``hazard`` how likely a task is to end soon at its age (what
    a due poll is worth when the budget binds: :meth:`worth`); ``clock`` is the server's
    clock; ``rng`` jitters the gaps. Not thread-safe: the poller's thread uses it.
    """

    def __init__(
        self,
        latency: LatencyModel,
        prior: LatencyModel,
        clock: ClockOffset,
        rng: random.Random,
        hazard: HazardModel | None = None,
    ) -> None:
        self.latency, self.prior, self.clock, self.rng = latency, prior, clock, rng
        self.hazard = hazard or HazardModel()

    def learn(self, ends: Iterable[tuple[str, str, str, float, bool]]) -> None:
        """Seed the models with ``(provider, model, type, latency, succeeded)`` ends."""
        for provider, model, kind, latency, ok in ends:
            self.latency.add((provider, model), latency, ok, kind)
            self.prior.add(("*", kind), latency, ok)
            self.hazard.learn((latency_key(provider, model), ("*", kind)), latency)

    def seen(self, state: TaskState, task: Task) -> None:
        """An answer about ``task``: it lived to its age now, or ended at its latency."""
        keys = (latency_key(task.provider, task.model), _type_key(task))
        if task.is_terminal:
            if task.latency is None:
                self.hazard.forget(state.task_id)
            else:
                self.hazard.seen(state.task_id, keys, task.latency, True)
            return
        self.hazard.seen(state.task_id, keys, self._age(state, task)[0], False)

    def worth(self, state: TaskState, age: float) -> float:
        """:data:`Worth` by hazard: the chance a poll of ``state`` at ``age`` sees an end on
        time (within its gap, ``max(min_interval, 5% of age)``) that its last answer did not."""
        task = state.task
        if task is None:
            return math.inf
        since = self.hazard.last_seen(state.task_id) or 0.0
        allow = state.policy.interval(None, age)
        return self.hazard.worth(latency_key(task.provider, task.model), _type_key(task), age, since, allow)

    def add_end(self, task: Task, latency: float) -> bool:
        """Add an end to the models; True if it fell outside the window the others of its
        model were scheduled by (a provider got faster, or failed early)."""
        key = latency_key(task.provider, task.model)
        before = self.latency.window(key)
        ok = task.status == TaskStatus.SUCCEEDED
        self.latency.add(key, latency, ok, _type_key(task)[1])
        self.prior.add(_type_key(task), latency, ok)
        return before is not None and not before[0] <= latency <= before[1]

    def predict(self, task: Task) -> float | None:
        """The latency its model is expected to take (``None``: not learned yet)."""
        return self.latency.predict(latency_key(task.provider, task.model))

    def next_delay(self, state: TaskState, task: Task) -> float:
        """The schedule's next gap for ``task``, its age taken on the server's clock.

        Scheduled by a window, its age is the least the clock's error allows: a poll placed
        at a narrow window's end must not come before it (early in a session a whole-second
        ``Date`` header leaves the offset's middle up to half a second off; early, the poll
        misses the end and the next comes a whole gap later); late, it costs that much.
        """
        elapsed, least = self._age(state, task)
        key = latency_key(task.provider, task.model)
        window = self.latency.window(key)  # its model's, helped by its type's
        if window is None:  # a model never seen to succeed: what tasks of its type took
            window = self.prior.window(_type_key(task))
        if window is None:
            elapsed = max(0.0, elapsed)
            delay = state.policy.next_delay(task.status, elapsed, None, self.rng)
        else:  # early ends: its model's own record once it has one, else its type's
            elapsed = max(0.0, least)
            model = self.latency
            if model.count(key) < model.min_samples:
                model, key = self.prior, _type_key(task)
            early, until = model.early_share(key, window[0]), model.early_until(key, window[0])
            delay = state.policy.next_delay(task.status, elapsed, window, self.rng, early, until)
        state.due_age, state.window = elapsed + delay, window
        return delay

    def _age(self, state: TaskState, task: Task) -> tuple[float, float]:
        """``task``'s age now on the server's clock: the middle and the least the clock allows."""
        now = time.time()
        if task.created_at is None:
            elapsed = now - (state.first_seen_at or now)
            return elapsed, elapsed
        created = task.created_at.timestamp()
        if task.created_at.microsecond == 0:  # whole seconds: floored, so half a second on average
            created += 0.5
        return self.clock.server_now(now) - created, self.clock.server_at_least(now) - created


def _type_key(task: Task) -> tuple[str, str]:
    return ("*", task.type or "?")
