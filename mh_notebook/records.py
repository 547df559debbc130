"""Every fact about a task's status, written once.

The statuses (:class:`TaskStatus`), which of them end a task, which teach the latency
model, the order the panel lists them in, the one spelling of "the API never knew this
task", and the latency key. The journal, the poller, the history and the view import these
names; none of them writes a status literal of its own.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "DISPLAY_ORDER",
    "ENDED",
    "ENDING",
    "LEARNED_FROM",
    "NOT_FOUND",
    "TaskStatus",
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
