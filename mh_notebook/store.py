"""The journal of observed changes. ``MemoryStore`` keeps them in memory.

Every change the poller observes becomes an :class:`Event`: the task as fetched, when it
was observed, and how many requests had been spent on the task by then.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Event", "MemoryStore", "Store"]


@dataclass(frozen=True)
class Event:
    """One observed change of one task."""

    task_id: str
    status: str
    """The new status (``not_found`` when the API never knew the task)."""
    observed_at: float
    """Wall-clock seconds (``time.time()``) the answer arrived."""
    polls: int
    """Requests spent on the task up to and including this observation."""
    data: dict[str, Any]
    """The task's ``data`` object as received (empty for ``not_found``)."""


class Store(Protocol):
    """Where a watcher journals events."""

    def add(self, event: Event) -> None:
        """Record one event durably before it is shown."""

    def events(self) -> list[Event]:
        """Every event, in the order observed."""

    def close(self) -> None:
        """Release resources."""


class MemoryStore:
    """A journal in memory: lost with the process (``store=None``)."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore(events={len(self._events)})"

    def add(self, event: Event) -> None:
        """Record one event."""
        with self._lock:
            self._events.append(event)

    def events(self) -> list[Event]:
        """Every event, in the order observed."""
        with self._lock:
            return list(self._events)

    def close(self) -> None:
        """Nothing to release."""
