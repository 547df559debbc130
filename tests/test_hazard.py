"""What a due poll is worth when the budget binds (``mh_notebook.polling.hazard``): ends per
unit of log-age learned per model and type from what the poller saw, and the schedule that
spends a short budget by it. Pure: plain numbers and a fake clock, no thread, no network.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mh_notebook.models import Task
from mh_notebook.polling.hazard import HazardModel
from mh_notebook.polling.policy import PollPolicy
from mh_notebook.polling.schedule import PollQueue, Worth, cheapest
from mh_notebook.polling.state import TaskState
from mh_notebook.records import TaskStatus

VIDEO, IMAGE = ("*", "video"), ("*", "image")
VEO, SEEDREAM = ("google", "veo"), ("bytedance", "seedream")


def test_nothing_known_is_the_flat_prior_at_every_age() -> None:
    hazard = HazardModel()
    for age in (0.01, 1.0, 30.0, 3000.0):
        assert hazard.rate(VEO, VIDEO, age) == pytest.approx(hazard.prior)


def test_tasks_seen_running_lower_the_hazard_at_those_ages_only() -> None:
    hazard = HazardModel()
    for i in range(10):  # ten videos seen running up to 20 s, none ended
        for age in (1.0, 5.0, 10.0, 20.0):
            hazard.seen(f"v{i}", (VEO, VIDEO), age, ended=False)
    assert hazard.rate(VEO, VIDEO, 5.0) < 0.1 * hazard.prior
    assert hazard.rate(("kling", "v3"), VIDEO, 5.0) < 0.2 * hazard.prior  # another video model: its type's
    assert hazard.rate(VEO, VIDEO, 200.0) == pytest.approx(hazard.prior)  # never seen that old
    assert hazard.rate(SEEDREAM, IMAGE, 5.0) == pytest.approx(hazard.prior)  # another type


def test_ends_raise_the_hazard_where_they_come() -> None:
    hazard = HazardModel()
    for i in range(10):  # images end at 4-6 s
        hazard.seen(f"i{i}", (SEEDREAM, IMAGE), 2.0, ended=False)
        hazard.seen(f"i{i}", (SEEDREAM, IMAGE), 4.0 + 0.2 * i, ended=True)
    assert hazard.rate(SEEDREAM, IMAGE, 5.0) > 2 * hazard.prior
    assert hazard.rate(SEEDREAM, IMAGE, 1.0) < hazard.prior
    assert hazard.last_seen("i0") is None  # ended: no sighting kept
    hazard.seen("x", (SEEDREAM, IMAGE), 3.0, ended=False)
    hazard.forget("x")
    assert hazard.last_seen("x") is None


def test_a_poll_is_worth_the_time_since_the_last_sighting_it_can_still_see_on_time() -> None:
    hazard = HazardModel()
    rate = hazard.rate(VEO, VIDEO, 100.0)
    assert hazard.worth(VEO, VIDEO, 100.0, since=100.0, allow=5.0) == 0.0  # just seen
    assert hazard.worth(VEO, VIDEO, 100.0, since=98.0, allow=5.0) == pytest.approx(rate * math.log(100 / 98))
    # an end before age 95 is late whenever it is seen now: only the last 5 s count
    assert hazard.worth(VEO, VIDEO, 100.0, since=50.0, allow=5.0) == pytest.approx(rate * math.log(100 / 95))


_SIGHTINGS = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from([VEO, SEEDREAM]), st.floats(0.0, 500.0), st.booleans()),
    max_size=40,
)


@settings(max_examples=60)
@given(_SIGHTINGS, st.floats(0.0, 600.0), st.floats(0.0, 600.0), st.floats(0.0, 60.0))
def test_hazard_and_worth_are_finite_and_never_negative(
    sightings: list[tuple[int, tuple[str, str], float, bool]], age: float, since: float, allow: float
) -> None:
    hazard = HazardModel()
    for task, model, at, ended in sightings:
        hazard.seen(str(task), (model, VIDEO if model == VEO else IMAGE), at, ended)
    for model, kind in ((VEO, VIDEO), (SEEDREAM, IMAGE), (("p", "new"), ("*", "audio"))):
        rate = hazard.rate(model, kind, age)
        assert 0.0 < rate < math.inf
        worth = hazard.worth(model, kind, age, since, allow)
        assert 0.0 <= worth < math.inf
        assert worth <= hazard.worth(model, kind, age, min(since, age - 1.0), allow) + 1e-12  # older sighting


@settings(max_examples=60)
@given(st.lists(st.lists(st.floats(0.0, 400.0), min_size=1, max_size=6), min_size=1, max_size=8))
def test_exposure_adds_up_to_the_log_ages_lived(lives: list[list[float]]) -> None:
    # each task's sightings, in any order: the exposure counted is log(oldest / floor)
    hazard = HazardModel()
    for i, ages in enumerate(lives):
        for age in ages:
            hazard.seen(str(i), (VEO, VIDEO), age, ended=False)
    counted = sum(cell[0] for cell in hazard._bins.get(VIDEO, {}).values())
    lived = sum(math.log(max(max(ages), hazard.floor) / hazard.floor) for ages in lives)
    assert counted == pytest.approx(lived, rel=1e-9, abs=1e-9)


# ---------------------------------------------------------------- the schedule under a short budget
# Long tasks (60 s) and short ones (4 s) arrive alternately, two a second between them; the
# budget (3 requests a second) is a seventh of what the 5% rule asks for. Each step of the
# fake clock sends at most one poll, chosen by the queue.


def _kind(i: int) -> tuple[tuple[str, str], tuple[str, str], float]:
    return (VEO, VIDEO, 60.0) if i % 2 == 0 else (SEEDREAM, IMAGE, 4.0)


def _short_budget(worth: Worth | None, hazard: HazardModel, rate: float = 3.0) -> tuple[int, int, float]:
    """(short tasks seen on time, short tasks, longest gap between two polls of one task)."""
    policy, rng, step = PollPolicy(), random.Random(0), 1.0 / rate
    states: dict[str, TaskState] = {}
    queue = PollQueue(states.get) if worth is None else PollQueue(states.get, worth)
    created: dict[str, float] = {}
    polls: dict[str, list[float]] = {}
    now, arrivals = 0.0, iter(range(120))
    upcoming = next(arrivals, None)
    while upcoming is not None or queue.next_due() is not None:
        while upcoming is not None and upcoming * 1.0 <= now:  # one a second, alternately
            task_id = str(upcoming)
            states[task_id] = state = TaskState(task_id, policy=policy)
            created[task_id], polls[task_id] = now, []
            queue.push(state, now, 0.0)
            upcoming = next(arrivals, None)
        state = queue.pick(now)
        if state is not None:
            i, age = int(state.task_id), now - created[state.task_id]
            model, kind, latency = _kind(i)
            polls[state.task_id].append(now)
            state.last_polled, state.task = now, Task(id=state.task_id, status="running")
            ended = age >= latency
            hazard.seen(state.task_id, (model, kind), min(age, latency), ended)
            if ended:
                state.ended = True
            else:
                delay = policy.next_delay(TaskStatus.RUNNING, age, None, rng)
                state.due_age = age + delay
                queue.push(state, now, delay)
        now += step
    on_time = 0
    for task_id, times in polls.items():
        _, _, latency = _kind(int(task_id))
        end = created[task_id] + latency
        seen = min(t for t in times if t >= end)
        on_time += latency < 10 and seen - end <= max(policy.min_interval, 0.05 * latency) + step
    gaps = [b - a for times in polls.values() for a, b in itertools.pairwise(times)]
    return on_time, len(polls) // 2, max(gaps)


def _by_hazard(hazard: HazardModel) -> Worth:
    def worth(state: TaskState, age: float) -> float:
        model, kind, _ = _kind(int(state.task_id))
        since = hazard.last_seen(state.task_id) or 0.0
        return hazard.worth(model, kind, age, since, state.policy.interval(None, age))

    return worth


def test_a_short_budget_goes_where_ends_come() -> None:
    # cheapest first, a young long task (few polls left until three times its age) goes
    # before a short one: the short ones wait behind the long ones' floor polls and are seen
    # late. By hazard, the short tasks' ends (and the long ones not ending young) are learned
    # within seconds: the short ones are seen on time, and no one waits past max_interval
    hazard = HazardModel()
    cheap_on_time, shorts, _ = _short_budget(None, HazardModel())
    on_time, _, longest_gap = _short_budget(_by_hazard(hazard), hazard)
    assert cheap_on_time <= 0.5 * shorts, cheap_on_time
    assert on_time >= 0.9 * shorts, (on_time, shorts)
    assert longest_gap <= PollPolicy().max_interval + 60 / 3.0  # a turn of everyone active at worst


def test_the_default_worth_is_the_cheapest_first() -> None:
    policy = PollPolicy()
    short, long_ = TaskState("s", policy=policy), TaskState("l", policy=policy)
    long_.window = (40.0, 120.0)
    assert cheapest(short, 100.0) == -policy.remaining_polls(100.0, None)
    assert cheapest(long_, 110.0) > cheapest(long_, 50.0)  # near its window's end: cheap


def test_an_end_teaches_once_however_often_its_urls_are_refreshed() -> None:
    from datetime import UTC, datetime, timedelta

    from mh_notebook.client import AsyncClient
    from mh_notebook.polling.poller import Poller

    poller = Poller(
        lambda: AsyncClient("river_test_key", "http://127.0.0.1:9"), on_observation=lambda _: None
    )
    poller.pause()
    created = datetime.now(UTC) - timedelta(seconds=30)
    running = Task(id="t", status="running", type="video", provider="p", model="m", created_at=created)
    done = Task(
        id="t", status="succeeded", type="video", provider="p", model="m", created_at=created,
        completed_at=created + timedelta(seconds=20),
    )  # fmt: skip

    def answers() -> float:
        state = TaskState("t")
        poller._states["t"] = state
        for task in (running, done, done, done):  # an end, then refreshes of its URLs
            poller._record_answer(state, task)
        return sum(cell[1] for cell in poller._pacer.hazard._bins[VIDEO].values())

    done_future: concurrent.futures.Future[float] = concurrent.futures.Future()
    poller.call_soon(lambda: done_future.set_result(answers()))
    try:
        assert done_future.result(timeout=30) == 1.0
        assert poller._pacer.hazard.last_seen("t") is None
    finally:
        poller.stop()
