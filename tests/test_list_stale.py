"""A task list that lags behind the tasks' own GETs (issue 19's lagging replica or cache).

Over real HTTP against the simulator, whose ``list_end_lag`` keeps showing each ended task
as it was before its end for a while (its GET tells the end at once). Delays are compared
against the same run with detection off, and measured in simulated seconds at a speed that
leaves a loaded machine seconds of slack; the rest is counted (requests at the simulator,
verification GETs, modes the panel said). Pure rules of :mod:`mh_notebook.polling.staleness`
get Hypothesis properties.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from mh_notebook.models import Task
from mh_notebook.polling.policy import PollPolicy
from mh_notebook.polling.sightings import status_rank
from mh_notebook.polling.staleness import Candidate, LagWatch, Verifications, pick_verification
from mh_notebook.sim import Simulator
from mh_notebook.watcher import TaskWatcher

SPEED = 10.0
LAG = 100.0
"""Simulated seconds the list keeps showing an ended task as running."""


def _until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "condition not reached"
        time.sleep(0.02)


class _Run:
    """What one watched run against a lagging list showed."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.modes: list[str] = []
        self.backwards = 0
        self.retried = False
        self.verifications = 0
        self.calls: dict[str, int] = {}


def _run(*, detect: bool) -> _Run:
    """8 images ending at 60-165 simulated seconds, and 5 that run on, watched through a
    list that shows each end ``LAG`` simulated seconds late."""
    out, lock = _Run(), threading.Lock()
    ranks: dict[str, int] = {}
    with Simulator(seed=11, speed=SPEED, list_end_lag=LAG / SPEED) as sim:
        ids = [sim.submit(model="seedream-4-5", outcome="succeeded", latency=60 + 15 * i) for i in range(8)]
        long = [sim.submit(model="seedream-4-5", latency=100_000) for _ in range(5)]  # pages pay
        policy = PollPolicy(list_retry=30.0)
        with TaskWatcher(
            sim.api_key, sim.url, store=None, display="none", time_scale=SPEED, policy=policy
        ) as w:
            poller = w.engine.poller
            poller.lister.guard.enabled = detect

            @w.on_change
            def _seen(task: Task) -> None:
                with lock:
                    rank = status_rank(str(task.status))
                    out.backwards += rank < ranks.get(task.id, 0)
                    ranks[task.id] = max(rank, ranks.get(task.id, 0))

            w.watch([*ids, *long])

            def ended() -> bool:
                mode = poller.polling_mode
                if not out.modes or out.modes[-1] != mode.split(";")[0]:
                    out.modes.append(mode.split(";")[0])
                return all(poller.state(i).ended for i in ids)  # type: ignore[union-attr]

            _until(ended)
            if detect:  # per-task for list_retry, then the list is tried again
                flips = sum("lags behind" in m for m in out.modes)
                assert flips >= 1, out.modes
                _until(lambda: poller.list_health.available)
                pages = sim.calls["list"]
                _until(lambda: sim.calls["list"] >= pages + 3)  # walked again, not just probed
                out.retried = "list pages/s" in poller.polling_mode
            history = w.history().set_index("task_id")
            out.delays = [float(history.loc[i, "detection_delay_s"]) * SPEED for i in ids]
            out.verifications = poller.lister.guard.sent
        out.calls = dict(sim.calls)
    return out


def test_a_list_lagging_on_ends_is_caught_said_and_tried_again() -> None:
    caught, trusted = _run(detect=True), _run(detect=False)
    # trusting the list, every end waits for it: LAG late (the "break it on purpose" run)
    assert max(trusted.delays) >= 0.9 * LAG, trusted.delays
    assert not any("lags behind" in m for m in trusted.modes)
    # caught: verification GETs find the first ends, two stale pages turn to per-task GETs
    assert max(caught.delays) < 0.5 * LAG, caught.delays
    assert sum(caught.delays) < 0.3 * sum(trusted.delays), (caught.delays, trusted.delays)
    assert any(m.startswith("per-task GETs: the list lags behind task GETs") for m in caught.modes)
    assert caught.retried
    assert 1 <= caught.verifications <= 20
    assert caught.backwards == trusted.backwards == 0  # no lying page undid an end


def test_an_honest_list_brings_no_verification_storm() -> None:
    # speed 10: at 20, at load 8-9 (three CI runs at once), pages came late enough for
    # the schedule's own GETs (tasks past max_interval, 1.5 s there) to pass the bound
    with Simulator(seed=12, speed=10.0) as sim:
        images = [sim.submit(model="seedream-4-5", latency=40 + 2 * i) for i in range(30)]
        videos = [sim.submit(model="viduq3-turbo", latency=100_000) for _ in range(30)]
        with TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=10.0) as w:
            poller = w.engine.poller
            w.watch([*images, *videos])
            _until(lambda: all(poller.state(i).task is not None for i in images + videos))  # type: ignore[union-attr]
            sim.reset_counts()  # (each task's first GET, watched by id)
            start = time.monotonic()
            _until(lambda: all(poller.state(i).ended for i in images))  # type: ignore[union-attr]
            pages = sim.calls["list"]
            _until(lambda: sim.calls["list"] >= pages + 200)  # ~10 s more of walks over the videos
            guard = poller.lister.guard
            assert poller.list_health.available and "lags" not in poller.polling_mode
            sent, gets, elapsed = guard.sent, sim.calls["get"], time.monotonic() - start
    # the images are learned (windows, none overdue); the videos' model has none: its
    # oldest task is verified at doubling ages (0.9, 1.8, 3.6, 7.2 s...): a handful
    assert sent <= 8, sent
    # each image's result GET, the verifications, and some of the schedule's own GETs: a
    # loaded machine answers pages late, and a video not seen for max_interval (3 s real)
    # is asked by GET. Allowed: half of one per video per max_interval, over the time it
    # took (about 28 s: ~175). Quiet: 35-43 GETs; at load 8+ (ci19) 55. The storm this
    # guards against was 701 GETs for 61; pages that covered no video would be ~280.
    allowed = len(images) + sent + len(videos) * elapsed / (2 * 3.0)
    assert gets <= allowed, (gets, sent, elapsed)


# ------------------------------------------------------------ the pure rules

_honest = st.lists(
    st.tuples(
        st.floats(0.0, 1000.0),  # when the task's status turned (the server served its end from then on)
        st.floats(0.0, 1000.0),  # when a page was sent (this machine's clock)
        st.floats(0.0, 30.0),  # how long after the turn this process saw the end (by a GET)
        st.floats(-3600.0, 3600.0),  # completed_at - the turn: any meaning, any clock (attack s23)
    ),
    max_size=40,
)


@given(_honest, st.floats(0.05, 5.0))
def test_property_an_honest_list_never_counts_as_lagging(
    pages: list[tuple[float, float, float, float]], margin: float
) -> None:
    """Whatever completed_at says and whatever the server's clocks: a list that shows a task
    running only before its status turned is never stale (local observation times only)."""
    watch = LagWatch(margin=margin, memory=300.0)
    for n, (turned, sent, late, _) in enumerate(pages):
        watch.end_seen(f"t{n}", turned + late)  # a GET saw it ended at or after the turn
        if sent < turned:  # an honest page shows it running only before the turn
            assert not watch.page_after_end(f"t{n}", sent, sent)
    assert watch.stale == {}


@given(st.integers(1, 50), st.floats(2.01, 100.0))  # past the margin
def test_property_one_stale_page_is_a_one_off_two_are_a_lag(tasks: int, lag: float) -> None:
    watch = LagWatch(margin=2.0, memory=300.0)
    for n in range(tasks):  # seen ended by their GETs; one page then showed them all running
        watch.end_seen(f"t{n}", 500.0 - lag + 0.5 * n / tasks - 0.5)
        assert not watch.page_after_end(f"t{n}", 500.0, 500.0)
    assert watch.page_after_end("t0", 501.0, 501.0)  # a second page: lagging
    assert watch.episode(501.0, 30.0, 1800.0) == 30.0
    assert watch.stale == {} and watch.running == {}  # judged afresh when tried again
    assert watch.episode(540.0, 30.0, 1800.0) == 60.0  # the next episode in a row: twice as long
    assert not watch.page_after_end("unseen", 900.0, 900.0)  # an end not seen here proves nothing


@given(st.lists(st.floats(1.0, 400.0), min_size=1, max_size=60), st.floats(5.0, 50.0))
def test_property_verifications_of_a_model_without_window_double(ages: list[float], base: float) -> None:
    v = Verifications(base=base)
    key = ("bytedance", "seedream-4-5")
    picked: list[float] = []
    for step in range(60):  # the tasks age together; each verification finds them running
        grown = [Candidate(f"t{i}", a + step * 10.0, key, None) for i, a in enumerate(ages)]
        chosen = pick_verification(v, grown)
        if chosen is not None:
            assert chosen.age == max(c.age for c in grown)  # only the model's oldest
            v.done(chosen, ended=False)
            picked.append(chosen.age)
    # one GET per doubling of the age at most: never two between base * 2**k and 2**(k+1)
    rungs = [base * 2.0**k for k in range(12)]
    assert all(any(a < r <= b for r in rungs) for a, b in itertools.pairwise(picked)), picked
    assert len(picked) <= 1 + math.ceil(math.log2(max(ages) / base + 60.0 * 10.0 / base))


@given(st.lists(st.floats(0.0, 3.0), min_size=1, max_size=30), st.floats(0.5, 50.0), st.booleans())
def test_property_a_late_verification_never_pushes_the_next_further(
    lateness: list[float], start: float, windowed: bool
) -> None:
    """A loaded loop verifies late (``lateness`` times the threshold, past it): the next
    threshold is the ladder's next rung above that age, never twice the age (issue: under
    load the guard's GETs drifted past the ends they were there to find)."""
    window = (0.1, start / 1.5) if windowed else None
    v = Verifications(base=start)
    key = ("bytedance", "seedream-4-5")
    due = start
    for late in lateness:
        c = Candidate("t", due * (1.0 + late), key, window)
        assert math.isclose(v.threshold(c), due)  # due now: the rung it was given
        assert pick_verification(v, [c]) == c
        v.done(c, ended=False)
        due = v.threshold(c)
        assert c.age < due <= 2.0 * c.age  # the next rung above the age, never further
        assert math.isclose(math.log2(due / start), round(math.log2(due / start)))  # on the ladder


@given(st.integers(2, 20), st.floats(1.0, 400.0), st.data())
def test_property_of_one_creation_time_the_first_created_is_verified(
    tasks: int, age: float, data: st.DataObject
) -> None:
    """A batch submitted at once (one ``created_at``, to the ms or the second) is told
    apart by the list's order, newest first: the task listed last was created first."""
    watch = LagWatch()
    listing = data.draw(st.permutations(range(tasks)))  # the server's order, newest first
    for n in listing:
        watch.shown_running(f"t{n}", 100.0)
    for n in listing[: tasks // 2]:  # later pages (in any order) change nothing
        watch.shown_running(f"t{n}", 101.0)
    key = ("bytedance", "seedream-4-5")
    windowed = data.draw(st.booleans())
    window = (1.0, age / 2.0) if windowed else None
    batch = [
        Candidate(f"t{n}", age, key, window, watch.listed[f"t{n}"])
        for n in data.draw(st.permutations(range(tasks)))
    ]
    chosen = pick_verification(Verifications(base=age / 2.0), batch)
    assert chosen is not None and chosen.id == f"t{listing[-1]}"


def test_an_end_read_off_a_slow_page_is_seen_when_the_page_came() -> None:
    # attack s23: an up-to-date replica answering in 3 s and one 1.5 s behind (under the
    # margin): the end was dated at the slow page's send, so the lagging-but-honest page
    # that followed looked stale by 3 s and the list was dropped for per-task GETs
    from mh_notebook.polling.clock import ClockOffset
    from mh_notebook.polling.lagguard import LagGuard
    from mh_notebook.polling.state import TaskState

    class _Host:
        def __init__(self) -> None:
            self.clock, self.tasks = ClockOffset(), dict[str, TaskState]()

        def state(self, task_id: str) -> TaskState | None:
            return self.tasks.get(task_id)

    host, lagging = _Host(), []
    guard = LagGuard(host, lambda now, worst: lagging.append(worst))  # type: ignore[arg-type]
    guard.lag.margin = 1.8
    for n, start in enumerate((100.0, 200.0)):
        task_id = f"t{n}"
        host.tasks[task_id] = TaskState(task_id)
        running = Task.model_validate({"id": task_id, "status": "running"})
        ended = Task.model_validate({"id": task_id, "status": "succeeded"})
        guard.page_item(running, start - 5.0, start - 4.9)
        guard.page_item(ended, start, start + 3.0)  # the slow, up-to-date replica
        host.tasks[task_id].ended = True
        guard.page_item(running, start + 3.5, start + 3.6)  # the other, 1.5 s behind: honest
    assert lagging == []
    assert guard.lag.ended == {"t0": 103.0, "t1": 203.0}
    host.tasks["t0"].ended = True
    guard.page_item(Task.model_validate({"id": "t0", "status": "running"}), 110.0, 110.1)
    guard.page_item(Task.model_validate({"id": "t0", "status": "running"}), 111.0, 111.1)
    assert len(lagging) == 1  # a page long after the end still lags: caught
