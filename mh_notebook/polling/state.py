"""What the poller knows about one task (:class:`TaskState`) and what it tells (:class:`Observation`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from ..errors import ModelHunterError
from ..models import Task
from ..records import NOT_FOUND, TaskStatus
from .policy import PollPolicy

__all__ = ["Kind", "Observation", "TaskState"]


class Kind(StrEnum):
    """What an observation tells: a new status, an error, the API never knew the task (its
    kind is :data:`~mh_notebook.records.NOT_FOUND`), or a refused key."""

    CHANGE = "change"
    ERROR = "error"
    NOT_FOUND = NOT_FOUND
    AUTH = "auth"


@dataclass
class TaskState:
    """What the poller knows about one watched task."""

    task_id: str
    task: Task | None = None
    polls: int = 0
    """Requests spent on this task so far (by every engine: one that watches a task a
    journal knows starts from the journal's count)."""
    reported_polls: int = 0
    """``polls`` as of the last change handed to ``on_observation`` (what was journalled)."""
    errors: int = 0
    """Consecutive failed requests."""
    not_found: int = 0
    """404 answers in a row."""
    ended: bool = False
    """Terminal status seen, or given up (not found)."""
    is_not_found: bool = False
    last_error: str | None = None
    fetched_at: float | None = None
    """Wall-clock time the latest ``task`` was fetched (its URLs are fresh from then)."""
    first_seen_at: float | None = None
    policy: PollPolicy = field(default_factory=PollPolicy)
    """The schedule this task is polled on (real seconds)."""
    last_polled: float = -math.inf
    """Loop time the last poll was sent."""
    queued_at: float | None = None
    """Loop time its first poll was queued: a task never polled has waited since then."""
    predicted_latency: float | None = None
    """The latency (server seconds) predicted when the task's model was first known."""
    leased: bool = True
    """False while another process polls this task (a shared team journal): changes then
    arrive through :meth:`~mh_notebook.polling.poller.Poller.observe` instead."""
    due_age: float = 0.0
    """Its age (server seconds) when its next poll is due."""
    window: tuple[float, float] | None = None
    """The latency window its next poll was scheduled by."""
    version: int = 0
    due_at: float = 0.0
    """Loop time its queued poll is due (0: ahead of every overdue poll)."""
    in_flight: bool = False
    covered: bool = False
    """A list walk under way will observe it: no GET until the walk is over."""
    result_wanted: bool = False
    """Seen succeeded (or expired) on a list page: one GET for its result is queued."""
    seen_ended_at: float | None = None
    """Wall-clock time a list page showed its end (the observation's time once its GET answers)."""
    ended_on_page: float = 0.0
    """When a list page said it ended (server time): result GETs go in the order of the ends."""
    sent_rate: float = 0.0
    """The engine's sending rate (requests per second) when its last poll was sent."""


@dataclass(frozen=True)
class Observation:
    """One thing the poller learned about one task, handed to ``on_observation``."""

    kind: Kind
    task_id: str
    observed_at: float
    """Wall-clock time (``time.time()``) the answer arrived."""
    task: Task | None
    """The task as just fetched (``None`` for errors before any answer)."""
    previous: TaskStatus | None
    polls: int
    error: ModelHunterError | None = None
    elsewhere: bool = False
    """Seen by another process of a shared journal (already journalled there)."""
    ended: bool = False
    """The task's end: the first terminal status seen for it. A ``succeeded`` answering the
    refresh of an expired URL is not one; a ``succeeded`` first seen right after
    ``expired`` (the task ended and its URL expired between two polls) is."""
