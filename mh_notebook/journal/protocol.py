"""The journal's contract: the :class:`Store` protocol, its declared capabilities, its errors
and the records it passes (besides :class:`~mh_notebook.records.Event`).

A watcher writes to its store from the poller thread *before* the panel shows a change,
so a kernel killed at any moment loses no observed state. The API key is never written:
only task data, statuses, times and request counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..errors import ModelHunterError
from ..records import Event

__all__ = [
    "AccountWatch",
    "Capabilities",
    "JournalBusyError",
    "JournalError",
    "ObservedFix",
    "OwnJournal",
    "SavedResult",
    "Store",
    "TeamJournal",
    "Unwritten",
    "Watched",
    "first_time",
    "usable_predictions",
    "with_pending",
]


class JournalError(ModelHunterError):
    """The journal is missing, closed, corrupt, of an unknown schema version, or cannot be opened."""


class JournalBusyError(JournalError):
    """A write gave up: another connection held the journal's write lock too long (nothing written)."""


@dataclass(frozen=True)
class Capabilities:
    """What a journal can do beyond the :class:`Store` protocol."""

    shared_polling: bool = False
    """Watchers of this journal in several processes share the polling through leases
    (:mod:`mh_notebook.journal.team`)."""
    reduced_rows: bool = False
    """The journal reduces itself to one row per task (:meth:`Store.reduced_rows`) faster
    than the history could from its events."""


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


class AccountWatch(NamedTuple):
    """A watcher's watch of the account's new tasks (``watch_account``), as far as it got."""

    base_url: str
    provider: str | None
    model: str | None
    status: str | None
    since: float
    """Every matching task created from here on (epoch seconds, the server's clock) is to be
    found; the ones created before were found already."""

    @property
    def filters(self) -> str:
        """The filters as one key (a journal keeps one row per API and filters)."""
        return "|".join(value or "" for value in (self.provider, self.model, self.status))


class ObservedFix(NamedTuple):
    """An event journalled at ``journalled`` before the server's clock was known, observed
    at ``corrected`` on it (:meth:`Store.correct_observed`)."""

    task_id: str
    status: str
    polls: int
    journalled: float
    corrected: float

    @property
    def old_key(self) -> tuple[str, str, float, int]:
        """The event's identity as journalled (see :func:`first_time`)."""
        return (self.task_id, self.status, self.journalled, self.polls)

    @property
    def new_key(self) -> tuple[str, str, float, int]:
        """The event's identity once corrected."""
        return (self.task_id, self.status, self.corrected, self.polls)


class Unwritten(NamedTuple):
    """What a watcher could not write to its journal before :meth:`~TaskWatcher.stop` returned."""

    watched: list[Watched]
    events: list[Event]
    saved: list[SavedResult]


class TeamJournal(Protocol):
    """What a shared journal offers for shared polling (``PostgresStore`` does)."""

    def claim_leases(self, task_ids: list[str], holder: str, ttl: float) -> set[str]:
        """Take or renew for ``ttl`` seconds (on the database's clock) the leases of these
        tasks that are free, expired or ours; the held ones."""

    def release_leases(self, task_ids: list[str], holder: str) -> None:
        """Give up our leases of these tasks."""

    def claim_duty(self, duty: str, holder: str, ttl: float) -> str | None:
        """Take or renew the duty lease ``duty`` if free, expired or ours; its live holder."""

    def hand_leases(self, task_ids: list[str], holder: str, duty: str, ttl: float) -> set[str]:
        """Hand these tasks (free, expired, ours or the duty's) to the holder of ``duty``."""

    def duty_tasks(self, duty: str, ttl: float, release: list[str]) -> set[str]:
        """For the duty's holder: give back ``release``, renew and return the duty's tasks."""

    def latest_events(self, task_ids: list[str]) -> list[Event]:
        """The last informative event of each of these tasks."""

    def notifications(self) -> list[str]:
        """Ids of tasks changed since the last call (never blocks)."""


class Store(Protocol):
    """Where a watcher journals what it watches and observes."""

    @property
    def location(self) -> str:
        """Where it is, for messages: a quoted file path, a URL without its password, or memory."""

    @property
    def path(self) -> Path | None:
        """Its file (where a stop that could not write spills), ``None`` when it has none."""

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

    def set_account_watch(self, row: AccountWatch, *, wait: float | None = None) -> None:
        """Record an account watch, or how far it got: replaces the row of the same API and
        filters (``wait`` as for :meth:`add_watched`)."""

    def drop_account_watch(self, row: AccountWatch, *, wait: float | None = None) -> None:
        """Forget the account watch of ``row``'s API and filters (``wait`` as for :meth:`add_watched`)."""

    def account_watches(self, base_url: str) -> list[AccountWatch]:
        """The account watches recorded against ``base_url``."""

    def watched(self) -> list[Watched]:
        """Every task ever watched, first seen first."""

    def unfinished(self, base_url: str) -> list[str]:
        """Ids watched against ``base_url`` whose last event is not an end."""

    def recent_ends(self, limit: int, base_url: str | None = None) -> list[Event]:
        """The latest ``limit`` succeeded/failed events (to learn latencies from), oldest first;
        with ``base_url``, only those of tasks watched against it."""

    def correct_first_seen(
        self, items: Iterable[tuple[str, float, float]], *, wait: float | None = None
    ) -> None:
        """``(task_id, journalled, corrected)``: a first-seen time journalled before the
        server's clock was known, now on it (rows journalled otherwise are left alone)."""

    def correct_observed(self, items: Iterable[ObservedFix], *, wait: float | None = None) -> None:
        """Put events journalled before the server's clock was known on it, and what is
        derived from their times (one transaction; ``wait`` as for :meth:`add_watched`).
        Events not journalled (yet) are left alone, and so is one whose corrected identity
        is journalled already: an event is never duplicated nor lost."""

    def latest_events(self, task_ids: list[str], *, wait: float | None = None) -> list[Event]:
        """The last informative event of each of these tasks (where a new engine's request
        counts start from)."""

    @property
    def identity(self) -> object:
        """One key per journal: two handles on one SQLite file, however spelled, share it."""

    def team_journal(self) -> TeamJournal | None:
        """The journal's shared-polling side where ``capabilities.shared_polling``, else ``None``."""

    @property
    def capabilities(self) -> Capabilities:
        """What this journal can do beyond the protocol (declared, never guessed)."""

    def reduced_rows(self) -> list[tuple[Any, ...]]:
        """One row per task, watched or observed (``records.REDUCED_COLUMNS``), by the journal
        itself; only where ``capabilities.reduced_rows`` (``NotImplementedError`` otherwise)."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""

    def close(self) -> None:
        """Release resources (a second call does nothing)."""


class OwnJournal:
    """What a journal is unless it says otherwise: its own key, no file, no shared polling."""

    path: Path | None = None

    @property
    def identity(self) -> object:
        """This object's own (a file journal names its file instead)."""
        return id(self)

    def team_journal(self) -> TeamJournal | None:
        """None: polled by this process alone (a PostgreSQL journal returns itself)."""
        return None


def first_time(event: Event, seen: set[tuple[Any, ...]]) -> bool:
    """True the first time ``event``'s identity (task, status, time, requests) is met."""
    key = (event.task_id, event.status, event.observed_at, event.polls)
    if key in seen:
        return False
    seen.add(key)
    return True


def with_pending(events: Iterable[Event], pending: Iterable[Event]) -> list[Event]:
    """A journal's ``events`` followed by those of ``pending`` it does not hold yet (each once)."""
    seen: set[tuple[Any, ...]] = set()
    return [e for e in [*events, *pending] if first_time(e, seen)]


def usable_predictions(items: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """``(task_id, seconds)`` pairs as floats, NaN predictions left out (they predict nothing)."""
    pairs = [(task_id, float(predicted)) for task_id, predicted in items]
    return [(task_id, predicted) for task_id, predicted in pairs if not math.isnan(predicted)]
