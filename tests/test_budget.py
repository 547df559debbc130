"""The request budget as pure numbers: AIMD under a ceiling, and which poll goes first."""

from __future__ import annotations

import pytest

from mh_notebook.budget import AdaptiveRate, poll_priority


def test_a_429_lowers_the_rate_once_per_pause() -> None:
    rate = AdaptiveRate(10.0)
    assert rate.on_limited(100.0, 2.0)
    assert rate.rate == pytest.approx(7.0)
    assert not rate.on_limited(101.0, 2.0)  # the same burst's other 429s
    assert rate.rate == pytest.approx(7.0)
    assert rate.on_limited(102.5, 2.0)
    assert rate.rate == pytest.approx(4.9)


def test_it_grows_only_while_the_budget_is_used_and_never_past_the_ceiling() -> None:
    rate = AdaptiveRate(10.0)
    rate.on_limited(0.0, 1.0)
    assert not rate.on_tick(5.0, 1.0, used=1.0)  # little demand: nothing learned
    t = 5.0
    for _ in range(2000):
        t += 0.1
        rate.on_tick(t, 0.1, used=rate.rate * 0.1)
    assert rate.rate == 10.0


def _settle(limit: float, ceiling: float, seconds: int) -> tuple[float, float]:
    """A server allowing ``limit`` req/s (bucket of ``limit``), a client with endless demand:
    (share of requests answered 429, mean accepted rate) over the second half."""
    rate, tokens, t = AdaptiveRate(ceiling), limit, 0.0
    sent = refused = accepted = 0.0
    dt = 0.1
    pause_until = 0.0
    for step in range(int(seconds / dt)):
        t += dt
        tokens = min(limit, tokens + limit * dt)
        want = 0.0 if t < pause_until else rate.rate * dt
        ok = min(want, tokens)
        tokens -= ok
        if want - ok > 1e-9 and rate.on_limited(t, 1.0):
            pause_until = t + 1.0
        rate.on_tick(t, dt, want)
        if step >= seconds / dt / 2:
            sent, refused, accepted = sent + want, refused + (want - ok), accepted + ok
    return refused / sent, accepted / (seconds / 2)


@pytest.mark.parametrize(("limit", "ceiling"), [(3.0, 10.0), (6.0, 10.0), (20.0, 50.0)])
def test_it_settles_just_under_the_servers_limit(limit: float, ceiling: float) -> None:
    refused_share, accepted = _settle(limit, ceiling, 1200)
    assert refused_share < 0.05
    assert accepted > 0.7 * limit


def test_a_lower_ceiling_applies_at_once() -> None:
    rate = AdaptiveRate(10.0)
    rate.set_ceiling(4.0)
    assert rate.rate == 4.0
    rate.set_ceiling(8.0)
    assert rate.rate == 8.0  # nothing was learned from the server: up to the new ceiling


@pytest.mark.parametrize(
    ("first", "second"),
    [  # (remaining polls, overdue, since polled)
        ((3.0, 0.1, 1.0), (25.0, 2.0, 3.0)),  # a short task (or one near its end) before a long one
        ((3.0, 0.5, 1.0), (3.0, 0.1, 1.0)),  # the later first, when they cost alike
        ((40.0, 0.0, 31.0), (1.0, 5.0, 5.0)),  # not asked for max_interval: before anything
    ],
)
def test_poll_priority_orders_due_polls(
    first: tuple[float, float, float], second: tuple[float, float, float]
) -> None:
    assert poll_priority(*first, max_interval=30.0) > poll_priority(*second, max_interval=30.0)


def test_a_token_bucket_changes_rate_without_refilling() -> None:
    import asyncio

    from mh_notebook.budget import TokenBucket

    now = [0.0]
    bucket = TokenBucket(10.0, 2.0, clock=lambda: now[0])

    async def take(n: int) -> None:
        for _ in range(n):
            await bucket.acquire()

    asyncio.run(take(2))  # the burst
    bucket.set(12.0, 2.0)  # a new rate: no new burst with it
    assert bucket._tokens < 1.0
    now[0] += 0.5
    bucket.set(4.0, 1.0)  # 0.5 s at 12/s is 6 tokens, capped at the new size
    assert bucket._tokens == 1.0
