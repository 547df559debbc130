"""The journal in one SQLite file (WAL): durable, shareable between processes on one machine.

``SQLiteStore`` commits each change in WAL mode, so a kernel killed at any moment loses no
observed state. What a stopping watcher could not write waits beside the file
(:func:`unwritten_path`) until the next opening writes it in. The default journal lives in
the per-user data directory (``default_journal_path()``, e.g.
``~/.local/share/mh_notebook/journal.sqlite`` on Linux).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random

from ..records import Event
from .dialect import SQLiteDialect, sqlite_transaction
from .migrations import SCHEMA_VERSION
from .protocol import JournalBusyError, JournalError, SavedResult, Unwritten, Watched
from .sql import SQLJournal

__all__ = [
    "SQLiteStore",
    "default_journal_path",
    "read_unwritten",
    "refuse_url",
    "unwritten_path",
    "write_unwritten",
]

log = logging.getLogger("mh_notebook.store")
_BUSY_MS = 30_000
_OPEN_WAIT = 1.0
"""Seconds opening waits for another process's lock before an older schema's upgrade gives up."""
_NEW_FILE_WAIT = 30.0
"""Seconds opening waits while another process sets a new file up."""


class SQLiteStore(SQLJournal):
    """A journal in one SQLite file (WAL): durable, shareable between processes on one machine.

    Opening applies the pending schema migrations (one transaction). With ``create=False``
    a missing file is a ``JournalError`` and nothing is created.
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        refuse_url(path, "SQLiteStore takes a file path")
        super().__init__(SQLiteDialect())
        self.path: Path = Path(path).expanduser()
        self.location = repr(str(self.path))
        self._lock = threading.Lock()
        self._existed = self.path.exists() and self.path.stat().st_size > 0
        self.read_only: str | None = None
        """Why the journal is open for reading only (``None``: it is writable). Only with
        ``create=False``: a file this process may not write (read-only media, a colleague's
        copy), or one whose schema needs upgrading while another process holds its lock."""
        self._db: sqlite3.Connection | None = self._open(create)
        self._identity = _file_identity(self.path)
        self.replayed = 0 if self.read_only else self._replay_unwritten()
        """Events written at opening from :func:`unwritten_path` (a stop that could not write)."""

    @property
    def identity(self) -> object:
        """The file itself, however its path is spelled (symlinks, ``..``, hard links)."""
        return self._identity

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _open(self, create: bool) -> sqlite3.Connection:
        """Open for writing; with ``create=False``, for reading when writing cannot be."""
        if not create and not self.path.exists():
            raise JournalError(f"no journal at {self.location}")
        try:
            return self._open_writable(create)
        except _LockedError as exc:
            if create or exc.version is None:  # (None: it cannot be read either)
                raise JournalError(exc.message(self.location)) from None
            why = "its schema needs upgrading and another process holds its write lock"
        except (sqlite3.DatabaseError, OSError) as exc:
            if not _not_writable(exc):
                raise self._cannot_open(exc) from None
            why = f"this process cannot write it or the directory beside it ({exc})"
            if create:
                raise JournalError(
                    f"cannot open the journal {self.location} for writing: {why}; "
                    "read_history() reads it, or copy it where you can write"
                ) from None
        try:
            return self._open_read_only(why)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise self._cannot_open(exc) from None

    def _open_writable(self, create: bool) -> sqlite3.Connection:
        db = self._connect(create)
        try:
            # Switching a new file to WAL can answer "locked" at once while another process
            # sets it up (the busy timeout does not cover it): retry for a while. A journal
            # of an older schema locked by another process is retried for _OPEN_WAIT only.
            for attempt in Retrying(
                retry=retry_if_exception(
                    lambda exc: isinstance(exc, _LockedError) or self.dialect.is_busy(exc)
                ),
                stop=_give_up,
                wait=wait_random(0.01, 0.2),
                reraise=True,
            ):
                with attempt:
                    self._set_up(db)
            if not os.access(self.path, os.W_OK):  # SQLite opens such a file read-only, silently
                raise OSError(errno.EACCES, "the file is read-only for this process")
        except BaseException:
            db.close()
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

    def _open_read_only(self, why: str) -> sqlite3.Connection:
        """The file opened read-only (``immutable`` where SQLite cannot even make its shared-
        memory file beside it: a read-only directory); an older schema is read from a copy in
        memory, upgraded there (the file stays as it is)."""
        uri = self.path.resolve().as_uri()
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            db = sqlite3.connect(uri + query, check_same_thread=False, isolation_level=None, uri=True)
            try:
                db.execute(f"PRAGMA busy_timeout = {round(_OPEN_WAIT * 1000)}")
                with closing(db.cursor()) as cur:
                    current = self._check_version(cur)
            except sqlite3.OperationalError as exc:
                db.close()
                if query.endswith("immutable=1") or not _not_writable(exc):
                    raise
                continue
            except BaseException:
                db.close()
                raise
            self.read_only = why
            log.info("the journal %s is open read-only: %s", self.location, why)
            return db if current == SCHEMA_VERSION else self._upgraded_copy(db)
        raise AssertionError("unreachable")  # pragma: no cover

    def _upgraded_copy(self, db: sqlite3.Connection) -> sqlite3.Connection:
        """A copy of ``db`` in memory with the pending migrations applied (``db`` is closed)."""
        copy = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        try:
            db.backup(copy)
            with sqlite_transaction(copy), closing(copy.cursor()) as cur:
                self._migrate(cur)
        except BaseException:
            copy.close()
            raise
        finally:
            db.close()
        return copy

    def _cannot_open(self, exc: BaseException) -> JournalError:
        return JournalError(f"cannot open the journal {self.location}: {exc}")

    def _set_up(self, db: sqlite3.Connection) -> None:
        """Refuse a file this package cannot read (untouched), then WAL mode and pending
        migrations; ``_LockedError`` if an existing journal needs them but another process holds
        its lock (tried again for ``_OPEN_WAIT``)."""
        db.execute(f"PRAGMA busy_timeout = {round(_OPEN_WAIT * 1000)}")
        with closing(db.cursor()) as cur:
            try:
                current = self._check_version(cur)
            except sqlite3.OperationalError as exc:
                if not self.dialect.is_busy(exc) or not self._existed:
                    raise  # a new file: whoever holds it is setting it up (retried)
                # a journal in rollback mode (0.2 wrote them so) that another process holds
                # in an exclusive transaction: not even its version can be read meanwhile
                raise _LockedError(None) from None
            try:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")  # WAL: survives a killed process
                if current < SCHEMA_VERSION:
                    with sqlite_transaction(db):  # many processes may open a new file at once
                        self._migrate(cur)  # reads the version again, under the lock
            except sqlite3.OperationalError as exc:
                if current == 0 or not self.dialect.is_busy(exc):
                    raise  # a new file: whoever holds it is setting it up (retried)
                raise _LockedError(current) from None
        db.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")

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
            if write and self.read_only:
                raise JournalError(
                    f"the journal {self.location} is open read-only ({self.read_only}); nothing was written"
                )
            if write:
                left = None if wait is None else max(0.0, wait - (time.monotonic() - start))
                try:
                    with self._bounded_wait(db, left), sqlite_transaction(db):
                        yield db.cursor()
                except sqlite3.OperationalError as exc:
                    if not _not_writable(exc):
                        raise
                    raise JournalError(f"the journal {self.location} cannot be written: {exc}") from None
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


class _LockedError(Exception):
    """An existing journal of an older schema (or one whose schema cannot even be read) could
    not be upgraded: another process holds it."""

    def __init__(self, version: int | None) -> None:
        super().__init__(version)
        self.version = version

    def message(self, location: str) -> str:
        """What a user is told, naming the file."""
        if self.version is None:
            return (
                f"cannot open the journal {location}: another process holds it in an exclusive "
                f"transaction (tried for {_OPEN_WAIT:g} s), so not even its schema can be read: stop "
                "the process using it (another notebook, perhaps with an older mh_notebook) and try again"
            )
        return (
            f"the journal {location} (schema version {self.version}) must be upgraded to version "
            f"{SCHEMA_VERSION} before this mh_notebook writes to it, but another process holds its "
            f"write lock (tried for {_OPEN_WAIT:g} s): stop the process using it (another "
            "notebook, perhaps with an older mh_notebook) and try again; read_history() reads it meanwhile"
        )


def _give_up(state: RetryCallState) -> bool:
    """Stop retrying an opening: a locked older schema after ``_OPEN_WAIT``, a busy new file
    after ``_NEW_FILE_WAIT``."""
    failed = state.outcome.exception() if state.outcome is not None else None
    return (state.seconds_since_start or 0.0) >= (
        _OPEN_WAIT if isinstance(failed, _LockedError) else _NEW_FILE_WAIT
    )


_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _not_writable(exc: BaseException) -> bool:
    """True if ``exc`` says this process may not write the file or the directory beside it
    (SQLite words it "readonly" or "unable to open database file")."""
    if isinstance(exc, OSError):
        return exc.errno in _READ_ONLY_ERRNOS
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and (
        "readonly" in text or "read-only" in text or "unable to open database file" in text
    )


def _file_identity(path: Path) -> tuple[object, ...]:
    """The file at ``path`` however the path is spelled: its device and inode (its resolved
    path where there is no file, e.g. SQLite's ``:memory:``)."""
    try:
        stat = os.stat(path)
    except OSError:
        return ("sqlite", str(path.resolve()))
    return ("sqlite", stat.st_dev, stat.st_ino)


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


def default_journal_path() -> Path:
    """Where the default journal lives: the per-user data directory of mh_notebook."""
    from platformdirs import user_data_path

    return user_data_path("mh_notebook") / "journal.sqlite"


def refuse_url(path: str | Path, what: str = "a journal is a file path or a postgresql:// URL") -> None:
    """``JournalError`` for ``scheme://...`` that is not a journal this version can open."""
    text = str(path)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise JournalError(
            f"journal URLs ({scheme}://...) are not supported here by this version of mh_notebook: {what}"
        )
