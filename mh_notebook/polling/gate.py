"""Whose turn it is to send: the request budget, the cap on requests in flight, a limit's pause.

Every request of a poller (polls and refreshes alike) takes its turn here: one of
``max_in_flight`` slots, then a token from a bucket whose rate follows the learned budget
(:class:`~mh_notebook.polling.budget.AdaptiveRate`). A 429 that shows a server limit pauses every request
until its ``Retry-After``. Runs on the poller's loop; times are the loop's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..errors import APIError, RateLimitedError
from .budget import AdaptiveRate, TokenBucket

__all__ = ["RequestGate", "check_rate"]


def check_rate(rate_limit: float, burst: float | None) -> None:
    """Raise :class:`ValueError` unless ``rate_limit > 0`` and ``burst`` is ``None`` or ``>= 1``."""
    if not rate_limit > 0 or (burst is not None and not burst >= 1):
        raise ValueError(f"rate_limit must be > 0 and burst >= 1, got {rate_limit!r} and {burst!r}")


class RequestGate:
    """The turns of one poller's requests; :meth:`open` it on the loop before the first turn.

    Only ``budget`` and ``belief`` are read from other threads.
    """

    def __init__(self, rate_limit: float, burst: float | None, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        check_rate(rate_limit, burst)
        self.budget = AdaptiveRate(rate_limit)
        self.limiter: TokenBucket | None = None
        """The token bucket (from :meth:`open` on)."""
        self.pause_until = 0.0
        """Loop time a server limit's pause ends."""
        self.belief: str | None = None
        """What the 429s seen lately say: a server limit, or random (for the panel)."""
        self._burst, self._max_in_flight = burst, max_in_flight
        self._sent = self._held = 0

    def open(self, time: Callable[[], float]) -> None:
        """Make the token bucket and the slots (on the loop); ``time`` is the loop's clock."""
        self._time = time
        self._new_limiter()
        self._slots = asyncio.Semaphore(self._max_in_flight)

    async def acquire(self, first: bool = False) -> None:
        """Wait for a free slot, then a token (the slot is held until :meth:`release`);
        ``first`` (a list page, a user's request) takes the next token before every poll,
        even one already waiting (:class:`~.budget.TokenBucket`'s fast lane). The slot
        first: a token taken while every slot is busy (slow answers) would be spent later,
        all at once with the others taken meanwhile, above the ceiling (attack s23)."""
        assert self.limiter is not None
        await self._slots.acquire()
        try:
            if await self.limiter.acquire(first):
                self._held += 1  # the budget held a request back: it binds
        except BaseException:  # cancelled while waiting for the token
            self._slots.release()
            raise

    def release(self) -> None:
        """Free the slot taken by :meth:`acquire`."""
        self._slots.release()

    def paused(self) -> bool:
        """True while a server limit's pause holds every request back."""
        return self._time() < self.pause_until

    def pause_left(self) -> float:
        """Seconds until a server limit's pause ends (0 if none)."""
        return max(0.0, self.pause_until - self._time())

    def count_send(self) -> float:
        """One request goes out now: counted for the budget; the rate it is sent at."""
        self._sent += 1
        return self.budget.on_send(self._time())

    def on_answer(self, sent_rate: float) -> None:
        """A request sent at ``sent_rate`` was answered (not 429)."""
        self.budget.on_answer(self._time(), sent_rate)

    def answered(self, sent_rate: float, error: BaseException | None, fallback: float) -> bool:
        """What the outcome of a request sent at ``sent_rate`` tells the budget: an answer
        (``error`` ``None`` or an :class:`APIError` other than 429) that the rate was fine, a
        429 what :meth:`limited` makes of it (True: a limit's, everyone waits), a network
        error nothing."""
        if isinstance(error, RateLimitedError):
            return self.limited(error.retry_after, fallback, sent_rate)
        if error is None or isinstance(error, APIError):
            self.on_answer(sent_rate)
        return False

    def limited(self, retry_after: float | None, fallback: float, sent_rate: float | None = None) -> bool:
        """A 429 for a request sent at ``sent_rate``. If the budget sees a server limit in
        it (:meth:`AdaptiveRate.on_limited`), everyone waits ``Retry-After`` and the rate
        shrinks (once per pause); True then. Otherwise only its own request waits."""
        wait = retry_after if retry_after is not None else fallback
        now = self._time()
        if not self.budget.on_limited(now, wait, sent_rate):
            self._new_limiter()  # a probe may have lowered the rate
            return False
        self.pause_until = max(self.pause_until, now + wait)
        self._new_limiter()
        return True

    def set_ceiling(self, rate_limit: float, burst: float | None) -> None:
        """Change the ceiling (requests per second) and the burst."""
        self.budget.set_ceiling(rate_limit)
        self._burst = burst
        self._new_limiter()

    def on_tick(self, seconds: float) -> None:
        """Grow the budget back towards the ceiling while it is what holds polls back (most
        requests waited for a token), end a probe, and say what the 429s look like."""
        (used, self._sent), (held, self._held) = (self._sent, 0), (self._held, 0)
        now = self._time()
        changed = self.budget.on_tick(now, seconds, used, held)
        assert self.limiter is not None
        if changed or self.limiter.burst != self.budget.bucket(now, self._burst):  # a limit forgotten
            self._new_limiter()
        self.belief = self.budget.belief(now)

    def _new_limiter(self) -> None:
        """The token bucket follows the budget's rate and burst cap (its tokens are kept)."""
        rate, size = self.budget.rate, self.budget.bucket(self._time(), self._burst)
        if self.limiter is None:
            self.limiter = TokenBucket(rate, size)
        else:
            self.limiter.set(rate, size)
