"""``TaskWatcher``: a set of tasks, its live view, its waits and its analysis.

A facade: it owns no thread and little state. It attaches its tracked set to the shared
:class:`~mh_notebook.engine.Engine` of its API (which polls, keeps the budget, journals
and keeps results) and delegates each verb to the part that does it (see
:mod:`mh_notebook.watcher`). Changes arrive in the engine's thread; the view is redrawn
there at most every ``refresh_interval`` seconds, its static twin at most every
``static_interval`` (at once when every task is done and when the watcher stops).
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from ..client import is_sandbox_key, resolve_settings
from ..engine import Engine, SubscriberSpec, engine_for
from ..journal.factory import open_store
from ..journal.protocol import Store, Unwritten
from ..polling.policy import PollPolicy
from ..results import DEFAULT_INLINE_LIMIT
from .account import AccountWatching
from .actions import Actions
from .analysis import Analysis
from .delegate import Delegates
from .intake import Intake
from .keeping import Keeping
from .media_io import MediaIO
from .presenter import PanelActions, Presenter
from .settings import DisplayMode, check_settings, resolve_display
from .tracked import Flags, TrackedSet
from .viewmodel import ViewModel
from .waiters import Waiters

__all__ = ["TaskWatcher"]

delegate: Delegates[TaskWatcher] = Delegates()
"""Makes TaskWatcher's names that forward to its parts (see :mod:`.delegate`)."""


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
        check_settings(
            rate_limit=rate_limit, time_scale=time_scale, burst=burst, max_in_flight=max_in_flight,
            timeout=timeout, refresh_interval=refresh_interval, static_interval=static_interval,
            gallery_limit=gallery_limit, inline_limit=inline_limit,
        )  # fmt: skip
        shown = resolve_display(display)
        if policy is not None and not isinstance(policy, PollPolicy):
            raise TypeError(f"policy must be a PollPolicy or None, got {type(policy).__name__}")
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
        self.gallery_limit, self.inline_limit = gallery_limit, inline_limit
        spec = SubscriberSpec(self.store, self.rate_limit, burst)
        self._tracked = tracked = TrackedSet(spec, url, Flags(shown))
        self.callback_errors: list[BaseException] = tracked.callback_errors
        """Exceptions raised by callbacks (they are logged, never fatal)."""
        self._results = Keeping(
            tracked, save_to=self.save_to, gallery_limit=self.gallery_limit, inline_limit=self.inline_limit
        )
        self._kept, self._keeping, self._gallery_queue = (  # read by tests: the same objects
            self._results.kept, self._results.keeping, self._results.gallery_queue
        )  # fmt: skip
        self._view = ViewModel(tracked, sandbox=self.sandbox)
        self._waits = Waiters(tracked, self._results.keeping, lambda: self._presenter.publish_static(True))
        self._results.waiters = self._waits
        self._intake = Intake(tracked, self._results, self._waits, self._view, self.policy)
        self._actions = Actions(tracked, watch=self._intake.watch)
        buttons = PanelActions(tracked.pause, tracked.resume_polling, self.stop, self._actions.cancel)
        self._presenter = Presenter(
            tracked, self._view, self._results, buttons,
            refresh_interval=refresh_interval, static_interval=static_interval,
        )  # fmt: skip
        tracked.hooks.observe, tracked.hooks.tick = self._intake.observe, self._presenter.redraw
        self._account = AccountWatching(tracked, self._intake, time_scale)
        tracked.hooks.notice = self._account.notice
        self._analysis = Analysis(tracked)
        self._media = MediaIO(tracked, self._results, self._analysis, embed_media=embed_media)
        try:
            self._engine = engine_for(tracked, key, url, timeout=timeout, max_in_flight=max_in_flight)
        except BaseException:
            tracked.close(owned=self._owns_store)
            raise
        tracked.bind(self._engine)

    def __repr__(self) -> str:
        return f"TaskWatcher({self._view.describe()})"

    def __setattr__(self, name: str, value: object) -> None:
        """Settings are fixed once made: assigning one would change nothing the engine uses."""
        if not name.startswith("_") and "_engine" in self.__dict__ and not hasattr(type(self), name):
            raise AttributeError(
                f"TaskWatcher.{name} cannot be changed; make a new TaskWatcher with {name}=..."
            )
        super().__setattr__(name, value)

    def stop(self) -> None:
        """Stop watching: waits fail, the journal is written and closed, and the engine's
        thread ends if no other watcher of this API is left. Safe from a callback."""
        if not self._tracked.open:
            return
        self._account.stop()  # the walks end; the watch stays journalled for resume()
        self._tracked.freeze()  # what it knew stays readable (and drawn) after stop
        self._tracked.unwritten = self._engine.detach(self._tracked)
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

    @property
    def engine(self) -> Engine:
        """The shared :class:`~mh_notebook.engine.Engine` of this API (for diagnostics)."""
        return self._engine

    # Each name below forwards to the part that does it; the docstring is the part's.
    # ---------------------------------------------------------- the tracked set
    watch = delegate(lambda w: w._intake, Intake.watch)
    unwatch = delegate(lambda w: w._intake, Intake.unwatch)
    resume = delegate(lambda w: w._account, AccountWatching.resume)
    watch_account = delegate(lambda w: w._account, AccountWatching.watch_account)
    unwatch_account = delegate(lambda w: w._account, AccountWatching.unwatch_account)
    watches = delegate(lambda w: w._tracked, TrackedSet.watches)
    pause = delegate(lambda w: w._tracked, TrackedSet.pause)
    resume_polling = delegate(lambda w: w._tracked, TrackedSet.resume_polling)
    on_change = delegate(lambda w: w._tracked, TrackedSet.on_change)
    on_done = delegate(lambda w: w._tracked, TrackedSet.on_done)

    # ------------------------------------------------------- requests that change things
    submit = delegate(lambda w: w._actions, Actions.submit)
    cancel = delegate(lambda w: w._actions, Actions.cancel)
    retry = delegate(lambda w: w._actions, Actions.retry)
    balance = delegate(lambda w: w._actions, Actions.balance)

    # ---------------------------------------------------------------- state
    task_ids = delegate.attribute(lambda w: w._tracked, TrackedSet.task_ids)
    tasks = delegate.attribute(lambda w: w._tracked, TrackedSet.tasks)
    not_found = delegate.attribute(lambda w: w._tracked, TrackedSet.not_found)
    pending = delegate.attribute(lambda w: w._tracked, TrackedSet.pending)
    polls = delegate.attribute(lambda w: w._tracked, TrackedSet.polls)
    clock_offset = delegate.attribute(lambda w: w._tracked, TrackedSet.clock_offset)
    saved_files = delegate.attribute(lambda w: w._analysis, Analysis.saved_files)
    paused = delegate.attribute(lambda w: w._engine, Engine.paused)
    auth_error = delegate.attribute(lambda w: w._engine, Engine.auth_error)

    # ------------------------------------------------------------- waiting
    wait = delegate(lambda w: w._waits, Waiters.wait)
    wait_async = delegate(lambda w: w._waits, Waiters.wait_async)
    as_completed = delegate(lambda w: w._waits, Waiters.as_completed)
    as_completed_async = delegate(lambda w: w._waits, Waiters.as_completed_async)

    # ------------------------------------------------------------ the view
    snapshot = delegate(lambda w: w._view, ViewModel.snapshot)
    panel = delegate.attribute(lambda w: w._presenter, Presenter.panel)
    redraw = delegate(lambda w: w._presenter, Presenter.redraw)
    _repr_mimebundle_ = delegate(lambda w: w._presenter, Presenter.mimebundle)
    _ipython_display_ = delegate(lambda w: w._presenter, Presenter.display)
    _static_bundle = delegate(lambda w: w._presenter, Presenter.static_bundle)

    # -------------------------------------------------------------- history
    history = delegate(lambda w: w._analysis, Analysis.history)
    events = delegate(lambda w: w._analysis, Analysis.events)
    latency_summary = delegate(lambda w: w._analysis, Analysis.latency_summary)
    plot_latency = delegate(lambda w: w._analysis, Analysis.plot_latency)
    plot_timeline = delegate(lambda w: w._analysis, Analysis.plot_timeline)
    to_parquet = delegate(lambda w: w._analysis, Analysis.to_parquet)

    # ---------------------------------------------------------------- media
    refresh = delegate(lambda w: w._media, MediaIO.refresh)
    fresh_task = delegate(lambda w: w._media, MediaIO.fresh_task)
    show = delegate(lambda w: w._media, MediaIO.show)
    download = delegate(lambda w: w._media, MediaIO.download)
