"""One observation of a task (:class:`Sighting`), from a list page or its own GET, and
how two are folded into one (:func:`merge`): the newest wins, a status never goes back.

Pure: no I/O, no clock. Times are epoch seconds on the server's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from ..records import ENDING, NOT_FOUND, TaskStatus

if TYPE_CHECKING:
    from ..models import Task

__all__ = ["Sighting", "Source", "merge", "status_rank"]

_T = TypeVar("_T")


class Source(StrEnum):
    """Where a sighting came from."""

    PAGE, GET = "page", "get"


@dataclass(frozen=True)
class Sighting:
    """One observation of a task, from a page or a GET (``seen_at``: server epoch seconds
    when the request was sent)."""

    id: str
    status: str
    seen_at: float
    source: Source
    created: float | None = None
    provider: str | None = None
    model: str | None = None
    progress: float | None = None
    cost: float | None = None
    started_at: float | None = None
    completed_at: float | None = None

    @classmethod
    def from_task(cls, task: Task, seen_at: float, source: Source) -> Sighting:
        """A sighting of a parsed :class:`~mh_notebook.models.Task`."""
        return cls(
            id=task.id,
            status=str(task.status),
            seen_at=seen_at,
            source=source,
            created=_epoch(task.created_at),
            provider=task.provider,
            model=task.model,
            progress=task.progress,
            cost=task.cost,
            started_at=_epoch(task.started_at),
            completed_at=_epoch(task.completed_at),
        )


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


_RANK: dict[str, int] = {TaskStatus.PENDING: 0, TaskStatus.QUEUED: 1, TaskStatus.RUNNING: 2}
_RANK.update(dict.fromkeys([*ENDING, TaskStatus.EXPIRED, NOT_FOUND], 3))


def status_rank(status: str) -> int:
    """How far along a status is: pending 0, queued 1, running (and unknown ones) 2, ended 3."""
    return _RANK.get(status, 2)


def merge(old: Sighting | None, new: Sighting) -> Sighting:
    """Fold ``new`` into ``old``: the newer sighting wins (a GET at a tie), but never moves a task's status
    backwards (a lagging page cannot undo an end) and never drops a known field."""
    if old is None:
        return new
    newer, older = (new, old) if _order(new) >= _order(old) else (old, new)
    status = newer.status
    if status_rank(older.status) > status_rank(newer.status):
        status = older.status
    return replace(
        newer,
        status=status,
        progress=max((p for p in (newer.progress, older.progress) if p is not None), default=None),
        created=_first(newer.created, older.created),
        provider=_first(newer.provider, older.provider),
        model=_first(newer.model, older.model),
        cost=_first(newer.cost, older.cost),
        started_at=_first(newer.started_at, older.started_at),
        completed_at=_first(newer.completed_at, older.completed_at),
    )


def _order(sighting: Sighting) -> tuple[float, bool]:
    """Newest first; at the same instant a GET (the task's own answer) beats a page."""
    return (sighting.seen_at, sighting.source == Source.GET)


def _first(a: _T | None, b: _T | None) -> _T | None:
    return a if a is not None else b
