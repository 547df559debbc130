"""TaskWatcher against the simulator over real HTTP: engine, waits, callbacks, media."""

from __future__ import annotations

import asyncio
import inspect
import pydoc
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from mh_notebook import AuthenticationError, PollPolicy, Task
from mh_notebook.formats import safe_filename
from mh_notebook.sim import Simulator
from mh_notebook.watcher import TaskWatcher

SPEED = 100.0


@pytest.fixture
def watcher(sim: Simulator) -> Iterator[TaskWatcher]:
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED, rate_limit=20) as w:
        yield w


def _poller_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mh-poller")]


def test_every_task_reaches_its_real_status(sim: Simulator, watcher: TaskWatcher) -> None:
    outcomes = ["succeeded", "failed", "cancelled", "succeeded", "failed"]
    models = ["viduq3-turbo", "seedream-4.5", "eleven-v3", "nano-banana-2", "kling-v3.0"]
    ids = [sim.submit(model=m, outcome=o, latency=20) for m, o in zip(models, outcomes, strict=True)]
    watcher.watch(*ids)
    final = watcher.wait(timeout=30)
    assert {i: str(final[i].status) for i in ids} == {i: sim.timeline(i)["outcome"] for i in ids}
    assert watcher.polls == {i: sim.requests[i] for i in ids}  # every request is counted


def test_faults_lose_nothing(sim: Simulator, watcher: TaskWatcher) -> None:
    sim.with_faults(
        rate_429=0.05, retry_after=0.05, rate_5xx=0.1, rate_html=0.05, rate_truncated=0.05, rate_drop=0.05
    )
    ids = [sim.submit(model=m, latency=15) for m in ["viduq3-turbo", "seedream-4.0", "eleven-v3"] * 5]
    watcher.watch(ids)
    final = watcher.wait(timeout=60)
    assert set(final) == set(ids)
    assert all(str(final[i].status) == sim.timeline(i)["outcome"] for i in ids)
    assert watcher.polls == {i: sim.requests[i] for i in ids}
    faulted = sum(1 for _, tid, code in sim.request_log if tid in ids and code != 200)
    assert faulted > 0  # the faults really happened
    ended = {
        e.task_id for e in watcher.store.events() if e.status in ("succeeded", "failed") and e.task_id in ids
    }
    assert ended == set(ids)


def test_rate_limit_holds_at_the_simulator(sim: Simulator) -> None:
    ids = [sim.submit(model="veo-3.1", latency=100_000) for _ in range(60)]
    with TaskWatcher(sim.api_key, sim.url, display="none", rate_limit=20, burst=5) as w:
        w.watch(ids)
        time.sleep(2.0)
    times = sorted(t for t, tid, _ in sim.request_log)
    assert len(times) >= 30  # it was really polling
    span = times[-1] - times[0]
    assert (len(times) - 5) / span <= 20 * 1.15  # sustained rate after the burst
    for i, t in enumerate(times):  # no 1-second window holds more than rate + burst
        assert sum(1 for u in times[i:] if u - t < 1.0) <= 20 + 5 + 2  # 2: timer granularity


def test_a_429_holds_back_its_request_for_retry_after(sim: Simulator) -> None:
    # a lone 429 is no sign of a server limit: only its own task waits (issue 17; the pause
    # of everyone is for 429s that rise with the sending rate: tests/test_polling.py)
    sim.with_faults(retry_after=0.5)
    ids = [sim.submit(model="veo-3.1", latency=100_000) for _ in range(5)]
    per_task = PollPolicy(list_polling=False, max_interval=100)  # no page shows it; 1 s, scaled
    with TaskWatcher(
        sim.api_key,
        sim.url,
        display="none",
        time_scale=SPEED,
        rate_limit=50,
        max_in_flight=1,
        policy=per_task,
    ) as w:
        sim.inject("429")
        w.watch(ids)
        time.sleep(1.0)
    log = list(sim.request_log)
    first_429, refused = next((t, task_id) for t, task_id, code in log if code == 429)
    after = [t for t, task_id, _ in log if t > first_429 and task_id == refused]
    assert after, "polling resumed"
    assert min(after) - first_429 >= 0.5


@pytest.mark.parametrize(
    ("key", "sandbox"), [("river_test_x", True), ("river_live_x", False), ("other", False)]
)
def test_a_sandbox_key_is_named_never_shown(sim: Simulator, key: str, sandbox: bool) -> None:
    with TaskWatcher(key, sim.url, store=None, display="none") as w:
        from mh_notebook.view.render import static_text, summary_html

        snap = w.snapshot()
        texts = [repr(w), summary_html(snap), static_text(snap, [], "")]
        assert all(("sandbox" in t) is sandbox for t in texts)
        assert all(key not in t for t in texts)


def test_auth_error_stops_polling(sim: Simulator) -> None:
    ids = [sim.submit(latency=100) for _ in range(10)]
    with TaskWatcher("river_live_wrong-key-for-tests", sim.url, display="none", max_in_flight=2) as w:
        w.watch(ids)
        with pytest.raises(AuthenticationError) as info:
            w.wait(timeout=10)
        assert "wrong-key-for-tests" not in str(info.value)
        time.sleep(0.3)  # requests already in flight when the first 401 came back
        sent = sum(sim.requests.values())
        time.sleep(1.0)
        assert sum(sim.requests.values()) == sent <= 3  # no hammering
        assert "refused the key" in w.snapshot().notice  # type: ignore[operator]


def test_unknown_task_is_not_found_and_counts_as_ended(sim: Simulator, watcher: TaskWatcher) -> None:
    real = sim.submit(model="seedream-4.0", latency=5)
    watcher.watch(real, "task_ghost")
    final = watcher.wait(timeout=30)
    assert set(final) == {real}
    assert watcher.not_found == ["task_ghost"]
    assert sim.requests["task_ghost"] == 4  # the first answer and 3 retries
    assert [e.status for e in watcher.store.events() if e.task_id == "task_ghost"][-1] == "not_found"


def test_task_created_after_first_404_is_found(sim: Simulator, watcher: TaskWatcher) -> None:
    hidden = sim.submit(model="seedream-4.0", latency=5)
    task = sim._tasks.pop(hidden)
    watcher.watch(hidden)
    time.sleep(0.005)
    sim._tasks[hidden] = task  # visible after a 404 or two
    assert watcher.wait(timeout=30)[hidden].status == "succeeded"
    assert watcher.not_found == []


def test_unknown_status_is_kept_and_not_final(sim: Simulator, watcher: TaskWatcher) -> None:
    task_id = sim.submit(model="veo-3.1", latency=1000)
    sim.set_status(task_id, "paused")
    watcher.watch(task_id)
    with pytest.raises(TimeoutError, match=task_id):
        watcher.wait(timeout=0.5)
    deadline = time.monotonic() + 30  # the first answer may come after the 0.5 s on a loaded machine
    while (task := watcher.tasks.get(task_id)) is None or task.status != "paused":
        assert time.monotonic() < deadline, watcher.tasks.get(task_id)
        time.sleep(0.02)
    assert watcher.snapshot().counts["paused"] == 1
    sim.set_status(task_id, "failed")
    assert watcher.wait(timeout=30)[task_id].status == "failed"


def test_wait_timeout_names_unfinished(sim: Simulator, watcher: TaskWatcher) -> None:
    slow = sim.submit(model="veo-3.1", latency=100_000)
    watcher.watch(slow)
    with pytest.raises(TimeoutError, match=f"1 tasks had not ended after 0.3 s: {slow}"):
        watcher.wait(timeout=0.3)


def test_wait_async_and_as_completed(sim: Simulator, watcher: TaskWatcher) -> None:
    ids = [sim.submit(model="eleven-v3", latency=lat) for lat in (30, 3, 15)]
    watcher.watch(ids)
    order = [t.id for t in watcher.as_completed(timeout=30)]
    assert sorted(order) == sorted(ids)
    assert order[0] == ids[1]  # the fastest first
    assert set(asyncio.run(watcher.wait_async(timeout=5))) == set(ids)

    async def collect() -> list[str]:
        return [t.id async for t in watcher.as_completed_async(timeout=5)]

    assert sorted(asyncio.run(collect())) == sorted(ids)


def test_watch_is_idempotent_and_takes_tasks(sim: Simulator, watcher: TaskWatcher) -> None:
    task_id = sim.submit(model="seedream-4.0", latency=3)
    done = Task.from_api({"id": "task_done", "status": "succeeded", "model": "m"})
    assert watcher.watch(task_id, [task_id, done]) == [task_id, task_id, "task_done"]
    final = watcher.wait(timeout=30)
    assert set(final) == {task_id, "task_done"}
    assert sim.requests["task_done"] == 0  # an ended Task is not polled
    with pytest.raises(ValueError, match="invalid task id"):
        watcher.watch("bad/id")


def test_callbacks_run_and_errors_are_not_fatal(sim: Simulator, watcher: TaskWatcher) -> None:
    changes: list[str] = []
    done: list[str] = []
    watcher.on_change(lambda t: changes.append(str(t.status)))
    watcher.on_done(lambda t: done.append(t.id))

    @watcher.on_done
    def broken(task: Task) -> None:
        raise RuntimeError("user bug")

    ids = [sim.submit(model="seedream-4.0", latency=5) for _ in range(3)]
    watcher.watch(ids)
    watcher.wait(timeout=30)
    assert sorted(done) == sorted(ids)
    assert changes.count("succeeded") == 3
    assert len(watcher.callback_errors) == 3
    assert watcher.tasks.keys() == set(ids)


def test_pause_and_resume(sim: Simulator, watcher: TaskWatcher) -> None:
    task_id = sim.submit(model="veo-3.1", latency=100_000)
    watcher.pause()
    watcher.watch(task_id)
    time.sleep(0.3)
    assert sim.requests[task_id] == 0
    watcher.resume_polling()
    time.sleep(0.3)
    assert sim.requests[task_id] >= 1


def test_stop_leaves_no_threads_and_fails_waits(sim: Simulator) -> None:
    before = len(_poller_threads())
    w = TaskWatcher(sim.api_key, sim.url, display="none")
    w.watch(sim.submit(model="veo-3.1", latency=100_000))
    assert len(_poller_threads()) == before + 1
    w.stop()
    assert len(_poller_threads()) == before
    with pytest.raises(RuntimeError, match="stopped"):
        w.wait(timeout=1)
    with pytest.raises(RuntimeError, match="stopped"):
        w.watch("task_x")


@pytest.mark.parametrize("journal", ["file", "memory"])
def test_resume_after_stop_says_how_to_resume_in_a_new_watcher(
    sim: Simulator, tmp_path: Path, journal: str
) -> None:
    store = tmp_path / "journal.sqlite" if journal == "file" else None
    task_id = sim.submit(model="veo-3.1", latency=100_000)
    w = TaskWatcher(sim.api_key, sim.url, store=store, display="none")
    w.watch(task_id)
    w.stop()
    with pytest.raises(RuntimeError, match="stopped: resume\\(\\) would watch nothing") as caught:
        w.resume()  # not a silent []
    if store is None:
        assert "TaskWatcher(store=None).watch(<this watcher>.pending)" in str(caught.value)
        assert w.pending == [task_id]
        return
    told = f"TaskWatcher(store={str(store)!r}).resume()"
    assert told in str(caught.value)
    with TaskWatcher(sim.api_key, sim.url, store=store, display="none") as again:  # as it says
        assert again.resume() == [task_id]


def test_text_mode_prints_changes(sim: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    task_id = sim.submit(model="kling-v3.0", outcome="failed", latency=5, error_message="bad\x1b[31m prompt")
    with TaskWatcher(sim.api_key, sim.url, display="text", time_scale=SPEED) as w:
        w.watch(task_id)
        w.wait(timeout=30)
    out = capsys.readouterr().out
    assert f"[mh] {task_id} video kling/kling-v3.0: failed" in out
    assert "\x1b" not in out  # control characters from the API are dropped


def test_expired_url_is_refreshed_before_download(sim: Simulator, tmp_path: Path) -> None:
    task_id = sim.submit(model="viduq3-turbo", outcome="succeeded", latency=1)
    with TaskWatcher(sim.api_key, sim.url, display="none", time_scale=SPEED) as w:
        w.watch(task_id)
        old = w.wait(timeout=30)[task_id].result[0].url
        sim.expire_now(task_id)
        assert httpx.get(old or "").status_code == 403
        (path,) = w.download(task_id, tmp_path, progress=False)
        assert path.read_bytes()[4:8] == b"ftyp"
        assert path.stat().st_size == w.tasks[task_id].result[0].size_bytes
        assert w.tasks[task_id].result[0].url != old
        statuses = [e.status for e in w.store.events() if e.task_id == task_id]
        assert statuses[-2:] == ["expired", "succeeded"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left


@pytest.mark.parametrize("embed", [False, True])
def test_show_after_expiry_shows_a_fresh_url(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, embed: bool
) -> None:
    import IPython.display

    shown: list[object] = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **_: shown.extend(objs))
    task_id = sim.submit(model="seedream-4.0", outcome="succeeded", latency=1)
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as w:
        w.watch(task_id)
        old = w.wait(timeout=30)[task_id].result[0].url
        sim.expire_now(task_id)
        assert httpx.get(old or "").status_code == 403
        w.show(task_id, embed=embed)
        (image,) = shown
        if embed:
            assert len(image.data) == w.tasks[task_id].result[0].size_bytes  # type: ignore[attr-defined]
        else:
            assert image.url != old  # type: ignore[attr-defined]
            assert httpx.get(image.url).status_code == 200  # type: ignore[attr-defined]
        assert sim.requests[task_id] == w.polls[task_id]  # the refresh went through the engine


@pytest.mark.parametrize(
    ("task_id", "fmt", "expected"),
    [
        ("task_abc", "mp4", "task_abc_0.mp4"),
        ("../../etc/passwd", "png", "etc_passwd.3754d6cb3a38_0.png"),  # cleaned: + a hash of the id
        ("task", "../x", "task_0.x"),
        ("..", "", "task.5ec1f7e700f3_0.bin"),
        ("a\x00b", "mp3", "a_b.59b271ae1bbc_0.mp3"),
    ],
)
def test_safe_filenames(task_id: str, fmt: str, expected: str) -> None:
    assert safe_filename(task_id, 0, fmt) == expected


HOSTILE_IDS = ["...", ".bashrc", "-rf", "CON", "a:b|c*<>\"'", "x" * 300, "ünï😀"]


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_download_cannot_escape_directory(sim: Simulator, tmp_path: Path, hostile: str) -> None:
    real = sim.submit(model="seedream-4.0", outcome="succeeded", latency=1)
    task = sim._tasks.pop(real)
    task.id = hostile  # the API answers with a hostile id
    sim._tasks[hostile] = task
    out = tmp_path / "out"
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as w:
        w.watch(hostile)
        w.wait(timeout=30)
        (path,) = w.download(hostile, out, progress=False)
    assert path.resolve().parent == out.resolve()
    assert not path.name.startswith((".", "-"))
    assert len(path.name) < 100
    assert [p.name for p in tmp_path.rglob("*")] == ["out", path.name]


def test_watching_a_task_object_skips_the_first_poll(sim: Simulator) -> None:
    from mh_notebook import Client

    task_id = sim.submit(model="veo-3.1", latency=100_000)
    task = Client(sim.api_key, sim.url).get_task(task_id)  # e.g. what a creation call returned
    assert sim.requests[task_id] == 1
    with TaskWatcher(sim.api_key, sim.url, store=None, display="none") as w:  # real time: next poll >= 0.9 s
        w.watch(task)
        time.sleep(0.3)
        assert sim.requests[task_id] == 1  # its age and model were known: nothing asked yet
        assert w.tasks[task_id].status == task.status


def test_a_task_first_seen_expired_still_ends_for_waits_feeds_and_callbacks() -> None:
    # it ended, and its URL expired, before the first poll after its end: the API answers
    # "expired" (not terminal), then "succeeded" with a fresh URL
    with Simulator(seed=3, speed=100, url_lifetime=0.05) as sim:
        task_id = sim.submit(model="seedream-4.0", outcome="succeeded", latency=3)
        time.sleep(0.03 + 0.05 + 0.05)  # its end, then its URL's lifetime
        with TaskWatcher(sim.api_key, sim.url, store=None, display="none") as w:
            done: list[str] = []
            w.on_done(lambda t: done.append(t.id))
            w.watch(task_id)
            final = w.wait(timeout=10)
            assert [t.id for t in w.as_completed(timeout=5)] == [task_id]
        assert final[task_id].status == "succeeded" and final[task_id].result
        assert done == [task_id]
        assert sim.requests[task_id] >= 2  # "expired" first, then "succeeded" with a fresh URL


# ------------------------------------------------------------------ issue 17: waits, callbacks, keys, lifecycle


def test_timed_out_waits_leave_nothing_behind(sim: Simulator, watcher: TaskWatcher) -> None:
    watcher.watch(sim.submit(model="veo-3.1", latency=100_000))
    for _ in range(300):
        with pytest.raises(TimeoutError):
            watcher.wait(timeout=0.001)

    async def wait_async_times_out() -> None:
        for _ in range(100):
            with pytest.raises(TimeoutError):
                await watcher.wait_async(timeout=0.001)

    asyncio.run(wait_async_times_out())
    assert len(watcher._waits._waiters) == 0  # 400 timed-out waits: no future kept
    quick = sim.submit(model="seedream-4.0", latency=3)
    watcher.unwatch(watcher.task_ids[0])
    watcher.watch(quick)
    assert set(watcher.wait(timeout=30)) == {quick}  # waiting still works afterwards
    assert len(watcher._waits._waiters) == 0


@pytest.mark.timeout(120)  # the old code stalled the engine here: never hang the suite
def test_blocking_calls_from_a_callback_fail_at_once_and_polling_goes_on(
    sim: Simulator, watcher: TaskWatcher, tmp_path: Path
) -> None:
    # on_done runs in the engine's thread: refresh()/show()/download()/wait() there would wait
    # for that thread's own loop (a deadlock until the timeout) or hold up every poll meanwhile
    first, second = (sim.submit(model="seedream-4.0", outcome="succeeded", latency=lat) for lat in (2, 30))
    errors: dict[str, BaseException | None] = {}

    def attempt(name: str, call: Callable[[], object]) -> None:
        try:
            call()
            errors[name] = None
        except BaseException as exc:  # recorded for the assertions below
            errors[name] = exc

    @watcher.on_done
    def blocking(task: Task) -> None:
        if task.id != first:
            return
        attempt("refresh", lambda: watcher.refresh(task.id, timeout=5))
        attempt("show", lambda: watcher.show(task.id))
        attempt("download", lambda: watcher.download(task.id, tmp_path, progress=False))
        attempt("wait", lambda: watcher.wait(timeout=5))
        attempt("as_completed", lambda: list(watcher.as_completed(timeout=5)))

    watcher.watch(first, second)
    final = watcher.wait(timeout=60)
    assert set(final) == {first, second}  # polling went on
    assert set(errors) == {"refresh", "show", "download", "wait", "as_completed"}
    for name, exc in errors.items():
        assert isinstance(exc, RuntimeError) and "engine's thread" in str(exc), (name, exc)
    assert list(tmp_path.iterdir()) == []  # nothing half-done
    assert watcher.refresh(first).status == "succeeded"  # from the user's thread: as before


def test_each_watcher_polls_with_its_own_key(sim: Simulator) -> None:
    # engines are keyed by base URL *and* key: one account's tasks never go out with another's key
    other_key = sim.add_key()
    mine = [sim.submit(model="seedream-4.0", latency=5) for _ in range(3)]
    theirs = [sim.submit(model="seedream-4.0", latency=5) for _ in range(3)]
    with (
        TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as a,
        TaskWatcher(other_key, sim.url, store=None, display="none", time_scale=SPEED) as b,
    ):
        a.watch(mine)
        b.watch(theirs)
        assert set(a.wait(timeout=30)) == set(mine) and set(b.wait(timeout=30)) == set(theirs)
    used = {(task_id, key) for (task_id, key), n in sim.requests_by_key.items() if n}
    assert used == {(i, sim.api_key) for i in mine} | {(i, other_key) for i in theirs}


def test_a_refused_key_does_not_stop_another_watcher_of_the_same_api(sim: Simulator) -> None:
    refused = [sim.submit(model="seedream-4.0", latency=5) for _ in range(2)]
    fine = [sim.submit(model="seedream-4.0", latency=5) for _ in range(3)]
    with (
        TaskWatcher("river_live_revoked-key", sim.url, store=None, display="none", time_scale=SPEED) as bad,
        TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED) as good,
    ):
        bad.watch(refused)
        with pytest.raises(AuthenticationError):
            bad.wait(timeout=30)
        good.watch(fine)  # the refused key's engine is stopped by its 401; this one is not
        assert set(good.wait(timeout=30)) == set(fine)
        assert good.auth_error is None and bad.auth_error is not None
    assert all(sim.requests_by_key[(i, sim.api_key)] >= 1 for i in fine)
    assert not any(sim.requests_by_key[(i, sim.api_key)] for i in refused)  # never polled with another key


def test_stop_updates_the_saved_notebook_view(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    updates: list[dict[str, str]] = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: None)
    monkeypatch.setattr(IPython.display, "update_display", lambda obj, **kw: updates.append(dict(obj)))
    task_id = sim.submit(model="seedream-4.0", latency=3)
    w = TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=SPEED, static_interval=3600)
    w._ipython_display_()  # the static view a saved notebook shows
    w.watch(task_id)
    w.wait(timeout=30)  # publishes the final table...
    assert updates and "stopped" not in updates[-1]["text/plain"]
    sent = len(updates)
    w.stop()  # ...and stop() says so at once, within static_interval
    assert len(updates) > sent
    assert "stopped" in updates[-1]["text/plain"] and "stopped" in updates[-1]["text/html"]
    assert "succeeded 1" in updates[-1]["text/plain"]


# ------------------------------------------------- the facade's delegated names
_PUBLIC = sorted(name for name in dir(TaskWatcher) if not name.startswith("_"))


def test_delegated_names_keep_their_docstrings_signatures_and_class_access(
    sim: Simulator, watcher: TaskWatcher
) -> None:
    """The facade forwards each verb in one line (``watcher/delegate.py``); help(), ``w.x?``,
    pydoc and ``TaskWatcher.x(w, ...)`` work as they did for written-out methods."""
    for name in _PUBLIC:
        on_class = getattr(TaskWatcher, name)
        assert inspect.getdoc(on_class), name  # help(TaskWatcher.x), TaskWatcher.x?
        if isinstance(on_class, property):
            with pytest.raises(AttributeError, match="no setter"):
                setattr(watcher, name, None)
            continue
        bound = getattr(watcher, name)
        assert inspect.getdoc(bound) == inspect.getdoc(on_class), name  # help(w.x), w.x?
        params = list(inspect.signature(on_class).parameters)
        assert params[0] == "self" and list(inspect.signature(bound).parameters) == params[1:], name
    assert {"wait", "submit", "tasks", "pending", "polls", "paused", "panel", "show"} <= set(_PUBLIC)
    text = pydoc.render_doc(TaskWatcher, renderer=pydoc.plaintext)
    assert "wait(self, timeout: 'float | None' = None) -> 'dict[str, Task]'" in text
    assert "Block until every watched task has ended" in text and "Ids that have not ended yet." in text
    assert "Block until every watched task has ended" in pydoc.render_doc(
        watcher.wait, renderer=pydoc.plaintext
    )
    task_id = sim.submit(model="seedream-4.0", latency=3)
    watcher.watch(task_id)
    assert set(TaskWatcher.wait(watcher, 30)) == {task_id}  # called on the class, as a method can be
    assert TaskWatcher.tasks.__get__(watcher) == watcher.tasks
    with pytest.raises(AttributeError):
        watcher.tasks = {}  # mypy refuses it too (see below)


def test_ipython_finds_the_display_hooks_on_the_type(watcher: TaskWatcher) -> None:
    bundle = type(watcher)._repr_mimebundle_(watcher, None, None)
    assert {"text/plain", "text/html"} <= set(bundle)
    assert set(watcher._repr_mimebundle_()) == set(bundle)
    assert callable(type(watcher)._ipython_display_)
    assert "Block until" in (TaskWatcher.wait.__doc__ or "") and TaskWatcher.wait.__name__ == "wait"


_CALLERS = """\
from mh_notebook import TaskWatcher

def check(w: TaskWatcher) -> None:
    reveal_type(w.wait)
    reveal_type(w.submit)
    reveal_type(w.tasks)
    reveal_type(w.paused)
    TaskWatcher.wait(w, 1.0)
    w.wait(timeout="soon")
    w.submit("vidu/text-to-video", model=1, input={})
    w.tasks = {}
"""


def test_mypy_checks_the_callers_of_delegated_names(tmp_path: Path) -> None:
    """ParamSpec carries each part's signature to the facade's callers: no ``Any`` leaks."""
    pytest.importorskip("mypy")
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "callers.py").write_text(_CALLERS)
    run = subprocess.run(  # the project's cache: warm once `mypy` has run (scripts/test.sh runs it first)
        [sys.executable, "-m", "mypy", "--config-file", str(root / "pyproject.toml"), str(tmp_path / "callers.py")],
        cwd=root, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    lines = [line.split(": ", 1)[1] for line in run.stdout.splitlines() if "callers.py:" in line]
    assert lines == [
        'note: Revealed type is "def (timeout: float | None =) -> dict[str, mh_notebook.models.Task]"',
        'note: Revealed type is "def (endpoint: str, *, model: str, input: dict[str, Any], '
        'metadata: dict[str, Any] | None =, webhook_url: str | None =) -> str"',
        'note: Revealed type is "dict[str, mh_notebook.models.Task]"',
        'note: Revealed type is "bool"',
        'error: Argument "timeout" has incompatible type "str"; expected "float | None"  [arg-type]',
        'error: Argument "model" has incompatible type "int"; expected "str"  [arg-type]',
        'error: Incompatible types in assignment (expression has type "dict[Never, Never]", '
        'variable has type "Never")  [assignment]',
    ], run.stdout + run.stderr
