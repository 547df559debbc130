"""Attack s24: the request budget under 429s. Each test is a break an attacker found
against 87b6974 (each failed there), fixed since.

The pure tests drive AdaptiveRate + TokenBucket as RequestGate does (bucket size
``AdaptiveRate.bucket``, a limit's 429 pauses every request for its Retry-After, ticks of
0.5 s), on a fake clock. Scripts and figures: attack/ on branch s24-attack.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable

import pytest

from mh_notebook.polling.budget import AdaptiveRate, TokenBucket

Server = Callable[[float, random.Random], "tuple[bool, float | None]"]


class _Log:
    def __init__(self, rate: AdaptiveRate) -> None:
        self.rate = rate
        self.answers: list[tuple[float, bool]] = []
        self.budgets: list[tuple[float, float]] = []
        self.paused = 0.0

    def share(self, a: float, b: float) -> float:
        xs = [r for t, r in self.answers if a <= t < b]
        return sum(xs) / max(1, len(xs))

    def accepted(self, a: float, b: float) -> float:
        return sum(1 for t, r in self.answers if a <= t < b and not r) / (b - a)


def _drive(
    ceiling: float, demand: Callable[[float], float], server: Server, seconds: float, seed: int = 0
) -> _Log:
    rng = random.Random(seed)
    rate = AdaptiveRate(ceiling)
    log = _Log(rate)
    now = [0.0]
    size = rate.bucket(0.0)
    bucket = TokenBucket(rate.rate, size, clock=lambda: now[0])
    paused_until, next_send, t, tick = 0.0, 0.0, 0.0, 0.5
    while t < seconds:
        used = held = 0
        while max(next_send, paused_until) < t + tick:
            now[0] = max(next_send, now[0], paused_until)
            wait, was_held = bucket.try_take(), False
            while wait > 0:
                was_held = True
                now[0] += wait
                wait = bucket.try_take()
            if now[0] < paused_until:
                continue
            held += was_held
            used += 1
            sent = rate.on_send(now[0])
            refused, retry_after = server(now[0], rng)
            log.answers.append((now[0], refused))
            if refused:
                wait_s = retry_after if retry_after is not None else 1.0
                if rate.on_limited(now[0], wait_s, sent):
                    end = now[0] + wait_s
                    log.paused += max(0.0, end - max(now[0], paused_until))
                    paused_until = max(paused_until, end)
                size = rate.bucket(now[0])
                bucket.set(rate.rate, size)
            else:
                rate.on_answer(now[0], sent)
            next_send = now[0] + 1.0 / demand(now[0])
        t += tick
        now[0] = max(now[0], t)
        if rate.on_tick(t, tick, used, held) or size != rate.bucket(t):
            size = rate.bucket(t)
            bucket.set(rate.rate, size)
        log.budgets.append((t, rate.rate))
    return log


class _Bucket:
    """A server's token bucket of ``limit`` req/s (burst ``limit``), Retry-After >= 1 s."""

    def __init__(self, limit: float) -> None:
        self.limit, self.tokens, self.at = limit, limit, 0.0

    def __call__(self, t: float, rng: random.Random) -> tuple[bool, float | None]:
        self.tokens = min(self.limit, self.tokens + max(0.0, t - self.at) * self.limit)
        self.at = max(self.at, t)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return False, None
        return True, float(max(1, math.ceil((1.0 - self.tokens) / self.limit)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_limit_with_random_429s_on_top_settles_near_the_limit(seed: int) -> None:
    """Attack s24, break 1: with a known limit every random 429 sent at >= 0.85 x the
    learned limit counts as the limit's (cut 30% + everyone paused), and the learned
    limit follows each cut down: a 6/s limit + 10% random 429s ends at ~0.3 req/s"""
    limit = _Bucket(6.0)

    def server(t: float, rng: random.Random) -> tuple[bool, float | None]:
        refused, ra = limit(t, rng)
        return (refused, ra) if refused else (rng.random() < 0.10, 1.0)

    log = _drive(10.0, lambda t: 20.0, server, 600.0, seed=seed)
    # at best 5.4/s get through (6/s less the proxy's 10%); "just under, not far under":
    # seeds 0-9 give 3.7-4.1 (the break gave 0.3)
    assert log.accepted(300.0, 600.0) > 0.65 * 5.4, log.accepted(300.0, 600.0)


def test_random_429s_after_a_limit_is_lifted_never_hold_a_demand_that_fits() -> None:
    """Attack s24, break 1b: after a limit was learned, random 429s alone (the limit
    lifted) keep the rate near the floor and pause every request, under a demand that
    fits"""
    limit = _Bucket(6.0)

    def server(t: float, rng: random.Random) -> tuple[bool, float | None]:
        if t < 90.0:
            refused, ra = limit(t, rng)
            if refused:
                return refused, ra
        return rng.random() < 0.10, 1.0

    log = _drive(10.0, lambda t: 20.0 if t < 90.0 else 8.0, server, 600.0)
    late = [r for t, r in log.budgets if t >= 300.0]  # 210 s after the limit went
    assert min(late) >= 8.0, min(late)


def test_a_refreshs_answers_count_in_the_budget_as_its_429s_do() -> None:
    """Attack s24, break 2: Poller._refresh feeds the budget its 429s (at the sending
    rate when the 429 came) but never its other answers: the ledger sees refreshes as
    all-429, the panel's share is inflated and noise is taken for a limit"""
    from mh_notebook.client import AsyncClient
    from mh_notebook.polling.poller import Poller
    from mh_notebook.sim import Faults, Simulator

    with Simulator(seed=5, speed=1, faults=Faults(rate_429=0.2, retry_after=0.05)) as sim:
        task_id = sim.submit(model="veo-3.1", latency=100_000)
        poller = Poller(
            lambda: AsyncClient(sim.api_key, sim.url, allow_insecure_http=True),
            on_observation=lambda _: None,
            rate_limit=50.0,
        )
        try:
            for _ in range(40):
                poller.refresh(task_id).result(30)
            time.sleep(0.2)
            answers, share = poller.budget.ledger.share(poller._loop.time())
        finally:
            poller.stop()
        sent = len(sim.request_log)
        refused = sum(code == 429 for _, _, code in sim.request_log)
    # every request answered is in the ledger, and its share of 429s is the server's
    assert answers == pytest.approx(sent, abs=2), (answers, sent)
    assert share == pytest.approx(refused / sent, abs=0.05), (share, refused / sent)


def test_noise_that_comes_and_goes_is_never_taken_for_a_limit() -> None:
    """Attack s24, break 3: noise whose share comes and goes (70% for 20 s in every 70
    s, the same at every rate at any moment) passes the probe when a burst ends during
    it: 'server limit ≈ 15 req/s' from noise alone, then (break 1) a demand of 14/s that
    fits the ceiling of 20 is held near 0.2-0.5 req/s and every request is paused"""

    def server(t: float, rng: random.Random) -> tuple[bool, float | None]:
        return ((t % 70.0) < 20.0 and rng.random() < 0.7), 1.0

    log = _drive(20.0, lambda t: 30.0 if t < 330.0 else 14.0, server, 600.0)
    assert log.paused == 0.0, log.paused
    assert min(r for t, r in log.budgets if t >= 330.0) >= 14.0


@pytest.mark.parametrize(
    ("before", "low", "back", "verdict"),
    [  # (answers, 429s) before the probe, in its low phase, in its back phase
        ((100, 40), (40, 0), (40, 16), "limit"),  # fell, and came back: a limit
        ((100, 70), (40, 0), (40, 0), "unclear"),  # fell, but did not come back: noise that ended
        ((100, 10), (40, 4), (40, 4), "noise"),  # the same share at both rates
        ((100, 40), (10, 0), (40, 16), "unclear"),  # too few answers in the low phase
        ((100, 40), (40, 0), (5, 2), "unclear"),  # too few in the back phase
        ((100, 8), (40, 0), (40, 3), "unclear"),  # a fall, but not a clear one
    ],
)
def test_a_probes_verdict_needs_the_429s_to_fall_and_come_back(
    before: tuple[float, float], low: tuple[float, float], back: tuple[float, float], verdict: str
) -> None:
    """Break 3's fix: an A-B-A experiment. Noise whose share comes and goes can fall in
    the low phase by chance (it ended just then), but does not come back right after."""
    from mh_notebook.polling.probe import Probe

    probe = Probe(12.0, 6.0, 4.0, 8.0, before, seen_low=list(low), seen_back=list(back))
    assert probe.verdict(20.0, 3.0) == verdict


def test_a_few_seconds_of_429s_at_the_start_starve_nothing_for_minutes() -> None:
    """Attack s25, B1: every request refused for the first 5 s (a proxy's hiccup, or a
    window another kernel used up), then never again; demand 20/s above a ceiling of 10.
    With ~100% 429s 'the rate a limit would allow' was 0: the probe sent at the floor
    (0.1 req/s) for 1.5 x 20 answers / 0.1 = 300 s, every task starved. Now a probe goes
    to at least a tenth of the rate, for at most 16 s."""

    def server(t: float, rng: random.Random) -> tuple[bool, float | None]:
        return (t < 5.0, 1.0)

    log = _drive(10.0, lambda t: 20.0, server, 60.0)
    assert log.share(5.5, 60.0) == 0.0  # not one 429 after the hiccup
    assert log.accepted(6.0, 20.0) >= 0.5, log.accepted(6.0, 20.0)  # the probe's low phase polls
    assert log.accepted(20.0, 60.0) >= 5.0, log.accepted(20.0, 60.0)
    assert min(r for t, r in log.budgets if t >= 30.0) >= 9.0  # back at the ceiling by 30 s


class _Window:
    """A server's limit of ``n`` requests per sliding ``window`` seconds (refused ones not
    counted), ``Retry-After`` until the oldest leaves the window."""

    def __init__(self, n: int, window: float) -> None:
        self.n, self.window, self.sent = n, window, list[float]()

    def __call__(self, t: float, rng: random.Random) -> tuple[bool, float | None]:
        self.sent = [s for s in self.sent if s > t - self.window]
        if len(self.sent) >= self.n:
            return True, float(max(1, math.ceil(self.sent[0] + self.window - t)))
        self.sent.append(t)
        return False, None


@pytest.mark.parametrize(("n", "window"), [(40, 10.0), (60, 10.0), (240, 60.0)])
def test_a_limit_over_a_sliding_window_is_learned(n: int, window: float) -> None:
    """Attack s25, B4: 40 requests per sliding 10 s, demand above the ceiling. A probe's
    4 s were inside the window's memory of the rate before: its low phase saw the 429s of
    that rate, 'noise'; those answers, filed under the low rate, then kept the ledger from
    asking for another probe for minutes. 40-60% answered 429 for good, the panel saying
    'random'. Now the low phase counts (and the ledger files) answers only after the
    longest Retry-After seen (the window's memory). 429s: 1.5%, 3.3%, 11% from 100 s on."""
    log = _drive(10.0, lambda t: 20.0, _Window(n, window), 300.0)
    limit = n / window
    assert log.rate.limit_known(300.0)
    assert log.share(100.0, 300.0) < 0.15, log.share(100.0, 300.0)
    assert log.accepted(100.0, 300.0) > 0.85 * limit, log.accepted(100.0, 300.0)


def _hiccup(retry_after: float) -> Server:
    def server(t: float, rng: random.Random) -> tuple[bool, float | None]:
        return (t < 5.0, retry_after)

    return server


def test_a_hiccup_that_asks_for_a_minute_starves_nothing() -> None:
    """Attack s25 (second attacker): the hiccup above with ``Retry-After: 60``. The probe's
    settle waited the whole minute at a tenth of the rate (1 req/s from 5 s to ~80 s, no
    429 meanwhile, a task 78 s without a poll end to end). A settle ends once the 429s
    stopped for 2 s."""
    log = _drive(10.0, lambda t: 20.0, _hiccup(60.0), 100.0)
    assert log.share(5.5, 100.0) == 0.0
    assert log.accepted(20.0, 60.0) >= 5.0, log.accepted(20.0, 60.0)


def test_the_panel_tells_the_share_of_429s_that_came() -> None:
    """Attack s25 (second attacker): answers in a probe's settle stay out of the ledger, and
    the panel, reading the ledger, told the share among the others: under a limit of 240 a
    minute, at 60 s, '429s look random (2% of requests)' where 48% had come. It tells the
    share among every answer."""
    log = _drive(10.0, lambda t: 20.0, _Window(240, 60.0), 60.0)
    belief = log.rate.belief(60.0) or ""
    said = re.search(r"(\d+)% of requests", belief)
    true = log.share(0.0, 60.0)  # every answer so far (half-life 120 s: little faded)
    assert said is not None and abs(int(said.group(1)) / 100 - true) <= 0.1, (belief, true)
