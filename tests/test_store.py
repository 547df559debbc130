"""The journal layer: schema migrations, scoped reads, no silent creation, bounded writes, close."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

from mh_notebook import records
from mh_notebook.history import HISTORY_COLUMNS, read_history, store_history
from mh_notebook.journal import migrations, sql, sqlite
from mh_notebook.journal.dialect import SQLiteDialect
from mh_notebook.journal.factory import open_store
from mh_notebook.journal.memory import MemoryStore
from mh_notebook.journal.migrations import SCHEMA_VERSION
from mh_notebook.journal.protocol import JournalBusyError, JournalError, SavedResult, Unwritten, Watched
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.records import Event

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


def _script() -> ModuleType:
    """scripts/make_v1_journal.py, for its ``summarise`` (the fixture's expected values)."""
    spec = importlib.util.spec_from_file_location("make_v1_journal", ROOT / "scripts" / "make_v1_journal.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sql(path: Path, query: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def _v1_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "journal.sqlite"
    shutil.copyfile(DATA / "journal-v1.sqlite", copy)
    return copy


def _v2_copy(tmp_path: Path) -> Path:
    """The v1 fixture upgraded to schema 2 by the migration scripts themselves (as 0.2 would)."""
    path = _v1_copy(tmp_path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executescript(migrations.MIGRATIONS[1])
        db.execute("PRAGMA user_version = 2")
    finally:
        db.close()
    return path


def _ev(task_id: str, status: str, at: float, polls: int = 1, **kw: Any) -> Event:
    return Event(task_id, status, at, polls, "video", "vidu", "viduq3-turbo", 100.0, **kw)


# ------------------------------------------------------------------ migrations


def test_the_v1_fixture_is_what_0_1_0_wrote() -> None:
    assert _sql(DATA / "journal-v1.sqlite", "PRAGMA user_version") == [(1,)]
    assert sorted(p.name for p in DATA.glob("journal-v1.sqlite*")) == ["journal-v1.sqlite"]


def test_a_v1_journal_is_upgraded_and_reads_as_before(tmp_path: Path) -> None:
    path = _v1_copy(tmp_path)
    expected = json.loads((DATA / "journal-v1.expected.json").read_text())
    SQLiteStore(path).close()
    assert _sql(path, "PRAGMA user_version") == [(8,)] and SCHEMA_VERSION == 8
    indexes = {r[0] for r in _sql(path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"events_task", "watched_base_url", "events_status", "events_once"} <= indexes
    _assert_reads_as_0_1_0(path, expected)


def test_saved_files_journalled_before_machines_were_told_apart_are_kept(tmp_path: Path) -> None:
    """Migration 5 -> 6 (saved files keyed by machine, issue 17 item 21c) keeps the rows
    written before it; this machine's own row wins over them afterwards."""
    from mh_notebook.journal.dialect import SQLiteDialect

    path = tmp_path / "v5.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for script in migrations.MIGRATIONS[:5]:
            for statement in filter(str.strip, script.split(";")):
                db.execute(SQLiteDialect().sql(statement))
        db.execute("PRAGMA user_version = 5")
        db.execute("INSERT INTO results VALUES ('t', 0, '/old/t_0.png', 'ab', 3, 1.0)")
    finally:
        db.close()
    store = SQLiteStore(path)
    try:
        assert [r.local_path for r in store.results()] == ["/old/t_0.png"]
        store.add_watched([Watched("t", "http://api.test", 1.0)])
        assert list(store_history(store)["local_path"]) == ["/old/t_0.png"]
        store.add_results([SavedResult("t", 0, "/new/t_0.png", "cd", 3, 2.0)])
        assert [r.local_path for r in store.results(["t"])] == ["/new/t_0.png"]
        assert list(store_history(store)["local_path"]) == ["/new/t_0.png"]
    finally:
        store.close()


def _assert_reads_as_0_1_0(path: Path, expected: dict[str, Any]) -> None:
    """The history of an upgraded fixture is what 0.1.0 read, with no predictions and no saved files."""
    frame = read_history(path)
    later = [c for c in frame.columns if c not in expected["tasks"][0]]  # columns added since 0.1.0
    assert _script().summarise(frame.drop(columns=later)) == expected["tasks"]
    assert dict(zip(frame["task_id"], frame["base_url"].astype(str), strict=True)) == expected["base_urls"]
    assert frame["predicted_latency_s"].isna().all()
    assert frame["local_path"].isna().all()


def test_a_v2_journal_is_upgraded_with_its_data_intact(tmp_path: Path) -> None:
    path = _v2_copy(tmp_path)
    expected = json.loads((DATA / "journal-v1.expected.json").read_text())
    watched, events = _sql(path, "SELECT * FROM watched"), _sql(path, "SELECT * FROM events")
    store = SQLiteStore(path)
    assert _sql(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert _sql(path, "SELECT * FROM watched") == [(*row, None) for row in watched]
    added = (None,) * len(records.SERVER_FIELDS)  # migration 6: server fields, empty
    assert _sql(path, "SELECT * FROM events") == [(*row, *added) for row in events]
    assert all(w.predicted_latency_s is None for w in store.watched())
    _assert_reads_as_0_1_0(path, expected)
    store.set_predictions([("task_v1_unseen", 42.5)])
    store.close()
    assert read_history(path).set_index("task_id").loc["task_v1_unseen", "predicted_latency_s"] == 42.5


def test_an_upgraded_v1_journal_is_writable(tmp_path: Path) -> None:
    path = _v1_copy(tmp_path)
    store = SQLiteStore(path)
    store.add_watched([Watched("task_new", "https://api.modelhunter.ai", 1_767_300_000.0)])
    store.add(_ev("task_new", "succeeded", 1_767_300_010.0, 2, completed_at=1_767_300_009.0))
    store.close()
    reopened = SQLiteStore(path)
    assert reopened.events()[-1].task_id == "task_new"
    assert [e.task_id for e in reopened.recent_ends(10, "https://api.modelhunter.ai")] == [
        "task_v1_fail", "task_v1_ok", "task_new",
    ]  # fmt: skip
    assert reopened.unfinished("https://api.modelhunter.ai") == ["task_v1_unseen"]
    reopened.close()
    frame = read_history(path).set_index("task_id")
    assert frame.loc["task_new", "status"] == "succeeded"
    assert len(frame) == 6


def test_a_newer_journal_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = _v1_copy(tmp_path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(JournalError, match=rf"schema version 99, .* reads versions up to {SCHEMA_VERSION}"):
        SQLiteStore(path)
    with pytest.raises(JournalError, match="schema version 99"):
        read_history(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.sqlite"]


def test_a_foreign_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(JournalError, match=r"not an mh_notebook journal .*\['notes'\]"):
        SQLiteStore(path)
    assert path.read_bytes() == before


def test_a_new_journal_runs_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    SQLiteStore(path).close()
    assert _sql(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    indexes = {r[0] for r in _sql(path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"events_task", "watched_base_url", "events_status"} <= indexes
    assert _sql(path, "SELECT name FROM sqlite_master WHERE name = 'results'") == [("results",)]


def test_migrations_are_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _v1_copy(tmp_path)
    broken = (
        migrations.MIGRATIONS[0],
        "CREATE INDEX half ON watched(base_url); CREATE INDEX x ON nope(y)",
    )
    monkeypatch.setattr(sql, "MIGRATIONS", broken)
    with pytest.raises(JournalError, match="cannot open the journal"):
        SQLiteStore(path)
    assert _sql(path, "PRAGMA user_version") == [(1,)]
    assert _sql(path, "SELECT name FROM sqlite_master WHERE name = 'half'") == []


# ---------------------------------------------------------------- scoped reads


def _filled(store: MemoryStore | SQLiteStore) -> MemoryStore | SQLiteStore:
    store.add_watched([Watched("a", "u1", 100.0), Watched("b", "u2", 100.5), Watched("c", "u1", 101.0)])
    store.add(_ev("a", "succeeded", 110.0, 3, completed_at=109.0))
    store.add(_ev("b", "failed", 111.0, 2, completed_at=110.0, error_code="PROVIDER_ERROR"))
    store.add(_ev("d", "succeeded", 112.0, 1, completed_at=111.0))  # observed, never watched
    store.add(_ev("c", "running", 113.0, 2))
    store.add(_ev("c", "failed", 114.0, 4, completed_at=113.5))
    store.set_predictions([("a", 9.5), ("c", 12.0), ("d", 3.0)])  # d was never watched
    store.add_results(
        [
            SavedResult("a", 1, "/r/a_1.png", "a1", 5, 115.0),  # the history shows the first result's
            SavedResult("a", 0, "/r/a_0.png", "a0", 4, 115.0),
            SavedResult("d", 0, "/r/d_0.png", "d0", 6, 116.0),  # observed, never watched
        ]
    )
    return store


STORES: list[Callable[[Path], MemoryStore | SQLiteStore]] = [
    lambda tmp: MemoryStore(),
    lambda tmp: SQLiteStore(tmp / "j.sqlite"),
]


@pytest.mark.parametrize("make", STORES, ids=["memory", "sqlite"])
def test_recent_ends_per_base_url(tmp_path: Path, make: Callable[[Path], Any]) -> None:
    store = _filled(make(tmp_path))

    def ids(*args: Any) -> list[str]:
        return [e.task_id for e in store.recent_ends(*args)]

    assert ids(10) == ["a", "b", "d", "c"]
    assert ids(10, "u1") == ["a", "c"]
    assert ids(1, "u1") == ["c"]
    assert ids(10, "u2") == ["b"]
    assert ids(10, "elsewhere") == []
    assert ids(0) == ids(0, "u1") == []


def test_history_has_base_url_and_keeps_to_task_ids(tmp_path: Path) -> None:
    memory, sqlite = _filled(MemoryStore()), _filled(SQLiteStore(tmp_path / "j.sqlite"))
    assert list(HISTORY_COLUMNS)[:2] == ["task_id", "base_url"]
    frames = [store_history(s) for s in (memory, sqlite)]
    pd.testing.assert_frame_equal(*frames)
    frame = frames[1].set_index("task_id")
    assert {c: str(t) for c, t in frames[1].dtypes.items()} == HISTORY_COLUMNS
    assert frame["base_url"].to_dict() == {"a": "u1", "b": "u2", "c": "u1", "d": frame.loc["d", "base_url"]}
    assert pd.isna(frame.loc["d", "base_url"])
    columns = list(HISTORY_COLUMNS)
    assert columns[columns.index("latency_s") + 1] == "predicted_latency_s"
    assert frame["predicted_latency_s"].to_dict() == pytest.approx(
        {"a": 9.5, "b": math.nan, "c": 12.0, "d": math.nan}, nan_ok=True
    )
    assert frame["local_path"].fillna("-").to_dict() == {
        "a": "/r/a_0.png",
        "b": "-",
        "c": "-",
        "d": "/r/d_0.png",
    }
    wanted = {"c", "d", "unknown"}
    mine = [store_history(s, {"c": 9}, task_ids=wanted) for s in (memory, sqlite)]
    pd.testing.assert_frame_equal(*mine)
    assert mine[0]["task_id"].tolist() == ["c", "d"]  # first seen first
    assert mine[0].set_index("task_id").loc["c", "polls"] == 9
    assert list(mine[0]["base_url"].cat.categories) == ["u1"]
    none = store_history(sqlite, task_ids=[])
    assert none.empty and list(none.columns) == list(HISTORY_COLUMNS)
    assert len(read_history(sqlite)) == 4


# ---------------------------------------------------------------- predictions


@pytest.mark.parametrize("make", STORES, ids=["memory", "sqlite"])
def test_the_first_prediction_of_a_watched_task_wins(tmp_path: Path, make: Callable[[Path], Any]) -> None:
    store = make(tmp_path)
    store.add_watched([Watched("a", "u", 100.0), Watched("b", "u", 101.0), Watched("c", "u", 102.0, 7.0)])
    store.set_predictions([("a", 30.0), ("zz", 5.0), ("b", math.nan)])
    store.set_predictions(iter([("a", 99.0), ("b", 12.5), ("b", 13.0), ("c", 1.0)]), wait=0.0)
    store.add_watched([Watched("a", "u", 50.0, 1.0), Watched("d", "u", 103.0, 4.25)])  # a: ignored
    expected = [
        Watched("a", "u", 100.0, 30.0), Watched("b", "u", 101.0, 12.5),
        Watched("c", "u", 102.0, 7.0), Watched("d", "u", 103.0, 4.25),
    ]  # fmt: skip
    assert store.watched() == expected
    if isinstance(store, SQLiteStore):
        store.close()
        store = SQLiteStore(store.path)
        assert store.watched() == expected
    predicted = store_history(store).set_index("task_id")["predicted_latency_s"]
    assert predicted.to_dict() == {"a": 30.0, "b": 12.5, "c": 7.0, "d": 4.25}
    store.close()


def test_predictions_in_a_memory_stores_history_match_sqlite(tmp_path: Path) -> None:
    stores: list[MemoryStore | SQLiteStore] = [MemoryStore(), SQLiteStore(tmp_path / "j.sqlite")]
    for store in stores:
        store.add_watched([Watched("a", "u", 100.0), Watched("b", "u", 100.5)])
        store.add(_ev("a", "succeeded", 131.0, 2, completed_at=130.5))
        store.add(_ev("e", "running", 120.0))  # observed, never watched
        store.set_predictions([("a", 28.0), ("e", 1.0)])
    memory, sqlite = store_history(stores[0]), read_history(stores[1])
    pd.testing.assert_frame_equal(memory, sqlite)
    row = memory.set_index("task_id").loc["a"]
    assert (row["latency_s"], row["predicted_latency_s"]) == (30.5, 28.0)
    assert memory["predicted_latency_s"].isna().tolist() == [False, True, True]
    assert str(memory["predicted_latency_s"].dtype) == "float64"


# ------------------------------------------------------- no silent creation


def test_reading_a_missing_journal_creates_nothing(tmp_path: Path) -> None:
    for path in (tmp_path / "journal.sqlite", tmp_path / "sub" / "dir" / "journal.sqlite"):
        with pytest.raises(JournalError, match="no journal at"):
            read_history(path)
        with pytest.raises(JournalError, match="no journal at"):
            read_history(str(path))
        with pytest.raises(JournalError, match="no journal at"):
            SQLiteStore(path, create=False)
        with pytest.raises(JournalError, match="no journal at"):
            open_store(path, create=False)
    assert list(tmp_path.iterdir()) == []
    open_store(tmp_path / "made" / "j.sqlite").close()  # create=True by default
    assert (tmp_path / "made" / "j.sqlite").exists()


@pytest.mark.parametrize(
    ("url", "opens"),
    [
        ("postgresql://user:s3cret@db.example/journal", [SQLiteStore]),  # a team journal, not a file
        ("sqlite:///x.s3cret.sqlite", [open_store, read_history, SQLiteStore]),
        ("file://s3cret", [open_store, read_history, SQLiteStore]),
    ],
)
def test_journal_urls_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, opens: list[Callable[[str], object]]
) -> None:
    monkeypatch.chdir(tmp_path)
    for open_ in opens:
        with pytest.raises(JournalError, match=r"URLs .* not supported here") as info:
            open_(url)
        assert "s3cret" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ bounded writes


def test_a_bounded_write_gives_up_while_another_connection_writes(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    store = SQLiteStore(path)
    events = [_ev("a", "running", 110.0), _ev("a", "succeeded", 120.0, 2, completed_at=119.0)]
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(JournalBusyError, match="locked by another connection"):
            store.add_many(events, wait=0.05)
        with pytest.raises(JournalBusyError):
            store.add(events[0], wait=0.05)
        with pytest.raises(JournalBusyError):
            store.add_watched([Watched("a", "u", 100.0)], wait=0.0)
        with pytest.raises(JournalBusyError, match="nothing was written"):
            store.set_predictions([("a", 10.0)], wait=0.0)
        assert store.events() == [] and store.watched() == []  # nothing half-written
        writer = threading.Thread(target=store.add, args=(_ev("z", "queued", 105.0),))
        writer.start()  # no wait: blocks (up to 30 s) for the lock, as before
        time.sleep(0.2)
        assert writer.is_alive()
    finally:
        other.execute("COMMIT")
        other.close()
    writer.join(30)
    store.add_many(events, wait=0.05)
    assert [e.task_id for e in store.events()] == ["z", "a", "a"]
    assert read_history(store).set_index("task_id").loc["a", "status"] == "succeeded"
    store.close()


def test_memory_store_accepts_wait() -> None:
    store = MemoryStore()
    store.add_watched([Watched("a", "u", 100.0)], wait=0.0)
    store.add(_ev("a", "running", 110.0), wait=0.0)
    store.add_many([_ev("a", "succeeded", 120.0, 2, completed_at=119.0)], wait=0.0)
    store.set_predictions([("a", 18.0)], wait=0.0)
    assert store.watched() == [Watched("a", "u", 100.0, 18.0)]
    assert [e.status for e in store.events()] == ["running", "succeeded"]


# --------------------------------------------------------------------- close


def test_close_is_idempotent_and_a_closed_journal_refuses_use(tmp_path: Path) -> None:
    memory, sqlite = MemoryStore(), SQLiteStore(tmp_path / "j.sqlite")
    for store in (memory, sqlite):
        assert not store.closed
        store.close()
        store.close()
        assert store.closed
    calls: list[Callable[[], object]] = [
        sqlite.events, sqlite.watched, sqlite.reduced_rows, lambda: sqlite.unfinished("u"),
        lambda: sqlite.recent_ends(5), lambda: sqlite.add(_ev("a", "queued", 1.0)),
        lambda: sqlite.add_many([]), lambda: sqlite.add_watched([]), lambda: read_history(sqlite),
        lambda: sqlite.set_predictions([]),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(JournalError, match=r"the journal '.*j\.sqlite' is closed"):
            call()


def test_a_retried_write_counts_nothing_twice(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "j.sqlite")
    store.add_watched([Watched("a", "u", 100.0)])
    events = [_ev("a", "running", 110.0), _ev("a", "succeeded", 120.0, 2, completed_at=119.0)]
    store.add_many(events)
    store.add_many(events)  # the same transaction again, e.g. after a lost connection
    assert [e.status for e in store.events()] == ["running", "succeeded"]
    assert read_history(store)["polls"].tolist() == [2]
    store.close()


def test_duplicates_an_older_version_wrote_are_merged_on_upgrade(tmp_path: Path) -> None:
    path = _v1_copy(tmp_path)
    db = sqlite3.connect(path)
    db.execute(f"INSERT INTO events ({COLS}) SELECT {COLS} FROM events")  # every event twice
    db.commit()
    db.close()
    before = len(_sql(path, "SELECT seq FROM events"))
    SQLiteStore(path).close()
    assert len(_sql(path, "SELECT seq FROM events")) == before // 2
    _assert_reads_as_0_1_0(path, json.loads((DATA / "journal-v1.expected.json").read_text()))


COLS = ", ".join(f for f in Event._fields if f not in records.SERVER_FIELDS)  # a v1 journal's


# ------------------------------------------------------- misbehaving text, locks, spellings
ODD = "nul\x00 lone\ud800 high\udfff bell\x07 esc\x1b[31m tab\t nl\n é 🙂"


def test_text_no_journal_accepts_is_cleaned_at_the_event_boundary(tmp_path: Path) -> None:
    """Promise: one odd server string never blocks the journal (issue 17, item 7). NULs and
    lone surrogates (PostgreSQL refuses the one, SQLite the other) become U+FFFD when an
    answer becomes an Event; other control characters are kept as they came."""
    from mh_notebook.models import Task

    data = {"id": "task_odd", "type": "image", "status": "failed", "provider": "p\x00", "model": ODD,
            "error": {"code": "E\ud83d", "message": ODD}, "created_at": "2025-01-15T10:00:00Z"}  # fmt: skip
    event = records.event_from_task(Task.from_api(data), 1000.0, 1)
    assert (
        event.error_message
        == event.model
        == ODD.replace("\x00", "\ufffd").replace("\ud800", "\ufffd").replace("\udfff", "\ufffd")
    )
    assert (event.provider, event.error_code) == ("p\ufffd", "E\ufffd")
    assert "\x07" in event.error_message and "\x1b[31m" in event.error_message
    store = SQLiteStore(tmp_path / "j.sqlite")
    store.add(event, wait=0.05)
    assert store.events() == [event]
    store.close()


def test_a_bounded_write_gives_up_while_this_process_holds_the_journal(tmp_path: Path) -> None:
    """Promise: a bounded write (the poller's) waits about ``wait`` even when another thread of
    this process is inside a long unbounded write (issue 17, item 2: the store's own lock was
    taken without a bound, so the poller waited out the other thread's 30 s busy timeout)."""
    path = tmp_path / "j.sqlite"
    store = SQLiteStore(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the file
    unbounded = threading.Thread(target=store.add_watched, args=([Watched("a", "u", 1.0)],), daemon=True)
    unbounded.start()  # a user's call without wait: holds the store for up to 30 s
    time.sleep(0.3)
    outcome: list[BaseException] = []

    def bounded() -> None:
        try:
            store.add(_ev("b", "running", 2.0), wait=0.05)
        except BaseException as exc:
            outcome.append(exc)

    writer = threading.Thread(target=bounded, daemon=True)
    writer.start()
    writer.join(10)  # generous; the old code waited ~30 s here
    try:
        assert not writer.is_alive()
        assert isinstance(outcome[0], JournalBusyError)
    finally:
        other.execute("COMMIT")
        other.close()
        unbounded.join(40)
        writer.join(40)
    store.close()


def test_one_file_under_two_spellings_is_one_journal(tmp_path: Path) -> None:
    """Promise: a SQLite file opened as a relative path, through ``..`` or a symlink is one
    journal (issue 17, item 21e: the engine keys journals by it, to seed and write once)."""
    (tmp_path / "x").mkdir()
    path = tmp_path / "x" / "j.sqlite"
    os.symlink(path, tmp_path / "link.sqlite")
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        stores = [
            SQLiteStore(p)
            for p in (path, "x/../x/j.sqlite", "./link.sqlite", tmp_path / "x" / "." / "j.sqlite")
        ]
    finally:
        os.chdir(here)
    assert len({s.identity for s in stores}) == 1
    assert SQLiteStore(tmp_path / "other.sqlite").identity != stores[0].identity
    for s in stores:
        s.close()


def test_unwritten_rows_are_written_at_the_next_opening(tmp_path: Path) -> None:
    """Promise: what ``stop()`` could not write is recoverable (issue 17, item 9): kept as JSON
    lines next to the journal, written in by its next opening (not while it stays locked)."""
    path = tmp_path / "j.sqlite"
    SQLiteStore(path).close()
    rows = Unwritten(
        [Watched("a", "u", 100.0)],
        [_ev("a", "running", 110.0), _ev("a", "failed", 120.0, 2, error_message="x\ufffd")],
        [SavedResult("a", 0, "/tmp/a.png", "00" * 32, 3, 121.0)],
    )
    spill = sqlite.write_unwritten(path, rows)
    assert spill == sqlite.unwritten_path(path) == tmp_path / "j.sqlite.unwritten.jsonl"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        store = SQLiteStore(path)  # still locked: the rows stay where they are
        assert store.replayed == 0 and spill.exists() and store.events() == []
        store.close()
    finally:
        other.execute("COMMIT")
        other.close()
    store = SQLiteStore(path)
    assert store.replayed == 2 and not spill.exists()
    assert (store.watched(), store.events(), store.results()) == (rows.watched, rows.events, rows.saved)
    store.close()


def test_a_memory_journal_writes_an_event_once_as_sqlite_does() -> None:
    """Promise: a retried write counts nothing twice, in memory too (the reductions agree)."""
    store = MemoryStore()
    store.add_many([_ev("a", "running", 110.0), _ev("a", "running", 110.0)])
    store.add(_ev("a", "running", 110.0))
    store.add(_ev("a", "running", 110.0, 2))
    assert len(store.events()) == 2


def test_a_journal_another_process_creates_meanwhile_reads_as_one_snapshot(tmp_path: Path) -> None:
    # CI, s23: two processes opened one new journal at once; one read version 0, the other
    # committed the migration, then the first read the tables: "not an mh_notebook journal"
    path = tmp_path / "new.sqlite"
    reader = sqlite3.connect(path, isolation_level=None)

    class _Rows(list[Any]):
        def fetchone(self) -> Any:
            return self[0]

        def fetchall(self) -> list[Any]:
            return list(self)

    class _Interleaved:
        """A cursor after whose first statement the other process commits its migration."""

        def __init__(self) -> None:
            self.cur, self.calls = reader.cursor(), 0

        def execute(self, sql_text: str) -> Any:
            rows = self.cur.execute(sql_text).fetchall()  # (the statement done: no lock held)
            self.calls += 1
            if self.calls == 1:
                SQLiteStore(path).close()  # the other process: creates and migrates the journal
            return _Rows(rows)

    version, tables = SQLiteDialect().schema_version(_Interleaved())
    reader.close()
    assert (version == 0) == (not tables), (version, tables)  # before the migration, or after it
    store = SQLiteStore(path)  # and the journal opens
    assert not store.closed
    store.close()
