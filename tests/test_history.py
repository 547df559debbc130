"""Histories, summaries and the journal: dtypes, exact latencies, restarts, concurrency."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pg_server import postgres_server

from mh_notebook.analysis import latency_summary
from mh_notebook.history import HISTORY_COLUMNS, history_frame, read_history, store_history
from mh_notebook.journal.memory import MemoryStore
from mh_notebook.journal.postgres import PostgresStore
from mh_notebook.journal.protocol import JournalError, Store, Unwritten, Watched
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.records import ENDING, Event
from mh_notebook.sim import Simulator
from mh_notebook.watcher import TaskWatcher

matplotlib.use("Agg")
SPEED = 100.0


def test_empty_history_has_the_columns_and_dtypes() -> None:
    frame = history_frame([])
    assert list(frame.columns) == list(HISTORY_COLUMNS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == HISTORY_COLUMNS
    assert len(frame) == 0


def _run(sim: Simulator, store: object, ids: list[str]) -> TaskWatcher:
    w = TaskWatcher(sim.api_key, sim.url, store=store, display="none", time_scale=SPEED, rate_limit=50)  # type: ignore[arg-type]
    w.watch(ids)
    w.wait(timeout=60)
    return w


def test_history_against_the_simulator(sim: Simulator, tmp_path: Path) -> None:
    ids = [
        sim.submit(model="viduq3-turbo", outcome="succeeded", latency=30),
        sim.submit(model="kling-v3.0", outcome="failed", latency=20, error_code="PROVIDER_ERROR"),
        sim.submit(model="eleven-v3", outcome="succeeded", latency=4),
    ]
    with _run(sim, tmp_path / "j.sqlite", [*ids, "task_missing"]) as w:
        history = w.history()
        events = w.events()
    frame = history.set_index("task_id")
    assert {c: str(t) for c, t in history.dtypes.items()} == HISTORY_COLUMNS
    assert set(frame["base_url"]) == {sim.url}
    for task_id in ids:
        truth = sim.timeline(task_id)
        row = frame.loc[task_id]
        assert row["latency_s"] == pytest.approx(truth["end"] - truth["created"], abs=2e-3)  # ms timestamps
        assert row["latency_s"] == (row["completed_at"] - row["created_at"]).total_seconds()
        assert row["polls"] == sim.requests[task_id]
        assert row["status"] == truth["outcome"]
        assert row["detection_delay_s"] >= -1e-3
        assert row["first_seen_at"] <= row["created_at"] + pd.Timedelta(seconds=1)
        if pd.notna(row["run_s"]):  # running may never be observed for a short task
            assert math.isclose(row["queue_s"] + row["run_s"], row["latency_s"], abs_tol=1e-6)
    assert pd.notna(frame.loc[ids[0], "run_s"])  # the 0.3 s video was seen running
    ok = frame.loc[ids[0]]
    assert (ok["format"], ok["n_results"], ok["duration_s"]) == ("mp4", 1, 3.0)
    assert ok["size_bytes"] > 0
    assert frame.loc[ids[1], "error_code"] == "PROVIDER_ERROR"
    assert frame.loc["task_missing", "not_found"]
    assert not frame.loc[ids[0], "not_found"]
    assert events["observed_at"].is_monotonic_increasing
    assert set(events.columns) == {"task_id", "status", "observed_at", "created_at", "completed_at", "polls"}
    assert str(events["observed_at"].dtype) == "datetime64[ns, UTC]"


def test_latency_summary_on_a_seeded_workload() -> None:
    def ev(task_id: str, model: str, status: str, latency: float, code: str | None = None) -> Event:
        return Event(
            task_id,
            status,
            100 + latency,
            3,
            "video",
            "vidu",
            model,
            100.0,
            100 + latency,
            int(status == "succeeded"),
            error_code=code,
        )

    events = [ev(f"a{i}", "fast", "succeeded", lat) for i, lat in enumerate([10, 20, 30, 40])]
    events += [ev("a9", "fast", "failed", 5, "PROVIDER_ERROR"), ev("b1", "slow", "succeeded", 100.0)]
    events += [
        ev("b2", "slow", "failed", 5, "PROVIDER_TIMEOUT"),
        ev("b3", "slow", "failed", 6, "PROVIDER_TIMEOUT"),
    ]
    summary = latency_summary(history_frame(events), by="model")
    fast, slow = summary.loc["fast"], summary.loc["slow"]
    assert (fast["tasks"], fast["succeeded"], fast["failed"]) == (5, 4, 1)
    assert fast["success_rate"] == pytest.approx(0.8)
    assert fast["latency_p50_s"] == pytest.approx(25.0)
    assert fast["latency_p90_s"] == pytest.approx(37.0)
    assert fast["top_errors"] == "PROVIDER_ERROR (1)"
    assert slow["success_rate"] == pytest.approx(1 / 3)
    assert slow["top_errors"] == "PROVIDER_TIMEOUT (2)"
    assert latency_summary(history_frame([]), by="model").empty


def test_plots_return_axes(sim: Simulator) -> None:
    ids = [
        sim.submit(model=m, latency=lat)
        for m, lat in [("seedream-4.0", 4), ("seedream-4.0", 6), ("eleven-v3", 3)]
    ]
    with _run(sim, None, ids) as w:
        ax = w.plot_latency()
        assert [t.get_text() for t in ax.get_yticklabels()] == ["eleven-v3", "seedream-4.0"]
        ax2 = w.plot_timeline()
        assert len(ax2.patches) == 2 * len(ids)


def test_parquet_round_trip(sim: Simulator, tmp_path: Path) -> None:
    ids = [sim.submit(model="seedream-4.0", latency=3)]
    with _run(sim, None, ids) as w:
        path = w.to_parquet(tmp_path / "h.parquet")
        back = pd.read_parquet(path)
    assert back["task_id"].tolist() == ids
    assert str(back["created_at"].dtype) == "datetime64[ns, UTC]"


def test_read_history_needs_no_watcher_or_key(sim: Simulator, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    ids = [sim.submit(model="nano-banana-2", latency=3) for _ in range(3)]
    with _run(sim, journal, ids) as w:
        pass
    live = w.history()  # after stop(): observation times journalled while the clock was unsure are final
    offline = read_history(journal)
    pd.testing.assert_frame_equal(offline, live)
    raw = journal.read_bytes() + (
        journal.with_suffix(".sqlite-wal").read_bytes()
        if journal.with_suffix(".sqlite-wal").exists()
        else b""
    )
    assert sim.api_key.encode() not in raw


def test_read_history_includes_the_journals_earlier_tasks(sim: Simulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    first = [sim.submit(model="eleven-v3", latency=3)]
    _run(sim, journal, first).stop()
    second = [sim.submit(model="eleven-v3", latency=3)]
    with _run(sim, journal, second) as w:
        assert set(second) <= set(w.history()["task_id"])
    assert set(read_history(journal)["task_id"]) == set(first + second)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a database at all" * 100, "cannot open the journal"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, "journal"),
    ],
)
def test_corrupt_journal_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.sqlite"
    path.write_bytes(content)
    with pytest.raises(JournalError, match=message) as info:
        SQLiteStore(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == content  # never silently reset


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "future.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE events (x)")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="schema version 99"):
        SQLiteStore(path)


_CHILD = textwrap.dedent(
    """
    import sys, time
    from mh_notebook.watcher import TaskWatcher
    url, key, journal, *ids = sys.argv[1:]
    w = TaskWatcher(key, url, store=journal, display="none", time_scale={speed})
    w.watch(ids)
    print("watching", flush=True)
    time.sleep(600)
    """
)


def test_killed_watcher_is_resumed_by_a_new_one(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    with Simulator(seed=4, speed=SPEED) as sim:
        # the long ones end 15-24 s after their creation: a loaded machine may start the
        # child late (at 4-6 s, ci19 saw one end before the kill), so what is resumed is
        # what the journal had not seen end when the child was killed
        ids = [sim.submit(model="eleven-v3", latency=lat) for lat in (2, 3, 1500, 1800, 2400)]
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD.format(speed=SPEED), sim.url, sim.api_key, str(journal), *ids],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout is not None and child.stdout.readline().strip() == "watching"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(read_history(journal).query("status == 'succeeded'")) < 2:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        before = read_history(journal).set_index("task_id")
        assert (before.loc[ids[:2], "status"] == "succeeded").all()
        assert set(before.index) == set(ids)  # watched tasks are journalled before any poll
        open_ids = sorted(before.index[~before["status"].isin([str(s) for s in ENDING])])
        assert open_ids and set(open_ids) <= set(ids[2:])
        with TaskWatcher(sim.api_key, sim.url, store=journal, display="none", time_scale=SPEED) as w:
            resumed = w.resume()
            assert sorted(resumed) == open_ids
            final = w.wait(timeout=60)
            assert {str(t.status) for t in final.values()} == {"succeeded"}
        history = read_history(journal).set_index("task_id")
        assert (history.loc[ids, "status"] == "succeeded").all()
        assert history.loc[ids, "latency_s"].notna().all()


def test_two_processes_share_one_journal(tmp_path: Path) -> None:
    journal = tmp_path / "shared.sqlite"
    with Simulator(seed=5, speed=SPEED) as sim:
        groups = [
            [sim.submit(model="seedream-4.0", outcome="succeeded", latency=3 + i % 5) for i in range(15)]
            for _ in range(2)
        ]
        code = _CHILD.format(speed=SPEED).replace("time.sleep(600)", "w.wait(60); w.stop()")
        children = [
            subprocess.Popen(
                [sys.executable, "-c", code, sim.url, sim.api_key, str(journal), *ids],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for ids in groups
        ]  # fmt: skip
        try:
            for child in children:
                _, err = child.communicate(timeout=90)
                assert child.returncode == 0, err
        finally:  # a failure leaves no process nor pipe behind for the next test
            for child in children:
                child.kill()
                child.communicate()
    frame = read_history(journal)
    assert sorted(frame["task_id"]) == sorted(groups[0] + groups[1])
    assert (frame["status"] == "succeeded").all()
    assert frame["polls"].sum() == sum(sim.requests[i] for g in groups for i in g)


def test_watched_but_never_observed_tasks_are_in_the_history() -> None:
    frame = history_frame(
        [], [Watched("task_a", "http://x", 1000.0), Watched("task_b", "http://x", 1001.0, 8.5)]
    )
    assert frame["task_id"].tolist() == ["task_a", "task_b"]
    assert frame["first_seen_at"].iloc[0] == pd.Timestamp(1000.0, unit="s", tz="UTC")
    assert pd.isna(frame["status"].iloc[0])
    assert pd.isna(frame["predicted_latency_s"].iloc[0]) and frame["predicted_latency_s"].iloc[1] == 8.5


def test_memory_and_sqlite_reductions_agree(tmp_path: Path) -> None:
    def ev(task_id: str, status: str, at: float, polls: int, **kw: object) -> Event:
        return Event(task_id, status, at, polls, "video", "vidu", "viduq3-turbo", 100.0, **kw)  # type: ignore[arg-type]

    events = [
        ev("a", "pending", 100.2, 1), ev("b", "queued", 100.3, 1), ev("a", "running", 110.0, 3),
        ev("a", "succeeded", 131.0, 5, completed_at=130.5, n_results=1, format="mp4", duration_s=3.0,
           size_bytes=99),
        ev("b", "failed", 120.1, 4, completed_at=120.0, error_code="PROVIDER_ERROR", error_message="no"),
        ev("a", "expired", 1100.0, 6, completed_at=130.5),
        Event("c", "not_found", 101.0, 4),
        ev("d", "expired", 2000.0, 1, completed_at=150.0),
    ]  # fmt: skip
    watched = [Watched(t, "u", 100.1) for t in "abcde"]
    sqlite, memory = SQLiteStore(tmp_path / "j.sqlite"), MemoryStore()
    for store in (sqlite, memory):
        store.add_watched(watched)
        for e in events:
            store.add(e)
        store.set_predictions([("a", 25.0), ("b", 21.0), ("a", 40.0), ("z", 1.0)])
    from_sql, from_memory = read_history(sqlite), read_history(memory)
    pd.testing.assert_frame_equal(from_sql, from_memory)
    frame = from_sql.set_index("task_id")
    assert frame.loc["a", "status"] == "succeeded"  # expired afterwards: the result is kept
    assert (frame.loc["a", "format"], frame.loc["a", "polls"], frame.loc["a", "latency_s"]) == (
        "mp4",
        6,
        30.5,
    )
    assert frame.loc["a", "detection_delay_s"] == pytest.approx(0.5)
    assert frame["predicted_latency_s"].dropna().to_dict() == {"a": 25.0, "b": 21.0}
    assert frame.loc["a", "queue_s"] == pytest.approx(10.0)
    assert frame.loc["b", "error_code"] == "PROVIDER_ERROR"
    assert frame.loc["c", "not_found"]
    assert frame.loc["d", "status"] == "expired"  # never seen before expiry: kept as is
    assert pd.isna(frame.loc["e", "status"])
    assert frame.loc["e", "first_seen_at"] == pd.Timestamp(100.1, unit="s", tz="UTC")


# ------------------------------------------------ whole seconds, a stopped memory journal
def test_whole_second_server_times_never_give_negative_run_or_queue_over_latency() -> None:
    """Promise: ``queue_s + run_s == latency_s`` with both >= 0 even when the server floors its
    times to whole seconds (issue 17, item 19): the first sighting of ``running`` is clamped
    into ``[created_at, completed_at]``."""
    events = [
        Event("a", "running", 101.5, 2, created_at=100.0),  # truly created at 100.9, ended 101.8
        Event("a", "succeeded", 102.0, 3, created_at=100.0, completed_at=101.0),
        Event("b", "running", 99.6, 1, created_at=100.0),  # the clock offset's error: before creation
        Event("b", "failed", 105.0, 2, created_at=100.0, completed_at=104.0),
        Event("c", "running", 100.5, 1, created_at=100.0),  # running, end unknown: as observed
    ]
    frame = history_frame(events).set_index("task_id")
    assert (frame.loc["a", "queue_s"], frame.loc["a", "run_s"], frame.loc["a", "latency_s"]) == (
        1.0,
        0.0,
        1.0,
    )
    assert (frame.loc["b", "queue_s"], frame.loc["b", "run_s"]) == (0.0, 4.0)
    assert frame.loc["a", "started_at"] == frame.loc["a", "completed_at"]
    assert frame.loc["c", "queue_s"] == 0.5 and pd.isna(frame.loc["c", "run_s"])


def test_whole_second_simulator_histories_split_latency_sensibly(tmp_path: Path) -> None:
    """Promise (issue 17, item 19) against a server that reports whole seconds, over real HTTP."""
    with Simulator(seed=3, speed=SPEED, whole_seconds=True) as sim:
        ids = [sim.submit(model="seedream-4.0", outcome="succeeded", latency=40 + 15 * i) for i in range(16)]
        with _run(sim, tmp_path / "j.sqlite", ids) as w:
            frame = w.history()
    split = frame.dropna(subset=["run_s"])
    assert len(split) >= 4  # several were seen running
    assert (split["run_s"] >= 0).all() and (split["queue_s"] >= 0).all()
    assert (split["queue_s"] <= split["latency_s"]).all()
    assert ((split["queue_s"] + split["run_s"] - split["latency_s"]).abs() < 1e-6).all()


def test_a_stopped_memory_journal_stays_readable(sim: Simulator) -> None:
    """Promise: with ``store=None`` the history stays readable after ``stop()`` (issue 17, item 18)."""
    task_id = sim.submit(model="seedream-4.0", outcome="succeeded", latency=3)
    with _run(sim, None, [task_id]) as w:
        pass
    assert list(w.history()["status"]) == ["succeeded"]
    assert set(w.events()["status"]) >= {"succeeded"}


# ------------------------------------------------------ the reduction: SQL == pandas
_STATUSES = ["pending", "queued", "running", "succeeded", "failed", "cancelled", "expired", "not_found"]
_events = st.builds(
    Event,
    task_id=st.sampled_from(["a", "b", "c", "d"]),
    status=st.sampled_from(_STATUSES),
    observed_at=st.integers(0, 12).map(lambda t: 100.0 + t / 4),
    polls=st.integers(1, 6),
    type=st.sampled_from([None, "image"]),
    provider=st.sampled_from([None, "p"]),
    model=st.sampled_from([None, "m1", "m2"]),
    created_at=st.sampled_from([None, 99.0, 100.5]),
    completed_at=st.sampled_from([None, 101.0, 102.5]),
    n_results=st.integers(0, 2),
    format=st.sampled_from([None, "png"]),
    duration_s=st.sampled_from([None, 1.5]),
    size_bytes=st.sampled_from([None, 7]),
    error_code=st.sampled_from([None, "E"]),
    error_message=st.sampled_from([None, "no", "\ufffd\x07"]),
)


_server_events = st.builds(
    Event,
    task_id=st.sampled_from(["a", "b", "c", "d"]),
    status=st.sampled_from(_STATUSES),
    observed_at=st.integers(0, 12).map(lambda t: 100.0 + t / 4),
    polls=st.integers(1, 6),
    model=st.sampled_from([None, "m1"]),
    created_at=st.sampled_from([None, 99.0]),
    completed_at=st.sampled_from([None, 102.5]),
    server_started_at=st.sampled_from([None, 99.5, 100.25]),
    progress=st.sampled_from([None, 0.0, 55.5]),
    cost=st.sampled_from([None, 0.25, 1.0]),
    estimated_seconds=st.sampled_from([None, 30.0]),
    original_task_id=st.sampled_from([None, "z"]),
    metadata=st.sampled_from([None, '{"batch": 1}', '{"batch": 2, "tag": "x"}']),
    **dict.fromkeys(("type", "provider", "format", "duration_s", "size_bytes", "error_code"), st.none()),
    **dict.fromkeys(("error_message", "raw"), st.none()),
    n_results=st.integers(0, 2),
)
_journals = {
    "events": st.lists(_events | _server_events, max_size=14),
    "again": st.lists(st.integers(0, 13), max_size=4),
    "watched": st.dictionaries(
        st.sampled_from(["a", "c", "e"]), st.integers(0, 8).map(lambda t: 99.0 + t / 2)
    ),
    "predictions": st.lists(st.tuples(st.sampled_from(["a", "b", "e"]), st.sampled_from([5.0, 9.0]))),
    "cut": st.integers(0, 14),
}


def _reduce_alike(
    sql: Store,
    events: list[Event],
    again: list[int],
    watched: dict[str, float],
    predictions: list[Any],
    cut: int,
) -> None:
    """The same journal written to ``sql`` and to memory; the histories by the database's
    reduction (``journal.sql._REDUCE_SQL``), by pandas (``history.reduce_events``) and by
    pandas with writes pending are one frame."""
    sequence = events + [events[i] for i in again if i < len(events)]  # retried writes
    memory = MemoryStore()
    for store in (sql, memory):
        store.add_watched(Watched(t, "u", at) for t, at in watched.items())
        store.add_many(sequence[:cut])
        store.add_many(sequence[cut:])
        store.set_predictions(predictions)
    assert sql.capabilities.reduced_rows and not memory.capabilities.reduced_rows
    from_sql, from_pandas = read_history(sql), read_history(memory)
    pending = store_history(sql, pending=Unwritten([], sequence[cut:], []))
    pd.testing.assert_frame_equal(from_sql, from_pandas)
    pd.testing.assert_frame_equal(from_sql, pending)


@settings(max_examples=30)
@given(**_journals)
def test_sql_and_pandas_reduce_any_journal_alike(
    events: list[Event], again: list[int], watched: dict[str, float], predictions: list[Any], cut: int
) -> None:
    """Property: the SQL reduction (``journal.sql._REDUCE_SQL``, SQLite) and the pandas one
    (``history.reduce_events``, memory journals and pending writes) give the same history
    for any event sequence: out of order, repeated (a retried write), split across writes,
    with watched tasks never observed, predictions for unwatched ones, and server fields
    sent in some answers only. 30 examples."""
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SQLiteStore(Path(tmp) / "j.sqlite")
        try:
            _reduce_alike(sqlite, events, again, watched, predictions, cut)
        finally:
            sqlite.close()


@pytest.fixture(scope="module")
def pg_journal() -> Iterator[PostgresStore]:
    """One PostgreSQL journal for the whole property test (emptied before each example)."""
    with postgres_server() as server:
        journal = PostgresStore(server.new_database())
        try:
            yield journal
        finally:
            journal.close()


@pytest.mark.postgres
@settings(max_examples=30, deadline=None)
@given(**_journals)
def test_postgres_and_pandas_reduce_any_journal_alike(
    pg_journal: PostgresStore,
    events: list[Event],
    again: list[int],
    watched: dict[str, float],
    predictions: list[Any],
    cut: int,
) -> None:
    """Property: PostgreSQL's reduction (the same ``_REDUCE_SQL`` through its dialect, which
    its histories use: ``capabilities.reduced_rows``) gives pandas' history too. 30 examples."""
    with pg_journal._cursor(write=True, wait=None) as cur:
        cur.execute("TRUNCATE watched, events, task_summary, results")
    _reduce_alike(pg_journal, events, again, watched, predictions, cut)
