"""A watcher's waiters: blocking and ``await`` waits, and the feeds of ``as_completed``.

Waits are settled in the engine's thread, once every task has ended and its results are
kept; a feed gets each task as it is done. A blocking call in the engine's own thread (an
``on_change``/``on_done`` callback) is refused at once: it would wait for that thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import time
from collections.abc import AsyncIterator, Callable, Iterator

from ..engine import WatcherEngine, running_engines
from ..models import Task
from .tracked import TrackedSet

__all__ = ["FeedItem", "Waiters", "refuse_in_engine_thread"]

FeedItem = tuple[str, Task | None] | None
"""``(task_id, final task)`` when a task ends (``None`` task: not found); ``None``: stop."""


def refuse_in_engine_thread(engine: WatcherEngine | None, what: str) -> None:
    """Raise if called in an engine's thread (a callback): what follows would wait for
    that thread's own loop (a deadlock until the timeout) or hold up its polling."""
    if (engine is not None and engine.in_poller_thread) or any(e.in_poller_thread for e in running_engines()):
        raise RuntimeError(
            f"{what} cannot run in the engine's thread (an on_change/on_done callback): it would "
            "wait for that thread's own loop or hold up every poll. Call it from your own code "
            "(after wait() or as_completed()) or another thread; save_to= saves every result "
            "as it arrives."
        )


class Waiters:
    """The waits and feeds of one watcher's tracked set; ``keeping`` are the ids whose
    results are still being kept (not done yet)."""

    def __init__(self, tracked: TrackedSet, keeping: set[str], after_wait: Callable[[], None]) -> None:
        self._tracked, self._keeping, self._after_wait = tracked, keeping, after_wait
        self._lock = tracked.lock
        self._waiters: list[concurrent.futures.Future[dict[str, Task]]] = []
        self._feeds: list[queue.SimpleQueue[FeedItem]] = []

    def wait(self, timeout: float | None = None) -> dict[str, Task]:
        """Block until every watched task has ended; return id → final ``Task``. Tasks the API
        does not know count as ended (see ``not_found``). Raises ``TimeoutError`` naming the
        unfinished ids (a timed-out wait keeps nothing), or the ``AuthenticationError`` that
        stopped polling; ``RuntimeError`` in a callback (the engine's thread settles waits)."""
        refuse_in_engine_thread(self._tracked.engine, "wait()")
        future = self._future()
        try:
            final = future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise self._timeout_error(timeout) from None
        finally:
            self._drop(future)  # a timed-out wait leaves nothing behind
        self._after_wait()  # from the caller's cell: saved by any front end
        return final

    async def wait_async(self, timeout: float | None = None) -> dict[str, Task]:
        """``await`` form of :meth:`wait`, for top-level await in a cell."""
        waiter = self._future()
        try:
            final = await asyncio.wait_for(asyncio.wrap_future(waiter), timeout)
        except TimeoutError:
            raise self._timeout_error(timeout) from None
        finally:
            self._drop(waiter)
        self._after_wait()
        return final

    def as_completed(self, timeout: float | None = None) -> Iterator[Task]:
        """Yield each watched task as it ends (already ended ones first). Tasks the API
        does not know end the wait for them without being yielded."""
        refuse_in_engine_thread(self._tracked.engine, "as_completed()")
        feed, remaining = self._open_feed()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while remaining:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    item = feed.get(timeout=left)
                except queue.Empty:
                    raise self._timeout_error(timeout) from None
                if item is None:
                    raise self._tracked.engine.auth_error or RuntimeError("the watcher was stopped")
                task_id, task = item
                if task_id in remaining:
                    remaining.discard(task_id)
                    if task is not None:
                        yield task
        finally:
            self._close_feed(feed)

    async def as_completed_async(self, timeout: float | None = None) -> AsyncIterator[Task]:
        """``async for`` form of :meth:`as_completed`."""
        iterator = self.as_completed(timeout)
        loop = asyncio.get_running_loop()
        while True:
            task = await loop.run_in_executor(None, next, iterator, None)
            if task is None:
                return
            yield task

    def _future(self) -> concurrent.futures.Future[dict[str, Task]]:
        future: concurrent.futures.Future[dict[str, Task]] = concurrent.futures.Future()
        with self._lock:
            self._waiters.append(future)
        if not self._tracked.open:
            future.set_exception(RuntimeError("the watcher was stopped"))
        else:
            self.settle_soon()
        return future

    def _drop(self, future: concurrent.futures.Future[dict[str, Task]]) -> None:
        """Forget a wait's future (it ended, timed out or was cancelled)."""
        future.cancel()  # no-op once done
        with self._lock:
            self._waiters = [f for f in self._waiters if f is not future]

    def settle_soon(self) -> None:
        """Settle the waits in the engine's thread (here once it has stopped)."""
        try:
            self._tracked.engine.call_soon(self.settle)
        except RuntimeError:  # the engine has stopped: settle here
            self.settle()

    def settle(self) -> None:
        """Resolve the waits once every task has ended and its results are kept (engine thread)."""
        states = self._tracked.states()
        error = self._tracked.engine.auth_error
        done = all(s.ended for s in states) and not self._keeping
        with self._lock:
            for fut in [f for f in self._waiters if not f.done()]:
                if error is not None:
                    fut.set_exception(error)
                elif done:
                    fut.set_result({s.task_id: s.task for s in states if s.task is not None})
            self._waiters = [f for f in self._waiters if not f.done()]

    def _timeout_error(self, timeout: float | None) -> TimeoutError:
        ids, what = self._tracked.pending, "tasks had not ended"
        if not ids and self._keeping:  # every task ended; their results were still downloading
            ids, what = sorted(self._keeping), "tasks' results were still being downloaded"
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        return TimeoutError(f"{len(ids)} {what} after {timeout} s: {shown}")

    def _open_feed(self) -> tuple[queue.SimpleQueue[FeedItem], set[str]]:
        feed: queue.SimpleQueue[FeedItem] = queue.SimpleQueue()
        with self._lock:
            self._feeds.append(feed)
            states = self._tracked.states()
        for s in states:
            if s.ended and s.task_id not in self._keeping:  # the others come once kept
                feed.put((s.task_id, s.task))
        return feed, {s.task_id for s in states}

    def _close_feed(self, feed: queue.SimpleQueue[FeedItem]) -> None:
        with self._lock:
            self._feeds = [f for f in self._feeds if f is not feed]

    def feed(self, item: FeedItem) -> None:
        """Hand ``item`` to every open ``as_completed``."""
        with self._lock:
            for feed in self._feeds:
                feed.put(item)

    def fail_all(self) -> None:
        """``stop()``: waits fail, feeds end."""
        with self._lock:
            for fut in self._waiters:
                if not fut.done():
                    fut.set_exception(RuntimeError("the watcher was stopped before the tasks ended"))
            for feed in self._feeds:
                feed.put(None)
