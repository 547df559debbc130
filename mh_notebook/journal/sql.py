"""The journal in a SQL database: its queries and writes, written once for SQLite and
PostgreSQL (:mod:`~mh_notebook.journal.dialect` fills in what differs; the schema is
:mod:`~mh_notebook.journal.migrations`'s).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ..records import ENDED, ENDING, LEARNED_FROM, PER_TASK_FIELDS, SERVER_FIELDS, Event, TaskStatus
from .dialect import Dialect
from .migrations import MIGRATIONS, SCHEMA_VERSION
from .protocol import (
    AccountWatch,
    Capabilities,
    JournalError,
    ObservedFix,
    OwnJournal,
    SavedResult,
    Watched,
    usable_predictions,
)

__all__ = ["SQLJournal"]

_ENDED = sorted(map(str, ENDED))
_ENDING = sorted(map(str, ENDING))
_LEARNED = [str(status) for status in LEARNED_FROM]


class SQLJournal(OwnJournal):
    """The journal's schema, migrations and queries, written once for every SQL database.

    A subclass opens the database and provides ``_cursor(write=, wait=)`` (a cursor in a
    transaction, ``JournalBusyError`` when ``wait`` runs out) and ``location`` (for messages,
    never with a password); :mod:`mh_notebook.journal.dialect` fills in what differs.
    """

    location: str
    capabilities = Capabilities(reduced_rows=True)

    """The database reduces the journal itself (:meth:`reduced_rows`)."""

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
        for script in MIGRATIONS[version:]:
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
        self._write_rows(_PREDICT_SQL, [(p, task_id) for task_id, p in usable_predictions(items)], wait)

    def correct_first_seen(
        self, items: Iterable[tuple[str, float, float]], *, wait: float | None = None
    ) -> None:
        """``(task_id, journalled, corrected)``: a first-seen time journalled before the
        server's clock was known, now on it (one transaction; ``wait`` as for
        :meth:`add_many`). Rows journalled otherwise (earlier, elsewhere) are left alone."""
        self._write_rows(_FIRST_SEEN_SQL, [(new, task_id, old) for task_id, old, new in items], wait)

    def correct_observed(self, items: Iterable[ObservedFix], *, wait: float | None = None) -> None:
        """Put events journalled before the server's clock was known on it, and the times
        their tasks' summaries take from them (one transaction; ``wait`` as for
        :meth:`add_many`). Events not journalled, or whose corrected identity is, are left alone."""
        fixes = [ObservedFix(*item) for item in items]
        with self._cursor(write=True, wait=wait) as cur:
            for fix in fixes:
                cur.execute(self._q(_OBSERVED_SQL), (fix.corrected, *fix.old_key, *fix.new_key))
            for task_id in sorted({fix.task_id for fix in fixes}):
                cur.execute(self._q(_RESUMMARY_SQL), (str(TaskStatus.RUNNING), *_ENDING, task_id))

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

    def latest_events(self, task_ids: list[str], *, wait: float | None = None) -> list[Event]:
        """The last informative event (not ``expired``, if any) of each of these tasks; with
        ``wait``, ``JournalBusyError`` if the journal stays busy that long."""
        return [Event(*row) for row in self._query_in(_LATEST_SQL, task_ids, wait)]

    def events(self) -> list[Event]:
        """Every event, in the order written."""
        return [Event(*row) for row in self._query(f"SELECT {_COLS} FROM events ORDER BY seq")]

    def reduced_rows(self) -> list[tuple[Any, ...]]:
        """One row per task, watched or observed (``records.REDUCED_COLUMNS``), by the database."""
        return self._query(_REDUCE_SQL, (self.host, self.host))

    def set_account_watch(self, row: AccountWatch, *, wait: float | None = None) -> None:
        """Record an account watch, or how far it got (replaces the row of its API and filters)."""
        self._write_rows(_ACCOUNT_SQL, [(row.filters, *row)], wait)

    def drop_account_watch(self, row: AccountWatch, *, wait: float | None = None) -> None:
        """Forget the account watch of ``row``'s API and filters."""
        self._write_rows(_DROP_ACCOUNT_SQL, [(row.base_url, row.filters)], wait)

    def account_watches(self, base_url: str) -> list[AccountWatch]:
        """The account watches recorded against ``base_url``."""
        rows = self._query(f"SELECT {_ACCOUNT_COLS} FROM account_watches WHERE base_url = ?", (base_url,))
        return [AccountWatch(*row) for row in rows]

    def watched(self) -> list[Watched]:
        """Every task ever watched."""
        rows = self._query(f"SELECT {_WATCHED_COLS} FROM watched ORDER BY first_seen_at")
        return [Watched(*row) for row in rows]

    def unfinished(self, base_url: str) -> list[str]:
        """Ids watched against ``base_url`` whose last event is not an end."""
        return [r[0] for r in self._query(_UNFINISHED_SQL, (base_url, *_ENDED))]

    def recent_ends(self, limit: int, base_url: str | None = None) -> list[Event]:
        """The latest ``limit`` succeeded/failed events (of tasks watched against ``base_url``)."""
        scope, args = ("", ()) if base_url is None else (_SCOPE_SQL, (base_url,))
        rows = self._query(_RECENT_ENDS_SQL.format(scope=scope), (*args, *_LEARNED, max(limit, 0)))
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
_ACCOUNT_COLS = ", ".join(AccountWatch._fields)
_ACCOUNT_SQL = f"""
INSERT INTO account_watches (filters, {_ACCOUNT_COLS}) VALUES (?, {_marks(AccountWatch._fields)})
ON CONFLICT (base_url, filters) DO UPDATE SET since = excluded.since
"""
_DROP_ACCOUNT_SQL = "DELETE FROM account_watches WHERE base_url = ? AND filters = ?"
_SAVE_RESULT_SQL = f"""
INSERT INTO results ({_RESULT_COLS}, host) VALUES ({_marks(SavedResult._fields)}, ?)
ON CONFLICT (task_id, idx, host) DO UPDATE SET local_path = excluded.local_path, sha256 = excluded.sha256,
    size_bytes = excluded.size_bytes, saved_at = excluded.saved_at
"""
_PREDICT_SQL = "UPDATE watched SET predicted_latency_s = ? WHERE task_id = ? AND predicted_latency_s IS NULL"
_FIRST_SEEN_SQL = "UPDATE watched SET first_seen_at = ? WHERE task_id = ? AND first_seen_at = ?"
_OBSERVED_SQL = """
UPDATE events SET observed_at = ? WHERE task_id = ? AND status = ? AND observed_at = ? AND polls = ?
AND NOT EXISTS (SELECT 1 FROM events AS o
                WHERE o.task_id = ? AND o.status = ? AND o.observed_at = ? AND o.polls = ?)
"""
_FIRST_OBSERVED = "SELECT MIN(e.observed_at) FROM events AS e WHERE e.task_id = task_summary.task_id"
_RESUMMARY_SQL = f"""
UPDATE task_summary SET first_seen_at = ({_FIRST_OBSERVED}),
    started_at = ({_FIRST_OBSERVED} AND e.status = ?),
    seen_end = ({_FIRST_OBSERVED} AND e.status IN ({_marks(_ENDING)}))
WHERE task_id = ?
"""
"""A task summary's times taken again from its events (as ``_SUMMARY_SQL`` merges them)."""
_SCOPE_SQL = "JOIN watched AS w ON w.task_id = e.task_id AND w.base_url = ?"
_RECENT_ENDS_SQL = f"""
SELECT {", ".join(f"e.{name}" for name in Event._fields)} FROM events AS e {{scope}}
WHERE e.status IN ({_marks(_LEARNED)}) ORDER BY e.seq DESC LIMIT ?
"""
_LATEST_SQL = f"""
SELECT {", ".join(f"e.{name}" for name in Event._fields)} FROM task_summary AS s
JOIN events AS e ON e.seq = COALESCE(s.last_informative_seq, s.last_seq) WHERE s.task_id"""
_UNFINISHED_SQL = f"""
SELECT w.task_id FROM watched AS w
LEFT JOIN task_summary AS s ON s.task_id = w.task_id
LEFT JOIN events AS e ON e.seq = s.last_seq
WHERE w.base_url = ? AND (e.status IS NULL OR e.status NOT IN ({_marks(_ENDED)}))
ORDER BY w.first_seen_at
"""
_EVENT_PART = ", ".join(f"e.{name}" for name in PER_TASK_FIELDS)
_SERVER_PART = ", ".join(f"s.{name}" for name in SERVER_FIELDS)
_REDUCE_SQL = f"""
SELECT w.task_id, w.base_url, {_EVENT_PART},
       CASE WHEN s.first_seen_at IS NULL OR w.first_seen_at < s.first_seen_at
            THEN w.first_seen_at ELSE s.first_seen_at END,
       s.started_at, s.seen_end, s.polls, w.predicted_latency_s,
       COALESCE(mine.local_path, shared.local_path),
       {_SERVER_PART}
FROM watched AS w
LEFT JOIN task_summary AS s ON s.task_id = w.task_id
LEFT JOIN events AS e ON e.seq = COALESCE(s.last_informative_seq, s.last_seq)
LEFT JOIN results AS mine ON mine.task_id = w.task_id AND mine.idx = 0 AND mine.host = ?
LEFT JOIN results AS shared ON shared.task_id = w.task_id AND shared.idx = 0 AND shared.host = ''
UNION ALL
SELECT s.task_id, NULL, {_EVENT_PART}, s.first_seen_at, s.started_at, s.seen_end, s.polls, NULL,
       COALESCE(mine.local_path, shared.local_path),
       {_SERVER_PART}
FROM task_summary AS s JOIN events AS e ON e.seq = COALESCE(s.last_informative_seq, s.last_seq)
LEFT JOIN watched AS w ON w.task_id = s.task_id
LEFT JOIN results AS mine ON mine.task_id = s.task_id AND mine.idx = 0 AND mine.host = ?
LEFT JOIN results AS shared ON shared.task_id = s.task_id AND shared.idx = 0 AND shared.host = ''
WHERE w.task_id IS NULL
"""
"""Every task (watched or observed), reduced to ``records.REDUCED_COLUMNS``, the same as
``history.reduce_events`` (tests/test_history.py checks it on random journals). A task's
``local_path`` is its first result saved on this machine, else one saved before machines
were told apart (host ``''``); outer joins throughout (no correlated subquery, no
``NOT IN``): PostgreSQL plans them as hash joins."""


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


def _summary_args(event: Event, seq: int | None) -> tuple[Any, ...]:
    """The ``task_summary`` row one event contributes (merged by ``_SUMMARY_SQL``)."""
    at = event.observed_at
    return (
        event.task_id, seq, seq, seq if event.status != TaskStatus.EXPIRED else None, at,
        at if event.status == TaskStatus.RUNNING else None,
        at if event.status in ENDING else None, event.polls,
        *(getattr(event, name) for name in SERVER_FIELDS),
    )  # fmt: skip
