"""``TaskWatcher``: a set of tasks, its live view, its waits and its analysis.

A facade: it owns no thread and little state. It attaches its tracked set to the shared
:class:`~mh_notebook.engine.Engine` of its API (which polls, keeps the budget, journals
and keeps results) and delegates each verb to the part that does it (see
:mod:`mh_notebook.watcher`). Changes arrive in the engine's thread; the view is redrawn
there at most every ``refresh_interval`` seconds, its static twin at most every
``static_interval`` (at once when every task is done and when the watcher stops).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ..client import is_sandbox_key, resolve_settings
from ..engine import Engine, SubscriberSpec, engine_for
from ..errors import AuthenticationError
from ..journal.factory import open_store
from ..journal.protocol import Store, Unwritten
from ..models import Task
from ..polling.clock import ClockOffset
from ..polling.policy import PollPolicy
from ..results import DEFAULT_INLINE_LIMIT
from ..view.render import Snapshot
from .actions import Actions
from .analysis import Analysis
from .intake import Intake
from .keeping import Keeping
from .media_io import MediaIO
from .presenter import PanelActions, Presenter
from .settings import DisplayMode, check_settings, resolve_display
from .tracked import Callback, Flags, TrackedSet
from .viewmodel import ViewModel
from .waiters import Waiters

if TYPE_CHECKING:
    import pandas as pd

    from ..view.panel import Panel

__all__ = ["TaskWatcher"]


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
        check_settings(rate_limit=rate_limit, time_scale=time_scale, burst=burst, max_in_flight=max_in_flight)
        self.base_url, self.sandbox = url, is_sandbox_key(key)
        """``sandbox``: True for a ``river_test_`` key (ModelHunter's sandbox: nothing is charged)."""
        self._owns_store = store is None or isinstance(store, str | Path)
        self.store: Store = open_store(store)
        self.time_scale, self.embed_media = time_scale, embed_media
        self.policy = (policy or PollPolicy()).scaled(time_scale)
        """The poll schedule of this watcher's tasks, in real seconds."""
        self.rate_limit, self.burst = rate_limit * time_scale, burst
        self.refresh_interval, self.static_interval = refresh_interval, static_interval
        self.save_to = Path(save_to).expanduser().resolve() if save_to is not None else None
        """Where every succeeded result is saved (``None``: nowhere)."""
        self.gallery_limit, self.inline_limit = max(1, gallery_limit), max(0, inline_limit)
        spec = SubscriberSpec(self.store, self.rate_limit, burst)
        self._tracked = tracked = TrackedSet(spec, url, Flags(resolve_display(display)))
        self.callback_errors: list[BaseException] = tracked.callback_errors
        """Exceptions raised by callbacks (they are logged, never fatal)."""
        self._results = Keeping(
            tracked, save_to=self.save_to, gallery_limit=self.gallery_limit, inline_limit=self.inline_limit
        )
        self._kept, self._keeping, self._gallery_queue = (  # read by tests: the same objects
            self._results.kept, self._results.keeping, self._results.gallery_queue
        )  # fmt: skip
        self._view = ViewModel(tracked, sandbox=self.sandbox)
        buttons = PanelActions(self.pause, self.resume_polling, self.stop, self.cancel)
        self._presenter = Presenter(
            tracked, self._view, self._results, buttons,
            refresh_interval=refresh_interval, static_interval=static_interval,
        )  # fmt: skip
        after_wait = functools.partial(self._presenter.publish_static, True)
        self._waits = Waiters(tracked, self._results.keeping, after_wait)
        self._results.waiters = self._waits
        self._intake = Intake(tracked, self._results, self._waits, self._view, self.policy)
        tracked.hooks.observe, tracked.hooks.tick = self._intake.observe, self._presenter.redraw
        self._analysis = Analysis(tracked)
        self._media = MediaIO(tracked, self._results, self._analysis, embed_media=embed_media)
        self._actions = Actions(
            key, url, timeout=timeout, allow_insecure_http=allow_insecure_http,
            watch=self.watch, check_open=tracked.check_open,
        )  # fmt: skip
        try:
            self._engine = engine_for(tracked, key, url, timeout=timeout, max_in_flight=max_in_flight)
        except BaseException:
            tracked.close(owned=self._owns_store)
            raise
        tracked.bind(self._engine)

    def __repr__(self) -> str:
        return f"TaskWatcher({self._view.describe()})"

    # ---------------------------------------------------------- the tracked set
    def watch(self, *tasks: str | Task | Iterable[str | Task]) -> list[str]:
        """Watch task ids or ``Task`` objects (or iterables of them); returns at once."""
        return self._intake.watch(tasks)

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
            endpoint, model=model, input=input, metadata=metadata, webhook_url=webhook_url
        )

    def cancel(self, task_id: str) -> Task:
        """Cancel a task in progress (cannot be undone); an ended task raises
        :class:`~mh_notebook.ConflictError` (``.code`` says why)."""
        return self._actions.cancel(task_id)

    def retry(self, task_id: str) -> str:
        """Retry a ``failed`` or ``expired`` task and watch the new one; returns its id.
        The retry is a new task and is **charged again**; its ``original_task_id`` is
        ``task_id``. Other states raise :class:`~mh_notebook.ConflictError`."""
        return self._actions.retry(task_id)

    def balance(self) -> float:
        """The account's balance in USD (``GET /api/v1/balance``)."""
        return self._actions.balance()

    def watches(self, task_id: str) -> bool:
        """True if this watcher watches ``task_id``."""
        return self._tracked.watches(task_id)

    @property
    def task_ids(self) -> list[str]:
        """The ids this watcher watches, in the order they were added."""
        return self._tracked.task_ids

    def resume(self) -> list[str]:
        """Watch again every task of the journal (same ``base_url``) that had not ended.

        Use after a kernel restart: ``TaskWatcher(store=...).resume()``. Returns the ids.
        Unlike :meth:`resume_polling` (which lets a paused engine poll again), this adds
        tasks to this watcher: the journal's unfinished ones."""
        return self._intake.resume()

    def unwatch(self, task_id: str) -> None:
        """Stop watching ``task_id``; :meth:`wait` no longer waits for it."""
        self._intake.unwatch(task_id)

    def pause(self) -> None:
        """Stop polling until :meth:`resume_polling` (the panel's Pause button); polling is
        shared by every watcher of this API in the process: all of them pause."""
        self._tracked.pause()

    def resume_polling(self) -> None:
        """Poll again after :meth:`pause`; after a refused key, try the key again at once.
        Unlike :meth:`resume` (which adds the journal's unfinished tasks to this watcher),
        this adds no task: the shared engine sends requests again."""
        self._tracked.resume()

    def stop(self) -> None:
        """Stop watching: waits fail, the journal is written and closed, and the engine's
        thread ends if no other watcher of this API is left. Safe from a callback."""
        if not self._tracked.open:
            return
        self._tracked.freeze()  # what it knew stays readable (and drawn) after stop
        self._tracked.unwritten = self._engine.detach(self._tracked)
        self._actions.close()
        self._tracked.close(owned=self._owns_store)
        self._waits.fail_all()
        self._presenter.final()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def unwritten(self) -> Unwritten | None:
        """What :meth:`stop` could not write to the journal in time (None: nothing); see
        :class:`~mh_notebook.engine.UnwrittenWarning`."""
        return self._tracked.unwritten

    # ---------------------------------------------------------------- state
    @property
    def tasks(self) -> dict[str, Task]:
        """Task id → the latest ``Task`` fetched (tasks not fetched yet are absent)."""
        return self._tracked.tasks

    @property
    def saved_files(self) -> dict[str, list[Path]]:
        """Task id → the result files saved on this machine (``save_to``), from the journal."""
        return self._analysis.saved_files()

    @property
    def not_found(self) -> list[str]:
        """Ids the API kept answering 404 for; they count as ended."""
        return self._tracked.not_found

    @property
    def pending(self) -> list[str]:
        """Ids that have not ended yet."""
        return self._tracked.pending

    @property
    def paused(self) -> bool:
        """True while polling is paused."""
        return self._engine.paused

    @property
    def polls(self) -> dict[str, int]:
        """Task id → requests spent on it so far (by every watcher of it)."""
        return self._tracked.polls

    @property
    def auth_error(self) -> AuthenticationError | None:
        """The 401/403 that stopped polling, if the key has not worked since."""
        return self._engine.auth_error

    @property
    def clock_offset(self) -> ClockOffset:
        """How far the API's clock runs ahead of this machine's (negative: behind), as
        learned from its ``Date`` headers and timestamps: ``.offset`` and ``.error`` in
        seconds. Every comparison of a server timestamp with local time goes through it."""
        return self._engine.clock

    @property
    def engine(self) -> Engine:
        """The shared :class:`~mh_notebook.engine.Engine` of this API (for diagnostics)."""
        return self._engine

    def on_change(self, fn: Callback) -> Callback:
        """Call ``fn(task)`` on every status change, in the engine's thread. Keep it quick: an
        exception in it is logged and kept in ``callback_errors``. Usable as a decorator."""
        self._tracked.on_change.append(fn)
        return fn

    def on_done(self, fn: Callback) -> Callback:
        """Call ``fn(task)`` once per task when it ends, in the engine's thread (see on_change)."""
        self._tracked.on_done.append(fn)
        return fn

    # ------------------------------------------------------------- waiting
    def wait(self, timeout: float | None = None) -> dict[str, Task]:
        """Block until every watched task has ended; return id → final ``Task``. Tasks the API
        does not know count as ended (see ``not_found``). Raises ``TimeoutError`` naming the
        unfinished ids (a timed-out wait keeps nothing), or the ``AuthenticationError`` that
        stopped polling; ``RuntimeError`` in a callback (the engine's thread settles waits)."""
        return self._waits.wait(timeout)

    async def wait_async(self, timeout: float | None = None) -> dict[str, Task]:
        """``await`` form of :meth:`wait`, for top-level await in a cell."""
        return await self._waits.wait_async(timeout)

    def as_completed(self, timeout: float | None = None) -> Iterator[Task]:
        """Yield each watched task as it ends (already ended ones first). Tasks the API
        does not know end the wait for them without being yielded."""
        return self._waits.as_completed(timeout)

    def as_completed_async(self, timeout: float | None = None) -> AsyncIterator[Task]:
        """``async for`` form of :meth:`as_completed`."""
        return self._waits.as_completed_async(timeout)

    # ------------------------------------------------------------ the view
    def snapshot(self) -> Snapshot:
        """What the panel shows now: counts, the active and most recent rows."""
        return self._view.snapshot()

    @property
    def panel(self) -> Panel:
        """The live ipywidgets panel (created on first use)."""
        return self._presenter.panel

    def redraw(self, force: bool = False) -> None:
        """Engine thread, every tick: draw if something changed, at most every ``refresh_interval``;
        the static view at most every ``static_interval`` (at once when all is done).

        One draw at a time: a forced redraw from another thread returns once the gallery holds
        every result kept before it (not while the engine's thread is still adding tiles)."""
        self._presenter.redraw(force)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The live widget, plus static ``text/html`` and ``text/plain`` for saved notebooks."""
        return self._presenter.mimebundle(include, exclude)

    def _ipython_display_(self) -> None:
        """In a notebook: the live panel, then its static twin under a display id (kept
        current by :meth:`redraw`, :meth:`wait` and :meth:`stop`) for saved notebooks."""
        self._presenter.display()

    def _static_bundle(self) -> dict[str, str]:
        return self._presenter.static_bundle()

    # -------------------------------------------------------------- history
    def history(self) -> pd.DataFrame:
        """One row per task this watcher watches; see
        :data:`mh_notebook.history.HISTORY_COLUMNS` for the columns and dtypes.
        ``mh_notebook.read_history(journal)`` covers the whole journal."""
        return self._analysis.history()

    def events(self) -> pd.DataFrame:
        """One row per observed transition of this watcher's tasks, by observation time."""
        return self._analysis.events()

    def latency_summary(self, by: str | tuple[str, ...] = ("provider", "model")) -> pd.DataFrame:
        """Count, success rate, p50/p90/p99 latency, mean queue/run time and top errors."""
        return self._analysis.latency_summary(by)

    def plot_latency(self, by: str = "model", ax: Any = None) -> Any:
        """Latency distribution per model (matplotlib axes)."""
        return self._analysis.plot_latency(by, ax)

    def plot_timeline(self, ax: Any = None, limit: int = 60) -> Any:
        """Queue and run phases of recent tasks as bars (matplotlib axes)."""
        return self._analysis.plot_timeline(ax, limit)

    def to_parquet(self, path: str | Path) -> Path:
        """Write :meth:`history` to Parquet (needs pyarrow); returns the path."""
        return self._analysis.to_parquet(path)

    # ---------------------------------------------------------------- media
    def refresh(self, task_id: str, timeout: float = 60.0) -> Task:
        """Fetch ``task_id`` now for fresh result URLs (within the shared request budget). Like
        :meth:`show`, :meth:`download`, :meth:`wait` and :meth:`as_completed`, it raises
        ``RuntimeError`` at once in an engine's thread (a callback), where it would wait."""
        return self._media.refresh(task_id, timeout)

    def fresh_task(self, task_id: str, timeout: float = 60.0) -> Task:
        """The task with result URLs that work now: the known one if its URLs answer,
        else fetched again (the server's answer decides, never a guessed lifetime)."""
        return self._media.fresh_task(task_id, timeout)

    def show(self, task_id: str, *, embed: bool | None = None, embed_limit: int | None = None) -> None:
        """Display a task's media inline (Video/Image/Audio by format): live media widgets
        with the panel (bytes from the kernel, never the expiring URL), or a URL that works
        now; ``embed=True`` puts the bytes (up to ``embed_limit``, default 20 MB) in the
        notebook. Kept or saved bytes are used when there are some; see
        :meth:`MediaIO.show <mh_notebook.watcher.media_io.MediaIO.show>`."""
        self._media.show(task_id, embed=embed, embed_limit=embed_limit)

    def download(self, task_id: str, directory: str | Path = ".", *, progress: bool = True) -> list[Path]:
        """Save a task's result files into ``directory``; returns their paths. Streams to a
        temporary file and renames it (atomic), checks the size against ``size_bytes``, and
        gets a fresh URL when the old one has expired."""
        return self._media.download(task_id, directory, progress=progress)
