"""What a watcher does with each change the engine hands it (in the engine's thread):
callbacks, console lines, keeping results, feeds and waits."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable

from ..client import check_task_id
from ..engine import Kind, Observation
from ..journal.protocol import Watched
from ..models import Task
from ..polling.policy import PollPolicy
from ..view.render import text_line
from .keeping import Keeping
from .tracked import TrackedSet
from .viewmodel import ViewModel
from .waiters import Waiters

__all__ = ["Intake"]


class Intake:
    """Turns the engine's observations into a watcher's callbacks, lines, keeps and waits."""

    def __init__(
        self, tracked: TrackedSet, keeping: Keeping, waiters: Waiters, view: ViewModel, policy: PollPolicy
    ) -> None:
        self._tracked, self._keeping, self._waiters, self._view = tracked, keeping, waiters, view
        self._policy = policy

    def watch(self, *tasks: str | Task | Iterable[str | Task]) -> list[str]:
        """Watch task ids or ``Task`` objects (or iterables of them); returns at once."""
        items: list[str | Task] = []
        for item in tasks:
            items.extend([item] if isinstance(item, str | Task) else item)
        tracked = self._tracked
        tracked.check_open()
        ids = [item.id if isinstance(item, Task) else check_task_id(item) for item in items]
        engine, local = tracked.engine, time.time()
        now = engine.server_now(local)  # journal times are the server's: fixed if unknown
        engine.journal_watched(
            tracked.spec.store, [Watched(task_id, tracked.base_url, now) for task_id in ids]
        )
        fresh = tracked.add(ids)
        engine.watch(tracked, items, self._policy, fresh, seen=(local, now))
        tracked.flags.touch(static=True)
        with contextlib.suppress(RuntimeError):  # results of tasks that had ended before
            engine.call_soon(self._keeping.adopt_ended, ids)
        self._waiters.settle_soon()
        return ids

    def unwatch(self, task_id: str) -> None:
        """Stop watching ``task_id``; ``wait()`` no longer waits for it."""
        self._tracked.remove(task_id)
        self._waiters.settle_soon()

    def resume(self) -> list[str]:
        """Watch again every task of the journal (same ``base_url``) that had not ended.

        Use after a kernel restart: ``TaskWatcher(store=...).resume()``. Returns the ids.
        Unlike ``resume_polling()`` (which lets a paused engine poll again), this adds
        tasks to this watcher: the journal's unfinished ones."""
        ids = self._tracked.spec.store.unfinished(self._tracked.base_url)
        if ids:
            self.watch(ids)
        return ids

    def observe(self, obs: Observation) -> None:
        """One change of a watched task, already journalled (engine thread)."""
        tracked = self._tracked
        tracked.flags.touch(static=obs.kind != Kind.ERROR)  # the saved view shows all but errors
        if obs.kind == Kind.AUTH:
            self._waiters.settle()
            self._waiters.feed(None)
        if obs.kind in (Kind.ERROR, Kind.AUTH):
            return  # a failed request is not a change of the task: shown, not journalled
        task = obs.task
        text = tracked.flags.mode == "text"
        if obs.kind == Kind.CHANGE and task is not None:
            tracked.run_callbacks(tracked.change_callbacks, task)
            state = tracked.engine.state(obs.task_id)
            if text and state is not None:
                print(text_line(self._view.row(state)), file=sys.stdout, flush=True)
            if obs.ended:  # not the refresh of an expired URL
                self._finished(task)
        elif obs.kind == Kind.NOT_FOUND:
            if text:
                print(f"[mh] {obs.task_id}: not found (HTTP 404)", flush=True)
            self._waiters.feed((obs.task_id, None))
            self._waiters.settle()

    def _finished(self, task: Task) -> None:
        """A task ended: done now, or once its results are kept."""
        if task.id in self._keeping.started:
            return  # already being kept (it had ended before this watcher watched it)
        if not self._keeping.start(task, announce=True):
            self._done(task)

    def _done(self, task: Task) -> None:
        """``task`` is done for this watcher: ``on_done``, ``as_completed`` and waits."""
        self._tracked.flags.touch(static=True)
        self._tracked.run_callbacks(self._tracked.done_callbacks, task)
        self._waiters.feed((task.id, task))
        self._waiters.settle()
