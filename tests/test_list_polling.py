"""List polling in the poller, over real HTTP against the simulator (issue 19).

A real TaskWatcher (its engine's poller) watches tasks from their creation answers, as
``watcher.submit`` would. What is asserted is what the simulator saw (requests by call,
the GETs each task got after its true end) and what the watcher ended with; never how
fast anything was, so a loaded machine cannot make these flake. Waits poll a condition
up to a generous deadline.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from mh_notebook.models import Task
from mh_notebook.polling.listing import Watched, plan, status_rank
from mh_notebook.polling.policy import PollPolicy
from mh_notebook.polling.poller import Poller
from mh_notebook.records import TaskStatus
from mh_notebook.sim import Others, Simulator
from mh_notebook.view.render import static_text, summary_html
from mh_notebook.watcher import TaskWatcher

SPEED = 20.0


def _created(sim: Simulator, model: str, outcome: str = "succeeded", latency: float = 5.0) -> Task:
    """A task as its creation answer shows it (pending, with ``created_at``)."""
    task_id = sim.submit(model=model, outcome=outcome, latency=latency)
    sim_task = next(t for t in reversed(sim.ordered()[0]) if t.id == task_id)  # others may come after
    return Task.from_api(sim.data(sim_task, time.time()))


def _watcher(sim: Simulator, **policy: object) -> TaskWatcher:
    return TaskWatcher(
        sim.api_key, sim.url, store=None, display="none", time_scale=sim.speed, policy=PollPolicy(**policy)
    )


def _until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "condition not reached"
        time.sleep(0.02)


def _gets_after_end(sim: Simulator, task_id: str) -> int:
    end = sim.timeline(task_id)["end"]
    return sum(1 for t, tid, code in list(sim.request_log) if tid == task_id and t >= end and code == 200)


def _batch(sim: Simulator) -> list[tuple[Task, str]]:
    """40 images (2-6 s), 40 videos (10-30 s), 20 failing (2-10 s): (creation answer, outcome)."""
    made = [(_created(sim, "seedream-4-5", latency=2 + i * 0.1), "succeeded") for i in range(40)]
    made += [(_created(sim, "viduq3-turbo", latency=10 + i * 0.5), "succeeded") for i in range(40)]
    made += [(_created(sim, "kling-v3", "failed", latency=2 + i * 0.4), "failed") for i in range(20)]
    return made


def _run_batch(
    list_polling: bool, list_lag: float = 0.0
) -> tuple[Simulator, list[tuple[Task, str]], dict[str, Task], list[tuple[str, str]], str]:
    changes: list[tuple[str, str]] = []
    lock = threading.Lock()
    with Simulator(seed=3, speed=SPEED, list_lag=list_lag / SPEED) as sim:
        made = _batch(sim)
        sim.reset_counts()
        with _watcher(sim, list_polling=list_polling) as w:

            @w.on_change
            def _seen(task: Task) -> None:
                with lock:
                    changes.append((task.id, str(task.status)))

            w.watch([t for t, _ in made])
            final = w.wait(timeout=120)
            mode = w.engine.poller.polling_mode
        return sim, made, final, changes, mode


def test_a_batch_is_seen_through_pages_with_one_get_per_result() -> None:
    sim, made, final, changes, mode = _run_batch(list_polling=True)
    for task, outcome in made:
        assert final[task.id].status == outcome
        if outcome == "succeeded":
            assert final[task.id].result and final[task.id].result[0].url  # its URLs came
            assert _gets_after_end(sim, task.id) == 1, task.id  # exactly one GET for them
        else:
            assert _gets_after_end(sim, task.id) <= 1  # a page ends it (or its own poll did)
    calls = sim.request_counts()
    assert calls["list"] >= 1
    assert calls["get"] < 1.5 * 80  # the results, and little more: no per-task polling
    assert sorted(Counter(changes).values())[-1] == 1  # no change seen twice
    assert "list pages/s" in mode and "requests per task" in mode


def _long_batch_requests(list_polling: bool) -> dict[str, int]:
    """Requests (by call) for 60 videos of 40-100 s, watched from creation to end.

    At speed 8: per task this is ~870 GETs in 12 s. At 20 (~670, 135 a second) a loaded machine
    (ci22: two CI runs, two CPU burners) sent only 220, the schedule's polls late and so
    fewer, and the pages' 174 failed the comparison; the pages' count hardly moves."""
    with Simulator(seed=8, speed=8.0) as sim:
        made = [_created(sim, "viduq3-turbo", latency=40 + i) for i in range(60)]
        sim.reset_counts()
        with _watcher(sim, list_polling=list_polling) as w:
            w.watch(made)
            final = w.wait(timeout=120)
        assert all(final[t.id].status == TaskStatus.SUCCEEDED for t in made)
        return sim.request_counts()


def test_pages_cost_less_than_per_task_gets_for_a_batch() -> None:
    listing, per_task = _long_batch_requests(True), _long_batch_requests(False)
    assert per_task.get("list", 0) == 0  # the switch turns the list off
    # per task: a GET every 5% of its age until its end; pages: one a round for all 60
    assert listing["list"] + listing["get"] < 0.75 * per_task["get"], (listing, per_task)


def test_a_lagging_list_never_moves_a_status_back() -> None:
    # the list shows each task as it was a simulated second ago: GETs and pages disagree
    _, made, final, changes, _ = _run_batch(list_polling=True, list_lag=1.0)
    assert all(final[t.id].status == outcome for t, outcome in made)
    by_task: dict[str, list[str]] = {}
    for task_id, status in changes:
        by_task.setdefault(task_id, []).append(status)
    for statuses in by_task.values():
        ranks = [status_rank(s) for s in statuses]
        assert ranks == sorted(ranks), statuses


def test_one_old_task_is_polled_by_get_and_a_new_batch_by_pages() -> None:
    with Simulator(seed=4, speed=SPEED) as sim:
        old = _created(sim, "kling-v3", latency=100_000)
        sim.spawn_others(3000)  # between the old task and the batch: a window from it is 30+ pages
        batch = [_created(sim, "seedream-4-5", latency=4 + i * 0.05) for i in range(60)]
        sim.reset_counts()
        with _watcher(sim) as w:
            w.watch([old, *batch])
            _until(lambda: all(w.engine.poller.state(t.id).ended for t in batch))  # type: ignore[union-attr]
            _until(lambda: sim.requests[old.id] >= 2)
        calls = sim.request_counts()
    assert all(_gets_after_end(sim, t.id) == 1 for t in batch)
    # walking back to the old task would cost 30+ pages a round: the planner learns it and
    # leaves the old task to its GETs (the first walks may overrun before it knows)
    assert calls["list"] < 60, calls


def _walks_all(poller: Poller) -> bool:
    """Whether the planner, asked for every watched task at once, would walk pages."""
    now = poller.clock.server_now(time.time())
    watched = [
        Watched(s.task_id, s.task.created_at.timestamp(), now, s.task.status, s.task.provider, s.task.model)
        for s in poller.states()
        if s.task is not None and s.task.created_at is not None
    ]
    return bool(plan(poller.lister.state, watched, now).walks)


def test_an_account_full_of_unwatched_tasks_is_cheaper_by_get() -> None:
    with Simulator(seed=5, speed=SPEED) as sim:
        mine = [_created(sim, "viduq3-turbo", latency=100_000) for _ in range(5)]
        sim.spawn_others(2000)  # a teammate's batch, in the window of ours (the balance stops it at ~770)
        with _watcher(sim) as w:
            w.watch(mine)
            poller = w.engine.poller
            _until(lambda: poller.lister.pages >= 1 and not poller.lister.walking and not _walks_all(poller))
            learning = sim.calls["list"]
            sim.reset_counts()
            _until(lambda: sim.calls["get"] >= 25)
            calls = sim.request_counts()
    # learning the account is a few walks, each cut at its max_pages (twice the estimate
    # plus one) and taken for its whole window (12 pages here: 3 + 3 + 6)
    assert learning <= 24, learning
    # then 5 GETs a round, not a walk of the others per round: from here the estimates only
    # grow (the account's others are remembered for an hour), so no page at all. (Counted
    # from a moment a GET count chose, a learning walk could fall after it: 6 pages once.)
    assert calls.get("list", 0) == 0, calls


def test_tasks_created_while_paging_are_neither_missed_nor_counted_twice() -> None:
    changes: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()
    with Simulator(seed=6, speed=SPEED, others=Others(rate=100.0)) as sim:  # new tasks at the head
        first = [_created(sim, "seedream-4-5", latency=3 + i * 0.02) for i in range(250)]  # 3 pages
        with _watcher(sim) as w:

            @w.on_change
            def _seen(task: Task) -> None:
                with lock:
                    changes[(task.id, str(task.status))] += 1

            w.watch(first)
            later = []
            for i in range(30):  # watched while walks are under way
                time.sleep(0.02)
                later.append(_created(sim, "viduq3-turbo", latency=2 + i * 0.1))
                w.watch([later[-1]])
            final = w.wait(timeout=120)
        sim.others = Others()
    for task in [*first, *later]:
        assert final[task.id].status == TaskStatus.SUCCEEDED
        assert changes[(task.id, "succeeded")] == 1
        assert _gets_after_end(sim, task.id) == 1
    assert max(changes.values()) == 1


@pytest.mark.parametrize("mode", ["missing", "forbidden", "garbage"])
def test_a_missing_list_falls_back_to_per_task_gets_and_recovers(mode: str) -> None:
    with Simulator(seed=7, speed=SPEED, list_mode=mode) as sim:
        long = [_created(sim, "viduq3-turbo", latency=100_000) for _ in range(20)]
        short = [_created(sim, "seedream-4-5", latency=3 + i * 0.1) for i in range(10)]
        with _watcher(sim, list_retry=60.0) as w:  # 3 s of real time before the list is tried again
            poller = w.engine.poller
            w.watch([*long, *short])
            _until(lambda: not poller.list_health.available)
            assert poller.polling_mode.startswith("per-task GETs: ")
            assert "trying it again in" in poller.polling_mode
            shown = w.snapshot()  # the panel says it, next to the budget line, and so does the saved view
            assert "per-task GETs: " in summary_html(shown) and "polling: per-task GETs" in static_text(
                shown, [], ""
            )
            _until(lambda: all(poller.state(t.id).ended for t in short))  # type: ignore[union-attr]
            assert all(w.tasks[t.id].status == TaskStatus.SUCCEEDED for t in short)
            listed = sim.calls["list"]
            assert listed <= 2  # tried, then left alone until the backoff is over
            sim.list_mode = "ok"
            _until(lambda: poller.list_health.available)  # the probe found it again
            _until(lambda: sim.calls["list"] >= listed + 3)  # and pages are walked again
            assert "list pages/s" in poller.polling_mode
