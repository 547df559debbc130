"""A watcher's tracked set: the ids it watches, their states and counts, its callbacks,
pause, and its one lifecycle state. It is what the engine sees of the watcher (a
:class:`~mh_notebook.engine.Subscriber`): a spec and the calls of the poller thread.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from ..engine import Observation, SubscriberSpec, TaskState, WatcherEngine
from ..journal.protocol import Unwritten
from ..models import Task
from ..polling.clock import ClockOffset
from ..records import NOT_FOUND, TaskStatus
from .settings import DisplayMode

__all__ = ["Callback", "Flags", "Lifecycle", "TrackedSet"]

log = logging.getLogger("mh_notebook.watcher")
Callback = Callable[[Task], object]


class Lifecycle(Enum):
    """Where a watcher is in its life (one state, as httpx's ``ClientState``)."""

    OPEN = "open"
    """Watching: tasks can be added, waits are settled."""
    STOPPING = "stopping"
    """``stop()`` is under way: what it knew is frozen, its journal is being written."""
    STOPPED = "stopped"
    """Stopped; a journal passed in by the caller stays open."""
    CLOSED = "closed"
    """Stopped, and the journal it opened itself is closed (read again from its file)."""


@dataclass
class Flags:
    """What changed since the view was last drawn, and how it is drawn (any thread)."""

    mode: DisplayMode
    dirty: bool = True
    static_dirty: bool = True

    def touch(self, *, static: bool = False) -> None:
        """Something the live view shows changed (``static``: the saved view too)."""
        self.dirty = True
        self.static_dirty = self.static_dirty or static

    @property
    def gallery_on(self) -> bool:
        """True when results are shown in the widget gallery."""
        return self.mode in ("widget", "auto")


@dataclass
class _Hooks:
    """What the other parts do with the poller thread's calls (wired by the facade)."""

    observe: Callable[[Observation], None] = lambda obs: None
    tick: Callable[[], None] = lambda: None
    notice: Callable[[], str | None] = lambda: None
    """What the watcher's own parts have to say in the panel (the account watch)."""


@dataclass(eq=False)
class TrackedSet:
    """The watched ids, their states, the callbacks and the lifecycle of one watcher."""

    spec: SubscriberSpec
    base_url: str
    flags: Flags
    lock: threading.RLock = field(default_factory=threading.RLock)
    state: Lifecycle = Lifecycle.OPEN
    unwritten: Unwritten | None = None
    change_callbacks: list[Callback] = field(default_factory=list)
    done_callbacks: list[Callback] = field(default_factory=list)
    callback_errors: list[BaseException] = field(default_factory=list)
    hooks: _Hooks = field(default_factory=_Hooks)
    _ids: dict[str, None] = field(default_factory=dict)
    _final: list[TaskState] | None = None
    _engine: WatcherEngine | None = None

    # ----------------------------------------------- the engine's side (Subscriber)
    def watches(self, task_id: str) -> bool:
        """True if this watcher watches ``task_id``."""
        return task_id in self._ids

    def observe(self, observation: Observation) -> None:
        """One change of a watched task, already journalled (engine thread)."""
        self.hooks.observe(observation)

    def tick(self) -> None:
        """The engine's tick (engine thread): redraw if due."""
        self.hooks.tick()

    # -------------------------------------------------------------- the set
    @property
    def engine(self) -> WatcherEngine:
        """The engine this set is attached to."""
        if self._engine is None:
            raise RuntimeError("the watcher is not attached to an engine")
        return self._engine

    def bind(self, engine: WatcherEngine) -> None:
        """Attach to ``engine`` (once, right after the engine attached this set)."""
        self._engine = engine

    @property
    def open(self) -> bool:
        """True until ``stop()`` begins."""
        return self.state is Lifecycle.OPEN

    def check_open(self) -> None:
        """``RuntimeError`` once stopped: nothing new is watched (or created) then."""
        if not self.open:
            raise RuntimeError("this watcher has been stopped; create a new one")

    def check_resumable(self) -> None:
        """``RuntimeError`` once stopped, naming the call that resumes in a new watcher: a
        stopped one has left its engine (and closed its journal), so it would watch nothing."""
        if self.open:
            return
        store = self.spec.store
        if store.path is not None:
            how = f"TaskWatcher(store={str(store.path)!r}).resume()"
        elif store.location == "in memory":
            how = "TaskWatcher(store=None).watch(<this watcher>.pending) (its journal was in memory)"
        else:
            how = f"TaskWatcher(store=<the same journal, {store.location}>).resume()"
        raise RuntimeError(
            f"this watcher has been stopped: resume() would watch nothing. Resume in a new watcher: {how}"
        )

    def add(self, ids: Iterable[str]) -> list[str]:
        """Add ``ids``; returns those new to this set, in order."""
        ids = list(dict.fromkeys(ids))
        with self.lock:
            fresh = [task_id for task_id in ids if task_id not in self._ids]
            self._ids.update(dict.fromkeys(ids))
        return fresh

    def remove(self, task_id: str) -> None:
        """Stop watching ``task_id`` (polled on if another watcher watches it)."""
        with self.lock:
            self._ids.pop(task_id, None)
        self.engine.unwatch(self, [task_id])
        self.flags.touch()

    @property
    def task_ids(self) -> list[str]:
        """The ids this watcher watches, in the order they were added."""
        with self.lock:
            return list(self._ids)

    def states(self) -> list[TaskState]:
        """The states of the watched tasks (frozen from ``stop()`` on)."""
        if self._final is not None:
            return self._final
        return self.engine.states(self.task_ids)

    def freeze(self) -> None:
        """``stop()`` begins: what it knew stays readable (and drawn) after it."""
        self._final = self.states()
        self.state = Lifecycle.STOPPING
        self.flags.touch()

    def close(self, *, owned: bool) -> None:
        """``stop()`` ends: the journal is closed if this watcher opened it."""
        if owned:
            self.spec.store.close()
        self.state = Lifecycle.CLOSED if owned else Lifecycle.STOPPED

    def counts(self) -> Counter[str]:
        """Tasks per status (``records.NOT_FOUND`` for those the API never knew)."""
        counts: Counter[str] = Counter()
        for s in self.states():
            counts[NOT_FOUND if s.is_not_found else str(s.task.status) if s.task else TaskStatus.PENDING] += 1
        return counts

    @property
    def tasks(self) -> dict[str, Task]:
        """Task id → the latest ``Task`` fetched (tasks not fetched yet are absent)."""
        return {s.task_id: s.task for s in self.states() if s.task is not None}

    @property
    def not_found(self) -> list[str]:
        """Ids the API kept answering 404 for; they count as ended."""
        return [s.task_id for s in self.states() if s.is_not_found]

    @property
    def pending(self) -> list[str]:
        """Ids that have not ended yet."""
        return [s.task_id for s in self.states() if not s.ended]

    @property
    def polls(self) -> dict[str, int]:
        """Task id → requests spent on it so far (by every watcher of it)."""
        return {s.task_id: s.polls for s in self.states()}

    @property
    def clock_offset(self) -> ClockOffset:
        """How far the API's clock runs ahead of this machine's (negative: behind), as
        learned from its ``Date`` headers and timestamps: ``.offset`` and ``.error`` in
        seconds. Every comparison of a server timestamp with local time goes through it."""
        return self.engine.clock

    # ---------------------------------------------------------------- pause
    def pause(self) -> None:
        """Stop polling until ``resume_polling()`` (the panel's Pause button); polling is
        shared by every watcher of this API in the process: all of them pause."""
        self.engine.pause()
        self.flags.touch()

    def resume_polling(self) -> None:
        """Poll again after ``pause()``; after a refused key, try the key again at once.
        Unlike ``resume()`` (which adds the journal's unfinished tasks to this watcher),
        this adds no task: the shared engine sends requests again."""
        self.engine.resume()
        self.flags.touch()

    # ------------------------------------------------------------ callbacks
    def on_change(self, fn: Callback) -> Callback:
        """Call ``fn(task)`` on every status change, in the engine's thread. Keep it quick: an
        exception in it is logged and kept in ``callback_errors``. Usable as a decorator."""
        self.change_callbacks.append(fn)
        return fn

    def on_done(self, fn: Callback) -> Callback:
        """Call ``fn(task)`` once per task when it ends, in the engine's thread (see on_change)."""
        self.done_callbacks.append(fn)
        return fn

    def run_callbacks(self, callbacks: list[Callback], task: Task) -> None:
        """Call each of ``callbacks`` with ``task``; an exception is logged and kept."""
        for fn in callbacks:
            try:
                fn(task)
            except Exception as exc:
                log.exception("callback %r failed on task %s", fn, task.id)
                self.callback_errors.append(exc)
