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
import logging
import math
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

from .dialect import Dialect, SQLiteDialect, is_postgres_url, sqlite_transaction
from .errors import ModelHunterError
from .models import Task

__all__ = [
    "Event",
    "JournalBusyError",
    "JournalError",
    "MemoryStore",
    "SQLJournal",
    "SQLiteStore",
    "SavedResult",
    "Store",
    "Unwritten",
    "Watched",
    "clean_event",
    "clean_text",
    "default_journal_path",
    "event_from_task",
    "open_store",
    "read_unwritten",
    "unwritten_path",
    "with_pending",
    "write_unwritten",
]

log = logging.getLogger("mh_notebook.store")

ENDED = frozenset({"succeeded", "failed", "cancelled", "not_found"})
_LEARNED_ENDS = ("succeeded", "failed")
"""The ends :meth:`Store.recent_ends` returns (those a latency is learned from)."""


class JournalError(ModelHunterError):
    """The journal is missing, closed, corrupt, of an unknown schema version, or cannot be opened."""


class JournalBusyError(JournalError):
    """A write gave up: another connection held the journal's write lock too long (nothing written)."""


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
    server_started_at: float | None = None
    """When the server says the task started running (epoch seconds), if it said."""
    progress: float | None = None
    """The server's progress, 0-100, if it said."""
    cost: float | None = None
    """USD charged for the task, if the server said."""
    estimated_seconds: float | None = None
    """The server's estimate of the task's duration (creation and retry answers)."""
    original_task_id: str | None = None
    """The task this one retries (retry answers)."""
    metadata: str | None = None
    """The object given at creation, as JSON text, if the server sent it back."""


class Watched(NamedTuple):
    """A task a watcher was asked to watch, and against which API."""

    task_id: str
    base_url: str
    first_seen_at: float
    predicted_latency_s: float | None = None
    """The first prediction of ``completed_at - created_at`` (seconds) made for the task."""


class SavedResult(NamedTuple):
    """A result file saved on this machine (``TaskWatcher(save_to=...)``)."""

    task_id: str
    idx: int
    """The result's index in the task's ``result`` list."""
    local_path: str
    """Absolute path of the file."""
    sha256: str
    """Hex SHA-256 of the file's bytes."""
    size_bytes: int
    saved_at: float
    """Wall-clock seconds (``time.time()`` of this machine) the file was renamed into place."""


_UNWRITABLE = re.compile("[\x00\ud800-\udfff]")


def _int64(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return None
    return value


def clean_text(text: str | None) -> str | None:
    """``text`` as every journal stores it: NULs and lone surrogates (which PostgreSQL or
    SQLite refuse) become U+FFFD; everything else, control characters included, is kept."""
    return text if text is None or not _UNWRITABLE.search(text) else _UNWRITABLE.sub("\ufffd", text)


def clean_event(event: Event) -> Event:
    """``event`` with every text field passed through :func:`clean_text`, and integers no
    journal column holds (beyond 64 bits: a server's absurd ``size_bytes``) left out."""
    cleaned = [clean_text(v) if isinstance(v, str) else _int64(v) for v in event]
    return event if cleaned == list(event) else Event._make(cleaned)


def event_from_task(task: Task, observed_at: float, polls: int) -> Event:
    """The event for ``task`` as fetched at ``observed_at`` after ``polls`` requests (its text
    cleaned by :func:`clean_text`, so that any journal accepts it)."""
    first = task.result[0] if task.result else None
    return clean_event(Event(
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
        task.started_at.timestamp() if task.started_at else None,
        task.progress, task.cost, task.estimated_seconds, task.original_task_id,
        json.dumps(task.metadata, default=str, sort_keys=True) if task.metadata is not None else None,
    ))  # fmt: skip


class Store(Protocol):
    """Where a watcher journals what it watches and observes."""

    def add_watched(self, items: Iterable[Watched], *, wait: float | None = None) -> None:
        """Record tasks a watcher started watching (ignores ones already known).

        With ``wait``, give up after about ``wait`` seconds of contention (``JournalBusyError``).
        """

    def add(self, event: Event, *, wait: float | None = None) -> None:
        """Record one event durably, before it is shown (``wait`` as for :meth:`add_watched`)."""

    def add_many(self, events: Iterable[Event], *, wait: float | None = None) -> None:
        """Record events durably, all or none (``wait`` as for :meth:`add_watched`)."""

    def set_predictions(self, items: Iterable[tuple[str, float]], *, wait: float | None = None) -> None:
        """Record predicted latencies (``completed_at - created_at``, seconds) of watched tasks.

        The first prediction of a task wins; unwatched tasks and NaN predictions are ignored.
        One transaction (``wait`` as for :meth:`add_watched`).
        """

    def add_results(self, items: Iterable[SavedResult], *, wait: float | None = None) -> None:
        """Record saved result files, one transaction; a file saved again replaces its row
        (``wait`` as for :meth:`add_watched`)."""

    def results(self, task_ids: Iterable[str] | None = None) -> list[SavedResult]:
        """The saved result files (of these tasks), by task id and index."""

    def events(self) -> list[Event]:
        """Every event, in the order observed."""

    def watched(self) -> list[Watched]:
        """Every task ever watched, first seen first."""

    def unfinished(self, base_url: str) -> list[str]:
        """Ids watched against ``base_url`` whose last event is not an end."""

    def recent_ends(self, limit: int, base_url: str | None = None) -> list[Event]:
        """The latest ``limit`` succeeded/failed events (to learn latencies from), oldest first;
        with ``base_url``, only those of tasks watched against it."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""

    def close(self) -> None:
        """Release resources (a second call does nothing)."""


class MemoryStore:
    """A journal in memory, lost with the process (``store=None``).

    Events are kept column-wise, so that a history of many tasks builds fast. ``wait`` is
    accepted and ignored (nothing else holds a lock for long); closing releases nothing and
    the store stays readable. Like a SQL journal, an event already recorded (same task,
    status, time and request count) is not recorded again.
    """

    def __init__(self) -> None:
        self._cols: dict[str, list[Any]] = {name: [] for name in Event._fields}
        self._keys: set[tuple[Any, ...]] = set()
        self._watched: dict[str, Watched] = {}
        self._results: dict[tuple[str, int], SavedResult] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore(tasks={len(self._watched)}, events={len(self._cols['task_id'])})"

    def add_watched(self, items: Iterable[Watched], *, wait: float | None = None) -> None:
        """Record tasks a watcher started watching (``wait`` is ignored)."""
        rows = [Watched(*item) for item in items]
        with self._lock:
            for item in rows:
                self._watched.setdefault(item.task_id, item)

    def set_predictions(self, items: Iterable[tuple[str, float]], *, wait: float | None = None) -> None:
        """Record the first predicted latency of each watched task (``wait`` is ignored)."""
        rows = _predictions(items)
        with self._lock:
            for task_id, predicted in rows:
                known = self._watched.get(task_id)
                if known is not None and known.predicted_latency_s is None:
                    self._watched[task_id] = known._replace(predicted_latency_s=predicted)

    def correct_first_seen(
        self, items: Iterable[tuple[str, float, float]], *, wait: float | None = None
    ) -> None:
        """``(task_id, journalled, corrected)``: a first-seen time journalled before the
        server's clock was known, now on it (rows journalled otherwise are left alone)."""
        with self._lock:
            for task_id, old, new in items:
                known = self._watched.get(task_id)
                if known is not None and known.first_seen_at == old:
                    self._watched[task_id] = known._replace(first_seen_at=new)

    def add(self, event: Event, *, wait: float | None = None) -> None:
        """Record one event (``wait`` is ignored)."""
        self.add_many([event])

    def add_many(self, events: Iterable[Event], *, wait: float | None = None) -> None:
        """Record events (``wait`` is ignored)."""
        with self._lock:
            rows = [Event._make(e) for e in events]
            rows = [e for e in rows if _once(e, self._keys)]
            for column, values in zip(self._cols.values(), zip(*rows, strict=True), strict=False):
                column.extend(values)

    def add_results(self, items: Iterable[SavedResult], *, wait: float | None = None) -> None:
        """Record saved result files (``wait`` is ignored)."""
        rows = [SavedResult(*item) for item in items]
        with self._lock:
            for row in rows:
                self._results[(row.task_id, row.idx)] = row

    def results(self, task_ids: Iterable[str] | None = None) -> list[SavedResult]:
        """The saved result files (of these tasks), by task id and index."""
        wanted = None if task_ids is None else set(task_ids)
        with self._lock:
            rows = [r for r in self._results.values() if wanted is None or r.task_id in wanted]
        return sorted(rows, key=lambda r: (r.task_id, r.idx))

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

    def recent_ends(self, limit: int, base_url: str | None = None) -> list[Event]:
        """The latest ``limit`` succeeded/failed events (of tasks watched against ``base_url``)."""
        scope = None if base_url is None else {w.task_id for w in self.watched() if w.base_url == base_url}
        ends = [
            e for e in self.events() if e.status in _LEARNED_ENDS and (scope is None or e.task_id in scope)
        ]
        return ends[len(ends) - min(max(limit, 0), len(ends)) :]

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Mark the store closed (nothing to release)."""
        self._closed = True


def _once(event: Event, seen: set[tuple[Any, ...]]) -> bool:
    """True the first time ``event``'s identity (task, status, time, requests) is met."""
    key = (event.task_id, event.status, event.observed_at, event.polls)
    if key in seen:
        return False
    seen.add(key)
    return True


def with_pending(events: Iterable[Event], pending: Iterable[Event]) -> list[Event]:
    """A journal's ``events`` followed by those of ``pending`` it does not hold yet (each once)."""
    seen: set[tuple[Any, ...]] = set()
    return [e for e in [*events, *pending] if _once(e, seen)]


def _predictions(items: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """``(task_id, seconds)`` pairs as floats, NaN predictions left out (they predict nothing)."""
    pairs = [(task_id, float(predicted)) for task_id, predicted in items]
    return [(task_id, predicted) for task_id, predicted in pairs if not math.isnan(predicted)]


def _unfinished(watched: list[Watched], events: list[Event], base_url: str) -> list[str]:
    last = {e.task_id: e.status for e in events}
    return [w.task_id for w in watched if w.base_url == base_url and last.get(w.task_id) not in ENDED]


_SERVER_FIELDS = (
    ("server_started_at", "{real}"),
    ("progress", "{real}"),
    ("cost", "{real}"),
    ("estimated_seconds", "{real}"),
    ("original_task_id", "TEXT"),
    ("metadata", "TEXT"),
)
"""Event fields the API sends in some answers only: a task's summary keeps the latest sent."""
SERVER_FIELDS = tuple(name for name, _ in _SERVER_FIELDS)
_SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS watched (
    task_id TEXT PRIMARY KEY, base_url TEXT NOT NULL, first_seen_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq {serial},
    task_id TEXT NOT NULL, status TEXT NOT NULL, observed_at {real} NOT NULL, polls {int} NOT NULL,
    type TEXT, provider TEXT, model TEXT, created_at {real}, completed_at {real}, n_results {int},
    format TEXT, duration_s {real}, size_bytes {int}, error_code TEXT, error_message TEXT, raw TEXT
);
CREATE INDEX IF NOT EXISTS events_task ON events(task_id);
CREATE TABLE IF NOT EXISTS task_summary (
    task_id TEXT PRIMARY KEY, first_seq {int} NOT NULL, last_seq {int} NOT NULL,
    last_informative_seq {int}, first_seen_at {real}, started_at {real}, seen_end {real}, polls {int}
);
"""
_MIGRATIONS: tuple[str, ...] = (
    _SCHEMA_1,  # 0 -> 1: the schema of mh_notebook 0.1.0
    """
    CREATE INDEX watched_base_url ON watched(base_url, first_seen_at);
    CREATE INDEX events_status ON events(status);
    """,  # 1 -> 2: the journal is queried per base URL and for recent ends
    """
    ALTER TABLE watched ADD COLUMN predicted_latency_s {real}
    """,  # 2 -> 3: the poller's first latency prediction per task (NULL for older rows)
    """
    CREATE TABLE results (
        task_id TEXT NOT NULL, idx {int} NOT NULL, local_path TEXT NOT NULL, sha256 TEXT NOT NULL,
        size_bytes {int} NOT NULL, saved_at {real} NOT NULL, PRIMARY KEY (task_id, idx)
    )
    """,  # 3 -> 4: result files saved on this machine (TaskWatcher(save_to=...))
    """
    DELETE FROM events WHERE seq NOT IN (
        SELECT MIN(seq) FROM events GROUP BY task_id, status, observed_at, polls);
    UPDATE task_summary SET last_seq = (
        SELECT MAX(e.seq) FROM events AS e WHERE e.task_id = task_summary.task_id)
    WHERE last_seq NOT IN (SELECT seq FROM events);
    UPDATE task_summary SET last_informative_seq = (
        SELECT MAX(e.seq) FROM events AS e WHERE e.task_id = task_summary.task_id AND e.status <> 'expired')
    WHERE last_informative_seq NOT IN (SELECT seq FROM events);
    CREATE UNIQUE INDEX events_once ON events(task_id, status, observed_at, polls);
    CREATE TABLE leases (task_id TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at {real} NOT NULL)
    """,  # 4 -> 5: an event is written once however often its transaction is retried; leases
    ";".join(
        f"ALTER TABLE {table} ADD COLUMN {column} {kind}"
        for table in ("events", "task_summary")
        for column, kind in _SERVER_FIELDS
    ),  # 5 -> 6: what the documented API adds (list items, creation and retry answers)
    """
    CREATE TABLE results_by_host (
        task_id TEXT NOT NULL, idx {int} NOT NULL, host TEXT NOT NULL, local_path TEXT NOT NULL,
        sha256 TEXT NOT NULL, size_bytes {int} NOT NULL, saved_at {real} NOT NULL,
        PRIMARY KEY (task_id, idx, host)
    );
    INSERT INTO results_by_host (task_id, idx, host, local_path, sha256, size_bytes, saved_at)
        SELECT task_id, idx, '', local_path, sha256, size_bytes, saved_at FROM results;
    DROP TABLE results;
    ALTER TABLE results_by_host RENAME TO results
    """,  # 6 -> 7: saved files per machine (a team journal is shared); older rows: host ''
)
"""SQL scripts (dialect slots in braces); ``_MIGRATIONS[i]`` upgrades version ``i`` to ``i + 1``."""
SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema version this package writes (it reads and upgrades every older one)."""
_BUSY_MS = 30_000


class SQLJournal:
    """The journal's schema, migrations and queries, written once for every SQL database.

    A subclass opens the database and provides ``_cursor(write=, wait=)`` (a cursor in a
    transaction, ``JournalBusyError`` when ``wait`` runs out) and ``location`` (for messages,
    never with a password); :mod:`mh_notebook.dialect` fills in what differs.
    """

    location: str

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._sql: dict[str, str] = {}
        self.host = socket.gethostname()
        """This machine, as its saved files are recorded (rows of others' are not ours)."""

    def _q(self, text: str) -> str:
        """``text`` in this database's dialect (cached)."""
        if text not in self._sql:
            self._sql[text] = self.dialect.sql(text)
        return self._sql[text]

    def _cursor(self, *, write: bool, wait: float | None) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _after_event(self, cur: Any, task_id: str) -> None:
        """Called in the transaction that journalled a change of ``task_id`` (a hook)."""

    def _check_version(self, cur: Any) -> int:
        """The schema version; ``JournalError`` if it is newer than ours or not a journal."""
        version, tables = self.dialect.schema_version(cur)
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {self.location} has schema version {version}, this mh_notebook "
                f"reads versions up to {SCHEMA_VERSION}; upgrade mh_notebook or use another journal"
            )
        if version == 0 and tables:
            raise JournalError(
                f"{self.location} is not an mh_notebook journal (schema version 0 with tables "
                f"{tables}); this mh_notebook reads versions up to {SCHEMA_VERSION}; use another journal"
            )
        return version

    def _migrate(self, cur: Any) -> None:
        """Apply every pending migration (the caller holds the write lock, in one transaction)."""
        version = self._check_version(cur)
        for script in _MIGRATIONS[version:]:
            for statement in filter(str.strip, script.split(";")):
                cur.execute(self._q(statement))
        if version < SCHEMA_VERSION:
            self.dialect.set_schema_version(cur, SCHEMA_VERSION)

    def _write_rows(self, sql: str, rows: Iterable[Sequence[Any]], wait: float | None) -> None:
        with self._cursor(write=True, wait=wait) as cur:
            for row in rows:
                cur.execute(self._q(sql), row)

    def add_watched(self, items: Iterable[Watched], *, wait: float | None = None) -> None:
        """Record tasks a watcher started watching (one transaction; ``wait`` as for :meth:`add_many`)."""
        self._write_rows(_WATCH_SQL, [Watched(*item) for item in items], wait)

    def set_predictions(self, items: Iterable[tuple[str, float]], *, wait: float | None = None) -> None:
        """Record the first predicted latency of each watched task (one transaction; ``wait``
        as for :meth:`add_many`): later predictions and unwatched tasks change nothing."""
        self._write_rows(_PREDICT_SQL, [(p, task_id) for task_id, p in _predictions(items)], wait)

    def correct_first_seen(
        self, items: Iterable[tuple[str, float, float]], *, wait: float | None = None
    ) -> None:
        """``(task_id, journalled, corrected)``: a first-seen time journalled before the
        server's clock was known, now on it (one transaction; ``wait`` as for
        :meth:`add_many`). Rows journalled otherwise (earlier, elsewhere) are left alone."""
        self._write_rows(_FIRST_SEEN_SQL, [(new, task_id, old) for task_id, old, new in items], wait)

    def add(self, event: Event, *, wait: float | None = None) -> None:
        """Record one event, committed before this returns (``wait`` as for :meth:`add_many`)."""
        self.add_many([event], wait=wait)

    def add_many(self, events: Iterable[Event], *, wait: float | None = None) -> None:
        """Record events in one transaction (the per-task summary is kept up to date).

        Idempotent: an event already journalled (same task, status, time and request count)
        is not written again. Without ``wait``, waits as long as the database's own limit for
        another writer; with ``wait``, gives up after about ``wait`` seconds with
        :class:`JournalBusyError` and writes nothing.
        """
        with self._cursor(write=True, wait=wait) as cur:
            for event in events:
                cur.execute(self._q(_EVENT_SQL), event)
                row = cur.fetchone()
                if row is not None:  # new: the summary and the others hear of it
                    cur.execute(self._q(_SUMMARY_SQL), _summary_args(event, row[0]))
                    self._after_event(cur, event.task_id)

    def add_results(self, items: Iterable[SavedResult], *, wait: float | None = None) -> None:
        """Record saved result files in one transaction; a file saved again replaces its row
        (``wait`` as for :meth:`add_many`)."""
        self._write_rows(_SAVE_RESULT_SQL, [(*SavedResult(*item), self.host) for item in items], wait)

    def results(self, task_ids: Iterable[str] | None = None) -> list[SavedResult]:
        """The result files saved on this machine (of these tasks), by task id and index
        (rows journalled before machines were told apart count for every machine)."""
        select = f"SELECT host, {_RESULT_COLS} FROM results"
        rows = (
            self._query(select) if task_ids is None else self._query_in(select + " WHERE task_id", task_ids)
        )
        mine: dict[tuple[str, int], SavedResult] = {}
        for host, *values in sorted(rows, key=lambda row: row[0] != ""):  # this machine's win
            if host in ("", self.host):
                row = SavedResult(*values)
                mine[(row.task_id, row.idx)] = row
        return sorted(mine.values(), key=lambda r: (r.task_id, r.idx))

    def latest_events(self, task_ids: Iterable[str], *, wait: float | None = None) -> list[Event]:
        """The last informative event (not ``expired``, if any) of each of these tasks; with
        ``wait``, ``JournalBusyError`` if the journal stays busy that long."""
        return [Event(*row) for row in self._query_in(_LATEST_SQL, task_ids, wait)]

    def events(self) -> list[Event]:
        """Every event, in the order written."""
        return [Event(*row) for row in self._query(f"SELECT {_COLS} FROM events ORDER BY seq")]

    def reduced_rows(self) -> list[tuple[Any, ...]]:
        """One row per task, watched or observed (``history.REDUCED_COLUMNS``), by the database."""
        return self._query(_REDUCE_SQL, (self.host, self.host))

    def watched(self) -> list[Watched]:
        """Every task ever watched."""
        rows = self._query(f"SELECT {_WATCHED_COLS} FROM watched ORDER BY first_seen_at")
        return [Watched(*row) for row in rows]

    def unfinished(self, base_url: str) -> list[str]:
        """Ids watched against ``base_url`` whose last event is not an end."""
        return [r[0] for r in self._query(_UNFINISHED_SQL, (base_url, *sorted(ENDED)))]

    def recent_ends(self, limit: int, base_url: str | None = None) -> list[Event]:
        """The latest ``limit`` succeeded/failed events (of tasks watched against ``base_url``)."""
        scope, args = ("", ()) if base_url is None else (_SCOPE_SQL, (base_url,))
        rows = self._query(_RECENT_ENDS_SQL.format(scope=scope), (*args, *_LEARNED_ENDS, max(limit, 0)))
        return [Event(*row) for row in reversed(rows)]

    def _query(self, sql: str, args: Sequence[Any] = (), wait: float | None = None) -> list[tuple[Any, ...]]:
        with self._cursor(write=False, wait=wait) as cur:
            cur.execute(self._q(sql), args)
            return [tuple(row) for row in cur.fetchall()]

    def _query_in(
        self, prefix: str, values: Iterable[str], wait: float | None = None
    ) -> list[tuple[Any, ...]]:
        """``prefix IN (...)`` over ``values``, in bounded chunks."""
        wanted, rows = sorted(set(values)), []
        for at in range(0, len(wanted), 500):
            chunk = tuple(wanted[at : at + 500])
            rows += self._query(f"{prefix} IN ({', '.join('?' * len(chunk))})", chunk, wait)
        return rows


class SQLiteStore(SQLJournal):
    """A journal in one SQLite file (WAL): durable, shareable between processes on one machine.

    Opening applies the pending schema migrations (one transaction). With ``create=False``
    a missing file is a ``JournalError`` and nothing is created.
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        _refuse_url(path, "SQLiteStore takes a file path")
        super().__init__(SQLiteDialect())
        self.path = Path(path).expanduser()
        self.location = repr(str(self.path))
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = self._open(create)
        self.identity: tuple[object, ...] = _file_identity(self.path)
        """The file itself, however its path is spelled (symlinks, ``..``, hard links)."""
        self.replayed = self._replay_unwritten()
        """Events written at opening from :func:`unwritten_path` (a stop that could not write)."""

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _open(self, create: bool) -> sqlite3.Connection:
        if not create and not self.path.exists():
            raise JournalError(f"no journal at {self.location}")
        try:
            db = self._connect(create)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise self._cannot_open(exc) from None
        try:
            # Switching a new file to WAL can answer "locked" at once while another process
            # sets it up (the busy timeout does not cover it): retry for a while.
            for attempt in Retrying(
                retry=retry_if_exception(self.dialect.is_busy),
                stop=stop_after_delay(30),
                wait=wait_random(0.01, 0.2),
                reraise=True,
            ):
                with attempt:
                    self._set_up(db)
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.DatabaseError | OSError):
                raise self._cannot_open(exc) from None
            raise
        return db

    def _connect(self, create: bool) -> sqlite3.Connection:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            target = str(self.path)
        else:  # SQLite itself must not create the file (it may have gone since the check)
            target = f"{self.path.resolve().as_uri()}?mode=rw"
        return sqlite3.connect(
            target, timeout=30, check_same_thread=False, isolation_level=None, uri=not create
        )

    def _cannot_open(self, exc: BaseException) -> JournalError:
        return JournalError(f"cannot open the journal {self.location}: {exc}")

    def _set_up(self, db: sqlite3.Connection) -> None:
        """Refuse a file this package cannot read (untouched), then WAL mode and pending migrations."""
        db.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
        current = self._check_version(db.cursor())
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: survives a killed process
        if current < SCHEMA_VERSION:
            with sqlite_transaction(db):  # many processes may open a new file at once
                self._migrate(db.cursor())  # reads the version again, under the lock

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._db is None

    @contextmanager
    def _connection(self, wait: float | None = None) -> Iterator[sqlite3.Connection]:
        """The connection, held under the store's lock (``JournalError`` once closed); with
        ``wait``, ``JournalBusyError`` if another thread of this process holds it that long."""
        if not self._lock.acquire(timeout=-1 if wait is None else max(wait, 0.0)):
            raise JournalBusyError(
                f"the journal {self.location} stayed busy in this process for {wait} s; nothing was written"
            )
        try:
            if self._db is None:
                raise JournalError(f"the journal {self.location} is closed")
            yield self._db
        finally:
            self._lock.release()

    @contextmanager
    def _cursor(self, *, write: bool, wait: float | None) -> Iterator[Any]:
        """Reads as they come; writes in ``BEGIN IMMEDIATE`` (``wait``: see :meth:`add_many`)."""
        start = time.monotonic()
        with self._connection(wait) as db:  # a bounded read gives way to a long write here too
            if write:
                left = None if wait is None else max(0.0, wait - (time.monotonic() - start))
                with self._bounded_wait(db, left), sqlite_transaction(db):
                    yield db.cursor()
                return
            try:
                yield db.cursor()
            except sqlite3.DatabaseError as exc:
                raise JournalError(f"the journal {self.location} cannot be read: {exc}") from None

    @contextmanager
    def _bounded_wait(self, db: sqlite3.Connection, wait: float | None) -> Iterator[None]:
        """With ``wait``: SQLite waits about ``wait`` s for the lock, then ``JournalBusyError``."""
        if wait is None:
            yield
            return
        db.execute(f"PRAGMA busy_timeout = {max(0, round(wait * 1000))}")
        try:
            yield
        except sqlite3.OperationalError as exc:
            if not self.dialect.is_busy(exc):
                raise
            raise JournalBusyError(
                f"the journal {self.location} stayed locked by another connection for {wait} s; "
                "nothing was written"
            ) from None
        finally:
            db.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")

    def close(self) -> None:
        """Close the connection (a second call does nothing)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _replay_unwritten(self) -> int:
        """Write the events a stopped watcher could not write (:func:`unwritten_path`); the
        file is removed once they are in, and left for the next opening if the journal is busy."""
        spill = unwritten_path(self.path)
        try:
            text = spill.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0
        unwritten = read_unwritten(text)
        try:  # each write is idempotent: a replay twice (two processes) writes nothing twice
            self.add_watched(unwritten.watched, wait=_REPLAY_WAIT)
            self.add_many(unwritten.events, wait=_REPLAY_WAIT)
            self.add_results(unwritten.saved, wait=_REPLAY_WAIT)
        except JournalError as exc:
            log.warning("%d unwritten events stay in %s: %s", len(unwritten.events), spill, exc.message)
            return 0
        _drop_replayed(spill, text)
        return len(unwritten.events)


_REPLAY_WAIT = 1.0


def _file_identity(path: Path) -> tuple[object, ...]:
    """The file at ``path`` however the path is spelled: its device and inode (its resolved
    path where there is no file, e.g. SQLite's ``:memory:``)."""
    try:
        stat = os.stat(path)
    except OSError:
        return ("sqlite", str(path.resolve()))
    return ("sqlite", stat.st_dev, stat.st_ino)


class Unwritten(NamedTuple):
    """What a watcher could not write to its journal before :meth:`~TaskWatcher.stop` returned."""

    watched: list[Watched]
    events: list[Event]
    saved: list[SavedResult]


def unwritten_path(journal: Path) -> Path:
    """Where what could not be written to the SQLite file ``journal`` waits (JSON lines); the
    next :class:`SQLiteStore` opening the file writes it in and removes this file."""
    return journal.with_name(journal.name + ".unwritten.jsonl")


def write_unwritten(journal: Path, unwritten: Unwritten) -> Path:
    """Append ``unwritten`` to :func:`unwritten_path` of ``journal`` (fsynced); returns that path."""
    spill = unwritten_path(journal)
    parts = (("watched", unwritten.watched), ("event", unwritten.events), ("saved", unwritten.saved))
    lines = "".join(
        json.dumps({"kind": kind, "row": list(row)}) + "\n" for kind, rows in parts for row in rows
    )
    with spill.open("a", encoding="utf-8") as out:
        out.write(lines)
        out.flush()
        os.fsync(out.fileno())
    return spill


def read_unwritten(text: str) -> Unwritten:
    """The rows of an :func:`unwritten_path` file (a torn last line is skipped)."""
    found = Unwritten([], [], [])
    makers: dict[str, tuple[list[Any], Callable[..., Any]]] = {
        "watched": (found.watched, Watched),
        "event": (found.events, Event),
        "saved": (found.saved, SavedResult),
    }
    for line in text.splitlines():
        try:
            item = json.loads(line)
            rows, make = makers[item["kind"]]
            rows.append(make(*item["row"]))
        except (ValueError, KeyError, TypeError):
            log.warning("an unreadable line of unwritten journal rows was skipped: %.80r", line)
    return found


def _drop_replayed(spill: Path, replayed: str) -> None:
    """Remove ``spill`` now that ``replayed`` is written, keeping what was appended meanwhile."""
    try:
        now = spill.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    if now.startswith(replayed) and len(now) > len(replayed):
        spill.write_text(now[len(replayed) :], encoding="utf-8")
    elif now.startswith(replayed):
        spill.unlink(missing_ok=True)


_COLS = ", ".join(Event._fields)
_WATCHED_COLS = ", ".join(Watched._fields)
_RESULT_COLS = ", ".join(SavedResult._fields)


def _marks(fields: Sequence[str]) -> str:
    return ", ".join("?" * len(fields))


_EVENT_SQL = f"""
INSERT INTO events ({_COLS}) VALUES ({_marks(Event._fields)}) ON CONFLICT DO NOTHING RETURNING seq
"""
_WATCH_SQL = (
    f"INSERT INTO watched ({_WATCHED_COLS}) VALUES ({_marks(Watched._fields)}) ON CONFLICT DO NOTHING"
)
_SAVE_RESULT_SQL = f"""
INSERT INTO results ({_RESULT_COLS}, host) VALUES ({_marks(SavedResult._fields)}, ?)
ON CONFLICT (task_id, idx, host) DO UPDATE SET local_path = excluded.local_path, sha256 = excluded.sha256,
    size_bytes = excluded.size_bytes, saved_at = excluded.saved_at
"""
_PREDICT_SQL = "UPDATE watched SET predicted_latency_s = ? WHERE task_id = ? AND predicted_latency_s IS NULL"
_FIRST_SEEN_SQL = "UPDATE watched SET first_seen_at = ? WHERE task_id = ? AND first_seen_at = ?"
_SCOPE_SQL = "JOIN watched AS w ON w.task_id = e.task_id AND w.base_url = ?"
_RECENT_ENDS_SQL = f"""
SELECT {", ".join(f"e.{name}" for name in Event._fields)} FROM events AS e {{scope}}
WHERE e.status IN ({", ".join("?" * len(_LEARNED_ENDS))}) ORDER BY e.seq DESC LIMIT ?
"""
_LATEST_SQL = f"""
SELECT {", ".join(f"e.{name}" for name in Event._fields)} FROM task_summary AS s
JOIN events AS e ON e.seq = COALESCE(s.last_informative_seq, s.last_seq) WHERE s.task_id"""
_UNFINISHED_SQL = f"""
SELECT w.task_id FROM watched AS w
LEFT JOIN task_summary AS s ON s.task_id = w.task_id
LEFT JOIN events AS e ON e.seq = s.last_seq
WHERE w.base_url = ? AND (e.status IS NULL OR e.status NOT IN ({", ".join("?" * len(ENDED))}))
ORDER BY w.first_seen_at
"""
_EVENT_PART = """e.status, e.type, e.provider, e.model, e.created_at, e.completed_at, e.n_results,
       e.format, e.duration_s, e.size_bytes, e.error_code, e.error_message"""
_SERVER_PART = ", ".join(f"s.{name}" for name in SERVER_FIELDS)
_REDUCE_SQL = f"""
SELECT w.task_id, w.base_url, {_EVENT_PART},
       CASE WHEN s.first_seen_at IS NULL OR w.first_seen_at < s.first_seen_at
            THEN w.first_seen_at ELSE s.first_seen_at END,
       s.started_at, s.seen_end, s.polls, w.predicted_latency_s,
       (SELECT r.local_path FROM results AS r
        WHERE r.task_id = w.task_id AND r.idx = 0 AND r.host IN (?, '') ORDER BY r.host DESC LIMIT 1),
       {_SERVER_PART}
FROM watched AS w
LEFT JOIN task_summary AS s ON s.task_id = w.task_id
LEFT JOIN events AS e ON e.seq = COALESCE(s.last_informative_seq, s.last_seq)
UNION ALL
SELECT s.task_id, NULL, {_EVENT_PART}, s.first_seen_at, s.started_at, s.seen_end, s.polls, NULL,
       (SELECT r.local_path FROM results AS r
        WHERE r.task_id = s.task_id AND r.idx = 0 AND r.host IN (?, '') ORDER BY r.host DESC LIMIT 1),
       {_SERVER_PART}
FROM task_summary AS s JOIN events AS e ON e.seq = COALESCE(s.last_informative_seq, s.last_seq)
WHERE s.task_id NOT IN (SELECT task_id FROM watched)
"""
"""Every task (watched or observed), reduced to ``history.REDUCED_COLUMNS``."""


def _earliest(col: str) -> str:
    """SQL for the earlier of the stored and the new value, either of which may be NULL."""
    old, new = f"task_summary.{col}", f"excluded.{col}"
    return (
        f"CASE WHEN {old} IS NULL THEN {new} WHEN {new} IS NULL THEN {old} ELSE {{least}}({old}, {new}) END"
    )


_SUMMARY_COLS = (
    "task_id, first_seq, last_seq, last_informative_seq, first_seen_at, started_at, seen_end, polls, "
    + ", ".join(SERVER_FIELDS)
)
_LATEST_SENT = ",\n    ".join(
    f"{name} = CASE WHEN excluded.{name} IS NULL OR task_summary.last_seq > excluded.last_seq "
    f"THEN COALESCE(task_summary.{name}, excluded.{name}) ELSE excluded.{name} END"
    for name in SERVER_FIELDS
)
"""A server field of a task's summary: the value of its latest event that sent one."""
_SUMMARY_SQL = f"""
INSERT INTO task_summary ({_SUMMARY_COLS}) VALUES ({_marks(_SUMMARY_COLS.split(", "))})
ON CONFLICT(task_id) DO UPDATE SET
    last_seq = {{greatest}}(task_summary.last_seq, excluded.last_seq),
    last_informative_seq = COALESCE(
        {{greatest}}(task_summary.last_informative_seq, excluded.last_informative_seq),
        task_summary.last_informative_seq, excluded.last_informative_seq),
    first_seen_at = {_earliest("first_seen_at")},
    started_at = {_earliest("started_at")},
    seen_end = {_earliest("seen_end")},
    polls = {{greatest}}(task_summary.polls, excluded.polls),
    {_LATEST_SENT}
"""
_TERMINAL = ("succeeded", "failed", "cancelled")


def _summary_args(event: Event, seq: int | None) -> tuple[Any, ...]:
    """The ``task_summary`` row one event contributes (merged by ``_SUMMARY_SQL``)."""
    at = event.observed_at
    return (
        event.task_id, seq, seq, seq if event.status != "expired" else None, at,
        at if event.status == "running" else None, at if event.status in _TERMINAL else None, event.polls,
        *(getattr(event, name) for name in SERVER_FIELDS),
    )  # fmt: skip


def default_journal_path() -> Path:
    """Where the default journal lives: the per-user data directory of mh_notebook."""
    from platformdirs import user_data_path

    return user_data_path("mh_notebook") / "journal.sqlite"


def _refuse_url(path: str | Path, what: str = "a journal is a file path or a postgresql:// URL") -> None:
    """``JournalError`` for ``scheme://...`` that is not a journal this version can open."""
    text = str(path)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise JournalError(
            f"journal URLs ({scheme}://...) are not supported here by this version of mh_notebook: {what}"
        )


def open_store(store: Store | str | Path | None, *, create: bool = True) -> Store:
    """A store from what a user passes: a store, a path, ``"default"``, a ``postgresql://``
    URL (a team journal) or ``None`` (memory).

    With ``create=False`` a journal that does not exist is a ``JournalError``.
    """
    if store is None:
        return MemoryStore()
    if isinstance(store, str | Path):
        text = str(store)
        if is_postgres_url(text):
            from .pgstore import PostgresStore

            return PostgresStore(text, create=create)
        _refuse_url(text)
        return SQLiteStore(default_journal_path() if text == "default" else store, create=create)
    return store
