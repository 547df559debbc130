"""The results a watcher keeps: asked of the engine when a task succeeds, then added to the
gallery (the newest ``gallery_limit`` in memory) before the task counts as done.
"""

from __future__ import annotations

import concurrent.futures
import logging
from pathlib import Path

from ..models import Task
from ..records import TaskStatus
from ..results import KeepSpec, KeptResult
from ..view.render import human_size
from .tracked import TrackedSet
from .waiters import Waiters

__all__ = ["Keeping"]

log = logging.getLogger("mh_notebook.watcher")


class Keeping:
    """Kept results by (task id, index), the gallery's queue, and the ids still being kept."""

    def __init__(
        self, tracked: TrackedSet, *, save_to: Path | None, gallery_limit: int, inline_limit: int
    ) -> None:
        self._tracked = tracked
        self.save_to, self.gallery_limit, self.inline_limit = save_to, gallery_limit, inline_limit
        self.kept: dict[tuple[str, int], tuple[KeptResult, str]] = {}
        self.gallery_queue: list[tuple[KeptResult, str]] = []
        self.keeping: set[str] = set()
        """Ids whose results are being kept (not done yet); changed in place only."""
        self.started: set[str] = set()
        self.waiters: Waiters | None = None
        """The waits told when a task is done (wired by the facade)."""

    def spec(self, inline_limit: int | None = None) -> KeepSpec:
        """What the engine keeps: up to ``inline_limit`` bytes in memory, files in ``save_to``."""
        limit = self.inline_limit if inline_limit is None else inline_limit
        return KeepSpec(limit, self.save_to, self._tracked.spec.store)

    def start(self, task: Task, *, announce: bool) -> bool:
        """Ask the engine to keep ``task``'s results; False if there is nothing to keep."""
        gallery_on = self._tracked.flags.gallery_on
        if task.status != TaskStatus.SUCCEEDED or not task.result or not (gallery_on or self.save_to):
            return False
        try:
            future = self._tracked.engine.keep(task, self.spec(None if gallery_on else 0))
        except RuntimeError:  # the engine is stopping
            return False
        self.started.add(task.id)
        self.keeping.add(task.id)
        future.add_done_callback(lambda f: self._done(task, f, announce))
        return True

    def adopt_ended(self, ids: list[str]) -> None:
        """Keep the results of tasks that had succeeded before this watcher watched them."""
        for state in self._tracked.engine.states(ids):
            task = state.task
            if state.ended and task is not None and task.id not in self.started:
                self.start(task, announce=False)

    def _done(self, task: Task, future: concurrent.futures.Future[list[KeptResult]], announce: bool) -> None:
        """The engine kept ``task``'s results (engine thread): add them to the gallery, then done."""
        kept: list[KeptResult] = []
        if not future.cancelled():
            if future.exception() is not None:
                log.error("keeping the results of %s failed", task.id, exc_info=future.exception())
            else:
                kept = future.result()
        caption = f"{task.model or 'result'} · {task.id}"
        with self._tracked.lock:
            for item in kept:
                self.kept.pop((item.task_id, item.index), None)
                self.kept[(item.task_id, item.index)] = (item, caption)
                self.gallery_queue.append((item, caption))
            for key in list(self.kept)[: -self.gallery_limit]:  # the newest stay in memory
                del self.kept[key]
            del self.gallery_queue[: -self.gallery_limit]
        self.keeping.discard(task.id)
        self._tracked.flags.touch(static=True)
        if self.waiters is None:
            return
        if self._tracked.open:
            if announce:  # on_done is for ends this watcher saw, not for tasks it adopted ended
                self._tracked.run_callbacks(self._tracked.done_callbacks, task)
            self.waiters.feed((task.id, task))
        self.waiters.settle()

    def take_queue(self) -> list[tuple[KeptResult, str]]:
        """The results kept since the gallery last took them (emptied in place)."""
        with self._tracked.lock:
            media = list(self.gallery_queue)
            self.gallery_queue.clear()
        return media

    def detail(self, kept: KeptResult) -> str:
        """Format, size, where the bytes are, or why they are not here."""
        bits = [kept.format or "file", human_size(kept.size_bytes)]
        call = f"watcher.download({kept.task_id!r})"
        if kept.problem:
            bits.append(f"not kept: {kept.problem} (watcher.show({kept.task_id!r}) fetches it again)")
        elif kept.too_large:
            bits.append(f"too large to keep inline (over {human_size(self.inline_limit)}): {call}")
        elif kept.kind is None:
            bits.append(f"cannot be shown inline: {call}")
        if kept.local_path:
            bits.append(f"saved: {kept.local_path}")
        return " · ".join(b for b in bits if b)
