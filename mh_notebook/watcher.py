"""``TaskWatcher``: a set of tasks, its live view, its waits and its analysis.

A watcher owns no thread: it attaches to the :class:`~mh_notebook.engine.Engine` of its
API (one per base URL and key per process), which polls, keeps the request budget and
journals. Re-creating a watcher (a re-run cell) adds no thread and no load: tasks
watched by several watchers are polled once. Every change of a watched task is handed
to :meth:`TaskWatcher.observe` in the engine's thread, once journalled; the view (the
widget panel in a Jupyter kernel, text lines elsewhere) is redrawn there at most every
``refresh_interval`` seconds.

Results outlive their URLs: when a task succeeds, the engine keeps its results once (see
:mod:`mh_notebook.results`): the newest ``gallery_limit`` in memory for the live gallery
(each up to ``inline_limit`` bytes), and every one on disk with ``save_to``. A succeeded
task counts as done for :meth:`~TaskWatcher.wait`, :meth:`~TaskWatcher.as_completed` and
``on_done`` once its results are kept. The static twin of the panel (``text/html`` and
``text/plain`` for saved notebooks) is updated by display id when tasks end, at most every
``static_interval`` seconds, and at once when every task is done and when the watcher stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from .actions import Actions
from .client import check_task_id, is_sandbox_key, resolve_settings
from .clock import ClockOffset
from .engine import engine_for, running_engines
from .errors import AuthenticationError, ModelHunterError
from .formats import media_kind
from .journal.factory import open_store
from .journal.memory import MemoryStore
from .journal.protocol import Store, Unwritten, Watched, with_pending
from .journal.sqlite import SQLiteStore
from .models import Task
from .policy import PollPolicy
from .poller import Observation, TaskState
from .render import (
    MediaEntry,
    Row,
    Snapshot,
    human_size,
    safe_text,
    static_html,
    static_text,
    text_line,
)
from .results import DEFAULT_INLINE_LIMIT, KeepSpec, KeptResult

if TYPE_CHECKING:
    import pandas as pd

    from .panel import LiveResult, Panel, StaticView

__all__ = ["TaskWatcher"]

log = logging.getLogger("mh_notebook.watcher")
DisplayMode = Literal["auto", "widget", "text", "none"]
Callback = Callable[[Task], object]
_ACTIVE_ROWS, _RECENT_ROWS = 30, 15
_SHOW_TIMEOUT = 120.0
"""Seconds show() waits for a result's bytes (retries and a URL refresh included)."""
_FeedItem = tuple[str, Task | None] | None
"""``(task_id, final task)`` when a task ends (``None`` task: not found); ``None``: stop."""


class TaskWatcher:
    """Watch ModelHunter tasks in the background; show them live; wait for them.

    ``api_key``/``base_url`` are as for :class:`~mh_notebook.Client`. ``display`` picks
    the view: ``"auto"`` is the widget panel in a Jupyter kernel and text lines on
    stdout elsewhere. ``rate_limit`` (requests/s, bursts of ``burst``) is the most this
    watcher allows against the API: all watchers of one API in a process share one
    budget, the lowest of their limits, and one connection pool of ``max_in_flight``.
    ``time_scale=N`` is for a simulator running N times faster: the poll schedule's
    durations are divided by N and ``rate_limit`` multiplied by N. ``store`` is the
    journal: ``"default"`` (SQLite in the per-user data directory), a file path, a store
    object, or ``None`` (memory only). Use it as a context manager or call :meth:`stop`.

    Results: with ``save_to`` (a directory), every succeeded result is saved there as it
    arrives (``download()``'s file names, atomic, SHA-256 in the journal, ``local_path`` in
    :meth:`history`); without it nothing is written to disk. The live gallery keeps the
    newest ``gallery_limit`` results in kernel memory, each up to ``inline_limit`` bytes
    (larger ones get a note saying how to download them). ``static_interval`` is the
    shortest time between two updates of the static view saved notebooks show.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        store: Store | str | Path | None = "default",
        display: DisplayMode = "auto",
        policy: PollPolicy | None = None,
        rate_limit: float = 10.0,
        burst: float | None = None,
        max_in_flight: int = 8,
        refresh_interval: float = 0.5,
        time_scale: float = 1.0,
        timeout: float | None = 10.0,
        embed_media: bool = False,
        allow_insecure_http: bool = False,
        save_to: str | Path | None = None,
        gallery_limit: int = 24,
        inline_limit: int = DEFAULT_INLINE_LIMIT,
        static_interval: float = 3.0,
    ) -> None:
        key, url = resolve_settings(api_key, base_url, allow_insecure_http=allow_insecure_http)
        _check_settings(
            rate_limit=rate_limit, time_scale=time_scale, burst=burst, max_in_flight=max_in_flight
        )
        self.base_url = url
        self.sandbox = is_sandbox_key(key)
        """True for a ``river_test_`` key (ModelHunter's sandbox: nothing is charged)."""
        self._owns_store = store is None or isinstance(store, str | Path)
        self.store: Store = open_store(store)
        self.time_scale, self.embed_media = time_scale, embed_media
        self.policy = (policy or PollPolicy()).scaled(time_scale)
        """The poll schedule of this watcher's tasks, in real seconds."""
        self.rate_limit = rate_limit * time_scale
        self.burst = burst
        self.refresh_interval = refresh_interval
        self.save_to = Path(save_to).expanduser().resolve() if save_to is not None else None
        """Where every succeeded result is saved (``None``: nowhere)."""
        self.gallery_limit, self.inline_limit = max(1, gallery_limit), max(0, inline_limit)
        self.static_interval = static_interval
        self._mode = _resolve_display(display)
        self._lock = threading.RLock()
        self._draw_lock = threading.RLock()
        self._ids: dict[str, None] = {}
        self._waiters: list[concurrent.futures.Future[dict[str, Task]]] = []
        self._feeds: list[queue.SimpleQueue[_FeedItem]] = []
        self._on_change: list[Callback] = []
        self._on_done: list[Callback] = []
        self.callback_errors: list[BaseException] = []
        """Exceptions raised by callbacks (they are logged, never fatal)."""
        self._dirty = True
        self._last_draw = 0.0
        self._kept: dict[tuple[str, int], tuple[KeptResult, str]] = {}
        self._gallery_queue: list[tuple[KeptResult, str]] = []
        self._keeping: set[str] = set()
        self._keep_started: set[str] = set()
        self._static: StaticView | None = None
        self._static_dirty = True
        self._static_at = 0.0
        self._panel: Panel | None = None
        self._stopped = False
        self._final: list[TaskState] | None = None
        self._actions = Actions(key, url, timeout=timeout, allow_insecure_http=allow_insecure_http)
        self.unwritten: Unwritten | None = None
        """What :meth:`stop` could not write to the journal in time (None: nothing); see
        :class:`~mh_notebook.engine.UnwrittenWarning`."""
        try:
            self._engine = engine_for(self, key, url, timeout=timeout, max_in_flight=max_in_flight)
        except BaseException:
            self._close_store()
            raise

    def __repr__(self) -> str:
        counts = self._counts()
        detail = ", ".join(f"{n} {s}" for s, n in counts.most_common())
        sandbox = ", sandbox" if self.sandbox else ""
        tasks = f"tasks={sum(counts.values())}: {detail or 'none'}"
        return f"TaskWatcher(base_url={self.base_url!r}{sandbox}, {tasks})"

    # ------------------------------------------------------------- watching
    def watch(self, *tasks: str | Task | Iterable[str | Task]) -> list[str]:
        """Watch task ids or ``Task`` objects (or iterables of them); returns at once."""
        items: list[str | Task] = []
        for item in tasks:
            items.extend([item] if isinstance(item, str | Task) else item)
        if self._stopped:
            raise RuntimeError("this watcher has been stopped; create a new one")
        ids = [item.id if isinstance(item, Task) else check_task_id(item) for item in items]
        local = time.time()
        now = self._engine.clock.server_now(local)  # journal times are the server's: fixed if unknown
        self._engine.journal_watched(self.store, [Watched(task_id, self.base_url, now) for task_id in ids])
        with self._lock:
            fresh = [task_id for task_id in dict.fromkeys(ids) if task_id not in self._ids]
            self._ids.update(dict.fromkeys(ids))
        self._engine.watch(self, items, self.policy, fresh, seen=(local, now))
        self._dirty = self._static_dirty = True
        with contextlib.suppress(RuntimeError):  # results of tasks that had ended before
            self._engine.poller.call_soon(self._adopt_ended, ids)
        self._settle_soon()
        return ids

    def submit(
        self,
        endpoint: str,
        *,
        model: str,
        input: dict[str, Any],  # noqa: A002 - the API's own name
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
    ) -> str:
        """Start a generation and watch it; returns its id. ``endpoint`` is
        ``provider/capability``: ``w.submit("vidu/text-to-video", model="viduq3-turbo",
        input={"prompt": "..."})``. Never resent blindly: a lost answer raises
        :class:`~mh_notebook.CreationUnknownError` saying how to find the task."""
        return self._actions.submit(
            self, endpoint, model=model, input=input, metadata=metadata, webhook_url=webhook_url
        )

    def cancel(self, task_id: str) -> Task:
        """Cancel a task in progress (cannot be undone); an ended task raises
        :class:`~mh_notebook.ConflictError` (``.code`` says why)."""
        return self._actions.cancel(task_id)

    def retry(self, task_id: str) -> str:
        """Retry a ``failed`` or ``expired`` task and watch the new one; returns its id.
        The retry is a new task and is **charged again**; its ``original_task_id`` is
        ``task_id``. Other states raise :class:`~mh_notebook.ConflictError`."""
        return self._actions.retry(self, task_id)

    def balance(self) -> float:
        """The account's balance in USD (``GET /api/v1/balance``)."""
        return self._actions.balance()

    def watches(self, task_id: str) -> bool:
        """True if this watcher watches ``task_id``."""
        return task_id in self._ids

    @property
    def task_ids(self) -> list[str]:
        """The ids this watcher watches, in the order they were added."""
        with self._lock:
            return list(self._ids)

    def _states(self) -> list[TaskState]:
        if self._final is not None:
            return self._final
        return self._engine.poller.states(self.task_ids)

    def resume(self) -> list[str]:
        """Watch again every task of the journal (same ``base_url``) that had not ended.

        Use after a kernel restart: ``TaskWatcher(store=...).resume()``. Returns the ids.
        """
        ids = self.store.unfinished(self.base_url)
        if ids:
            self.watch(ids)
        return ids

    def unwatch(self, task_id: str) -> None:
        """Stop watching ``task_id``; :meth:`wait` no longer waits for it."""
        with self._lock:
            self._ids.pop(task_id, None)
        if not any(o.watches(task_id) for o in self._engine.subscribers()):
            self._engine.poller.unwatch([task_id])
        self._dirty = True
        self._settle_soon()

    def pause(self) -> None:
        """Stop polling until :meth:`resume_polling` (the panel's Pause button).

        Polling is shared by every watcher of this API in the process: all of them pause.
        """
        self._engine.poller.pause()
        self._dirty = True

    def resume_polling(self) -> None:
        """Poll again after :meth:`pause`; after a refused key, try the key again at once."""
        self._engine.poller.resume()
        self._dirty = True

    def stop(self) -> None:
        """Stop watching: waits fail, the journal is written and closed, and the engine's
        thread ends if no other watcher of this API is left. Safe from a callback."""
        if self._stopped:
            return
        self._stopped = True
        self._dirty = True
        self._final = self._states()  # what it knew stays readable (and drawn) after stop
        self.unwritten = self._engine.detach(self)
        self._actions.close()
        self._close_store()
        with self._lock:
            for fut in self._waiters:
                if not fut.done():
                    fut.set_exception(RuntimeError("the watcher was stopped before the tasks ended"))
            for feed in self._feeds:
                feed.put(None)
        self.redraw(force=True)
        self._static_dirty = True  # "stopped"
        self._publish_static(force=True)

    def _close_store(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- state
    @property
    def tasks(self) -> dict[str, Task]:
        """Task id → the latest ``Task`` fetched (tasks not fetched yet are absent)."""
        return {s.task_id: s.task for s in self._states() if s.task is not None}

    @property
    def saved_files(self) -> dict[str, list[Path]]:
        """Task id → the result files saved on this machine (``save_to``), from the journal."""
        ids = self.task_ids
        with self._journal() as store:
            rows = {(r.task_id, r.idx): r for r in store.results(ids)}
        wanted = set(ids)  # saved files still waiting for a busy journal count too
        rows.update(((r.task_id, r.idx), r) for r in self._unjournalled().saved if r.task_id in wanted)
        files: dict[str, list[Path]] = {}
        for row in sorted(rows.values(), key=lambda r: (r.task_id, r.idx)):
            files.setdefault(row.task_id, []).append(Path(row.local_path))
        return files

    @property
    def not_found(self) -> list[str]:
        """Ids the API kept answering 404 for; they count as ended."""
        return [s.task_id for s in self._states() if s.is_not_found]

    @property
    def pending(self) -> list[str]:
        """Ids that have not ended yet."""
        return [s.task_id for s in self._states() if not s.ended]

    @property
    def paused(self) -> bool:
        """True while polling is paused."""
        return self._engine.poller.paused

    @property
    def polls(self) -> dict[str, int]:
        """Task id → requests spent on it so far (by every watcher of it)."""
        return {s.task_id: s.polls for s in self._states()}

    @property
    def auth_error(self) -> AuthenticationError | None:
        """The 401/403 that stopped polling, if the key has not worked since."""
        return self._engine.poller.auth_error

    @property
    def clock_offset(self) -> ClockOffset:
        """How far the API's clock runs ahead of this machine's (negative: behind), as
        learned from its ``Date`` headers and timestamps: ``.offset`` and ``.error`` in
        seconds. Every comparison of a server timestamp with local time goes through it."""
        return self._engine.clock

    @property
    def engine(self) -> Any:
        """The shared :class:`~mh_notebook.engine.Engine` of this API (for diagnostics)."""
        return self._engine

    def on_change(self, fn: Callback) -> Callback:
        """Call ``fn(task)`` on every status change, in the engine's thread.

        Keep it quick. An exception in it is logged and kept in ``callback_errors``;
        it never stops the watcher. Usable as a decorator.
        """
        self._on_change.append(fn)
        return fn

    def on_done(self, fn: Callback) -> Callback:
        """Call ``fn(task)`` once per task when it ends, in the engine's thread (see on_change)."""
        self._on_done.append(fn)
        return fn

    # ------------------------------------------------------------- waiting
    def wait(self, timeout: float | None = None) -> dict[str, Task]:
        """Block until every watched task has ended; return id → final ``Task``.

        Tasks the API does not know count as ended (see ``not_found``). Raises
        ``TimeoutError`` naming the unfinished ids (a timed-out wait keeps nothing), or
        the ``AuthenticationError`` that stopped polling; ``RuntimeError`` in a callback
        (it runs in the engine's thread, which settles waits).
        """
        self._refuse_in_engine_thread("wait()")
        future = self._wait_future()
        try:
            final = future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise self._timeout_error(timeout) from None
        finally:
            self._drop_waiter(future)  # a timed-out wait leaves nothing behind
        self._publish_static(force=True)  # from the caller's cell: saved by any front end
        return final

    async def wait_async(self, timeout: float | None = None) -> dict[str, Task]:
        """``await`` form of :meth:`wait`, for top-level await in a cell."""
        waiter = self._wait_future()
        try:
            final = await asyncio.wait_for(asyncio.wrap_future(waiter), timeout)
        except TimeoutError:
            raise self._timeout_error(timeout) from None
        finally:
            self._drop_waiter(waiter)
        self._publish_static(force=True)
        return final

    def as_completed(self, timeout: float | None = None) -> Iterator[Task]:
        """Yield each watched task as it ends (already ended ones first).

        Tasks the API does not know end the wait for them without being yielded.
        """
        self._refuse_in_engine_thread("as_completed()")
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
                    raise self.auth_error or RuntimeError("the watcher was stopped")
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

    def _wait_future(self) -> concurrent.futures.Future[dict[str, Task]]:
        future: concurrent.futures.Future[dict[str, Task]] = concurrent.futures.Future()
        with self._lock:
            self._waiters.append(future)
        if self._stopped:
            future.set_exception(RuntimeError("the watcher was stopped"))
        else:
            self._settle_soon()
        return future

    def _refuse_in_engine_thread(self, what: str) -> None:
        """Raise if called in an engine's thread (a callback): what follows would wait for
        that thread's own loop (a deadlock until the timeout) or hold up its polling."""
        if self._engine.poller.in_poller_thread or any(e.poller.in_poller_thread for e in running_engines()):
            raise RuntimeError(
                f"{what} cannot run in the engine's thread (an on_change/on_done callback): it would "
                "wait for that thread's own loop or hold up every poll. Call it from your own code "
                "(after wait() or as_completed()) or another thread; save_to= saves every result "
                "as it arrives."
            )

    def _drop_waiter(self, future: concurrent.futures.Future[dict[str, Task]]) -> None:
        """Forget a wait's future (it ended, timed out or was cancelled)."""
        future.cancel()  # no-op once done
        with self._lock:
            self._waiters = [f for f in self._waiters if f is not future]

    def _settle_soon(self) -> None:
        try:
            self._engine.poller.call_soon(self._settle_waiters)
        except RuntimeError:  # the engine has stopped: settle here
            self._settle_waiters()

    def _settle_waiters(self) -> None:
        """Resolve the waiters once every task has ended and its results are kept (engine thread)."""
        states = self._states()
        error = self.auth_error
        done = all(s.ended for s in states) and not self._keeping
        with self._lock:
            for fut in [f for f in self._waiters if not f.done()]:
                if error is not None:
                    fut.set_exception(error)
                elif done:
                    fut.set_result({s.task_id: s.task for s in states if s.task is not None})
            self._waiters = [f for f in self._waiters if not f.done()]

    def _timeout_error(self, timeout: float | None) -> TimeoutError:
        ids, what = self.pending, "tasks had not ended"
        if not ids and self._keeping:  # every task ended; their results were still downloading
            ids, what = sorted(self._keeping), "tasks' results were still being downloaded"
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        return TimeoutError(f"{len(ids)} {what} after {timeout} s: {shown}")

    def _open_feed(self) -> tuple[queue.SimpleQueue[_FeedItem], set[str]]:
        feed: queue.SimpleQueue[_FeedItem] = queue.SimpleQueue()
        with self._lock:
            self._feeds.append(feed)
            states = self._states()
        for s in states:
            if s.ended and s.task_id not in self._keeping:  # the others come once kept
                feed.put((s.task_id, s.task))
        return feed, {s.task_id for s in states}

    def _close_feed(self, feed: queue.SimpleQueue[_FeedItem]) -> None:
        with self._lock:
            self._feeds = [f for f in self._feeds if f is not feed]

    def _feed(self, item: _FeedItem) -> None:
        with self._lock:
            for feed in self._feeds:
                feed.put(item)

    # ----------------------------------------------- engine thread: observing
    def observe(self, obs: Observation) -> None:
        """One change of a watched task, already journalled (called in the engine's thread)."""
        self._dirty = True
        if obs.kind != "error":  # a status, an end or a refused key: the saved view shows it too
            self._static_dirty = True
        if obs.kind == "auth":
            self._settle_waiters()
            self._feed(None)
        if obs.kind in ("error", "auth"):
            return  # a failed request is not a change of the task: shown, not journalled
        task = obs.task
        if obs.kind == "change" and task is not None:
            self._run_callbacks(self._on_change, task)
            state = self._engine.poller.state(obs.task_id)
            if self._mode == "text" and state is not None:
                print(text_line(self._row(state)), file=sys.stdout, flush=True)
            if obs.ended:  # not the refresh of an expired URL
                self._finished(task)
        elif obs.kind == "not_found":
            if self._mode == "text":
                print(f"[mh] {obs.task_id}: not found (HTTP 404)", flush=True)
            self._feed((obs.task_id, None))
            self._settle_waiters()

    def _finished(self, task: Task) -> None:
        """A task ended: done now, or once its results are kept (engine thread)."""
        if task.id in self._keep_started:
            return  # already being kept (it had ended before this watcher watched it)
        if not self._start_keep(task, announce=True):
            self._done(task)

    def _done(self, task: Task) -> None:
        """``task`` is done for this watcher: ``on_done``, ``as_completed`` and waits."""
        self._static_dirty = True
        self._run_callbacks(self._on_done, task)
        self._feed((task.id, task))
        self._settle_waiters()

    # ------------------------------------------------ engine thread: results
    @property
    def _gallery_on(self) -> bool:
        return self._mode in ("widget", "auto")

    def _start_keep(self, task: Task, *, announce: bool) -> bool:
        """Ask the engine to keep ``task``'s results; False if there is nothing to keep."""
        if task.status != "succeeded" or not task.result or not (self._gallery_on or self.save_to):
            return False
        spec = KeepSpec(self.inline_limit if self._gallery_on else 0, self.save_to, self.store)
        try:
            future = self._engine.keep(task, spec)
        except RuntimeError:  # the engine is stopping
            return False
        self._keep_started.add(task.id)
        self._keeping.add(task.id)
        future.add_done_callback(lambda f: self._kept_done(task, f, announce))
        return True

    def _adopt_ended(self, ids: list[str]) -> None:
        """Keep the results of tasks that had succeeded before this watcher watched them."""
        for state in self._engine.poller.states(ids):
            task = state.task
            if state.ended and task is not None and task.id not in self._keep_started:
                self._start_keep(task, announce=False)

    def _kept_done(
        self, task: Task, future: concurrent.futures.Future[list[KeptResult]], announce: bool
    ) -> None:
        """The engine kept ``task``'s results (engine thread): add them to the gallery, then done."""
        kept: list[KeptResult] = []
        if not future.cancelled():
            if future.exception() is not None:
                log.error("keeping the results of %s failed", task.id, exc_info=future.exception())
            else:
                kept = future.result()
        caption = f"{task.model or 'result'} · {task.id}"
        with self._lock:
            for item in kept:
                self._kept.pop((item.task_id, item.index), None)
                self._kept[(item.task_id, item.index)] = (item, caption)
                self._gallery_queue.append((item, caption))
            for key in list(self._kept)[: -self.gallery_limit]:  # the newest stay in memory
                del self._kept[key]
            del self._gallery_queue[: -self.gallery_limit]
        self._keeping.discard(task.id)
        self._dirty = self._static_dirty = True
        if not self._stopped:
            if announce:  # on_done is for ends this watcher saw, not for tasks it adopted ended
                self._run_callbacks(self._on_done, task)
            self._feed((task.id, task))
        self._settle_waiters()

    def _detail(self, kept: KeptResult) -> str:
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

    def _run_callbacks(self, callbacks: list[Callback], task: Task) -> None:
        for fn in callbacks:
            try:
                fn(task)
            except Exception as exc:
                log.exception("callback %r failed on task %s", fn, task.id)
                self.callback_errors.append(exc)

    # ------------------------------------------------------------ the view
    def _row(self, state: TaskState) -> Row:
        task = state.task
        if task is None:
            status = "not found" if state.is_not_found else "pending" if state.last_error is None else "error"
            return Row(state.task_id, status, problem=state.last_error, ended=state.ended)
        first = task.result[0] if task.result else None
        end = task.completed_at.timestamp() if task.completed_at else None
        start: float | None = state.first_seen_at
        now = time.time()
        if task.created_at is not None:  # both on the server's clock
            start, now = task.created_at.timestamp(), self._engine.clock.server_now(now)
        seconds = None if start is None else ((end if end is not None else now) - start)
        expected = None
        if not state.ended:  # the learned latency, else the server's estimate at creation
            expected = self._engine.latency.predict((task.provider or "?", task.model or "?"))
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

    def _counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for s in self._states():
            counts["not found" if s.is_not_found else str(s.task.status) if s.task else "pending"] += 1
        return counts

    def snapshot(self) -> Snapshot:
        """What the panel shows now: counts, the active and most recent rows."""
        states = self._states()
        active = [s for s in states if not s.ended]
        ended = [s for s in states if s.ended]
        rows = [self._row(s) for s in active[:_ACTIVE_ROWS]]
        recent = sorted((self._row(s) for s in ended[-(_RECENT_ROWS * 4) :]), key=lambda r: -r.sort_key)
        rows += recent[: max(_RECENT_ROWS, _ACTIVE_ROWS - len(rows))]
        error = self.auth_error
        notice = f"Polling stopped: {error.message}" if error else self._engine.notice
        return Snapshot(
            rows, self._counts(), len(states), paused=self.paused, stopped=self._stopped,
            notice=notice, rate_limit=self._engine.poller.rate_limit, rate=self._engine.poller.effective_rate,
            sandbox=self.sandbox, spend=_spend(states), budget_belief=self._engine.poller.budget_belief,
        )  # fmt: skip

    @property
    def panel(self) -> Panel:
        """The live ipywidgets panel (created on first use)."""
        if self._panel is None:
            from .panel import Panel

            panel = Panel(
                on_pause=self.pause,
                on_resume=self.resume_polling,
                on_stop=self.stop,
                on_cancel=self.cancel,
                gallery_limit=self.gallery_limit,
                static_class=self._static_view().css_class,
            )
            panel.draw(self.snapshot())
            with self._lock:  # what was kept before the panel existed; the engine adds the rest
                for kept, caption in self._kept.values():
                    panel.add_result(kept, caption, self._detail(kept))
                self._gallery_queue = []
            self._panel, self._mode = panel, "widget"
        return self._panel

    def _static_view(self) -> StaticView:
        if self._static is None:
            from .panel import StaticView

            self._static = StaticView()
        return self._static

    def redraw(self, force: bool = False) -> None:
        """Engine thread, every tick: draw if something changed, at most every ``refresh_interval``;
        the static view at most every ``static_interval`` (at once when all is done).

        One draw at a time: a forced redraw from another thread returns once the gallery holds
        every result kept before it (not while the engine's thread is still adding tiles)."""
        self._publish_static()
        panel = self._panel
        if panel is None:
            return
        with self._draw_lock:
            since = time.monotonic() - self._last_draw
            ticking = since >= 1.0 and bool(self.pending)  # elapsed times move on
            if not force and (not (self._dirty or ticking) or since < self.refresh_interval):
                return
            self._dirty, self._last_draw = False, time.monotonic()
            panel.draw(self.snapshot())
            with self._lock:
                media, self._gallery_queue = self._gallery_queue, []
            for kept, caption in media:
                panel.add_result(kept, caption, self._detail(kept))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The live widget, plus static ``text/html`` and ``text/plain`` for saved notebooks."""
        bundle: dict[str, Any] = {}
        if self._gallery_on:
            bundle.update(self.panel.widget._repr_mimebundle_(include=include, exclude=exclude))
        bundle.update(self._static_bundle())
        return bundle

    def _ipython_display_(self) -> None:
        """In a notebook: the live panel, then its static twin under a display id (kept
        current by :meth:`redraw`, :meth:`wait` and :meth:`stop`) for saved notebooks."""
        live = self.panel.widget if self._gallery_on else None
        self._static_dirty = False
        self._static_at = time.monotonic()
        self._static_view().show(self._static_bundle(), live)

    def _static_bundle(self) -> dict[str, str]:
        """``text/html`` and ``text/plain`` of the same snapshot and results: tasks, counts,
        thumbnails of images and labelled entries for the rest."""
        snapshot = self.snapshot()
        with self._lock:
            kept = list(self._kept.values())
        entries = [MediaEntry(k.kind, caption, self._detail(k), k.thumbnail) for k, caption in kept]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        note = f"Static view as of {stamp} (for saved notebooks; the live panel hides it)."
        css_class = f"mh-static {self._static.css_class}" if self._static is not None else "mh-static"
        return {
            "text/html": static_html(snapshot, entries, css_class, note),
            "text/plain": static_text(snapshot, entries, note),
        }

    def _publish_static(self, force: bool = False) -> None:
        """Update the static view if it changed: at most every ``static_interval`` seconds,
        at once with ``force`` or when every task is done."""
        view = self._static
        if view is None or not view.shown or not self._static_dirty:
            return
        settled = not self._keeping and all(s.ended for s in self._states())
        if not (force or settled) and time.monotonic() - self._static_at < self.static_interval:
            return
        self._static_dirty, self._static_at = False, time.monotonic()
        try:
            view.update(self._static_bundle())
        except Exception:
            log.exception("the static view could not be updated")

    # -------------------------------------------------------------- history
    def history(self) -> pd.DataFrame:
        """One row per task this watcher watches; see
        :data:`mh_notebook.history.HISTORY_COLUMNS` for the columns and dtypes.
        ``mh_notebook.read_history(journal)`` covers the whole journal."""
        from .history import store_history

        with self._journal() as store:
            return store_history(store, self.polls, task_ids=self.task_ids, pending=self._unjournalled())

    def events(self) -> pd.DataFrame:
        """One row per observed transition of this watcher's tasks, by observation time."""
        from .history import events_frame

        with self._journal() as store:
            events = with_pending(store.events(), self._unjournalled().events)
            return events_frame([e for e in events if e.task_id in self._ids])

    def _unjournalled(self) -> Unwritten:
        """What is known but not (yet) in the journal: waiting to be written, or left by :meth:`stop`."""
        if self._stopped:
            return self.unwritten or Unwritten([], [], [])
        return self._engine.pending(self.store)

    @contextlib.contextmanager
    def _journal(self) -> Iterator[Store]:
        """The journal as committed (read at once, never waiting for writes): this watcher's,
        the memory journal even after :meth:`stop`, or the file opened again after it."""
        if not self.store.closed or isinstance(self.store, MemoryStore):
            yield self.store
            return
        path = getattr(self.store, "path", None)
        if path is None:
            raise RuntimeError("this watcher's journal was closed by stop()")
        reopened = SQLiteStore(path, create=False)
        try:
            yield reopened
        finally:
            reopened.close()

    def latency_summary(self, by: str | tuple[str, ...] = ("provider", "model")) -> pd.DataFrame:
        """Count, success rate, p50/p90/p99 latency, mean queue/run time and top errors."""
        from .analysis import latency_summary

        return latency_summary(self.history(), by)

    def plot_latency(self, by: str = "model", ax: Any = None) -> Any:
        """Latency distribution per model (matplotlib axes)."""
        from .analysis import plot_latency

        return plot_latency(self.history(), by, ax)

    def plot_timeline(self, ax: Any = None, limit: int = 60) -> Any:
        """Queue and run phases of recent tasks as bars (matplotlib axes)."""
        from .analysis import plot_timeline

        return plot_timeline(self.history(), ax, limit)

    def to_parquet(self, path: str | Path) -> Path:
        """Write :meth:`history` to Parquet (needs pyarrow); returns the path."""
        self.history().to_parquet(path, index=False)
        return Path(path)

    # ---------------------------------------------------------------- media
    def refresh(self, task_id: str, timeout: float = 60.0) -> Task:
        """Fetch ``task_id`` now for fresh result URLs (within the shared request budget).

        Like :meth:`show`, :meth:`download`, :meth:`wait` and :meth:`as_completed`, it raises
        ``RuntimeError`` at once in an engine's thread (an ``on_change``/``on_done`` callback),
        where it would wait for that thread's own loop.
        """
        self._refuse_in_engine_thread("refresh()")
        return self._engine.poller.refresh(task_id).result(timeout)

    def fresh_task(self, task_id: str, timeout: float = 60.0) -> Task:
        """The task with result URLs that work now: the known one if its URLs answer,
        else fetched again (the server's answer decides, never a guessed lifetime)."""
        self._refuse_in_engine_thread("fresh_task()")
        from .media import urls_work

        state = self._engine.poller.state(task_id)
        task = state.task if state is not None else None
        if task is not None and task.status == "succeeded" and urls_work(task.result):
            return task
        return self.refresh(task_id, timeout)

    def show(self, task_id: str, *, embed: bool | None = None, embed_limit: int | None = None) -> None:
        """Display a task's media inline (Video/Image/Audio by format).

        With the panel (``display="auto"`` in Jupyter, or ``"widget"``), a succeeded result
        of at most ``inline_limit`` bytes is shown through ipywidgets' binary media widgets,
        as the gallery's are: page reloads and second tabs get the bytes from the kernel for
        its life, never from the expiring URL. The bytes are the ones the gallery kept or
        ``save_to`` saved (checksum verified), else fetched once through the engine.
        Saved notebooks show a thumbnail or a label instead.

        ``embed=True`` puts the bytes in the notebook (up to ``embed_limit``, default
        20 MB) so the media survive the URL's expiry: the bytes the gallery kept or
        ``save_to`` saved are used when there are some, else they are downloaded. Otherwise
        a URL that works now is used (the task is fetched again if the known one fails).
        When the API cannot give the task any more (past the provider's retention, or the
        watcher was stopped), a local copy is embedded.
        """
        from IPython.display import HTML, display

        from .media import DEFAULT_EMBED_LIMIT, display_object

        self._refuse_in_engine_thread("show()")
        embed = self.embed_media if embed is None else embed
        live = self._live_results(task_id) if not embed else None
        if live is not None:
            for shown in live:
                display(shown)
            return
        known = self.tasks.get(task_id)
        local = self._local_copies(known) if known is not None and embed else None
        if known is not None and local is not None:
            task = known  # every byte is here: no request at all
        else:
            try:
                task = self.fresh_task(task_id)
            except (ModelHunterError, RuntimeError):
                local = self._local_copies(known) if known is not None else None
                if known is None or local is None:
                    raise
                task, embed = known, True
        if task.status != "succeeded" or not task.result:
            display(HTML(f"<i>{safe_text(task_id)} is {safe_text(task.status)}: nothing to show</i>"))
            return
        for index, item in enumerate(task.result):
            obj = display_object(
                item,
                embed=embed,
                embed_limit=embed_limit or DEFAULT_EMBED_LIMIT,
                refresh_url=self._url_refresher(task_id, index),
                data=local[index] if local is not None and index < len(local) else None,
                label=f"{task.model or 'result'} · {task_id}",
            )
            display(obj)

    def _live_results(self, task_id: str) -> list[LiveResult] | None:
        """The results of a succeeded task as live media widgets (the panel's kind of view),
        or ``None`` when one cannot be: no panel, a format not shown inline, over
        ``inline_limit``, the download failed, or the watcher was stopped."""
        from .panel import LiveResult

        task = self.tasks.get(task_id)
        if self._stopped or not self._gallery_on or task is None or task.status != "succeeded":
            return None
        if not task.result or not all(media_kind(item.format) for item in task.result):
            return None
        spec = KeepSpec(self.inline_limit, self.save_to, self.store)
        try:  # kept bytes, a saved file, or one download (a fresh URL through the engine)
            kept = self._engine.keep(task, spec).result(_SHOW_TIMEOUT)
        except (RuntimeError, concurrent.futures.TimeoutError):
            return None
        if any(k.data is None for k in kept):
            return None
        caption = f"{task.model or 'result'} · {task_id}"
        return [LiveResult(k, caption, self._detail(k)) for k in kept]

    def _local_copies(self, task: Task) -> list[bytes] | None:
        """Every result's bytes without the network, or ``None`` if one is missing."""
        if task.status != "succeeded" or not task.result:
            return None
        copies = [self._local_bytes(task.id, i) for i in range(len(task.result))]
        return None if any(c is None for c in copies) else [c for c in copies if c is not None]

    def _local_bytes(self, task_id: str, index: int) -> bytes | None:
        """A result's bytes without the network: kept in memory, or saved (checksum verified)."""
        with self._lock:
            kept = self._kept.get((task_id, index))
        if kept is not None and kept[0].data is not None:
            return kept[0].data
        with contextlib.suppress(Exception), self._journal() as store:
            for row in [*self._unjournalled().saved, *store.results([task_id])]:
                if row.task_id != task_id:
                    continue
                path = Path(row.local_path)
                if row.idx == index and path.is_file():
                    data = path.read_bytes()
                    if hashlib.sha256(data).hexdigest() == row.sha256:
                        return data
        return None

    def download(self, task_id: str, directory: str | Path = ".", *, progress: bool = True) -> list[Path]:
        """Save a task's result files into ``directory``; returns their paths.

        Streams to a temporary file and renames it (atomic), checks the size against
        ``size_bytes``, and gets a fresh URL when the old one has expired.
        """
        from .media import download_file, safe_filename

        self._refuse_in_engine_thread("download()")
        task = self.fresh_task(task_id)
        if task.status != "succeeded":
            raise ModelHunterError(f"task {task_id!r} is {task.status}, not succeeded", task_id=task_id)
        paths = []
        for index, item in enumerate(task.result):
            target = Path(directory) / safe_filename(task.id, index, item.format)
            refresh = self._url_refresher(task_id, index)
            paths.append(
                download_file(
                    item.url, target, expected_size=item.size_bytes, refresh_url=refresh, progress=progress
                )
            )
        return paths

    def _url_refresher(self, task_id: str, index: int) -> Callable[[], str | None]:
        """A function that fetches the task again and returns result ``index``'s new URL."""

        def refresh() -> str | None:
            result = self.refresh(task_id).result
            return result[index].url if index < len(result) else None

        return refresh


def _check_settings(**settings: object) -> None:
    """``ValueError`` naming a setting that is not a positive number (``burst``: None or >= 1),
    before anything is shared with other watchers of the API."""
    for name, value in settings.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is None and name == "burst":
            continue
        least = 1 if name in ("burst", "max_in_flight") else 0
        if not number or not (value >= least if least else value > 0) or value != value:  # type: ignore[operator]
            bound = f">= {least}" if least else "> 0"
            raise ValueError(f"{name} must be a number {bound}, got {value!r}")


def _spend(states: Iterable[TaskState]) -> float | None:
    """USD the tasks cost as far as the server said (``None`` if it said nothing)."""
    costs = [s.task.cost for s in states if s.task is not None and s.task.cost is not None]
    return sum(costs) if costs else None


def _resolve_display(display: DisplayMode) -> DisplayMode:
    """``auto``: the widget panel in a Jupyter kernel (any shell with a ``kernel``, as in
    Colab), text lines elsewhere."""
    if display != "auto":
        return display
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return "text"
    shell = get_ipython()
    return "auto" if getattr(shell, "kernel", None) is not None else "text"
