"""The learned server clock offset, as pure numbers: no sleeps, no network."""

from __future__ import annotations

import email.utils
import random
import time

import pytest

from mh_notebook.polling.clock import ClockOffset


def _answers(
    offset: float, n: int, seed: int = 0, start: float = 1_795_000_000.0
) -> list[tuple[float, float, str]]:
    """``n`` responses of a server whose clock is ``offset`` ahead: (sent, received, Date)."""
    rng = random.Random(seed)
    out = []
    t = start
    for _ in range(n):
        t += rng.uniform(0.05, 1.7)  # polls at irregular times: every phase of the second
        rtt = rng.uniform(0.002, 0.03)
        written = t + rng.uniform(0, rtt) + offset
        out.append((t, t + rtt, email.utils.formatdate(written, usegmt=True)))
    return out


@pytest.mark.parametrize("skew", [-600.0, -120.0, -0.4, 0.0, 0.7, 30.0, 120.0, 600.0])
def test_date_headers_pin_the_offset(skew: float) -> None:
    clock = ClockOffset()
    for sent, received, date in _answers(skew, 60):
        clock.observe_date(sent, received, date)
    assert abs(clock.offset - skew) <= clock.error  # the documented bound holds
    assert clock.error < 0.1  # and is tight after a minute of polling


def test_one_date_header_is_within_a_second() -> None:
    clock = ClockOffset()
    ((sent, received, date),) = _answers(42.0, 1)
    clock.observe_date(sent, received, date)
    assert abs(clock.offset - 42.0) <= clock.error <= 0.55


@pytest.mark.usefixtures("new_york")
def test_an_asctime_date_is_utc_whatever_the_local_zone() -> None:
    """Attack s25: RFC 9110 asks recipients to accept the asctime form, which is UTC; the
    stdlib returns it without a zone, and read as local time the offset was learned 5 h
    off in New York, its interval (about a second) far from the truth."""
    now = time.time()
    clock = ClockOffset()
    clock.observe_date(now - 0.01, now, time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(now)))
    assert clock.offset - clock.error - 1e-3 <= 0.0 <= clock.offset + clock.error + 1e-3, (
        clock.offset,
        clock.error,
    )


def test_a_fresh_task_bounds_a_server_ahead() -> None:
    clock = ClockOffset()
    received = 1_795_000_000.0
    clock.observe_timestamp(received + 120.0 - 0.05, received)  # created 50 ms before we asked
    assert clock.offset == pytest.approx(119.948, abs=0.01)


def test_an_old_task_alone_does_not_invent_a_skew() -> None:
    clock = ClockOffset()
    received = 1_795_000_000.0
    clock.observe_timestamp(received - 300.0, received)  # created five minutes ago
    assert clock.offset == 0.0
    assert clock.known


def test_a_stepped_clock_restarts_the_estimate() -> None:
    clock = ClockOffset()
    for sent, received, date in _answers(0.0, 20):
        clock.observe_date(sent, received, date)
    for sent, received, date in _answers(100.0, 20, seed=1, start=1_795_000_100.0):  # stepped
        clock.observe_date(sent, received, date)
    assert abs(clock.offset - 100.0) <= max(clock.error, 1.0)


def test_a_clock_stepped_back_settles_despite_the_stamps_of_before() -> None:
    # attack s23: tasks created before a -30 s step keep their stamps; each contradicted the
    # new Date headers and restarted the estimate, which flipped forever (error inf)
    clock = ClockOffset()
    start = 1_795_000_000.0
    for sent, received, date in _answers(0.0, 20, start=start):
        clock.observe_date(sent, received, date)
    created_before = start + 39.5  # a task stamped on the old clock just before the step
    for sent, received, date in _answers(-30.0, 25, seed=2, start=start + 40.0):  # stepped back
        clock.observe_date(sent, received, date)
        clock.observe_timestamp(created_before, received)  # its stamp comes with every answer
    assert clock.steps == 1  # the one step, not one per stamp
    assert abs(clock.offset + 30.0) <= clock.error < 0.1


@pytest.mark.parametrize("date", [None, "", "yesterday", "Thu, 99 Foo 2025 10:00:00 GMT"])
def test_missing_or_garbled_dates_are_ignored(date: str | None) -> None:
    clock = ClockOffset()
    clock.observe_date(1.0, 2.0, date)
    assert not clock.known
    assert clock.offset == 0.0
    assert "unknown" in repr(clock)


# ------------------------------------------------------------------ the bound, as a property
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_OBSERVATION = st.tuples(
    st.floats(0.0, 5.0),  # seconds since the previous request was sent
    st.floats(0.0, 2.0),  # the request's round trip
    st.floats(0.0, 1.0),  # where in the round trip the server wrote its answer
    st.one_of(st.none(), st.floats(0.0, 600.0)),  # the age of a timestamp in the body, if any
    st.booleans(),  # body timestamps in whole seconds (floored) or milliseconds
)


@given(st.floats(-1000.0, 1000.0), st.lists(_OBSERVATION, min_size=1, max_size=40))
def test_the_interval_always_contains_the_true_offset(
    true: float, observations: list[tuple[float, float, float, float | None, bool]]
) -> None:
    clock, sent = ClockOffset(), 1_795_000_000.0
    for gap, rtt, where, age, whole in observations:
        sent += gap
        received = sent + rtt
        written = sent + where * rtt + true  # the server's clock when it answered
        clock.observe_date(sent, received, email.utils.formatdate(written, usegmt=True))
        if age is not None:
            stamp = written - age
            clock.observe_timestamp(float(int(stamp)) if whole else round(stamp, 3), received)
        assert clock.lo <= true <= clock.hi, (clock.lo, true, clock.hi)
        assert abs(clock.offset - true) <= clock.error
