"""watch_account: every new task of the account, as the list shows them, over real HTTP.

Waits are generous and end on conditions (a loaded 2-core machine must not fail them);
nothing here asserts how fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mh_notebook import TaskWatcher
from mh_notebook.journal.protocol import AccountWatch, Store
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.sim import Others, Simulator

SPEED = 20


def _until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def fast() -> Iterator[Simulator]:
    with Simulator(seed=3, speed=SPEED) as s:
        yield s


def _watcher(sim: Simulator, store: Path | None = None) -> TaskWatcher:
    return TaskWatcher(api_key=sim.api_key, base_url=sim.url, time_scale=SPEED, store=store, display="none")


def test_new_tasks_are_watched_and_end_right_and_older_ones_are_not(fast: Simulator) -> None:
    before = [fast.submit(model="seedream-4-5") for _ in range(3)]
    time.sleep(2.5)  # past the server's clock's uncertainty: these are before "now"
    with _watcher(fast) as w:
        w.watch_account()
        made = [fast.submit(model=m) for m in ("seedream-4-5", "viduq3-turbo", "nano-banana-2")]
        made.append(fast.submit(model="seedream-4-5", outcome="failed"))
        _until(lambda: set(made) <= set(w.task_ids))
        final = w.wait(timeout=120)
        assert not set(before) & set(w.task_ids)
        for task_id in made:
            truth = fast.timeline(task_id)["outcome"]
            assert final[task_id].status == truth
            if truth == "succeeded":
                assert final[task_id].result  # fetched by GET: list items carry none
        assert fast.calls["list"] > 0
        assert len(w.task_ids) == len(set(w.task_ids)) == len(made)  # nobody added twice


def test_filters_are_respected(fast: Simulator) -> None:
    with _watcher(fast) as w:
        w.watch_account(model="seedream-4-5")
        fast.others = Others(rate=2, models=(("seedream-4-5", 1.0), ("viduq3-turbo", 1.0)), count=30)
        _until(lambda: len(fast.other_ids) == 30)
        wanted = [t for t in fast.other_ids if fast.timeline(t)["model"] == "seedream-4-5"]
        assert 0 < len(wanted) < 30
        _until(lambda: set(wanted) <= set(w.task_ids))
        w.wait(timeout=120)
        assert set(w.task_ids) == set(wanted)
    with _watcher(fast) as w:
        w.watch_account(provider="vidu", status="failed")
        failing = fast.submit(model="viduq3-turbo", outcome="failed")
        fine = fast.submit(model="viduq3-turbo", outcome="succeeded")
        other = fast.submit(model="seedream-4-5", outcome="failed")
        _until(lambda: failing in w.task_ids)
        _until(lambda: fast.timeline(fine)["end"] < time.time() and fast.timeline(other)["end"] < time.time())
        pages = fast.calls["list"]
        _until(lambda: fast.calls["list"] > pages + 3)  # walks after both ended
        assert w.task_ids == [failing]
        assert w.wait(timeout=60)[failing].status == "failed"


def test_unwatch_account_stops_and_keeps_what_was_found(fast: Simulator) -> None:
    with _watcher(fast) as w:
        w.watch_account()
        first = fast.submit(model="seedream-4-5")
        _until(lambda: first in w.task_ids)
        w.unwatch_account()
        time.sleep(0.3)
        pages = fast.calls["list"]
        later = fast.submit(model="seedream-4-5")
        time.sleep(2.0)  # dozens of walks' time at this speed
        assert fast.calls["list"] == pages
        assert later not in w.task_ids and first in w.task_ids
        assert w.wait(timeout=60)[first].status == fast.timeline(first)["outcome"]


def test_resume_after_a_restart_finds_the_tasks_created_meanwhile(fast: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    w1 = _watcher(fast, store=path)
    w1.watch_account(model="viduq3-turbo")
    seen = fast.submit(model="viduq3-turbo")
    _until(lambda: seen in w1.task_ids)
    w1.wait(timeout=60)
    w1.stop()  # the kernel goes away
    meanwhile = [fast.submit(model="viduq3-turbo") for _ in range(2)]
    ignored = fast.submit(model="seedream-4-5")  # not the watch's model
    store = SQLiteStore(path)
    try:
        (row,) = store.account_watches(fast.url)
        assert row.model == "viduq3-turbo" and row.provider is None and row.status is None
    finally:
        store.close()
    with _watcher(fast, store=path) as w2:
        w2.resume()
        _until(lambda: set(meanwhile) <= set(w2.task_ids))
        after = fast.submit(model="viduq3-turbo")
        _until(lambda: after in w2.task_ids)
        final = w2.wait(timeout=120)
        assert ignored not in w2.task_ids and seen not in w2.task_ids  # ended before: not again
        assert all(final[t].status == fast.timeline(t)["outcome"] for t in [*meanwhile, after])
        w2.unwatch_account()
    store = SQLiteStore(path)
    try:
        assert store.account_watches(fast.url) == []  # unwatched: resume() no longer picks it up
    finally:
        store.close()


@pytest.mark.parametrize("mode", ["missing", "forbidden", "garbage"])
def test_a_list_that_is_missing_or_refused_kills_nothing_and_is_tried_again(mode: str) -> None:
    with Simulator(seed=4, speed=SPEED, list_mode=mode) as sim, _watcher(sim) as w:
        w.watch_account()
        _until(lambda: sim.calls["list"] >= 1 and (w.snapshot().notice or "").startswith("watch_account"))
        assert "task list" in (w.snapshot().notice or "")
        direct = sim.submit(model="seedream-4-5")
        w.watch(direct)  # per-task polling goes on meanwhile
        assert w.wait(timeout=60)[direct].status == sim.timeline(direct)["outcome"]
        tries = sim.calls["list"]
        _until(lambda: sim.calls["list"] > tries)  # tried again later
        sim.list_mode = "ok"
        found = sim.submit(model="seedream-4-5")
        _until(lambda: found in w.task_ids, timeout=60)
        _until(lambda: w.snapshot().notice is None)
        assert w.wait(timeout=60)[found].status == sim.timeline(found)["outcome"]


def test_tasks_created_while_paging_are_found_once(fast: Simulator) -> None:
    """Hundreds of tasks a second: each walk spans pages while new tasks arrive at the head."""
    with _watcher(fast) as w:
        w.watch_account()
        fast.others = Others(rate=15, fail_rate=0.2, count=300)
        _until(lambda: len(fast.other_ids) == 300, timeout=60)
        _until(lambda: set(fast.other_ids) <= set(w.task_ids), timeout=60)
        assert sorted(w.task_ids) == sorted(fast.other_ids)  # each once, none else
        final = w.wait(timeout=240)
        truth = {t: fast.timeline(t) for t in fast.other_ids}
        wrong = [(t, final[t].status, truth[t]) for t in truth if final[t].status != truth[t]["outcome"]]
        assert wrong == []  # CI once saw one: which task, what status, its timeline


@pytest.mark.parametrize("kind", ["memory", "sqlite", "sqlite-v1", "sqlite-v5", "postgresql"])
def test_journals_keep_account_watches(kind: str, tmp_path: Path) -> None:
    import shutil

    from mh_notebook.journal.memory import MemoryStore

    path = tmp_path / "j.sqlite"
    if kind.startswith("sqlite-"):  # an older journal gains the table when it is upgraded
        shutil.copyfile(Path(__file__).parent / "data" / f"journal-{kind[7:]}.sqlite", path)
    if kind == "postgresql":
        from pg_server import postgres_server

        from mh_notebook.journal.postgres import PostgresStore

        with postgres_server() as server:
            _keeps_account_watches(PostgresStore(server.new_database()))
        return
    _keeps_account_watches(MemoryStore() if kind == "memory" else SQLiteStore(path))


def _keeps_account_watches(store: Store) -> None:
    try:
        a = AccountWatch("http://api", "vidu", None, "failed", 100.0)
        b = AccountWatch("http://api", None, None, None, 50.0)
        store.set_account_watch(a)
        store.set_account_watch(b)
        store.set_account_watch(AccountWatch("http://other", None, None, None, 1.0))
        store.set_account_watch(a._replace(since=200.5), wait=0.05)  # how far it got
        assert set(store.account_watches("http://api")) == {a._replace(since=200.5), b}
        store.drop_account_watch(b)
        assert store.account_watches("http://api") == [a._replace(since=200.5)]
    finally:
        store.close()
