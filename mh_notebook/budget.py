"""The request budget: how many requests per second to send, learned from the server.

``rate_limit=`` is a ceiling, not a target. The server's own limit (per key, unknown,
maybe lower) shows itself through 429 answers; :class:`AdaptiveRate` settles just under
it, AIMD-style: on a 429 the rate drops by ``decrease`` (once per pause, however many
requests were already in flight), and while the budget is really used it grows back:
quickly while well under the rate at which the last 429 came, slowly near it. So a
server limit is probed about once a minute instead of every few seconds.

Which request to spend the budget on is :func:`poll_priority`'s business. Both are pure:
no clock of their own, every method takes the time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AdaptiveRate", "TokenBucket", "poll_priority"]


@dataclass
class AdaptiveRate:
    """Requests per second to send: at most ``ceiling``, lowered by 429s, regrown by use."""

    ceiling: float
    """The user's ``rate_limit``: never exceeded."""
    decrease: float = 0.7
    """Factor applied to the rate on a 429."""
    fast_growth: float = 0.05
    """Growth per second while well under the rate of the last 429 (or none seen)."""
    slow_growth: float = 0.004
    """Growth per second near the rate of the last 429."""
    near: float = 0.85
    """"Near" means above this share of the rate at the last 429."""
    floor: float = 0.1
    """The rate never goes below this (requests per second)."""

    def __post_init__(self) -> None:
        self.rate = self.ceiling
        """The current rate (requests per second)."""
        self.limited_at: float | None = None
        """The rate when the last 429 came (the server's limit is about there)."""
        self._hold_until = -math.inf

    def set_ceiling(self, ceiling: float) -> None:
        """A new ceiling (a watcher with a lower ``rate_limit`` attached, or one left)."""
        self.ceiling = ceiling
        self.rate = min(self.rate if self.limited_at is not None else ceiling, ceiling)

    def on_limited(self, now: float, retry_after: float | None) -> bool:
        """A 429 arrived at ``now``; returns True if the rate changed.

        429s answering requests sent before the previous decrease took effect (the same
        burst) lower nothing more.
        """
        if now < self._hold_until:
            return False
        self.limited_at = self.rate
        self.rate = max(self.floor, min(self.rate * self.decrease, self.ceiling))
        self._hold_until = now + max(1.0, retry_after or 0.0)
        return True

    def on_tick(self, now: float, seconds: float, used: float) -> bool:
        """``seconds`` passed in which ``used`` requests were sent; grow if the budget was
        the bottleneck. Returns True if the rate changed."""
        if now < self._hold_until or self.rate >= self.ceiling or seconds <= 0:
            return False
        if used < 0.8 * self.rate * seconds:  # demand was lower: nothing learned about the server
            return False
        near = self.limited_at is not None and self.rate >= self.near * self.limited_at
        growth = self.slow_growth if near else self.fast_growth
        self.rate = min(self.ceiling, self.rate * (1.0 + growth * seconds))
        return True


class TokenBucket:
    """An asyncio token bucket whose rate can change without being refilled.

    aiolimiter's leaky bucket cannot change its rate in place, and a new one starts full:
    an adaptive rate that changes every tick would then send a burst every tick.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._at = burst, clock()

    def set(self, rate: float, burst: float) -> None:
        """A new rate and size; the tokens already there stay (at most the new size)."""
        self._refill()
        self.rate, self.burst = rate, burst
        self._tokens = min(self._tokens, burst)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def acquire(self) -> None:
        """Wait for a token and take it."""
        while True:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self._tokens) / self.rate)


def poll_priority(
    remaining: float, overdue: float, since_polled: float, max_interval: float
) -> tuple[float, ...]:
    """How much a due poll is worth now, when more polls are due than the budget allows
    (the largest goes first).

    A task not asked for ``max_interval`` comes before everything: nothing starves. Then
    the task that needs the fewest more polls until its end is most likely seen
    (``remaining``, :meth:`~mh_notebook.policy.PollPolicy.remaining_polls`): a short task,
    or a long one near the end of its window. An on-time end is one task's worth whatever
    it cost, so when not every task can be served, the cheap ones are served whole rather
    than every one late. Among equals, the most overdue.
    """
    if since_polled >= max_interval:
        return (1.0, since_polled, 0.0)
    return (0.0, -remaining, max(0.0, overdue))
