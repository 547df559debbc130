"""The request budget: how many requests per second to send, learned from the server.

``rate_limit=`` is a ceiling, not a target. The server's own limit (per key, unknown,
maybe lower) shows itself through 429 answers, but so does a flaky proxy that answers 429
at random. :class:`AdaptiveRate` tells them apart by how the 429s depend on the rate they
were sent at (:class:`RateLedger`): random 429s come in the same share at any rate; a
limit's come only above it, in a share that rises with the rate. So a 429 shows a limit
only when the share of 429s among requests sent at about its rate is clearly above the
share among requests sent well below it (a one-sided two-proportion z-test, ``evidence``),
or somewhat above it while the whole record shows a clear trend (``evidence_near``).
Then, and only then, the rate drops by ``decrease`` (AIMD, once per pause, from the rate
really sent, but not below ``settle`` of the rate the server answered without 429 lately)
and everyone should wait its ``Retry-After``; any other 429 holds back only the request
that got it. While the budget is really used (requests wait for its tokens)
the rate grows back: quickly while well under the rate at which the last real 429 came,
slowly near it. So a server limit is probed about once a minute instead of every few
seconds.

At one steady rate the two look alike. When many 429s come while the budget is what holds
requests back and nothing was sent well below that rate lately, the budget probes: it
sends at the rate a limit would allow (the share answered without 429), at most
``probe_depth`` of the rate, for ``probe_seconds`` (no pause), at most once every
``probe_every`` seconds, then as long at the rate before; a limit only if the 429s fell
in the low phase and came back after it (:mod:`~.probe`: a controlled experiment on its
own answers, so neither a sending rate measured while the rate changes nor noise that
ended during the low phase fools it). While a limit is known, a probe that finds the 429s
did not fall forgets it (random 429s near it had been taken for its own). Noise alone so
never lowers the rate below a demand that fits under the ceiling: a demand that fits
never waits for a token.

A limit once learned is placed at about what the server let through while it answered
429 (the rate sent overstates it), and 429s from about there on are its own. While it is
known, requests go evenly spaced (``limit_burst`` 1): a server's limit has a burst of
its own, maybe 1, and a watcher's second's worth sent at once (or even a pair, attack
s24) would be refused at a mean rate under the limit (:meth:`AdaptiveRate.bucket`).

Which request to spend the budget on is :func:`poll_priority`'s business. All of it is
pure: no clock of its own, every method takes the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .probe import Probe, rise

__all__ = ["AdaptiveRate", "RateLedger", "TokenBucket", "poll_priority"]

_BIN = math.log(2.0) / 8
"""Width of a ledger bin in log(rate): 8 bins per doubling."""


@dataclass
class RateLedger:
    """Answers (429 or not) by the rate their requests were sent at, fading with time.

    Counts are kept per bin of log(rate) and halve every ``half_life`` seconds, so the
    ledger describes the last few minutes.
    """

    half_life: float = 120.0
    min_answers: float = 20.0
    """Answers each group needs before they are compared."""
    min_limited: float = 5.0
    """429s the group near the rate needs before it is compared."""
    bins: dict[int, list[float]] = field(default_factory=dict)
    """Bin -> [answers, 429s, time of the counts]."""

    def add(self, now: float, rate: float, limited: bool) -> None:
        """One answer to a request sent at ``rate`` (requests per second)."""
        cell = self._cell(now, _bin(rate))
        cell[0] += 1.0
        cell[1] += 1.0 if limited else 0.0

    def counts(self, now: float, low: float, high: float) -> tuple[float, float]:
        """(answers, 429s) sent at rates in [``low``, ``high``)."""
        n = k = 0.0
        lo, hi = _bin(low) if low > 0 else -(10**9), _bin(high) if math.isfinite(high) else 10**9
        for key in list(self.bins):
            if lo <= key < hi:
                cell = self._cell(now, key)
                n, k = n + cell[0], k + cell[1]
        return n, k

    def evidence(self, now: float, rate: float, near: float = 1.25) -> tuple[float, float]:
        """How clearly 429s rise with the rate at ``rate``: a one-sided z of the share of
        429s among requests sent within ``near`` times ``rate`` against the share among
        those sent well below (under ``rate / near``), and how many answers that lower
        group holds. z is NaN (no verdict) while either group has fewer than
        ``min_answers``, or the group near ``rate`` fewer than ``min_limited`` 429s."""
        n_lo, k_lo = self.counts(now, 0.0, rate / near)
        n_at, k_at = self.counts(now, rate / near, rate * near)
        if n_lo < self.min_answers or n_at < self.min_answers or k_at < self.min_limited:
            return math.nan, n_lo  # too few to tell (a z of two or three 429s is no evidence)
        return rise(n_lo, k_lo, n_at, k_at), n_lo

    def trend(self, now: float) -> float:
        """How clearly 429s rise with the rate over the whole ledger: the z of a trend test
        of the 429 share on log(rate) (Cochran-Armitage); 0 with too few answers or 429s."""
        cells = [(key * _BIN, *self._cell(now, key)[:2]) for key in list(self.bins)]
        n = sum(c[1] for c in cells)
        k = sum(c[2] for c in cells)
        if n < 2 * self.min_answers or k < 3.0 or n - k < 3.0:
            return 0.0
        mean = sum(x * m for x, m, _ in cells) / n
        spread = sum(m * (x - mean) ** 2 for x, m, _ in cells)
        if spread < n * (_BIN / 2) ** 2:  # all sent at about one rate: nothing to compare
            return 0.0
        p = k / n
        return sum(j * (x - mean) for x, _, j in cells) / math.sqrt(p * (1.0 - p) * spread)

    def share(self, now: float) -> tuple[float, float]:
        """(answers, share answered 429) over the whole ledger."""
        n, k = self.counts(now, 0.0, math.inf)
        return n, (k / n if n > 0 else 0.0)

    def _cell(self, now: float, key: int) -> list[float]:
        cell = self.bins.get(key)
        if cell is None:
            cell = self.bins[key] = [0.0, 0.0, now]
        elif now > cell[2]:
            fade = 0.5 ** ((now - cell[2]) / self.half_life)
            cell[0], cell[1], cell[2] = cell[0] * fade, cell[1] * fade, now
            if cell[0] < 0.01:
                cell[0] = cell[1] = 0.0
        return cell


def _bin(rate: float) -> int:
    return math.floor(math.log(max(rate, 1e-6)) / _BIN)


@dataclass
class AdaptiveRate:
    """Requests per second to send: at most ``ceiling``, lowered only by a real server
    limit (429s that rise with the sending rate), regrown while the budget binds."""

    ceiling: float
    """The user's ``rate_limit``: never exceeded."""
    decrease: float = 0.7
    """Factor applied to the rate really sent when a 429 shows a limit."""
    fast_growth: float = 0.05
    """Growth per second while well under the rate of the last real 429 (or none seen)."""
    slow_growth: float = 0.004
    """Growth per second near the rate of the last real 429."""
    near: float = 0.85
    """"Near" means above this share of the rate at the last real 429."""
    floor: float = 0.1
    """The rate never goes below this (requests per second), nor above the ceiling."""
    evidence: float = 3.5
    """z a 429 needs to show a limit (:meth:`RateLedger.evidence`); or ``evidence_near``
    there and ``trend_evidence`` over the whole ledger (:meth:`RateLedger.trend`)."""
    evidence_near: float = 2.0
    trend_evidence: float = 3.0
    window: float = 2.0
    """Seconds of ticks judged together before growing (at least 5 tokens' worth)."""
    meter: float = 1.0
    """Time constant (seconds) of the measured sending rate."""
    probe_depth: float = 0.6
    """A probe sends at most this share of the rate (see the module's docstring)."""
    probe_seconds: float = 4.0
    """How long each phase of a probe lasts, at least (long enough for ``min_answers``)."""
    probe_every: float = 60.0
    """Seconds between probes, at least."""
    memory: float = 120.0
    """Half-life (seconds) of the ledger; a limit not seen again for this long is forgotten."""
    settle: float = 0.95
    """On a limit, the rate drops to at least this share of the rate answered without 429
    lately (over about ``accept_meter`` seconds): about the server's limit."""
    accept_meter: float = 3.0
    """Time constant (seconds) of the measured rate of answers other than 429."""
    quiet: float = 2.0
    """Seconds without a 429 that end a probe's settle (the window forgot sooner)."""
    limit_burst: float = 1.0
    """Requests sent back to back at most while a server limit is known (:meth:`bucket`)."""

    def __post_init__(self) -> None:
        self.rate = self.ceiling
        """The current rate (requests per second)."""
        self.limited_at: float | None = None
        """The rate sent when the last real 429 came (the server's limit is about there)."""
        self.ledger = RateLedger(self.memory)
        self._hold_until = -math.inf
        self._limit_seen = -math.inf
        self._limit_rate: float | None = None
        self._sending, self._sent_at = 0.0, -math.inf
        self._accepted, self._accepted_at = 0.0, -math.inf
        self._acc_seconds = self._acc_used = self._acc_held = 0.0
        self._bound = False
        self._probe: Probe | None = None
        self._last_probe = -math.inf
        self._wait, self._wait_at = 0.0, -math.inf
        self._last_429 = -math.inf
        self._told = RateLedger(self.memory)  # every answer (settles too): the panel's share

    @property
    def lowest(self) -> float:
        """The floor, never above the ceiling."""
        return min(self.floor, self.ceiling)

    def set_ceiling(self, ceiling: float) -> None:
        """A new ceiling (a watcher with a lower ``rate_limit`` attached, or one left)."""
        self.ceiling = ceiling
        if self._probe is not None:  # dropped, the rate back where it was before it
            self.rate, self._probe = self._probe.high, None
        self.rate = min(self.rate if self.limited_at is not None else ceiling, ceiling)
        self.rate = max(self.rate, self.lowest)

    def on_send(self, now: float) -> float:
        """A request is sent at ``now``; returns the sending rate it was sent at
        (requests per second over about ``meter`` seconds, this one half counted)."""
        fade = math.exp(-max(0.0, now - self._sent_at) / self.meter) if self._sent_at > -math.inf else 0.0
        before = self._sending * fade
        self._sending, self._sent_at = before + 1.0 / self.meter, now
        return before + 0.5 / self.meter

    def on_answer(self, now: float, sent_rate: float) -> None:
        """An answer other than 429 to a request sent at ``sent_rate``."""
        self._record(now, sent_rate, False)
        if self._probe is not None:
            self._probe.count(now, sent_rate, False)
        self._accepted = self.accepted(now) + 1.0 / self.accept_meter
        self._accepted_at = now

    def _record(self, now: float, rate: float, limited: bool) -> None:
        """An answer in the ledger, unless it came while a probe lets a window forget the
        rate before (its 429s there are that rate's, not the low one's: they hid a limit).
        A settle ends once 429s stopped for ``quiet`` seconds (a hiccup that asked for a
        minute then slowed every task to a tenth for 76 s, attack s25)."""
        self._told.add(now, rate, limited)
        probe = self._probe
        if limited:
            self._last_429 = now
        elif probe is not None and now < probe.counted_from and now - self._last_429 >= self.quiet:
            probe.settled(now)
        if probe is None or now >= probe.counted_from:
            self.ledger.add(now, rate, limited)

    def accepted(self, now: float) -> float:
        """The rate of answers other than 429 lately (requests per second)."""
        if self._accepted_at == -math.inf:
            return 0.0
        return self._accepted * math.exp(-max(0.0, now - self._accepted_at) / self.accept_meter)

    def on_limited(self, now: float, retry_after: float | None, sent_rate: float | None = None) -> bool:
        """A 429 arrived at ``now`` for a request sent at ``sent_rate`` (default: the rate
        sent lately). True if it shows the server's limit: then the rate was cut (once per
        pause: 429s of the same burst cut nothing more) and everyone should wait
        ``retry_after``. False: noise, or not shown yet; only its own request waits.
        """
        rate = sent_rate if sent_rate is not None else self.sending(now)
        self._wait, self._wait_at = max(retry_after or 0.0, self.longest_wait(now)), now
        z, n_lo = self.ledger.evidence(now, rate)
        shown = z >= self.evidence or (
            z >= self.evidence_near and self.ledger.trend(now) >= self.trend_evidence
        )
        known = self._limit_rate is not None and now - self._limit_seen < self.memory
        self._record(now, rate, True)
        if self._probe is not None:
            self._probe.count(now, rate, True)
        if shown:  # where the limit showed itself: 429s from near there on are its own
            self._limit_rate = min(rate, self._limit_rate) if known and self._limit_rate else rate
        elif not (known and self._limit_rate is not None and rate >= self.near * self._limit_rate):
            self._maybe_probe(now, n_lo)
            return False  # noise, or well under the rate where the limit showed
        self._limit_seen = now
        self._probe = None  # a probe that showed the limit: the AIMD carries on from it
        if now < self._hold_until:
            return True
        self.limited_at = base = min(self.rate, rate)
        accepted = self.accepted(now)
        if shown or self._limit_rate is None:
            # 429s count as the limit's from about what the server lets through while it
            # answers 429 on: the rate sent overstates the limit (a start's or a burst's
            # sending rate is far above it), and 429s between the two would be taken for
            # noise. Only where a 429 showed the limit: one counted as its own because it
            # came near it moves nothing (random 429s on top of a limit would ratchet it
            # down to the floor, attack s24)
            self._limit_rate = min(base, max(accepted, base * self.decrease))
        target = max(base * self.decrease, self.settle * accepted)  # not lower than it lets through
        self.rate = max(self.lowest, min(target, base, self.ceiling))
        self._hold_until = now + max(1.0, retry_after or 0.0)
        return True

    def limit_known(self, now: float) -> bool:
        """Whether a server limit showed itself within ``memory`` seconds."""
        return self.limited_at is not None and now - self._limit_seen < self.memory

    def bucket(self, now: float, burst: float | None = None) -> float:
        """The token bucket's size: a second's worth of the rate, at most the user's
        ``burst``, and at most ``limit_burst`` while a server limit is known. A server's
        limit has a burst of its own, unknown and maybe far under a second's worth: a
        watcher that sends its rate's worth at once (after a pause, or a lull) gets 429s
        at a mean rate under the limit, and learns a limit too low (a server allowing
        12/s in bursts of 6 was learned as 8/s)."""
        caps = [b for b in (burst, self.limit_burst if self.limit_known(now) else None) if b is not None]
        return min([max(1.0, self.rate), *caps])

    def longest_wait(self, now: float) -> float:
        """The longest ``Retry-After`` of the 429s lately (fading over ``memory``): how long
        the server remembers what was sent (1 s for a token bucket, 60 s for a minute's window)."""
        return self._wait * math.exp(-max(0.0, now - self._wait_at) / self.memory)

    def sending(self, now: float) -> float:
        """The rate requests were sent at lately (requests per second)."""
        if self._sent_at == -math.inf:
            return 0.0
        return self._sending * math.exp(-max(0.0, now - self._sent_at) / self.meter)

    def _maybe_probe(self, now: float, n_lo: float) -> None:
        """Many 429s at one rate, the budget binding, nothing sent well below lately (or a
        limit known, which they may have been taken for): send lower for a while to see
        whether the 429s fall with the rate."""
        if not self._bound or self._probe is not None:
            return
        if n_lo >= self.ledger.min_answers and not self.limit_known(now):
            return  # the ledger can tell (:meth:`RateLedger.evidence`)
        if now - self._last_probe < self.probe_every or now < self._hold_until:
            return
        n_at, k_at = self.ledger.counts(now, self.rate / 1.25, math.inf)
        if k_at < 3.0:
            return
        # as low as a limit would be (the rate answered without 429), at most probe_depth and
        # at least a tenth of the rate, as long as its answers need but 16 s at most: 429s at
        # ~100% (a refusing proxy) made it 300 s at the floor, every task starved (attack s25)
        low = max(self.lowest, self.rate * min(self.probe_depth, max(0.1, 1.0 - k_at / n_at)))
        seconds = min(max(self.probe_seconds, 1.5 * self.ledger.min_answers / low), 4 * self.probe_seconds)
        # a window's limit refuses on while it remembers the rate before: counted after that
        settle = min(self.longest_wait(now), 60.0)
        self._last_probe, low_until = now, now + settle + seconds
        self._probe = Probe(self.rate, low, low_until, low_until + seconds, (n_at, k_at), now + settle)
        self.rate = low

    def on_tick(self, now: float, seconds: float, used: float, held: float | None = None) -> bool:
        """``seconds`` passed in which ``used`` requests were sent, ``held`` of them after
        waiting for a token (``None``: not known, judged from ``used`` alone). Ticks are
        judged together over ``window`` seconds (and at least 5 tokens' worth): the rate
        grows if the budget bound, i.e. most requests waited for a token. Returns True if
        the rate changed."""
        changed = self._end_probe(now)
        self._acc_seconds += max(0.0, seconds)
        self._acc_used += used
        self._acc_held += used if held is None else held
        if self._acc_seconds < max(self.window, 5.0 / self.rate):
            return changed
        span, used, held = self._acc_seconds, self._acc_used, self._acc_held
        self._acc_seconds = self._acc_used = self._acc_held = 0.0
        self._bound = used >= 0.8 * self.rate * span and held >= 0.5 * used
        if now < self._hold_until or self._probe is not None or self.rate >= self.ceiling:
            return changed
        if not self._bound:  # demand was lower: nothing learned about the server
            return changed
        # slowly near a known limit; a limit forgotten is probed for quickly
        near = self.limit_known(now) and self.rate >= self.near * (self.limited_at or 0.0)
        growth = self.slow_growth if near else self.fast_growth
        self.rate = min(self.ceiling, self.rate * (1.0 + growth * span))
        return True

    def _end_probe(self, now: float) -> bool:
        """The probe's next phase: back up to the rate before after the low phase; at the
        end of the back phase, its verdict (:meth:`Probe.verdict`). A limit is learned at
        about what the server let through in the back phase (the rate less its 429s), and
        the rate settles under it (no pause: nothing is refused yet). Noise forgets a limit
        learned before (random 429s that came near it were taken for its own, attack s24)."""
        probe = self._probe
        if probe is None or now < probe.low_until:
            return False
        if now < probe.back_until:
            if probe.back:
                return False
            probe.back, self.rate = True, min(probe.high, self.ceiling)
            return True
        self._probe = None
        verdict = probe.verdict(self.ledger.min_answers, self.trend_evidence)
        if verdict == "limit":
            self.limited_at = self._limit_rate = probe.high * (1.0 - probe.share_back())
            self._limit_seen = now
            self.rate = max(self.lowest, min(self.ceiling, self.settle * self._limit_rate))
        elif verdict == "noise" and self.limited_at is not None:
            self.limited_at = self._limit_rate = None
            self._limit_seen = -math.inf
        return verdict == "limit"

    def belief(self, now: float) -> str | None:
        """What the 429s seen lately say, for the panel (``None``: no 429 lately)."""
        if self.limit_known(now) and self._limit_rate is not None:
            return f"server limit ≈ {self._limit_rate:.2g} req/s learned from 429s"
        n, share = self._told.share(now)
        if n < 1.0 or share * n < 0.5:
            return None
        return f"429s look random ({share:.0%} of requests): not a limit"


class TokenBucket:
    """An asyncio token bucket whose rate can change without being refilled, with a fast lane.

    aiolimiter's leaky bucket cannot change its rate in place, and a new one starts full:
    an adaptive rate that changes every tick would then send a burst every tick. A new
    rate also wakes whoever waits, so a raised rate applies at once.

    A waiter in the fast lane (``acquire(first=True)``: a list page, a user's request) gets
    the next token before the waiters in the slow lane (polls), even one that waited longer:
    one page observes up to 100 tasks, so a walk's pages must not alternate with the polls
    already waiting (issue 19: a 7-page walk took 1.4 s instead of 0.4 s). But a poll that
    has waited ``patience`` tokens' time goes first: a loop of user requests or a long walk
    slows polling down and never stops it (nothing starves).
    """

    patience = 8.0
    """Tokens' time a slow-lane waiter waits at most while the fast lane takes them."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._at = burst, clock()
        self._changed: asyncio.Event | None = None
        self._fast = 0
        """Fast-lane waiters without a token yet."""
        self._slow: list[float] = []
        """When each slow-lane waiter without a token began to wait (oldest first)."""

    def set(self, rate: float, burst: float) -> None:
        """A new rate and size; the tokens already there stay (at most the new size)."""
        self._refill()
        self.rate, self.burst = rate, burst
        self._tokens = min(self._tokens, burst)
        self._wake()  # waits computed at the old rate are recomputed

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def try_take(self) -> float:
        """Take a token and return 0, or return the seconds until one is there."""
        self._refill()
        if self._tokens >= 1.0 - 1e-9:  # a wait of exactly a token's time may round short
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def _turn(self, first: bool) -> bool:
        """Whether the next token is this lane's: the fast lane's, unless the oldest
        slow-lane waiter has waited ``patience`` tokens' time."""
        impatient = bool(self._slow) and self._clock() - self._slow[0] >= self.patience / self.rate
        return not impatient if first else not self._fast or impatient

    async def acquire(self, first: bool = False) -> bool:
        """Wait for a token and take it; True if it had to wait. ``first``: in the fast lane."""
        waited, since = False, self._clock()
        if first:
            self._fast += 1
        else:
            self._slow.append(since)
        try:
            while True:
                if self._turn(first):
                    wait = self.try_take()
                    if wait == 0.0:
                        return waited
                else:  # the other lane's token: look again once it may have been taken
                    wait = 1.0 / self.rate
                waited = True
                if self._changed is None:
                    self._changed = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait)
        finally:
            if first:
                self._fast -= 1
            else:
                self._slow.remove(since)
            self._wake()  # a token was taken or a waiter left: the other lane looks again


def poll_priority(
    worth: float, overdue: float, since_polled: float, max_interval: float
) -> tuple[float, ...]:
    """How much a due poll is worth now, when more polls are due than the budget allows
    (the largest goes first).

    A task not asked for ``max_interval`` comes before everything: nothing starves. Then
    the poll ``worth`` most: by default minus the polls its task still needs until its end
    is most likely seen (:func:`~mh_notebook.polling.schedule.cheapest`), in the poller the
    chance it sees an end on time (:meth:`~mh_notebook.polling.schedule.Pacer.worth`). An
    on-time end is one task's worth whatever it cost, so the budget goes where it buys the
    most of them. Among equals, the most overdue.
    """
    if since_polled >= max_interval:
        return (1.0, since_polled, 0.0)
    return (0.0, worth, max(0.0, overdue))
