"""A watcher's view model: the rows and the snapshot the panel, the static view and the
console lines draw (plain values, no widgets)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..engine import TaskState
from ..records import NOT_FOUND, TaskStatus, latency_key, status_label
from ..view.render import Row, Snapshot
from .tracked import TrackedSet

__all__ = ["ViewModel"]

_ACTIVE_ROWS, _RECENT_ROWS = 30, 15


class ViewModel:
    """Rows and snapshots of one watcher's tracked set."""

    def __init__(self, tracked: TrackedSet, *, sandbox: bool) -> None:
        self._tracked, self._sandbox = tracked, sandbox

    def describe(self) -> str:
        """The watcher's ``repr`` inside the parentheses: URL, sandbox, counts per status."""
        tracked = self._tracked
        counts = tracked.counts()
        detail = ", ".join(f"{n} {status_label(s)}" for s, n in counts.most_common())
        sandbox = ", sandbox" if self._sandbox else ""
        return f"base_url={tracked.base_url!r}{sandbox}, tasks={sum(counts.values())}: {detail or 'none'}"

    def row(self, state: TaskState) -> Row:
        """One task as the panel shows it."""
        task = state.task
        if task is None:
            status = (
                NOT_FOUND
                if state.is_not_found
                else TaskStatus.PENDING
                if state.last_error is None
                else "error"
            )
            return Row(state.task_id, status, problem=state.last_error, ended=state.ended)
        engine = self._tracked.engine
        first = task.result[0] if task.result else None
        end = task.completed_at.timestamp() if task.completed_at else None
        start: float | None = state.first_seen_at
        now = time.time()
        if task.created_at is not None:  # both on the server's clock
            start, now = task.created_at.timestamp(), engine.server_now(now)
        seconds = None if start is None else ((end if end is not None else now) - start)
        expected = None
        if not state.ended:  # the learned latency, else the server's estimate at creation
            expected = engine.predict(latency_key(task.provider, task.model))
            expected = task.estimated_seconds if expected is None else expected
        return Row(
            task.id, str(task.status), task.type, task.provider, task.model,
            seconds=seconds, ended=state.ended, expected=expected,
            format=first.format if first else None,
            duration=first.duration if first else None,
            size_bytes=first.size_bytes if first else None,
            error_code=task.error.code if task.error else None,
            error_message=task.error.message if task.error else None,
            problem=state.last_error, progress=task.progress, cost=task.cost,
            sort_key=end or start or 0.0,
        )  # fmt: skip

    def snapshot(self) -> Snapshot:
        """What the panel shows now: counts, the active and most recent rows."""
        tracked = self._tracked
        engine = tracked.engine
        states = tracked.states()
        active = [s for s in states if not s.ended]
        ended = [s for s in states if s.ended]
        rows = [self.row(s) for s in active[:_ACTIVE_ROWS]]
        recent = sorted((self.row(s) for s in ended[-(_RECENT_ROWS * 4) :]), key=lambda r: -r.sort_key)
        rows += recent[: max(_RECENT_ROWS, _ACTIVE_ROWS - len(rows))]
        error = engine.auth_error
        notice = f"Polling stopped: {error.message}" if error else engine.notice or tracked.hooks.notice()
        return Snapshot(
            rows, tracked.counts(), len(states), paused=engine.paused, stopped=not tracked.open,
            notice=notice, rate_limit=engine.rate_limit, rate=engine.effective_rate,
            sandbox=self._sandbox, spend=_spend(states), budget_belief=engine.budget_belief,
            polling_mode=engine.polling_mode if states else None,
        )  # fmt: skip


def _spend(states: Iterable[TaskState]) -> float | None:
    """USD the tasks cost as far as the server said (``None`` if it said nothing)."""
    costs = [s.task.cost for s in states if s.task is not None and s.task.cost is not None]
    return sum(costs) if costs else None
