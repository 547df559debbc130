"""A team journal on PostgreSQL: many notebooks and machines, one history, shared polling.

``TaskWatcher(store="postgresql://user@host:5432/db")`` (the password from the URL, or
from libpq's usual ``PGPASSWORD`` / ``~/.pgpass``) journals like a SQLite file does (the
same schema, the same migrations, the same queries, through :mod:`mh_notebook.dialect`),
and in addition:

- every write is idempotent (an event is unique by task, status, time and request count),
  so a transaction retried after a lost connection never counts anything twice;
- each journalled change is announced with ``NOTIFY mh_journal, '<task id>'``;
- a ``leases`` table lets the processes share the polling (see :mod:`mh_notebook.team`).

Needs psycopg 3 and psycopg-pool: ``pip install 'mh-notebook[postgres]'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .dialect import PostgresDialect
from .store import JournalBusyError, JournalError, SQLJournal

__all__ = ["PostgresStore"]

_EXTRA = "PostgreSQL journals need psycopg 3: pip install 'mh-notebook[postgres]'"
_MIGRATION_LOCK = 0x6D685F6E62  # "mh_nb": one process migrates at a time


def _psycopg() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise JournalError(_EXTRA) from None
    return psycopg, psycopg_pool


def _safe_location(url: str) -> str:
    """The URL without its password (for reprs and messages)."""
    psycopg, _ = _psycopg()
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://<unparsable>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


class PostgresStore(SQLJournal):
    """A journal in a PostgreSQL database, shared by every process that opens its URL.

    A small connection pool (``max_connections``) serves writes and reads; one more
    connection listens for the others' changes once :meth:`notifications` is first called.
    ``create=False`` refuses a database that holds no journal yet.
    """

    shared_polling = True
    """Watchers of this journal share the polling through leases (:mod:`mh_notebook.team`)."""

    def __init__(
        self, url: str, *, create: bool = True, max_connections: int = 4, connect_timeout: float = 10.0
    ) -> None:
        psycopg, psycopg_pool = _psycopg()
        self.location = _safe_location(url)
        self._url = url
        self._timeout = connect_timeout
        super().__init__(PostgresDialect())
        self._listener: Any = None
        try:
            self._pool = psycopg_pool.ConnectionPool(
                url,
                min_size=1,
                max_size=max_connections,
                timeout=connect_timeout,
                kwargs={"connect_timeout": max(1, round(connect_timeout))},
                open=False,
                name="mh-journal",
                num_workers=1,
            )
            self._pool.open(wait=True, timeout=connect_timeout)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise self._cannot_open(exc) from None
        try:
            self._set_up(create)
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"

    def _cannot_open(self, exc: BaseException) -> JournalError:
        detail = str(exc).replace(self._url, self.location)
        return JournalError(f"cannot open the journal {self.location}: {type(exc).__name__}: {detail}")

    def _set_up(self, create: bool) -> None:
        with self._cursor(write=True, wait=None) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            version, _ = self.dialect.schema_version(cur)
            if version == 0 and not create:
                raise JournalError(f"no journal in {self.location}")
            self._migrate(cur)

    @contextmanager
    def _cursor(self, *, write: bool, wait: float | None) -> Iterator[Any]:
        """A cursor in a transaction; with ``wait``, neither the pool nor a row lock may
        hold us longer than about that (``JournalBusyError``, nothing written)."""
        psycopg, psycopg_pool = _psycopg()
        if self._pool is None:
            raise JournalError(f"the journal {self.location} is closed")
        try:
            with self._pool.connection(timeout=wait) as conn, conn.transaction(), conn.cursor() as cur:
                if write and wait is not None:
                    cur.execute(f"SET LOCAL lock_timeout = '{max(1, round(wait * 1000))}ms'")
                yield cur
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            if self.dialect.is_busy(exc):
                raise JournalBusyError(
                    f"the journal {self.location} could not be written now ({type(exc).__name__}); "
                    "nothing was written"
                ) from None
            raise JournalError(f"the journal {self.location}: {type(exc).__name__}: {exc}") from None

    def _after_event(self, cur: Any, task_id: str) -> None:
        cur.execute("SELECT pg_notify('mh_journal', %s)", (task_id,))

    # ------------------------------------------------------- shared polling
    def claim_leases(self, task_ids: list[str], holder: str, until: float, now: float) -> set[str]:
        """Take or renew the leases of these tasks that are free, expired or ours already
        (rows another process is taking at this moment are skipped); returns the ones held."""
        with self._cursor(write=True, wait=0.5) as cur:
            cur.execute(
                "INSERT INTO leases (task_id, holder, expires_at) "
                "SELECT t, '', 0 FROM unnest(%s::text[]) AS t ON CONFLICT DO NOTHING",
                (task_ids,),
            )
            cur.execute(
                "WITH free AS (SELECT task_id FROM leases WHERE task_id = ANY(%s) "
                "AND (holder = %s OR expires_at < %s) FOR UPDATE SKIP LOCKED) "
                "UPDATE leases SET holder = %s, expires_at = %s FROM free "
                "WHERE leases.task_id = free.task_id RETURNING leases.task_id",
                (task_ids, holder, now, holder, until),
            )
            return {row[0] for row in cur.fetchall()}

    def release_leases(self, task_ids: list[str], holder: str) -> None:
        """Give up our leases of these tasks."""
        with self._cursor(write=True, wait=0.5) as cur:
            cur.execute(
                "UPDATE leases SET holder = '', expires_at = 0 WHERE task_id = ANY(%s) AND holder = %s",
                (task_ids, holder),
            )

    def notifications(self) -> list[str]:
        """Ids of the tasks whose changes were journalled (by anyone) since the last call."""
        psycopg, _ = _psycopg()
        try:
            if self._listener is None:
                self._listener = psycopg.connect(self._url, autocommit=True, connect_timeout=2)
                self._listener.execute("LISTEN mh_journal")
            return [n.payload for n in self._listener.notifies(timeout=0)]
        except psycopg.Error as exc:
            self._drop_listener()
            raise JournalError(f"the journal {self.location}: cannot listen: {type(exc).__name__}") from None

    def _drop_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            finally:
                self._listener = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._pool is None

    def close(self) -> None:
        """Close the pool and the listening connection (a second call does nothing)."""
        self._drop_listener()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
