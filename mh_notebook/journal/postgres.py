"""A team journal on PostgreSQL: many notebooks and machines, one history, shared polling.

``TaskWatcher(store="postgresql://user@host:5432/db")`` (the password from the URL, or
from libpq's usual ``PGPASSWORD`` / ``~/.pgpass``) journals like a SQLite file does (the
same schema, the same migrations, the same queries, through :mod:`mh_notebook.journal.dialect`),
and in addition:

- every write is idempotent (an event is unique by task, status, time and request count),
  so a transaction retried after a lost connection never counts anything twice;
- each journalled change is announced with ``NOTIFY mh_journal, '<task id>'``;
- a ``leases`` table lets the processes share the polling (see :mod:`mh_notebook.journal.team`);
  leases expire on the database's clock, never on a client's;
- no call waits on a server that stopped answering for longer than it allows: every
  connection has TCP keepalives, ``connect_timeout`` and a ``statement_timeout``, and a
  watchdog shuts the socket of a call the server has not answered in time (a paused
  server, a network black hole). After that, calls that must not wait (``wait=...``) fail
  at once with ``JournalBusyError`` until the server answers a probe again;
- the password never appears in a repr or a message: a URL libpq would read otherwise than
  meant (an unencoded ``/``, ``@`` or ``%`` in the password) is refused without echoing it.

Needs psycopg 3 and psycopg-pool: ``pip install 'mh-notebook[postgres]'``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from .dialect import PostgresDialect
from .protocol import Capabilities, JournalBusyError, JournalError, TeamJournal
from .sql import SQLJournal

__all__ = ["PostgresStore"]

_EXTRA = "PostgreSQL journals need psycopg 3: pip install 'mh-notebook[postgres]'"
_MIGRATION_LOCK = 0x6D685F6E62  # "mh_nb": one process migrates at a time
_UNREADABLE = (
    "the journal URL cannot be read as written (percent-encode '/', '@', ':', '%' and spaces "
    "in the password: urllib.parse.quote(password, safe=''))"
)


def _psycopg() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise JournalError(_EXTRA) from None
    return psycopg, psycopg_pool


def _meant_passwords(url: str) -> list[str | None]:
    """What the user may have written as the password: between the first ``:`` of the user
    part and the last ``@`` of the URL, or the last ``@`` before its query (whatever libpq
    makes of the characters in between); ``None`` for a reading with no password."""
    rest = url.split("://", 1)[-1]
    found: list[str | None] = []
    for head in (rest, rest.split("?", 1)[0]):
        userinfo = head.rpartition("@")[0]
        found.append(userinfo.partition(":")[2] if ":" in userinfo else None)
    return found


def _read_url(url: str) -> tuple[dict[str, Any], list[str]]:
    """libpq's reading of ``url`` and the secrets never to show (the password, encoded or
    not); a ``JournalError`` that echoes nothing of the URL if libpq reads it otherwise
    than written (its password would then show up as a host, a port or a database)."""
    psycopg, _ = _psycopg()
    meant = _meant_passwords(url)
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise JournalError(_UNREADABLE) from None
    written = [m for m in meant if m is not None]
    readings = {None if m is None else unquote(m) for m in meant}
    if written and parts.get("password") not in readings:
        raise JournalError(_UNREADABLE)
    secrets = [s for s in (*written, *map(unquote, written), parts.get("password")) if s]
    return parts, sorted(set(secrets), key=len, reverse=True)


def _safe_location(url: str) -> str:
    """The URL without its password (for reprs and messages)."""
    try:
        parts, _ = _read_url(url)
    except JournalError:
        return "postgresql://<unreadable>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def _connection_options(
    parts: dict[str, Any], connect_timeout: float, statement_timeout: float
) -> dict[str, Any]:
    """libpq settings for every connection: bounded connects, dead peers noticed (TCP
    keepalives, unacknowledged data), no statement or idle transaction left running."""
    limits = (
        f"-c statement_timeout={round(statement_timeout * 1000)} -c idle_in_transaction_session_timeout=60000"
    )
    return {
        "connect_timeout": max(2, round(connect_timeout)),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 30_000,
        "options": f"{parts.get('options', '')} {limits}".strip(),
    }


class _Watchdog:
    """Shuts the socket of a connection whose call outlived its deadline: psycopg's wait
    then ends with an error (a server paused or behind a black hole answers nothing, and a
    server-side ``statement_timeout`` cannot fire in a process that does not run)."""

    def __init__(self) -> None:
        self._armed: dict[int, tuple[float, Any, list[bool]]] = {}
        self._cond = threading.Condition()
        self._ids = iter(range(1 << 62))
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, conn: Any, seconds: float, fired: list[bool]) -> int:
        """Watch ``conn`` for ``seconds``; ``fired[0]`` becomes True if its socket is shut."""
        with self._cond:
            token = next(self._ids)
            self._armed[token] = (time.monotonic() + seconds, conn, fired)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mh-pg-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        """The call ended in time (or not: either way, nothing more to watch)."""
        with self._cond:
            self._armed.pop(token, None)

    def close(self) -> None:
        """End the watchdog's thread (calls still armed are no longer watched)."""
        with self._cond:
            self._closed = True
            self._armed.clear()
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for token, (deadline, conn, fired) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        fired[0] = True
                        _shut(conn)
                wake = min((d for d, _, _ in self._armed.values()), default=now + 60.0)
                self._cond.wait(max(0.01, wake - now))


def _shut(conn: Any) -> None:
    """Shut the connection's socket down (through a duplicate: libpq still owns its own)."""
    with contextlib.suppress(Exception):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class PostgresStore(SQLJournal):
    """A journal in a PostgreSQL database, shared by every process that opens its URL.

    A small connection pool (``max_connections``) serves writes and reads; one more
    connection listens for the others' changes once :meth:`notifications` is first called.
    ``create=False`` refuses a database that holds no journal yet.

    A call the server has not answered ``answer_timeout`` seconds after its own ``wait``
    (or after ``statement_timeout``, for calls that may wait) is cut off (see the module).
    """

    capabilities = Capabilities(shared_polling=True, reduced_rows=True)

    def team_journal(self) -> TeamJournal | None:
        """Itself: watchers in several processes share the polling through its leases."""
        return self

    """Watchers of this journal share the polling through leases (:mod:`~mh_notebook.journal.team`),
    and the database reduces the journal for histories (:meth:`reduced_rows`)."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        max_connections: int = 4,
        connect_timeout: float = 10.0,
        statement_timeout: float = 30.0,
        answer_timeout: float = 2.0,
    ) -> None:
        psycopg, psycopg_pool = _psycopg()
        parts, self._secrets = _read_url(url)
        self.location = _safe_location(url)
        self._url = url
        self._timeout = connect_timeout
        self._statement_timeout, self._answer_timeout = statement_timeout, answer_timeout
        self._options = _connection_options(parts, connect_timeout, statement_timeout)
        super().__init__(PostgresDialect())
        self._listener: Any = None
        self._watchdog = _Watchdog()
        self._silent_since: float | None = None
        """Since when (monotonic) the server has not answered, while it lasts."""
        self._probe_lock = threading.Lock()
        self._closing = threading.Event()
        try:
            self._pool = psycopg_pool.ConnectionPool(
                url,
                min_size=1,
                max_size=max_connections,
                timeout=connect_timeout,
                kwargs=self._options,
                open=False,
                name="mh-journal",
                num_workers=1,
            )
            self._pool.open(wait=True, timeout=connect_timeout)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            self._pool.close()  # its workers would go on trying (and logging) for ever
            raise self._cannot_open(exc) from None
        try:
            self._set_up(create)
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"

    def _cannot_open(self, exc: BaseException) -> JournalError:
        return JournalError(
            f"cannot open the journal {self.location}: {type(exc).__name__}: {self._redact(exc)}"
        )

    def _redact(self, exc: BaseException) -> str:
        """``str(exc)`` without the URL or the password (in any spelling of it)."""
        here = "\x00location\x00"  # the URL's place, kept out of the secrets' way
        text = str(exc).replace(self._url, here)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text.replace(here, self.location)

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
        if wait is not None and self._silent_since is not None:
            silent = time.monotonic() - self._silent_since
            raise JournalBusyError(
                f"the journal {self.location} has not answered for {silent:.0f} s; nothing was written"
            )
        limit = (self._statement_timeout if wait is None else wait) + self._answer_timeout
        fired = [False]
        try:
            with self._pool.connection(timeout=wait) as conn:
                token = self._watchdog.arm(conn, limit, fired)
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        if write and wait is not None:
                            cur.execute(f"SET LOCAL lock_timeout = '{max(1, round(wait * 1000))}ms'")
                        yield cur
                finally:
                    self._watchdog.disarm(token)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            if fired[0]:
                self._not_answering()
                raise JournalBusyError(
                    f"the journal {self.location} did not answer within {limit:g} s; nothing was written"
                ) from None
            if self.dialect.is_busy(exc):
                raise JournalBusyError(
                    f"the journal {self.location} could not be written now ({type(exc).__name__}); "
                    "nothing was written"
                ) from None
            raise JournalError(
                f"the journal {self.location}: {type(exc).__name__}: {self._redact(exc)}"
            ) from None

    def _not_answering(self) -> None:
        """The server did not answer in time: calls that must not wait fail at once until
        a probe (in a thread of its own) gets an answer again."""
        with self._probe_lock:
            if self._silent_since is not None:
                return
            self._silent_since = time.monotonic()
        threading.Thread(target=self._probe, name="mh-pg-probe", daemon=True).start()

    def _probe(self) -> None:
        psycopg, _ = _psycopg()
        while not self._closing.is_set():
            fired = [False]
            try:
                with psycopg.connect(self._url, autocommit=True, **self._options) as conn:
                    token = self._watchdog.arm(conn, self._answer_timeout + 1.0, fired)
                    try:
                        conn.execute("SELECT 1")
                    finally:
                        self._watchdog.disarm(token)
            except psycopg.Error:
                self._closing.wait(1.0)
                continue
            self._silent_since = None
            return

    def _after_event(self, cur: Any, task_id: str) -> None:
        cur.execute("SELECT pg_notify('mh_journal', %s)", (task_id,))

    # ------------------------------------------------------- shared polling
    def claim_leases(self, task_ids: list[str], holder: str, ttl: float) -> set[str]:
        """Take or renew, for ``ttl`` seconds, the leases of these tasks that are free,
        expired or ours already (rows another process is taking at this moment are
        skipped); returns the ones held. Expiry is on the database's clock: the clocks of
        the machines taking part never matter."""
        return self._take_leases(task_ids, [holder], holder, ttl)

    def _take_leases(self, task_ids: list[str], owners: list[str], to: str, ttl: float) -> set[str]:
        """Rows of these tasks that are free, expired or held by one of ``owners`` become
        ``to``'s for ``ttl`` seconds (rows being taken this instant are skipped); their ids."""
        with self._cursor(write=True, wait=0.5) as cur:
            cur.execute(
                "INSERT INTO leases (task_id, holder, expires_at) "
                "SELECT t, '', 0 FROM unnest(%s::text[]) AS t ON CONFLICT DO NOTHING",
                (task_ids,),
            )
            cur.execute(
                "WITH now AS (SELECT extract(epoch FROM clock_timestamp())::double precision AS t), "
                "free AS (SELECT task_id FROM leases, now WHERE task_id = ANY(%s) "
                "AND (holder = ANY(%s) OR expires_at < now.t) FOR UPDATE OF leases SKIP LOCKED) "
                "UPDATE leases SET holder = %s, expires_at = now.t + %s FROM free, now "
                "WHERE leases.task_id = free.task_id RETURNING leases.task_id",
                (task_ids, owners, to, float(ttl)),
            )
            return {row[0] for row in cur.fetchall()}

    def claim_duty(self, duty: str, holder: str, ttl: float) -> str | None:
        """Take or renew the duty lease ``duty`` (a row of ``leases`` whose key no task id
        can take: it has a space) if it is free, expired or ours; its live holder after the
        attempt (``holder`` if we hold it), ``None`` if nobody holds it (another process
        was taking it this instant)."""
        self.claim_leases([duty], holder, ttl)
        with self._cursor(write=False, wait=0.5) as cur:
            cur.execute(
                "SELECT holder FROM leases WHERE task_id = %s AND holder <> '' "
                "AND expires_at >= extract(epoch FROM clock_timestamp())::double precision",
                (duty,),
            )
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def hand_leases(self, task_ids: list[str], holder: str, duty: str, ttl: float) -> set[str]:
        """Hand these tasks to the holder of ``duty``: their rows that are free, expired,
        ours or the duty's already become the duty's (``holder = duty``) for ``ttl``
        seconds, renewed from then on by whoever holds the duty; returns the handed ids."""
        return self._take_leases(task_ids, [holder, duty], duty, ttl)

    def duty_tasks(self, duty: str, ttl: float, release: list[str]) -> set[str]:
        """For the holder of ``duty``: give back the rows of ``release`` (ended tasks), renew
        for ``ttl`` seconds every other task handed to the duty, and return their ids."""
        with self._cursor(write=True, wait=0.5) as cur:
            if release:
                cur.execute(
                    "UPDATE leases SET holder = '', expires_at = 0 WHERE holder = %s AND task_id = ANY(%s)",
                    (duty, release),
                )
            cur.execute(
                "WITH now AS (SELECT extract(epoch FROM clock_timestamp())::double precision AS t), "
                "mine AS (SELECT task_id FROM leases WHERE holder = %s FOR UPDATE SKIP LOCKED) "
                "UPDATE leases SET expires_at = now.t + %s FROM mine, now "
                "WHERE leases.task_id = mine.task_id",
                (duty, float(ttl)),
            )
            cur.execute("SELECT task_id FROM leases WHERE holder = %s", (duty,))
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
        fired = [False]
        try:
            if self._listener is None:
                self._listener = psycopg.connect(self._url, autocommit=True, **self._options)
                token = self._watchdog.arm(self._listener, self._answer_timeout + 1.0, fired)
                try:
                    self._listener.execute("LISTEN mh_journal")
                finally:
                    self._watchdog.disarm(token)
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
        self._closing.set()
        self._drop_listener()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
        self._watchdog.close()
