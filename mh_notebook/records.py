"""Every fact about a task's status and its record, written once.

The statuses (:class:`TaskStatus`), which of them end a task, which teach the latency
model, the order the panel lists them in, the one spelling of "the API never knew this
task", and the latency key. The event (:class:`Event`, one observed change of one task, the
journal's columns) and the columns of a task reduced from its events
(:data:`REDUCED_COLUMNS`). The journal, the poller, the history and the view import these
names; none of them writes a status literal or an event column list of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, NamedTuple, Protocol, get_args, get_type_hints

__all__ = [
    "DISPLAY_ORDER",
    "ENDED",
    "ENDING",
    "LEARNED_FROM",
    "NOT_FOUND",
    "NUMERIC_FIELDS",
    "PER_TASK_FIELDS",
    "REDUCED_COLUMNS",
    "SERVER_FIELDS",
    "Event",
    "TaskStatus",
    "clean_event",
    "clean_text",
    "event_from_task",
    "latency_key",
    "status_label",
]


class TaskStatus(StrEnum):
    """A task's status; equal to the API's string (``TaskStatus.RUNNING == "running"``).

    A status the API adds later becomes a pseudo-member that keeps its raw string
    (``TaskStatus("paused") == "paused"``) and is treated as not finished.
    """

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @classmethod
    def _missing_(cls, value: object) -> TaskStatus | None:
        if not isinstance(value, str) or not value:
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        return member

    @property
    def is_terminal(self) -> bool:
        """True for ``succeeded``, ``failed`` and ``cancelled``: nothing more will happen."""
        return self in ENDING

    @property
    def is_known(self) -> bool:
        """False for a status this version of the package does not know."""
        return self.value in _KNOWN


ENDING: Final = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
"""The statuses after which nothing more happens to a task (the only literal set of them)."""

NOT_FOUND: Final = "not_found"
"""The journal's and the history's status for a task the API never knew (404 after retries)."""

ENDED: Final = frozenset({*ENDING, NOT_FOUND})
"""Statuses after which a journalled task is no longer polled: the ending ones and not-found."""

LEARNED_FROM: Final = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)
"""Ends whose latency teaches the model (a cancellation says nothing about the model)."""

DISPLAY_ORDER: Final = (
    TaskStatus.RUNNING,
    TaskStatus.QUEUED,
    TaskStatus.PENDING,
    TaskStatus.SUCCEEDED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
    TaskStatus.EXPIRED,
    NOT_FOUND,
)
"""The order the panel counts and lists statuses in; unknown statuses follow, sorted."""

_KNOWN = frozenset(s.value for s in TaskStatus.__members__.values())


def status_label(status: str) -> str:
    """How a status reads in the panel: ``"not_found"`` reads ``"not found"``."""
    return status.replace("_", " ")


def latency_key(provider: str | None, model: str | None) -> tuple[str, str]:
    """The key latencies are learned under: ``(provider, model)``, ``"?"`` for a missing one."""
    return (provider or "?", model or "?")


class Event(NamedTuple):
    """One observed change of one task, flattened for fast DataFrames (the journal's columns)."""

    task_id: str
    status: str
    """The new status (:data:`NOT_FOUND` when the API never knew the task)."""
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


SERVER_FIELDS: Final = (
    "server_started_at", "progress", "cost", "estimated_seconds", "original_task_id", "metadata",
)  # fmt: skip
"""Event fields the API sends in some answers only: a task's reduction keeps the latest sent."""

NUMERIC_FIELDS: Final = frozenset(
    name for name, kind in get_type_hints(Event).items() if {int, float} & {kind, *get_args(kind)}
)
"""Event fields that hold numbers (the rest hold text)."""

PER_TASK_FIELDS: Final = tuple(
    f for f in Event._fields if f not in ("task_id", "observed_at", "polls", "raw", *SERVER_FIELDS)
)
"""Event fields a reduced task takes from its last informative event."""

REDUCED_COLUMNS: Final = (
    "task_id", "base_url", *PER_TASK_FIELDS,
    "first_seen_at", "started_at", "seen_end", "polls", "predicted_latency_s", "local_path",
    *SERVER_FIELDS,
)  # fmt: skip
"""Per-task columns of a reduced journal: the task's last informative event (the last one
that is not ``expired``, else the last) plus first observation, first ``running``, first
end and the request count; ``base_url`` and ``predicted_latency_s`` come from the watched
list and ``local_path`` from the saved results (events carry none of them); each of
:data:`SERVER_FIELDS` is the task's latest value that is not missing (the server sends them
in some answers only). ``history.reduce_events`` computes them in pandas, a SQL journal's
``reduced_rows`` in its database."""

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


class _Result(Protocol):
    """What an event reads of a task's first result (``models.ResultItem``)."""

    @property
    def format(self) -> str | None: ...
    @property
    def duration(self) -> float | None: ...
    @property
    def size_bytes(self) -> int | None: ...


class _Error(Protocol):
    """What an event reads of a task's error (``models.TaskError``)."""

    @property
    def code(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...


class TaskLike(Protocol):
    """What an event reads of a task (``models.Task``; records imports nothing of the package)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def type(self) -> str | None: ...
    @property
    def provider(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def result(self) -> Sequence[_Result]: ...
    @property
    def error(self) -> _Error | None: ...
    @property
    def created_at(self) -> datetime | None: ...
    @property
    def completed_at(self) -> datetime | None: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def progress(self) -> float | None: ...
    @property
    def cost(self) -> float | None: ...
    @property
    def estimated_seconds(self) -> float | None: ...
    @property
    def original_task_id(self) -> str | None: ...
    @property
    def metadata(self) -> Mapping[str, Any] | None: ...
    @property
    def raw(self) -> Mapping[str, Any]: ...


def _epoch(at: datetime | None) -> float | None:
    return at.timestamp() if at else None


def event_from_task(task: TaskLike, observed_at: float, polls: int) -> Event:
    """The event for ``task`` as fetched at ``observed_at`` after ``polls`` requests (its text
    cleaned by :func:`clean_text`, so that any journal accepts it)."""
    first = task.result[0] if task.result else None
    return clean_event(Event(
        task.id, str(task.status), observed_at, polls, task.type, task.provider, task.model,
        _epoch(task.created_at), _epoch(task.completed_at),
        len(task.result),
        first.format if first else None,
        first.duration if first else None,
        first.size_bytes if first else None,
        task.error.code if task.error else None,
        task.error.message if task.error else None,
        json.dumps(task.raw, default=str),
        _epoch(task.started_at),
        task.progress, task.cost, task.estimated_seconds, task.original_task_id,
        json.dumps(task.metadata, default=str, sort_keys=True) if task.metadata is not None else None,
    ))  # fmt: skip
