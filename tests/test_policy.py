"""The poll schedule as pure numbers: no clock, no sleeps, no network."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from mh_notebook.models import TaskStatus
from mh_notebook.polling.policy import LatencyModel, PollPolicy

NO_JITTER = PollPolicy(running_fraction=0.04, min_interval=0.8, waiting_min_interval=1.0, jitter=0.0)
"""Pinned numbers (not the defaults), so the cases below test the rules, not the tuning."""
RNG = random.Random(0)


@pytest.mark.parametrize(
    ("status", "elapsed", "expected"),
    [
        (TaskStatus.RUNNING, 0.0, 0.8),  # the floor
        (TaskStatus.RUNNING, 100.0, 4.0),  # 4% of elapsed
        (TaskStatus.RUNNING, 10_000.0, 30.0),  # the ceiling
        (TaskStatus.PENDING, 0.0, 1.0),
        (TaskStatus.QUEUED, 100.0, 9.0),  # waiting tasks are asked less often
        (TaskStatus("paused"), 100.0, 4.0),  # unknown: treated like running
    ],
)
def test_plain_interval(status: TaskStatus, elapsed: float, expected: float) -> None:
    assert NO_JITTER.next_delay(status, elapsed, None, RNG) == pytest.approx(expected)


def test_jitter_only_shortens() -> None:
    policy = PollPolicy(running_fraction=0.04, jitter=0.1)
    rng = random.Random(1)
    delays = [policy.next_delay(TaskStatus.RUNNING, 100.0, None, rng) for _ in range(200)]
    assert all(3.6 <= d <= 4.0 for d in delays)
    assert max(delays) - min(delays) > 0.2


def test_plain_schedule_sees_the_end_within_five_percent() -> None:
    for latency in (2.0, 7.0, 45.0, 170.0):
        t, polls = 0.0, 0
        while t < latency:
            t += NO_JITTER.next_delay(TaskStatus.RUNNING, t, None, RNG)
            polls += 1
        assert t - latency <= max(1.0, 0.05 * latency)


def test_narrow_window_is_covered_by_one_poll() -> None:
    window = (29.8, 30.3)
    delay = NO_JITTER.next_delay(TaskStatus.PENDING, 0.0, window, RNG, early_share=0.0)
    assert 30.3 <= delay <= 30.3 + NO_JITTER.window_margin
    wide = NO_JITTER.next_delay(TaskStatus.PENDING, 0.0, (20.0, 40.0), RNG, early_share=0.0)
    assert wide == pytest.approx(20.0 + 0.5 * 0.8)  # half a gap into a wide window


def test_window_polls_early_when_tasks_end_early() -> None:
    window = (60.0, 120.0)
    delay = NO_JITTER.next_delay(TaskStatus.RUNNING, 5.0, window, RNG, early_share=0.1)
    assert delay == pytest.approx(10.0)  # geometric: 2 x elapsed
    skip = NO_JITTER.next_delay(TaskStatus.RUNNING, 5.0, window, RNG, early_share=0.0)
    assert skip == pytest.approx(60.0 + 0.5 * 2.4 - 5.0)


def test_inside_window_never_passes_its_end() -> None:
    delay = NO_JITTER.next_delay(TaskStatus.RUNNING, 100.0, (60.0, 101.0), RNG)
    assert delay == pytest.approx(101.0 + NO_JITTER.window_margin - 100.0)


def test_past_window_falls_back_to_plain_rule() -> None:
    assert NO_JITTER.next_delay(TaskStatus.RUNNING, 200.0, (60.0, 120.0), RNG) == pytest.approx(8.0)


def test_error_backoff_doubles_and_caps() -> None:
    rng = random.Random(3)
    for n, high in [(1, 1.0), (2, 2.0), (3, 4.0), (20, 60.0)]:
        d = PollPolicy().error_delay(n, rng)
        assert high / 2 <= d <= high


def test_latency_model_needs_samples() -> None:
    model = LatencyModel(min_samples=3)
    key = ("vidu", "viduq3-turbo")
    model.add(key, 30.0)
    model.add(key, 31.0)
    assert model.window(key) is None
    model.add(key, 29.0)
    window = model.window(key)
    assert window is not None
    assert window[0] <= 29.0 and window[1] >= 31.0


def test_latency_window_narrows_with_evidence() -> None:
    rng = random.Random(5)
    key = ("google", "veo-3.1")
    few, many = LatencyModel(), LatencyModel()
    samples = [60 * math.exp(rng.gauss(0, 0.2)) for _ in range(100)]
    for s in samples[:4]:
        few.add(key, s)
    for s in samples:
        many.add(key, s)
    lo_few, hi_few = few.window(key) or (0, 0)
    lo_many, hi_many = many.window(key) or (0, 0)
    assert hi_few / lo_few > hi_many / lo_many
    inside = sum(lo_many <= 60 * math.exp(rng.gauss(0, 0.2)) <= hi_many for _ in range(2000)) / 2000
    assert inside > 0.95  # a real prediction interval


def test_failures_do_not_shape_the_window_but_count_as_early() -> None:
    model = LatencyModel()
    key = ("kling", "kling-v3.0")
    for s in (100.0, 105.0, 110.0):
        model.add(key, s)
    model.add(key, 2.0, succeeded=False)
    window = model.window(key)
    assert window is not None and window[0] > 50
    assert model.early_share(key, window[0]) == pytest.approx(0.25)
    assert model.count(key) == 3


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (1.0, 0.8),  # where early failures come (up to 3 s x 1.2): the plain schedule
        (3.0, 0.8),
        (5.0, 10.0),  # past it: sparse and geometric (2 x elapsed)
        (12.0, 8.0 + 0.5 * 0.8),  # ...but never past the window's first poll (lo + half a gap)
    ],
)
def test_early_ends_get_their_own_zone(elapsed: float, expected: float) -> None:
    delay = NO_JITTER.next_delay(TaskStatus.RUNNING, elapsed, (20.0, 30.0), RNG, 0.2, 3.0)
    assert delay == pytest.approx(min(expected, 20.0 + 0.4 - elapsed))


@pytest.mark.parametrize(("before", "after"), [(10.0, 40.0), (40.0, 10.0)])
def test_a_regime_change_is_followed_within_a_few_tasks(before: float, after: float) -> None:
    model = LatencyModel()
    key = ("p", "m")
    for i in range(60):
        model.add(key, before * (1 + 0.01 * (i % 3)))
    for i in range(6):
        model.add(key, after * (1 + 0.01 * (i % 3)))
    window = model.window(key)
    assert window is not None
    assert window[0] <= after * 1.02 <= window[1]
    predicted = model.predict(key)
    assert predicted is not None
    assert abs(math.log(predicted / after)) < abs(math.log(predicted / before))  # nearer the new regime


def test_early_ends_are_modelled_apart() -> None:
    model = LatencyModel()
    key = ("p", "m")
    for lat in (20.0, 21.0, 22.0, 20.5):
        model.add(key, lat)
    for lat in (1.0, 2.5):
        model.add(key, lat, succeeded=False)  # moderation rejects
    window = model.window(key)
    assert window is not None
    assert model.early_share(key, window[0]) == pytest.approx(2 / 6)
    assert model.early_until(key, window[0]) == 2.5


def test_successes_below_the_window_are_not_early_ends() -> None:
    model = LatencyModel()
    key = ("p", "m")
    for lat in (8.0, 8.1, 7.9, 8.05, 6.5):  # one quick success: the model's own tail
        model.add(key, lat)
    window = model.window(key)
    assert window is not None
    assert model.early_share(key, 7.0) == 0.0
    assert model.early_until(key, 7.0) is None


def _kind_of_models(medians: dict[str, float], sd: float, per_model: int, seed: int = 11) -> LatencyModel:
    """A latency model that has seen ``per_model`` ends of each model of one kind."""
    rng = random.Random(seed)
    model = LatencyModel()
    for name, median in medians.items():
        for _ in range(per_model):
            model.add(("p", name), median * math.exp(rng.gauss(0, sd)), kind="video")
    return model


VIDEO_MEDIANS = {"a": 35.0, "b": 70.0, "c": 110.0, "d": 50.0}


def test_a_new_model_borrows_its_kinds_scatter_after_one_end() -> None:
    model = _kind_of_models(VIDEO_MEDIANS, 0.3, per_model=6)
    kind_wide = LatencyModel(half_life=16.0, keep=400)  # as the poller keeps its type prior
    for name in VIDEO_MEDIANS:
        for lat, _ in model._ends[("p", name)]:
            kind_wide.add(("*", "video"), lat)
    model.add(("p", "new"), 80.0, kind="video")
    assert LatencyModel().window(("p", "new")) is None  # without pooling: nothing yet
    window, prior = model.window(("p", "new")), kind_wide.window(("*", "video"))
    assert window is not None and prior is not None
    assert window[0] < 80.0 < window[1]
    assert window[1] / window[0] < 0.8 * prior[1] / prior[0]  # narrower than "any video"
    predicted = model.predict(("p", "new"))
    assert predicted is not None and 55.0 < predicted < 80.0  # pulled towards the typical video


@pytest.mark.parametrize("true_median", [40.0, 80.0, 140.0])
def test_pooled_windows_after_one_and_two_ends_are_real_prediction_intervals(true_median: float) -> None:
    rng = random.Random(int(true_median))
    covered = trials = 0
    for _trial in range(150):  # a fresh model each time: its first ends, then the next one
        model = _kind_of_models(VIDEO_MEDIANS, 0.3, per_model=6, seed=rng.randrange(10**6))
        for _ in (1, 2):
            model.add(("p", "new"), true_median * math.exp(rng.gauss(0, 0.3)), kind="video")
            window = model.window(("p", "new"))
            assert window is not None
            covered += window[0] <= true_median * math.exp(rng.gauss(0, 0.3)) <= window[1]
            trials += 1
    assert 0.85 < covered / trials < 0.98  # ~93% windows: neither too narrow nor useless


def test_a_model_scattering_more_than_its_kind_keeps_its_own_window() -> None:
    model = _kind_of_models(VIDEO_MEDIANS, 0.1, per_model=8)
    for lat in (30.0, 90.0, 45.0, 120.0, 60.0):
        model.add(("p", "wild"), lat, kind="video")
    window = model.window(("p", "wild"))
    assert window is not None and window[0] < 30.0 and window[1] > 120.0


def test_a_steady_model_among_scattered_ones_keeps_its_narrow_window() -> None:
    model = _kind_of_models(VIDEO_MEDIANS, 0.3, per_model=8)
    for i in range(12):
        model.add(("p", "steady"), 60.0 * (1 + 0.01 * (i % 3 - 1)), kind="video")
    window = model.window(("p", "steady"))
    assert window is not None and window[1] / window[0] < 1.1


@pytest.mark.parametrize(
    ("elapsed", "window", "expected"),
    [
        (5.0, (4.0, 12.0), 1 + 7 / 0.8),  # a short task: polls on the floor through its window
        (50.0, (40.0, 120.0), 1 + math.log(120 / 50) / math.log(1.04)),
        (100.0, (40.0, 120.0), 1 + math.log(120 / 100) / math.log(1.04)),  # near its end: cheap
        (150.0, (40.0, 120.0), 1.0),  # past its window
        (10.0, None, 10 / 0.8 + math.log(30 / 20) / math.log(1.04)),  # unknown: until 3x its age
    ],
)
def test_remaining_polls(elapsed: float, window: tuple[float, float] | None, expected: float) -> None:
    assert NO_JITTER.remaining_polls(elapsed, window) == pytest.approx(expected)


def _share_below_start(sd: float, seed: int = 8) -> float:
    """How often the next latency of a well-learned model falls before its window."""
    rng = random.Random(seed)
    model, key = LatencyModel(), ("p", "m")
    for _ in range(60):
        model.add(key, 30.0 * math.exp(rng.gauss(0, sd)))
    window = model.window(key)
    assert window is not None
    return sum(30.0 * math.exp(rng.gauss(0, sd)) < window[0] for _ in range(20_000)) / 20_000


def test_a_window_starts_further_out_the_cheaper_that_is() -> None:
    # polls before a narrow window are few, before a wide one many: a narrow window
    # misses fewer early ends, a wide one accepts a few more
    narrow, typical, wide = (_share_below_start(sd) for sd in (0.1, 0.3, 0.6))
    assert narrow < typical < wide
    assert 0.005 < typical < 0.045
    assert wide < 0.08


# ---------------------------------------------------------------- the schedule as a whole
# The poller's queue (``PollQueue``: due times, and which due poll goes first) driven by a
# fake clock and a budget of one request every ``1 / rate`` seconds, with the plain schedule
# of ``PollPolicy``: no thread, no network. Tasks arrive in any pattern (watched when created
# or later), any mix of short and long.

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mh_notebook.models import Task  # noqa: E402
from mh_notebook.polling.schedule import PollQueue  # noqa: E402
from mh_notebook.polling.state import TaskState  # noqa: E402

_RUNNING = Task(id="t", status="running")
_ARRIVALS = st.lists(
    st.tuples(
        st.one_of(st.just(0.0), st.floats(0.0, 6.0)),  # seconds after the previous arrival (bunches)
        st.one_of(st.just(0.0), st.floats(0.0, 120.0)),  # its age when watched (old: gaps of max_interval)
        st.floats(0.5, 60.0),  # how much longer it runs after it is watched
    ),
    min_size=1,
    max_size=14,
)


def _run_schedule(
    arrivals: list[tuple[float, float, float]], policy: PollPolicy, rate: float
) -> tuple[dict[int, list[tuple[float, int]]], dict[int, tuple[float, float]], int]:
    """Each task's polls (time, tasks active then), (created, end) of each, and the most
    tasks active at once."""
    step, rng = 1.0 / rate, random.Random(0)
    states: dict[str, TaskState] = {}
    queue = PollQueue(states.get)
    times: dict[int, list[tuple[float, int]]] = {}
    life: dict[int, tuple[float, float]] = {}
    at = 0.0
    for i, (gap, age, rest) in enumerate(arrivals):
        at += gap
        life[i] = (at - age, at + rest)
    pending, now, most = sorted(life, key=lambda i: life[i][0] + arrivals[i][1]), 0.0, 0
    while pending or queue.next_due() is not None:
        while pending and life[pending[0]][0] + arrivals[pending[0]][1] <= now:  # watched now
            i = pending.pop(0)
            states[str(i)] = state = TaskState(str(i), policy=policy)
            times[i] = []
            queue.push(state, now, 0.0)
        active = sum(not s.ended for s in states.values())
        most = max(most, active)
        state = queue.pick(now)  # one request per step at most: the budget
        if state is not None:
            i = int(state.task_id)
            times[i].append((now, active))
            state.last_polled, state.task = now, _RUNNING
            created, end = life[i]
            if now >= end:
                state.ended = True
            else:
                delay = policy.next_delay(TaskStatus.RUNNING, now - created, None, rng)
                state.due_age = now - created + delay
                queue.push(state, now, delay)
        now += step
    return times, life, most


_FLOOD = [(0.0, 100.0, 40.0)] + [(5.0 if i == 0 else 0.0, 0.0, 30.0) for i in range(12)]
"""Item 5 of issue 17: an old task, then a flood of new ones while it is due."""


@settings(max_examples=40)
@example(_FLOOD, 2.0, 3.0)
@given(_ARRIVALS, st.sampled_from([2.0, 5.0, 10.0]), st.sampled_from([1.0, 2.0, 3.0, 10.0]))
def test_no_task_waits_much_past_max_interval(
    arrivals: list[tuple[float, float, float]], rate: float, max_interval: float
) -> None:
    # whatever the arrivals and however short the budget is for the 5% promise, a task is
    # polled again within max_interval, give or take one turn of the tasks active when it
    # was last polled: tasks watched after that (never polled yet) do not go first
    policy = PollPolicy(min_interval=0.5, max_interval=max_interval)
    times, _, _ = _run_schedule(arrivals, policy, rate)
    for polls in times.values():
        for (a, active), (b, _) in itertools.pairwise(polls):
            assert b - a <= max_interval + (active + 1) / rate + 1e-9, (a, b, active)


@settings(max_examples=40)
@given(_ARRIVALS)
def test_an_end_is_seen_within_five_percent_when_the_budget_suffices(
    arrivals: list[tuple[float, float, float]],
) -> None:
    # a budget that can poll every task twice per shortest gap: each end is seen within
    # 5% of the task's age at its end (at least the shortest gap), give or take one turn
    policy = PollPolicy(min_interval=0.9, max_interval=30.0)
    rate = 2.0 * len(arrivals) / (0.95 * policy.min_interval)
    times, life, most = _run_schedule(arrivals, policy, rate)
    for i, polls in times.items():
        created, end = life[i]
        seen = min(t for t, _ in polls if t >= end)
        promise = max(policy.min_interval, policy.running_fraction * (end - created))
        assert seen - end <= promise + (most + 1) / rate + 1e-9, (i, seen - end, promise)


def test_the_latency_model_can_be_read_while_the_engine_writes() -> None:
    # issue 17, item 21a: snapshot() predicts from the user's thread while the poller thread
    # adds ends (new models of a kind, full deques); reading must neither raise nor cache a
    # kind's scatter computed from a half-written state
    import sys
    import threading
    import time

    model = LatencyModel(keep=50)
    stop, errors = threading.Event(), []

    def write() -> None:
        rng = random.Random(1)
        i = 0
        while not stop.is_set():
            i += 1
            model.add(("p", f"m{i % 400}"), rng.uniform(5, 50), rng.random() > 0.1, "video")

    def read() -> None:
        while not stop.is_set():
            try:
                for j in range(0, 400, 37):
                    model.predict(("p", f"m{j}"))
                    model.window(("p", f"m{j}"))
                    model.early_share(("p", f"m{j}"), 10.0)
            except Exception as exc:  # collected for the assertion
                errors.append(exc)
                return

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: races show in a second, not an hour
    threads = [threading.Thread(target=write), threading.Thread(target=read), threading.Thread(target=read)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not errors:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        sys.setswitchinterval(old)
    assert not errors, errors[0]
    # and no stale scatter stays cached: the kind's pool is the one of the final samples
    cached = model._pools.get("video")
    model._pools.clear()
    assert cached is None or cached == model._pool("video")
