"""The journal: every watched task and every observed change, in memory or in SQLite.

A watcher writes to its store from the poller thread *before* the panel shows a change,
so a kernel killed at any moment loses no observed state (``SQLiteStore`` commits each
change in WAL mode). Several processes may share one journal file. The API key is never
written: only task data, statuses, times and request counts.

The default journal lives in the per-user data directory (``default_journal_path()``,
e.g. ``~/.local/share/mh_notebook/journal.sqlite`` on Linux).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

from .errors import ModelHunterError
from .models import Task

__all__ = [
    "Event",
    "JournalError",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "Watched",
    "default_journal_path",
    "event_from_task",
    "open_store",
]

SCHEMA_VERSION = 1
ENDED = frozenset({"succeeded", "failed", "cancelled", "not_found"})


class JournalError(ModelHunterError):
    """The journal file is corrupt, of an unknown schema version, or cannot be opened."""


class Event(NamedTuple):
    """One observed change of one task, flattened for fast DataFrames."""

    task_id: str
    status: str
    """The new status (``not_found`` when the API never knew the task)."""
    observed_at: float
    """Wall-clock seconds (``time.time()``) the answer arrived."""
    polls: int
    """Requests spent on the task up to and including this observation."""
    type: str | None = None
    provider: str | None = None
    model: str | None = None
    created_at: float | None = None
    """Server timestamp, epoch seconds."""
    completed_at: float | None = None
    n_results: int = 0
    format: str | None = None
    duration_s: float | None = None
    size_bytes: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    raw: str | None = None
    """The task's ``data`` object as received, as JSON text."""


class Watched(NamedTuple):
    """A task a watcher was asked to watch, and against which API."""

    task_id: str
    base_url: str
    first_seen_at: float


def event_from_task(task: Task, observed_at: float, polls: int) -> Event:
    """The event for ``task`` as fetched at ``observed_at`` after ``polls`` requests."""
    first = task.result[0] if task.result else None
    return Event(
        task.id, str(task.status), observed_at, polls, task.type, task.provider, task.model,
        task.created_at.timestamp() if task.created_at else None,
        task.completed_at.timestamp() if task.completed_at else None,
        len(task.result),
        first.format if first else None,
        first.duration if first else None,
        first.size_bytes if first else None,
        task.error.code if task.error else None,
        task.error.message if task.error else None,
        json.dumps(task.raw, default=str),
    )  # fmt: skip


class Store(Protocol):
    """Where a watcher journals what it watches and observes."""

    def add_watched(self, items: Iterable[Watched]) -> None:
        """Record tasks a watcher started watching (ignores ones already known)."""

    def add(self, event: Event) -> None:
        """Record one event durably, before it is shown."""

    def events(self) -> list[Event]:
        """Every event, in the order observed."""

    def watched(self) -> list[Watched]:
        """Every task ever watched, first seen first."""

    def unfinished(self, base_url: str) -> list[str]:
        """Ids watched against ``base_url`` whose last event is not an end."""

    def recent_ends(self, limit: int) -> list[Event]:
        """The latest ``limit`` succeeded/failed events (to learn latencies from)."""

    def close(self) -> None:
        """Release resources."""


class MemoryStore:
    """A journal in memory, lost with the process (``store=None``).

    Events are kept column-wise, so that a history of many tasks builds fast.
    """

    def __init__(self) -> None:
        self._cols: dict[str, list[Any]] = {name: [] for name in Event._fields}
        self._watched: dict[str, Watched] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore(tasks={len(self._watched)}, events={len(self._cols['task_id'])})"

    def add_watched(self, items: Iterable[Watched]) -> None:
        """Record tasks a watcher started watching."""
        with self._lock:
            for item in items:
                self._watched.setdefault(item.task_id, item)

    def add(self, event: Event) -> None:
        """Record one event."""
        with self._lock:
            for column, value in zip(self._cols.values(), event, strict=True):
                column.append(value)

    def columns(self) -> dict[str, list[Any]]:
        """The events column by column (copies)."""
        with self._lock:
            return {name: list(values) for name, values in self._cols.items()}

    def events(self) -> list[Event]:
        """Every event, in the order observed."""
        return list(map(Event._make, zip(*self.columns().values(), strict=True)))

    def watched(self) -> list[Watched]:
        """Every task ever watched."""
        with self._lock:
            return list(self._watched.values())

    def unfinished(self, base_url: str) -> list[str]:
        """Ids watched against ``base_url`` that have not ended."""
        return _unfinished(self.watched(), self.events(), base_url)

    def recent_ends(self, limit: int) -> list[Event]:
        """The latest ``limit`` succeeded/failed events."""
        return [e for e in self.events() if e.status in ("succeeded", "failed")][-limit:]

    def close(self) -> None:
        """Nothing to release."""


def _unfinished(watched: list[Watched], events: list[Event], base_url: str) -> list[str]:
    last = {e.task_id: e.status for e in events}
    return [w.task_id for w in watched if w.base_url == base_url and last.get(w.task_id) not in ENDED]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS watched (
    task_id TEXT PRIMARY KEY, base_url TEXT NOT NULL, first_seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL, status TEXT NOT NULL, observed_at REAL NOT NULL, polls INTEGER NOT NULL,
    type TEXT, provider TEXT, model TEXT, created_at REAL, completed_at REAL, n_results INTEGER,
    format TEXT, duration_s REAL, size_bytes INTEGER, error_code TEXT, error_message TEXT, raw TEXT
);
CREATE INDEX IF NOT EXISTS events_task ON events(task_id);
CREATE TABLE IF NOT EXISTS task_summary (
    task_id TEXT PRIMARY KEY, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    last_informative_seq INTEGER, first_seen_at REAL, started_at REAL, seen_end REAL, polls INTEGER
);
"""


class SQLiteStore:
    """A journal in one SQLite file (WAL): durable, shareable between processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._db = self._open()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            # Switching a new file to WAL can answer "locked" at once while another process
            # sets it up (the busy timeout does not cover it): retry for a while.
            for attempt in Retrying(
                retry=retry_if_exception(_locked),
                stop=stop_after_delay(30),
                wait=wait_random(0.01, 0.2),
                reraise=True,
            ):
                with attempt:
                    version, tables = self._set_up(db)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise JournalError(f"cannot open the journal {str(self.path)!r}: {exc}") from None
        if version != SCHEMA_VERSION:
            db.close()
            raise JournalError(
                f"the journal {str(self.path)!r} has schema version {version} (with tables "
                f"{sorted(tables)}), this mh_notebook reads version {SCHEMA_VERSION}; "
                "upgrade mh_notebook or use another file"
            )
        return db

    @staticmethod
    def _set_up(db: sqlite3.Connection) -> tuple[int, set[str]]:
        """WAL mode, then check the schema and create it if the file is new (one transaction)."""
        db.execute("PRAGMA busy_timeout = 30000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: survives a killed process
        with _Transaction(db):  # safe when many processes open the same new file at once
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if version == 0 and not tables:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                version = SCHEMA_VERSION
        return version, tables

    def add_watched(self, items: Iterable[Watched]) -> None:
        """Record tasks a watcher started watching (one transaction)."""
        rows = list(items)
        with self._lock, _Transaction(self._db):
            self._db.executemany("INSERT OR IGNORE INTO watched VALUES (?, ?, ?)", rows)

    def add(self, event: Event) -> None:
        """Record one event, committed before this returns."""
        self.add_many([event])

    def add_many(self, events: Iterable[Event]) -> None:
        """Record events in one transaction (the per-task summary is kept up to date)."""
        with self._lock, _Transaction(self._db):
            for event in events:
                seq = self._db.execute(f"INSERT INTO events ({_COLS}) VALUES ({_MARKS})", event).lastrowid
                self._db.execute(_SUMMARY_SQL, _summary_args(event, seq))

    def events(self) -> list[Event]:
        """Every event, in the order written."""
        with self._lock:
            rows = self._query(f"SELECT {_COLS} FROM events ORDER BY seq")
        return [Event(*row) for row in rows]

    def reduced_rows(self) -> list[tuple[Any, ...]]:
        """One row per task, watched or observed (``history.REDUCED_COLUMNS``), by SQLite itself."""
        with self._lock:
            return self._query(_REDUCE_SQL)

    def watched(self) -> list[Watched]:
        """Every task ever watched."""
        with self._lock:
            rows = self._query("SELECT task_id, base_url, first_seen_at FROM watched ORDER BY first_seen_at")
        return [Watched(*row) for row in rows]

    def unfinished(self, base_url: str) -> list[str]:
        """Ids watched against ``base_url`` whose last event is not an end."""
        query = """
            SELECT w.task_id FROM watched w
            LEFT JOIN task_summary s ON s.task_id = w.task_id
            LEFT JOIN events e ON e.seq = s.last_seq
            WHERE w.base_url = ? AND (e.status IS NULL OR e.status NOT IN ({}))
            ORDER BY w.first_seen_at
        """.format(",".join("?" * len(ENDED)))
        with self._lock:
            return [r[0] for r in self._query(query, (base_url, *sorted(ENDED)))]

    def recent_ends(self, limit: int) -> list[Event]:
        """The latest ``limit`` succeeded/failed events."""
        sql = f"SELECT {_COLS} FROM events WHERE status IN ('succeeded', 'failed') ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._query(sql, (limit,))
        return [Event(*row) for row in reversed(rows)]

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"the journal {str(self.path)!r} cannot be read: {exc}") from None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


_COLS = ", ".join(Event._fields)
_MARKS = ", ".join("?" * len(Event._fields))
_EVENT_PART = """e.status, e.type, e.provider, e.model, e.created_at, e.completed_at, e.n_results,
       e.format, e.duration_s, e.size_bytes, e.error_code, e.error_message"""
_REDUCE_SQL = f"""
SELECT w.task_id, {_EVENT_PART},
       CASE WHEN s.first_seen_at IS NULL OR w.first_seen_at < s.first_seen_at
            THEN w.first_seen_at ELSE s.first_seen_at END,
       s.started_at, s.seen_end, s.polls
FROM watched AS w
LEFT JOIN task_summary AS s ON s.task_id = w.task_id
LEFT JOIN events AS e ON e.seq = COALESCE(s.last_informative_seq, s.last_seq)
UNION ALL
SELECT s.task_id, {_EVENT_PART}, s.first_seen_at, s.started_at, s.seen_end, s.polls
FROM task_summary AS s JOIN events AS e ON e.seq = COALESCE(s.last_informative_seq, s.last_seq)
WHERE s.task_id NOT IN (SELECT task_id FROM watched)
"""
"""Every task (watched or observed), reduced to ``history.REDUCED_COLUMNS``."""


def _earliest(col: str) -> str:
    """SQL for the earlier of the stored and the new value, either of which may be NULL."""
    new = f"excluded.{col}"
    return f"CASE WHEN {col} IS NULL THEN {new} WHEN {new} IS NULL THEN {col} ELSE MIN({col}, {new}) END"


_SUMMARY_SQL = f"""
INSERT INTO task_summary VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(task_id) DO UPDATE SET
    last_seq = MAX(last_seq, excluded.last_seq),
    last_informative_seq = COALESCE(MAX(last_informative_seq, excluded.last_informative_seq),
                                    last_informative_seq, excluded.last_informative_seq),
    first_seen_at = {_earliest("first_seen_at")},
    started_at = {_earliest("started_at")},
    seen_end = {_earliest("seen_end")},
    polls = MAX(polls, excluded.polls)
"""
_TERMINAL = ("succeeded", "failed", "cancelled")


def _summary_args(event: Event, seq: int | None) -> tuple[Any, ...]:
    """The ``task_summary`` row one event contributes (merged by ``_SUMMARY_SQL``)."""
    at = event.observed_at
    return (
        event.task_id, seq, seq, seq if event.status != "expired" else None, at,
        at if event.status == "running" else None, at if event.status in _TERMINAL else None, event.polls,
    )  # fmt: skip


class _Transaction:
    """``BEGIN IMMEDIATE ... COMMIT`` (or ROLLBACK) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def default_journal_path() -> Path:
    """Where the default journal lives: the per-user data directory of mh_notebook."""
    from platformdirs import user_data_path

    return user_data_path("mh_notebook") / "journal.sqlite"


def open_store(store: Store | str | Path | None) -> Store:
    """A store from what a user passes: a store, a path, ``"default"`` or ``None`` (memory)."""
    if store is None:
        return MemoryStore()
    if isinstance(store, str | Path):
        return SQLiteStore(default_journal_path() if str(store) == "default" else store)
    return store
